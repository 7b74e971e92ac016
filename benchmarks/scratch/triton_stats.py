import sys, torch
import flashmla_triton.ops as ops, flashmla_triton.kernels as K
from flashmla_core.bench import workloads
from flashmla_core.bench.runner import _call
w = workloads.select([sys.argv[1]])[0]
fn, _ = _call(w, workloads.make_inputs(w, "cuda"), "triton")
fn(); torch.cuda.synchronize()
for dev, cache in K._mla_fwd_kernel.device_caches.items():
    for key, ck in cache[0].items():
        print("regs", ck.n_regs, "spills", ck.n_spills, "smem", ck.metadata.shared, "warps", ck.metadata.num_warps)
        ttgir = ck.asm["ttgir"]
        print("local_alloc", ttgir.count("local_alloc"), "warp_group_dot", ttgir.count("warp_group_dot"),
              "async_copy", ttgir.count("async_copy_global_to_local"), "wait", ttgir.count("warp_group_dot_wait"))
        import re
        for line in ttgir.splitlines():
            if "warp_group_dot " in line or "warp_group_dot_wait" in line:
                print("   ", line.strip()[:200])
