"""Tests of flashmla-triton beyond the conformance kit (which is the real check):

    pytest --pyargs flashmla_core.testing --flashmla-backend triton     # the kit
    pytest backends/triton/tests                                        # these

Without a GPU they run the kernels under the Triton interpreter (conftest.py sets TRITON_INTERPRET=1);
on a GPU they run compiled. Shapes are tiny so the interpreter stays fast.
"""
from __future__ import annotations

import os

import pytest
import torch

import flashmla
from flashmla import attention, kvcache
from flashmla_core.testing import compare, inputs, oracle

triton = pytest.importorskip("triton")

NAME = "triton"
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"


def _unavailable() -> str:
    rec = {b["name"]: b for b in flashmla.backends()}.get(NAME)
    if rec is None:
        return "flashmla-triton is not installed"
    return "" if rec["status"] == "available" else "; ".join(rec["reasons"]) or rec["status"]


UNAVAILABLE = _unavailable()
needs_kernels = pytest.mark.skipif(bool(UNAVAILABLE), reason=f"backend 'triton' unavailable here: {UNAVAILABLE}")
needs_gpu = pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason="needs a GPU (not the interpreter)")


def _check(got, want):
    """want: the oracle's outputs followed by its magnitude of out (return_magnitude=True), compared
    with the conformance kit's tolerances."""
    errs = []
    names = ("out", "lse") if len(got) == 2 else ("out", "max_logits", "lse")
    for name, g, w in zip(names, got, want):
        if name == "out":
            errs += compare.check_out(name, g, w, magnitude=want[-1])
        else:
            errs += compare.check_lse(name, g, w)
    assert not errs, errs


def _paged(b, s_q, h_q, h_kv, d_qk, page, lens, dtype=torch.bfloat16, fp8=False, seed=0):
    """q, cache (NaN in every slot no request attends), block table (garbage past the used blocks), lens."""
    g = torch.Generator().manual_seed(seed)
    table, dead = inputs.paged_layout(lens, page, g, spare_blocks=2, spare_columns=2)
    vals = torch.randn(dead.shape[0], page, h_kv, d_qk, generator=g).to(dtype)
    if fp8:
        cache = kvcache.quantize(vals)
        cache[dead] = 0xFF                       # NaN in e4m3, float32 and bf16
    else:
        cache = vals.clone()
        cache[dead] = float("nan")
    q = torch.randn(b, s_q, h_q, d_qk, generator=g).to(dtype)
    dev = DEVICE
    return q.to(dev), cache.to(dev), table.to(dev), torch.tensor(lens, dtype=torch.int32, device=dev)


def _cpu(x):
    return x.cpu() if isinstance(x, torch.Tensor) else x


# ---- registration and declarations (no kernels run) ----
def test_registered_through_the_entry_point():
    rec = {b["name"]: b for b in flashmla.backends()}[NAME]
    assert rec["distribution"] == "flashmla-triton"
    assert rec["ops"] == ["dense_decode", "sparse_decode", "sparse_prefill"]
    if INTERPRETED or torch.cuda.is_available():
        # under the interpreter, an environment it cannot run in is reported as a reason (numpy >= 2.4)
        assert rec["status"] == "available" or "interpreter" in " ".join(rec["reasons"]), rec
    else:
        assert rec["status"] == "unavailable" and rec["reasons"], rec


def test_declarations(monkeypatch):
    from flashmla_triton.backend import VERIFIED_ARCHS, TritonBackend
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("FLASHMLA_TRITON_ARCHS", raising=False)
    be = TritonBackend()
    assert be.priority == 50 and be.api_version == 1 and be.auto_select_device_types == ("cuda",)
    assert be.capabilities()["dense_decode"].archs == VERIFIED_ARCHS
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert TritonBackend().capabilities()["sparse_prefill"].archs == VERIFIED_ARCHS + ("cpu",)
    assert TritonBackend().auto_select_device_types == ("cuda",)       # never a silent slow path on CPU
    monkeypatch.setenv("FLASHMLA_TRITON_ARCHS", "sm_80+, gfx942")
    assert TritonBackend().capabilities()["dense_decode"].archs == ("sm_80+", "gfx942", "cpu")


def test_unavailable_without_gpu_or_interpreter(monkeypatch):
    from flashmla_triton.backend import TritonBackend
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    be = TritonBackend()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reasons = be.is_available()
    assert len(reasons) == 1 and "TRITON_INTERPRET" in reasons[0]


def test_unavailable_without_triton(monkeypatch):
    import sys

    import flashmla_triton
    from flashmla_triton.backend import TritonBackend
    monkeypatch.setitem(sys.modules, "triton", None)                 # "import triton" raises ImportError
    monkeypatch.setitem(sys.modules, "flashmla_triton.kernels", None)
    monkeypatch.delattr(flashmla_triton, "kernels", raising=False)
    reasons = TritonBackend().is_available()
    assert len(reasons) == 1 and reasons[0].startswith("triton kernels failed to import: ModuleNotFoundError")


def test_fp8_needs_bf16_queries():
    from flashmla_core import Problem
    from flashmla_triton import backend
    p = Problem("dense_decode", "cuda", "sm_90", torch.float16, 576, 512, 16, 1, s_q=1, page_size=64,
                kv_format="fp8_v32")
    assert any("bfloat16" in r for r in backend.not_supported_reasons("dense_decode", p))


# ---- plans (host sizing, device contents) ----
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("lens", [[8192] * 8, [150, 0, 35, 1], [0, 0, 0], [40960] + [100] * 15, [1]])
def test_dense_plan_covers_every_token_once(lens, deterministic):
    from flashmla_triton import ops
    L = torch.tensor(lens, dtype=torch.int32)
    sched, cum = ops.plan_dense(torch.device("cpu"), len(lens), 16, 1, deterministic, L)
    assert sched.dtype == torch.int32 and sched.shape[1] == 8 and cum.shape == (len(lens) + 1,)
    assert sched.shape[0] == ops.dense_parts(torch.device("cpu"), len(lens), 16, 1, deterministic)[0]
    n = (cum[1:] - cum[:-1]).tolist()
    for i, Li in enumerate(lens):
        rows = sched[cum[i]:cum[i + 1]]
        assert (rows[:, 0] == i).all() and (rows[:, 4] == n[i]).all() and (rows[:, 3] == torch.arange(cum[i], cum[i + 1])).all()
        assert rows[0, 1] == 0 and rows[-1, 2] == Li and (rows[1:, 1] == rows[:-1, 2]).all()   # contiguous cover
        assert ((rows[:, 1] % ops.GRANULE) == 0).all()
    assert (sched[int(cum[-1]):, 4] == 0).all()                                             # padding rows


def test_dense_plan_keeps_64_row_requests_whole_once_they_fill_the_sms(monkeypatch):
    from flashmla_triton import ops
    cpu = torch.device("cpu")
    sms = 132  # an H100: b = 128 requests fill 97 % of it, as in targets.md's tp2-h64-8k
    monkeypatch.setattr(ops, "sm_count", lambda device: sms)
    few, many = int(ops.WHOLE_FILL * sms) - 1, 128
    # too few requests to fill the SMs: equal requests are cut in several splits
    _, cum = ops.plan_dense(cpu, few, 64, 1, False, torch.full((few,), 8192, dtype=torch.int32))
    assert int(cum[-1]) > few
    # one per SM: one split each; a request longer than the mean is still cut
    lens = torch.full((many,), 8192, dtype=torch.int32)
    _, cum = ops.plan_dense(cpu, many, 64, 1, False, lens)
    assert int(cum[-1]) == many
    lens[0] = 8192 * 4
    _, cum = ops.plan_dense(cpu, many, 64, 1, False, lens)
    assert int(cum[1] - cum[0]) > 1 and int(cum[-1] - cum[1]) == many - 1
    # 16-row tiles (two programs per SM) keep splitting
    _, cum = ops.plan_dense(cpu, many, 16, 1, False, torch.full((many,), 8192, dtype=torch.int32))
    assert int(cum[-1]) > many


def test_deterministic_plan_is_batch_invariant():
    from flashmla_triton import ops
    lens = torch.tensor([5000, 17, 300], dtype=torch.int32)
    sched, cum = ops.plan_dense(torch.device("cpu"), 3, 16, 1, True, lens)
    alone, cum1 = ops.plan_dense(torch.device("cpu"), 1, 16, 1, True, lens[2:])
    mine = sched[cum[2]:cum[3]]
    assert torch.equal(mine[:, 1:3], alone[:int(cum1[1]), 1:3])


def test_sparse_plan_shape_encodes_splits():
    from flashmla_triton import ops
    for b, rows, topk in ((1, 16, 2048), (64, 64, 2048), (128, 256, 2048), (3, 16, 40)):
        s = ops.sparse_splits(torch.device("cpu"), b, rows, topk, False)
        sched, cum = ops.plan_sparse(torch.device("cpu"), b, rows, topk, False)
        assert sched.shape == (b * s, 8) and cum.tolist() == [i * s for i in range(b + 1)]
        assert sched[:, 3].max() <= topk
    assert ops.sparse_splits(torch.device("cpu"), 1, 16, 2048, True) == 1


# ---- kernels vs the float64 oracle (interpreter on CPU, compiled on GPU) ----
@needs_kernels
@pytest.mark.parametrize("page", [1, 7, 64])
@pytest.mark.parametrize("h_q,h_kv,s_q,d_qk,dtype", [(16, 1, 1, 576, torch.bfloat16), (8, 2, 2, 512, torch.float16),
                                                      (48, 1, 2, 576, torch.bfloat16)])
def test_dense_decode(page, h_q, h_kv, s_q, d_qk, dtype):
    q, cache, table, lens = _paged(3, s_q, h_q, h_kv, d_qk, page, [70, 0, 2], dtype=dtype)
    sink = torch.randn(h_q, device=DEVICE)
    sink[0], sink[1] = float("inf"), float("-inf")
    kw = dict(head_dim_v=512, softmax_scale=d_qk ** -0.55, causal=s_q > 1, attn_sink=sink)
    got = attention.dense_decode(q, cache, table, lens, backend=NAME, **kw)
    want = oracle.dense_decode(*map(_cpu, (q, cache, table, lens)), kv_format=None, **{**kw, "attn_sink": sink.cpu()},
                               return_magnitude=True)
    _check(got, want)
    assert torch.isposinf(got[1][1]).all() and (got[0][1] == 0).all()            # the empty request


@needs_kernels
@pytest.mark.parametrize("tma", ["1", "0"])
@pytest.mark.parametrize("page,d_qk,dtype,padded", [(64, 576, torch.bfloat16, False), (128, 512, torch.float16, False),
                                                    (64, 576, torch.bfloat16, True)])
def test_dense_decode_tma_and_gather_paths(monkeypatch, tma, page, d_qk, dtype, padded):
    """Pages holding whole key tiles: full tiles by TMA, the last partial tile by the masked gather (the
    NaN past a request's end must not leak); FLASHMLA_TRITON_TMA=0, or a cache whose pages are not
    uniformly strided (padded), gathers every tile. 64 query rows per KV head: the TMA configuration."""
    from flashmla_triton import ops
    monkeypatch.setenv("FLASHMLA_TRITON_TMA", tma)
    made = []
    real = ops._kv_descriptors
    monkeypatch.setattr(ops, "_kv_descriptors", lambda *a: made.append(real(*a)) or made[-1])
    q, cache, table, lens = _paged(3, 2, 64, 1, d_qk, page, [300, 64, 129], dtype=dtype)
    if padded:                        # every page followed by 8 unused rows: block stride != page_size * row stride
        big = torch.full((cache.shape[0], page + 8, 1, d_qk), float("nan"), dtype=dtype, device=cache.device)
        big[:, :page] = cache
        cache = big[:, :page]
    kw = dict(head_dim_v=512, softmax_scale=d_qk ** -0.5, causal=True, attn_sink=None)
    got = attention.dense_decode(q, cache, table, lens, backend=NAME, **kw)
    want = oracle.dense_decode(*map(_cpu, (q, cache, table, lens)), kv_format=None, **kw, return_magnitude=True)
    _check(got, want)
    assert made and all((d is not None) == (tma == "1" and not padded) for d in made), made


@needs_kernels
def test_dense_decode_fp8_cache_and_plan_reuse():
    q, cache, table, lens = _paged(2, 1, 16, 1, 576, 16, [40, 9], fp8=True)
    plan = attention.plan_decode(lens, num_q_heads=16, backend=NAME)
    got = attention.dense_decode(q, cache, table, lens, kv_format="fp8_v32", plan=plan)
    again = attention.dense_decode(q, cache, table, lens, kv_format="fp8_v32", plan=plan)
    want = oracle.dense_decode(*map(_cpu, (q, cache, table, lens)), kv_format="fp8_v32", head_dim_v=512,
                               softmax_scale=576 ** -0.5, causal=False, attn_sink=None, return_magnitude=True)
    _check(got, want)
    assert torch.equal(got[0], again[0]) and torch.equal(got[1], again[1])


@needs_kernels
@pytest.mark.parametrize("fmt", ["fp8_v32", "bf16"])
def test_sparse_decode_invalid_indices_and_topk_length(fmt):
    g = torch.Generator().manual_seed(1)
    page, nb, topk = 16, 12, 48
    vals = torch.randn(nb, page, 1, 576, generator=g).to(torch.bfloat16)
    cache = kvcache.quantize(vals) if fmt == "fp8_v32" else vals
    cap = nb * page
    idx = torch.randint(0, cap, (2, 2, topk), generator=g, dtype=torch.int32)
    idx[0, 0, :5] = torch.tensor([-2 ** 31, -1, cap, 2 ** 31 - 1, -7], dtype=torch.int32)
    idx[1, 1] = -1                                                          # a query with no key at all
    topk_len = torch.tensor([topk, 20], dtype=torch.int32)
    q = torch.randn(2, 2, 16, 576, generator=g).to(torch.bfloat16)
    args = [x.to(DEVICE) for x in (q, cache, idx)]
    got = attention.sparse_decode(*args, kv_format=fmt, topk_length=topk_len.to(DEVICE), backend=NAME)
    want = oracle.sparse_decode(q, cache, idx, kv_format=fmt, head_dim_v=512, softmax_scale=576 ** -0.5,
                                topk_length=topk_len, attn_sink=None, return_magnitude=True)
    _check(got, want)
    assert torch.isposinf(got[1][1, :, 1]).all()


@needs_kernels
def test_sparse_prefill_gqa_and_max_logits():
    g = torch.Generator().manual_seed(2)
    s_q, s_kv, h_q, h_kv, topk = 5, 40, 8, 2, 24
    q = torch.randn(s_q, h_q, 576, generator=g).to(torch.bfloat16)
    kv = torch.randn(s_kv, h_kv, 576, generator=g).to(torch.bfloat16)
    idx = torch.randint(-3, s_kv + 3, (s_q, h_kv, topk), generator=g, dtype=torch.int32)
    idx[0] = -1
    sink = torch.randn(h_q)
    kw = dict(softmax_scale=0.04, head_dim_v=512, topk_length=None)
    got = attention.sparse_prefill(q.to(DEVICE), kv.to(DEVICE), idx.to(DEVICE), attn_sink=sink.to(DEVICE),
                                   backend=NAME, **kw)
    want = oracle.sparse_prefill(q, kv, idx, attn_sink=sink, return_magnitude=True, **kw)
    _check(got, want)
    assert torch.isneginf(got[1][0]).all() and torch.isposinf(got[2][0]).all()


# ---- GPU only ----
@needs_gpu
def test_cuda_graph_capture_with_plan():
    q, cache, table, lens = _paged(4, 1, 16, 1, 576, 64, [300, 1000, 0, 64])
    plan = attention.plan_decode(lens, num_q_heads=16, backend=NAME)
    attention.dense_decode(q, cache, table, lens, plan=plan)                  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = attention.dense_decode(q, cache, table, lens, plan=plan)
    graph.replay()
    torch.cuda.synchronize()
    want = attention.dense_decode(q, cache, table, lens, plan=plan)
    assert torch.equal(out, want[0]) and torch.equal(lse, want[1])


@needs_gpu
def test_plan_makes_no_host_sync():
    lens = torch.tensor([5000, 17, 300, 0], dtype=torch.int32, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        attention.plan_decode(lens, num_q_heads=16, backend=NAME)
        attention.plan_decode(lens, num_q_heads=16, backend=NAME, deterministic=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_gpu
def test_selected_by_default_on_gpu():
    q, cache, table, lens = _paged(1, 1, 16, 1, 576, 64, [10])
    assert flashmla.explain("dense_decode", q, cache, table, lens).chosen in (NAME, "sm90", "sm100")
