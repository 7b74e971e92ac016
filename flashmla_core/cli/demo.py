"""`flashmla demo`: one DeepSeek-V3 decode step on the best backend here, checked against the oracle.

Dense: b=4 requests, 128 query heads (absorbed MLA, d_qk 576 / d_v 512), ~1k-token paged bf16
cache (page 64), causal. Sparse: the same requests attending their top-2048 of a 4k-token fp8_v32
cache (DeepSeek-V3.2 style).
"""
from __future__ import annotations

import statistics
import sys
import time


def add_arguments(p):
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--backend", default=None, help="force a backend (default: best available)")
    p.add_argument("--seed", type=int, default=0)


def _step(msg):
    print(f"  ... {msg}", file=sys.stderr, flush=True)


def _time(fn, device, repeats):
    import torch
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _errors(got, want):
    import torch
    got, want = got.double().cpu(), want.double()
    finite = torch.isfinite(want)
    g, w = got[finite], want[finite]
    cos = float(2 * (g * w).sum() / ((g * g).sum() + (w * w).sum())) if g.numel() else 1.0
    return float((g - w).abs().max()) if g.numel() else 0.0, cos


def run(args) -> int:
    import torch

    import flashmla
    from flashmla import attention, kvcache
    from ..testing import compare, oracle

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator().manual_seed(args.seed)
    b, h_q, d_qk, d_v, page = 4, 128, 576, 512, 64
    print(f"flashmla demo: DeepSeek-V3 decode step on {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), torch {torch.__version__}")
    ok = True

    # dense decode over a paged bf16 cache
    _step("building a paged bf16 KV cache (b=4, ~1k tokens each, page 64, shuffled blocks)")
    lens = [1024, 777, 1100, 950]
    blocks = [-(-L // page) for L in lens]
    perm = torch.randperm(sum(blocks), generator=g).int()
    table = torch.zeros(b, max(blocks), dtype=torch.int32)
    used = 0
    for i, n in enumerate(blocks):
        table[i, :n] = perm[used:used + n]
        used += n
    cache = torch.randn(sum(blocks), page, 1, d_qk, generator=g).bfloat16()
    q = torch.randn(b, 1, h_q, d_qk, generator=g).bfloat16()
    seqlens = torch.tensor(lens, dtype=torch.int32)
    args_d = [t.to(device) for t in (q, cache, table, seqlens)]
    how = flashmla.explain("dense_decode", *args_d, causal=True, backend=args.backend)
    if how.chosen is None and args.device is None and device.type != "cpu":
        # a GPU but no installed backend for it (only the core): show the reasons, then run on the CPU
        print(how)
        print(f"no installed backend serves this {device.type} device (see backends/ for GPU packages); "
              "running the demo on the CPU")
        device = torch.device("cpu")
        args_d = [t.to(device) for t in args_d]
        how = flashmla.explain("dense_decode", *args_d, causal=True, backend=args.backend)
    print(f"dense decode  b={b} h_q={h_q} seqlens={lens}: backend {how.chosen!r}")
    if how.chosen is None:
        print(how)
        return 1
    plan = attention.plan_decode(args_d[3], num_q_heads=h_q, backend=how.chosen)
    run_dense = lambda: attention.dense_decode(*args_d, causal=True, plan=plan)  # noqa: E731
    out, lse = run_dense()
    t = _time(run_dense, device, 5)
    _step("checking against the float64 oracle")
    want_out, want_lse = oracle.dense_decode(q, cache, table, seqlens, kv_format="bf16", head_dim_v=d_v,
                                             softmax_scale=d_qk ** -0.5, causal=False, attn_sink=None)
    errs = compare.check_out("out", out, want_out) + compare.check_lse("lse", lse, want_lse)
    err, cos = _errors(out, want_out)
    flops = 2 * h_q * sum(lens) * (d_qk + d_v)
    print(f"  time {t * 1e3:.3f} ms  ({flops / t / 1e12:.3f} TFLOP/s)  max abs err {err:.2e}  cosine {cos:.7f}  "
          f"-> {'OK' if not errs else 'MISMATCH: ' + '; '.join(errs)}")
    ok &= not errs

    # sparse decode over an fp8_v32 cache
    _step("quantizing a 4k-token cache to fp8_v32 (656 B/token) and picking top-2048 indices")
    topk, tokens = 2048, 4096
    sparse_cache = kvcache.quantize(torch.randn(tokens // page, page, 1, d_qk, generator=g).bfloat16())
    indices = torch.stack([torch.randperm(tokens, generator=g)[:topk] for _ in range(b)]).int().view(b, 1, topk)
    args_s = [t.to(device) for t in (q, sparse_cache, indices)]
    how = flashmla.explain("sparse_decode", *args_s, backend=args.backend)
    print(f"sparse decode b={b} h_q={h_q} topk={topk} kv_format=fp8_v32: backend {how.chosen!r}")
    if how.chosen is None:
        print(how)
        return 1
    run_sparse = lambda: attention.sparse_decode(*args_s, backend=how.chosen)  # noqa: E731
    out, lse = run_sparse()
    t = _time(run_sparse, device, 5)
    _step("checking against the float64 oracle (dequantized cache)")
    want_out, want_lse = oracle.sparse_decode(q, sparse_cache, indices, kv_format="fp8_v32", head_dim_v=d_v,
                                              softmax_scale=d_qk ** -0.5, topk_length=None, attn_sink=None)
    errs = compare.check_out("out", out, want_out) + compare.check_lse("lse", lse, want_lse)
    err, cos = _errors(out, want_out)
    flops = 2 * b * topk * h_q * (d_qk + d_v)
    print(f"  time {t * 1e3:.3f} ms  ({flops / t / 1e12:.3f} TFLOP/s)  max abs err {err:.2e}  cosine {cos:.7f}  "
          f"-> {'OK' if not errs else 'MISMATCH: ' + '; '.join(errs)}")
    ok &= not errs
    print("demo " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1
