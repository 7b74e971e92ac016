"""Paged dense-decode inputs on the GPU: shuffled blocks, garbage in unused block-table entries."""
import torch


def paged(b, lens, h_q, h_kv=1, s_q=1, page=64, dtype=torch.bfloat16, d=576, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    blocks = [-(-L // page) for L in lens]
    n = sum(blocks) + 2
    perm = torch.randperm(n, device="cuda", generator=g).int()
    table = torch.full((b, max(blocks) + 1), 2147480000, dtype=torch.int32, device="cuda")
    used = 0
    for i, k in enumerate(blocks):
        table[i, :k] = perm[used:used + k]
        used += k
    cache = torch.randn(n, page, h_kv, d, device="cuda", generator=g).to(dtype)
    q = torch.randn(b, s_q, h_q, d, device="cuda", generator=g).to(dtype)
    return q, cache, table, torch.tensor(lens, dtype=torch.int32, device="cuda")
