import sys, torch
import flashmla_triton.ops as ops
from flashmla_core.bench import workloads
from flashmla_core.bench.runner import _call, time_call
variants = [("page_tile+whole", dict(), 0.9), ("page_tile", dict(), 99.0), ("neither", dict(page_tile=False), 99.0),
            ("page_tile+whole", dict(), 0.9)]
for rid in sys.argv[1].split(","):
    w = workloads.select([rid])[0]
    inputs = workloads.make_inputs(w, "cuda")
    for name, ov, fill in variants:
        ops.OVERRIDE.clear(); ops.OVERRIDE.update(ov); ops.WHOLE_FILL = fill
        fn, _ = _call(w, inputs, "triton")
        fn()
        ms = time_call(fn, torch.device("cuda"))[0]
        print(f"{rid:18s} {name:16s} {ms*1000:8.1f} us", flush=True)
