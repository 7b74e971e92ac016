"""A/B: the committed Triton kernel (scratch/kernels_old.py) vs the working tree's, one process."""
import sys, torch
sys.path.insert(0, "benchmarks/scratch")
import kernels_old, kernels_256
import flashmla_triton.ops as ops, flashmla_triton.kernels as knew
from flashmla_core.bench import workloads
from flashmla_core.bench.runner import _call, time_call
for rid in sys.argv[1].split(","):
    w = workloads.select([rid])[0]
    inputs = workloads.make_inputs(w, "cuda")
    outs = {}
    for name, mod in (("c128", kernels_old), ("c256", kernels_256), ("c128", kernels_old), ("c256", kernels_256)):
        ops.kernels = mod
        fn, _ = _call(w, inputs, "triton")
        out = fn()
        out = (out[0] if isinstance(out, (tuple, list)) else out).float()
        ref = outs.setdefault("ref", out)
        ms = time_call(fn, torch.device("cuda"))[0]
        print(f"{rid:22s} {name} {ms*1000:8.1f} us  maxdiff-vs-first {(out - ref).abs().max().item():.2e}", flush=True)
