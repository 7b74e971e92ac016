"""Hand-checkable semantics of the contract, asserted on both the reference backend and the oracle
(each is tested against arithmetic done by hand here, not only against the other)."""
import math

import pytest
import torch

from flashmla import attention, kvcache
from flashmla_core.testing import oracle

D, DV = 576, 512


def _one_block_cache(keys: torch.Tensor, page=8):
    """keys [L, 576] -> (cache [1, page, 1, 576], block_table [1, 1], seqlens [1]) with NaN in unused slots."""
    cache = torch.full((1, page, 1, D), float("nan"), dtype=torch.bfloat16)
    cache[0, :keys.shape[0], 0] = keys.bfloat16()
    return cache, torch.zeros(1, 1, dtype=torch.int32), torch.tensor([keys.shape[0]], dtype=torch.int32)


def _reference(q, cache, table, lens, **kw):
    return attention.dense_decode(q, cache, table, lens, backend="reference", **kw)


def _oracle(q, cache, table, lens, **kw):
    kw = dict(dict(head_dim_v=DV, softmax_scale=D ** -0.5, causal=False, attn_sink=None, kv_format="bf16"), **kw)
    return oracle.dense_decode(q, cache, table, lens, **kw)


IMPLS = pytest.mark.parametrize("impl", [_reference, _oracle], ids=["reference", "oracle"])


@IMPLS
def test_lse_is_natural_log(impl):
    # two keys with the same score s: lse = s + ln 2 (base 2 would give s*log2(e) + 1)
    k = torch.zeros(2, D)
    k[:, 0] = 1.0
    q = torch.zeros(1, 1, 1, D, dtype=torch.bfloat16)
    q[..., 0] = 3.0
    cache, table, lens = _one_block_cache(k)
    out, lse = impl(q, cache, table, lens, softmax_scale=0.5)
    assert float(lse[0, 0, 0]) == pytest.approx(1.5 + math.log(2), abs=1e-5)


@IMPLS
def test_causal_is_bottom_right_aligned(impl):
    # q = 0 gives uniform weights, so out = mean of the visible V rows; V row t is filled with t
    L, s_q = 5, 3
    k = torch.arange(L, dtype=torch.float32)[:, None].expand(L, D).clone()
    cache, table, lens = _one_block_cache(k)
    q = torch.zeros(1, s_q, 1, D, dtype=torch.bfloat16)
    out, lse = impl(q, cache, table, lens, causal=True)
    # query j sees keys [0, L - s_q + j]: means 1.0, 1.5, 2.0
    assert [float(out[0, j, 0, 0]) for j in range(s_q)] == pytest.approx([1.0, 1.5, 2.0], abs=1e-2)
    assert [float(lse[0, 0, j]) for j in range(s_q)] == pytest.approx([math.log(n) for n in (3, 4, 5)], abs=1e-5)


@IMPLS
def test_empty_request_gives_zero_and_plus_inf(impl):
    cache, table, _ = _one_block_cache(torch.randn(3, D))
    q = torch.randn(1, 2, 4, D).bfloat16()
    out, lse = impl(q, cache, table, torch.zeros(1, dtype=torch.int32), causal=True)
    assert torch.equal(out.float(), torch.zeros_like(out.float()))
    assert torch.isposinf(lse).all()


@IMPLS
def test_lonely_causal_query(impl):
    # L = 1 < s_q = 2: query 0 sees key -1.. i.e. nothing
    cache, table, _ = _one_block_cache(torch.randn(1, D))
    q = torch.randn(1, 2, 1, D).bfloat16()
    out, lse = impl(q, cache, table, torch.ones(1, dtype=torch.int32), causal=True)
    assert torch.isposinf(lse[0, 0, 0]) and torch.isfinite(lse[0, 0, 1])
    assert float(out[0, 0].abs().max()) == 0.0 and not torch.isnan(out).any()


@IMPLS
def test_attn_sink(impl):
    k = torch.randn(4, D)
    cache, table, lens = _one_block_cache(k)
    q = torch.randn(1, 1, 3, D).bfloat16()
    base, lse = impl(q, cache, table, lens)
    sink = torch.tensor([float("-inf"), float("inf"), 0.25])
    out, lse_s = impl(q, cache, table, lens, attn_sink=sink)
    assert torch.equal(lse_s, lse)                                   # lse is not changed
    assert torch.allclose(out[0, 0, 0].float(), base[0, 0, 0].float())   # -inf: nothing changes
    assert float(out[0, 0, 1].abs().max()) == 0.0                     # +inf: out = 0
    factor = math.exp(float(lse[0, 2, 0])) / (math.exp(float(lse[0, 2, 0])) + math.exp(0.25))
    assert torch.allclose(out[0, 0, 2].double(), base[0, 0, 2].double() * factor, atol=1e-2, rtol=1e-2)


@IMPLS
def test_nan_in_unused_slots_never_reaches_outputs(impl):
    cache, table, lens = _one_block_cache(torch.randn(3, D))   # slots 3..7 hold NaN
    out, lse = impl(torch.randn(1, 1, 2, D).bfloat16(), cache, table, lens)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()


def test_fp8_v32_layout_and_arbitrary_scale():
    x = torch.randn(2, 576).bfloat16()
    packed = kvcache.quantize(x)
    assert packed.shape == (2, 656) and packed.dtype == torch.uint8
    scales = packed[:, 512:528].contiguous().view(torch.float32)
    assert torch.equal(torch.exp2(torch.log2(scales).round()), scales)     # reference scales: powers of two
    assert torch.equal(packed[:, 528:].contiguous().view(torch.bfloat16), x[:, 512:])  # RoPE kept bf16
    scales[0] = torch.tensor([0.3, 0.7, 1.1, 0.013])                      # a writer's arbitrary scales
    packed[:, 512:528] = scales.view(torch.uint8)
    deq = kvcache.dequantize(packed)
    e4m3 = packed[0, :512].view(torch.float8_e4m3fn).float()
    want = (e4m3 * torch.tensor([0.3, 0.7, 1.1, 0.013]).repeat_interleave(128)).bfloat16()
    assert torch.equal(deq[0, :512], want)
    assert torch.equal(oracle.dequant_row_fp8_v32(packed[0]), torch.cat([want.double(), x[0, 512:].double()]))


def test_sparse_invalid_indices_are_never_read():
    g = torch.Generator().manual_seed(1)
    page, nblocks = 16, 2
    cache = torch.randn(nblocks, page, 1, D, generator=g).bfloat16()
    cache[0, 5] = float("nan")
    q = torch.randn(1, 1, 4, D, generator=g).bfloat16()
    idx = torch.tensor([[[3, -1, -2 ** 31, nblocks * page, 2 ** 31 - 1, 7, 5]]], dtype=torch.int32)
    lengths = torch.tensor([6], dtype=torch.int32)   # index 5 (NaN) is past topk_length
    out, lse = attention.sparse_decode(q, cache, idx, kv_format="bf16", topk_length=lengths)
    ref, ref_lse = attention.sparse_decode(q, cache, idx[..., [0, 5]].contiguous(), kv_format="bf16")
    assert torch.equal(out, ref) and torch.allclose(lse, ref_lse)


def test_sparse_prefill_all_invalid_row():
    q = torch.randn(2, 4, D).bfloat16()
    kv = torch.randn(10, 1, D).bfloat16()
    idx = torch.tensor([[[-1] * 64], [[1] * 64]], dtype=torch.int32)
    out, max_logits, lse = attention.sparse_prefill(q, kv, idx, softmax_scale=0.1)
    assert float(out[0].abs().max()) == 0.0 and torch.isneginf(max_logits[0]).all() and torch.isposinf(lse[0]).all()
    # 64 copies of one key: lse = score + ln 64, max_logits = score
    score = 0.1 * (q[1].float() @ kv[1, 0].float())
    assert torch.allclose(max_logits[1], score, atol=1e-3)
    assert torch.allclose(lse[1], score + math.log(64), atol=1e-3)
