"""A/B of flashmla-triton kernel variants on bench rows, one process (device)."""
import sys, torch
import flashmla_triton.ops as ops
from flashmla_core.bench import workloads
from flashmla_core.bench.runner import _call, time_call
rows = sys.argv[1].split(",")
variants = [dict(), dict(page_tile=True), dict(lazy_rescale=True), dict(page_tile=True, lazy_rescale=True)]
for rid in rows:
    w = workloads.select([rid])[0]
    inputs = workloads.make_inputs(w, "cuda")
    ref = None
    for v in variants:
        ops.OVERRIDE.clear(); ops.OVERRIDE.update(v)
        fn, _ = _call(w, inputs, "triton")
        out = fn()
        out = out[0] if isinstance(out, (tuple, list)) else out
        if ref is None: ref = out.float()
        err = (out.float() - ref).abs().max().item()
        ms = time_call(fn, torch.device("cuda"))[0]
        print(f"{rid:18s} {str(v):45s} {ms*1000:8.1f} us  maxdiff {err:.2e}", flush=True)
