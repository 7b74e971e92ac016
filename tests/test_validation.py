"""Every contract violation raises ContractError naming the argument, before anything runs."""
import pytest
import torch

import flashmla
from flashmla import attention, kvcache

from conftest import paged_decode_inputs


def _dense(**over):
    q, cache, table, lens = paged_decode_inputs()
    args = dict(q=q, kv_cache=cache, block_table=table, cache_seqlens=lens)
    kw = dict(head_dim_v=512)
    for k, v in over.items():
        (args if k in args else kw)[k] = v(args[k]) if callable(v) and k in args else v
    return lambda: attention.dense_decode(args["q"], args["kv_cache"], args["block_table"], args["cache_seqlens"], **kw)


DENSE_CASES = [
    ("q", dict(q=lambda q: q.float())),                          # dtype
    ("q", dict(q=lambda q: q[0])),                               # rank
    ("q", dict(q=lambda q: q[..., :500])),                       # d_qk not 576/512
    ("q", dict(q=lambda q: q.transpose(-1, -2)[..., :576, :])),  # last dim not contiguous... shape also wrong
    ("kv_cache", dict(kv_cache=lambda c: c.half())),             # dtype mismatch with q
    ("kv_cache", dict(kv_cache=lambda c: c[..., :512])),          # d_qk mismatch
    ("kv_cache", dict(kv_cache=lambda c: c.expand(-1, -1, 3, -1))),  # 16 % 3 != 0
    ("block_table", dict(block_table=lambda t: t.long())),
    ("block_table", dict(block_table=lambda t: t[:1])),
    ("cache_seqlens", dict(cache_seqlens=lambda s: s.long())),
    ("cache_seqlens", dict(cache_seqlens=lambda s: torch.tensor([40, 10_000], dtype=torch.int32))),
    ("head_dim_v", dict(head_dim_v=256)),
    ("softmax_scale", dict(softmax_scale=-1.0)),
    ("softmax_scale", dict(softmax_scale=float("nan"))),
    ("causal", dict(causal=1)),
    ("attn_sink", dict(attn_sink=torch.zeros(16, dtype=torch.bfloat16))),
    ("attn_sink", dict(attn_sink=torch.zeros(15))),
    ("kv_format", dict(kv_format="fp4")),
    ("kv_format", dict(kv_format="fp16")),
]


@pytest.mark.parametrize("argument,over", DENSE_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(DENSE_CASES)])
def test_dense_decode_contract_errors(argument, over):
    with pytest.raises(flashmla.ContractError) as e:
        _dense(**over)()
    assert e.value.argument == argument
    assert argument in str(e.value) and "expected" in str(e.value) and "got" in str(e.value)


def test_last_dim_must_be_contiguous():
    q, cache, table, lens = paged_decode_inputs()
    bad = torch.empty(2, 1, 16, 576 * 2, dtype=q.dtype)[..., ::2]
    with pytest.raises(flashmla.ContractError, match="q: expected a contiguous last dimension"):
        attention.dense_decode(bad, cache, table, lens)


def _sparse(b=2, s_q=1, h_q=16, topk=64, page=64, nblocks=4):
    g = torch.Generator().manual_seed(0)
    cache = kvcache.quantize(torch.randn(nblocks, page, 1, 576, generator=g).bfloat16())
    q = torch.randn(b, s_q, h_q, 576, generator=g).bfloat16()
    idx = torch.randint(0, nblocks * page, (b, s_q, topk), generator=g).int()
    return q, cache, idx


SPARSE_CASES = [
    ("q", lambda q, c, i, kw: (q.half(), c, i, kw)),
    ("kv_cache", lambda q, c, i, kw: (q, c[..., :600], i, kw)),
    ("kv_cache", lambda q, c, i, kw: (q, c.expand(-1, -1, 2, -1), i, kw)),
    ("indices", lambda q, c, i, kw: (q, c, i.long(), kw)),
    ("indices", lambda q, c, i, kw: (q, c, i[:, :, None], kw)),
    ("topk_length", lambda q, c, i, kw: (q, c, i, dict(kw, topk_length=torch.tensor([64, 65], dtype=torch.int32)))),
    ("topk_length", lambda q, c, i, kw: (q, c, i, dict(kw, topk_length=torch.tensor([1], dtype=torch.int32)))),
    ("kv_cache", lambda q, c, i, kw: (q, c, i, dict(kw, kv_format="bf16"))),   # uint8 cache, bf16 format
    ("kv_format", lambda q, c, i, kw: (q, c, i, dict(kw, kv_format="v4_fp8"))),
    ("q", lambda q, c, i, kw: (q[..., :512], c, i, kw)),        # fp8_v32 needs d_qk 576
]


@pytest.mark.parametrize("argument,mutate", SPARSE_CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(SPARSE_CASES)])
def test_sparse_decode_contract_errors(argument, mutate):
    q, c, i, kw = mutate(*_sparse(), {})
    with pytest.raises(flashmla.ContractError) as e:
        attention.sparse_decode(q, c, i, **kw)
    assert e.value.argument == argument


def test_fp8_page_blocks_must_be_contiguous_rows():
    q, c, i = _sparse()
    padded = torch.zeros(4, 64, 1, 700, dtype=torch.uint8)[..., :656]
    with pytest.raises(flashmla.ContractError, match="stride"):
        attention.sparse_decode(q, padded, i)


def test_sparse_prefill_needs_scale_and_matching_indices():
    q = torch.randn(5, 16, 576).bfloat16()
    kv = torch.randn(30, 1, 576).bfloat16()
    idx = torch.zeros(5, 1, 64, dtype=torch.int32)
    with pytest.raises(flashmla.ContractError, match="softmax_scale"):
        attention.sparse_prefill(q, kv, idx, softmax_scale=None)
    with pytest.raises(flashmla.ContractError) as e:
        attention.sparse_prefill(q, kv, idx[:4], softmax_scale=0.1)
    assert e.value.argument == "indices"
    with pytest.raises(flashmla.ContractError) as e:
        attention.sparse_prefill(q, torch.randn(30, 3, 576).bfloat16(), idx, softmax_scale=0.1)
    assert e.value.argument == "kv"


def test_dense_prefill_errors():
    q = torch.randn(10, 4, 192).bfloat16()
    k = torch.randn(12, 4, 192).bfloat16()
    v = torch.randn(12, 4, 128).bfloat16()
    cu_q = torch.tensor([0, 4, 10], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 12], dtype=torch.int32)
    attention.dense_prefill(q, k, v, cu_q, cu_k, 6, 7)
    for argument, call in [
        ("v", lambda: attention.dense_prefill(q, k, v[:11], cu_q, cu_k, 6, 7)),
        ("k", lambda: attention.dense_prefill(q, k.half(), v, cu_q, cu_k, 6, 7)),
        ("cu_seqlens_k", lambda: attention.dense_prefill(q, k, v, cu_q, cu_k[:2], 6, 7)),
        ("max_seqlen_q", lambda: attention.dense_prefill(q, k, v, cu_q, cu_k, 5, 7)),
        ("cu_seqlens_q", lambda: attention.dense_prefill(q, k, v, torch.tensor([0, 6, 4], dtype=torch.int32),
                                                         cu_k, 6, 7)),
    ]:
        with pytest.raises(flashmla.ContractError) as e:
            call()
        assert e.value.argument == argument


def test_plan_must_match_its_problem(decode_inputs):
    q, cache, table, lens = decode_inputs
    plan = attention.plan_decode(lens, num_q_heads=16)
    attention.dense_decode(q, cache, table, lens, plan=plan)
    other = attention.plan_decode(lens, num_q_heads=32)
    with pytest.raises(flashmla.ContractError, match="plan"):
        attention.dense_decode(q, cache, table, lens, plan=other)
    sparse_plan = attention.plan_decode(lens, num_q_heads=16, topk=64)
    with pytest.raises(flashmla.ContractError, match="plan"):
        attention.dense_decode(q, cache, table, lens, plan=sparse_plan)
    with pytest.raises(flashmla.ContractError, match="backend"):
        attention.dense_decode(q, cache, table, lens, plan=plan, backend="some_other")


def test_sparse_plan_records_its_query_length():
    # a sparse kernel may plan b * s_q token runs, so s_q is part of a sparse plan's key (not of a dense one's)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 16, 576, generator=g).bfloat16()
    cache = torch.randn(5, 16, 1, 576, generator=g).bfloat16()
    indices = torch.randint(0, 80, (2, 2, 64), generator=g, dtype=torch.int32)
    lens = torch.tensor([10, 20], dtype=torch.int32)
    attention.sparse_decode(q, cache, indices, kv_format="bf16",
                            plan=attention.plan_decode(lens, num_q_heads=16, q_len=2, topk=64))
    # the same rows per KV head (s_q * h_q = 32), planned as one token of 32 heads
    with pytest.raises(flashmla.ContractError, match="s_q=1"):
        attention.sparse_decode(q, cache, indices, kv_format="bf16",
                                plan=attention.plan_decode(lens, num_q_heads=32, q_len=1, topk=64))
    dense_a = attention.plan_decode(lens, num_q_heads=16, q_len=2)
    dense_b = attention.plan_decode(lens, num_q_heads=32, q_len=1)
    assert dense_a.key == dense_b.key and dense_a.key.q_len is None


def test_contract_error_is_a_value_error_and_no_backend_error_a_runtime_error():
    assert issubclass(flashmla.ContractError, ValueError)
    assert issubclass(flashmla.NoBackendError, RuntimeError)
