"""FlashMLA (the anchor) and flashmla's sm90 backend on the same inputs: `flashmla bench`'s workloads,
inputs and timing (do_bench median, L2 flushed), the two alternating pass by pass in one process.

    python3 benchmarks/anchor/compare.py h128-8k,v32-h64-topk2048 [--passes 3] [--checkout .anchor/FlashMLA]
    python3 benchmarks/anchor/compare.py h128-8k --once anchor|ours   # one call, for ncu -k ... -c 1
"""
import argparse
import sys

import torch

from flashmla_core.bench import workloads
from flashmla_core.bench.runner import _call, time_call


def anchor_call(flash_mla, w, inp):
    """The timed callable of workload w through FlashMLA's public API (scheduling metadata made on its first call)."""
    if w.op == "sparse_prefill":
        return lambda: flash_mla.flash_mla_sparse_fwd(inp["q"], inp["kv"], inp["indices"], inp["softmax_scale"],
                                                      w.d_v)
    meta, _ = flash_mla.get_mla_metadata()
    if w.op == "dense_decode":
        return lambda: flash_mla.flash_mla_with_kvcache(inp["q"], inp["kv_cache"], inp["block_table"],
                                                        inp["cache_seqlens"], w.d_v, meta, causal=w.causal)
    return lambda: flash_mla.flash_mla_with_kvcache(inp["q"], inp["kv_cache"], None, None, w.d_v, meta,
                                                    is_fp8_kvcache=True, indices=inp["indices"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--checkout", default=".anchor/FlashMLA")
    ap.add_argument("--once", choices=["anchor", "ours"])
    args = ap.parse_args()
    sys.path.insert(0, args.checkout)
    import flash_mla
    dev = torch.device("cuda")
    for row in args.rows.split(","):
        w = workloads.BY_ID[row]
        inp = workloads.make_inputs(w, dev)
        make = {"anchor": lambda: anchor_call(flash_mla, w, inp), "ours": lambda: _call(w, inp, "sm90")[0]}
        if args.once:  # only the profiled side: no plan or metadata launches of the other
            make[args.once]()()
            torch.cuda.synchronize()
            continue
        fns = {name: m() for name, m in make.items()}
        diff = (fns["anchor"]()[0].float() - fns["ours"]()[0].float()).abs().max().item()
        us = {name: [] for name in fns}
        for i in range(args.passes):
            for name in (["anchor", "ours"] if i % 2 == 0 else ["ours", "anchor"]):
                us[name].append(time_call(fns[name], dev)[0] * 1000)
        print(f"{row}: max |out diff| {diff:.3g}; anchor " + " ".join(f"{x:.1f}" for x in us["anchor"]) +
              " us; ours " + " ".join(f"{x:.1f}" for x in us["ours"]) + " us", flush=True)
        del inp, fns
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
