"""temporary A/B: WG1 dequantizing a quarter of each fp8 tile (default) vs the producer alone (env 0)"""
import os, sys
import torch
from flashmla_core.bench import workloads
from flashmla_core.bench.runner import _call, time_call
rows = sys.argv[1].split(",")
fns = {}
for r in rows:
    w = workloads.select([r])[0]
    fns[r] = _call(w, workloads.make_inputs(w, "cuda"), "sm90")[0]
for rep in range(2):
    for r in rows:
        res = []
        for env in ["1", "0"]:
            os.environ["FLASHMLA_SM90_FP8_SHARED_DEQUANT"] = env
            res.append(time_call(fns[r], torch.device("cuda"))[0] * 1000)
        print(f"{r:26s} shared {res[0]:8.1f} us  producer-only {res[1]:8.1f} us  ratio {res[0]/res[1]:.3f}", flush=True)
