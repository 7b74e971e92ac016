"""A/B of flashmla-triton variants in one process (GPU only): the same inputs and plan, each variant
timed in turn, twice, so machine-to-machine spread does not enter the comparison.

    python backends/triton/tools/ab.py --rows tp2-h64-8k,h128-8k \\
        --variants '[{}, {"env": {"FLASHMLA_TRITON_TMA": "0"}}, {"nope_w": 128}]' [--graph] [--dump DIR]

A variant is a dict of `ops.OVERRIDE` keys (BLOCK_N, num_warps, num_stages, p_mode, tma, nope_w, ...)
plus "env": environment variables set around its calls. Dense decode rows only. The whole public call
is timed with do_bench (L2 flushed, median); --graph adds the time of a CUDA-graph replay of the call
(GPU time without the host). --dump DIR writes the TTGIR and PTX of every compiled variant.
"""
from __future__ import annotations

import argparse
import json
import os

import torch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", required=True)
    ap.add_argument("--variants", default="[{}]")
    ap.add_argument("--graph", action="store_true")
    ap.add_argument("--dump", default=None)
    args = ap.parse_args(argv)
    from triton.testing import do_bench

    from flashmla import attention
    from flashmla_core.bench import workloads as wl
    from flashmla_triton import kernels, ops

    variants = json.loads(args.variants)
    for w in wl.select(args.rows.split(","), None):
        assert w.op == "dense_decode", w.id
        inp = wl.make_inputs(w, "cuda")
        plan = attention.plan_decode(inp["cache_seqlens"], num_q_heads=w.h_q, num_kv_heads=w.h_kv, q_len=w.s_q,
                                     backend="triton")
        a = (inp["q"], inp["kv_cache"], inp["block_table"], inp["cache_seqlens"])
        ref = None
        for _ in range(2):
            for vi, v in enumerate(variants):
                ops.OVERRIDE.clear()
                ops.OVERRIDE.update({k: x for k, x in v.items() if k != "env"})
                env = v.get("env", {})
                saved = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    fn = lambda: attention.dense_decode(*a, causal=True, plan=plan)  # noqa: E731
                    out = fn()[0]
                    torch.cuda.synchronize()
                    ref = out if ref is None else ref
                    diff = float((out.float() - ref.float()).abs().max())
                    line = f"{w.id:18s} v{vi} {json.dumps(v):56s} {do_bench(fn, warmup=10, rep=100) * 1e3:8.1f} us"
                    if args.graph:
                        g = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(g):
                            fn()
                        line += f"  graph {do_bench(g.replay, warmup=10, rep=100) * 1e3:8.1f} us"
                    print(f"{line}  diff={diff:.1e}", flush=True)
                finally:
                    for k, x in saved.items():
                        os.environ.pop(k) if x is None else os.environ.__setitem__(k, x)
        del inp
        torch.cuda.empty_cache()
    ops.OVERRIDE.clear()
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        n = 0
        for cache in kernels._mla_fwd_kernel.device_caches.values():
            for key, k in cache[0].items():
                n += 1
                with open(os.path.join(args.dump, f"k{n}.ttgir"), "w") as f:
                    f.write(f"// {key}\n// shared {k.metadata.shared} B, spills {k.n_spills}\n{k.asm['ttgir']}")
                with open(os.path.join(args.dump, f"k{n}.ptx"), "w") as f:
                    f.write(k.asm["ptx"])
                print(f"dumped k{n}: shared {k.metadata.shared} B, {k.n_regs} registers, {k.n_spills} spilled")


if __name__ == "__main__":
    main()
