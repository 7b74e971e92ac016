import pytest
import torch


def paged_decode_inputs(b=2, s_q=1, h_q=16, h_kv=1, d_qk=576, page=16, lens=(40, 17), dtype=torch.bfloat16, seed=0):
    """Small valid dense-decode inputs on CPU: (q, kv_cache, block_table, cache_seqlens)."""
    g = torch.Generator().manual_seed(seed)
    blocks = [-(-L // page) for L in lens]
    n = sum(blocks) + 1
    perm = torch.randperm(n, generator=g).int()
    table = torch.zeros(b, max(blocks) + 1, dtype=torch.int32)
    used = 0
    for i, k in enumerate(blocks):
        table[i, :k] = perm[used:used + k]
        used += k
    cache = torch.randn(n, page, h_kv, d_qk, generator=g).to(dtype)
    q = torch.randn(b, s_q, h_q, d_qk, generator=g).to(dtype)
    return q, cache, table, torch.tensor(lens, dtype=torch.int32)


@pytest.fixture
def decode_inputs():
    return paged_decode_inputs()
