"""Smoke tests a vendor keeps next to its backend. The real check is the conformance kit:

    flashmla conformance --backend vendor_template
    pytest --pyargs flashmla_core.testing --flashmla-backend vendor_template

These tests only make sure the package is wired up (entry point, selection) and agrees with the
core's reference backend on a few hand-picked cases, including the edge cases of the contract.
"""
import math

import pytest
import torch

import flashmla
from flashmla import attention

NAME = "vendor_template"


def _problem(b=3, s_q=2, h_q=16, h_kv=1, d_qk=576, page=16, max_len=100, dtype=torch.bfloat16, seed=0,
             longest=False):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, max_len + 1, (b,), generator=g, dtype=torch.int32)
    lens[0] = 0                                                    # an empty request
    if longest:
        lens[-1] = max_len
    max_blocks = max(1, math.ceil(max_len / page)) + 2
    num_blocks = b * max_blocks + 3
    q = torch.randn(b, s_q, h_q, d_qk, generator=g).to(dtype)
    kv = torch.full((num_blocks, page, h_kv, d_qk), float("nan"), dtype=dtype)   # poison everything
    perm = torch.randperm(num_blocks, generator=g)[: b * max_blocks].view(b, max_blocks).to(torch.int32)
    block_table = torch.full((b, max_blocks), -12345, dtype=torch.int32)         # garbage past the used blocks
    for i in range(b):
        L = int(lens[i])
        used = math.ceil(L / page)
        block_table[i, :used] = perm[i, :used]
        for t in range(L):                                        # write only the attended tokens
            kv[perm[i, t // page], t % page] = torch.randn(h_kv, d_qk, generator=g).to(dtype)
    return q, kv, block_table, lens


def test_registered_and_selected_on_cpu():
    names = {b["name"]: b for b in flashmla.backends()}
    assert names[NAME]["status"] == "available", names[NAME]
    assert names[NAME]["ops"] == ["dense_decode"]
    q, kv, bt, lens = _problem()
    assert flashmla.explain("dense_decode", q, kv, bt, lens).chosen == NAME


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("h_q,h_kv,d_qk,dtype", [(16, 1, 576, torch.bfloat16), (8, 2, 512, torch.float16)])
@pytest.mark.parametrize("sink", [None, "inf-mix"])
def test_matches_reference(causal, h_q, h_kv, d_qk, dtype, sink):
    q, kv, bt, lens = _problem(h_q=h_q, h_kv=h_kv, d_qk=d_qk, dtype=dtype)
    attn_sink = None
    if sink:
        attn_sink = torch.randn(h_q)
        attn_sink[0], attn_sink[1] = float("inf"), float("-inf")
    kw = dict(causal=causal, attn_sink=attn_sink)
    out, lse = attention.dense_decode(q, kv, bt, lens, backend=NAME, **kw)
    ref_out, ref_lse = attention.dense_decode(q, kv, bt, lens, backend="reference", **kw)
    assert out.dtype == q.dtype and out.is_contiguous() and lse.dtype == torch.float32 and lse.is_contiguous()
    assert not out.isnan().any() and not lse.isnan().any()
    torch.testing.assert_close(out.float(), ref_out.float(), atol=1e-3, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-4)
    assert torch.isposinf(lse[0]).all() and (out[0] == 0).all()          # the empty request


def test_noncontiguous_q_and_batch_invariance():
    q, kv, bt, lens = _problem(b=4, seed=3)
    q_nc = q.transpose(1, 2).contiguous().transpose(1, 2)                 # same values, other strides
    out, lse = attention.dense_decode(q_nc, kv, bt, lens, backend=NAME)
    one, one_lse = attention.dense_decode(q[2:3], kv, bt[2:3], lens[2:3], backend=NAME)
    assert torch.equal(out[2:3], one) and torch.equal(lse[2:3], one_lse)  # bitwise: declared deterministic


def test_plan_roundtrip():
    q, kv, bt, lens = _problem()
    plan = attention.plan_decode(lens, num_q_heads=q.shape[2], num_kv_heads=kv.shape[2], q_len=q.shape[1],
                                 backend=NAME)
    assert plan.backend == NAME
    assert plan.schedule.dtype == torch.int32 and plan.schedule.shape[1] == 8
    assert plan.num_splits.tolist() == list(range(q.shape[0] + 1))
    out, _ = attention.dense_decode(q, kv, bt, lens, plan=plan)
    ref, _ = attention.dense_decode(q, kv, bt, lens, backend=NAME)
    assert torch.equal(out, ref)


def test_declines_what_it_does_not_declare():
    q = torch.randn(1, 1, 16, 576, dtype=torch.bfloat16)
    packed = flashmla.kvcache.quantize(torch.randn(2, 16, 1, 576, dtype=torch.bfloat16))
    bt = torch.zeros(1, 2, dtype=torch.int32)
    lens = torch.tensor([5], dtype=torch.int32)
    with pytest.raises(flashmla.NoBackendError, match="kv_format 'fp8_v32' not in"):
        attention.dense_decode(q, packed, bt, lens, kv_format="fp8_v32", backend=NAME)
    # Without naming it, the fp8 request falls through to the reference backend.
    assert flashmla.explain("dense_decode", q, packed, bt, lens, kv_format="fp8_v32").chosen == "reference"
