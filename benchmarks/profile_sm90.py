"""Where sm90 decode time goes (run on the GPU machine):

    python benchmarks/profile_sm90.py overhead       # Python/launch overhead vs GPU time, small batch
    python benchmarks/profile_sm90.py once ROW_ID    # one call of a bench workload (for ncu -k ... -c 1)
    python benchmarks/profile_sm90.py plans ROW_ID... [--parts=N,N]  # a dense row under other split plans
    python benchmarks/profile_sm90.py kernels ROW_ID...  # GPU time per kernel of a call (torch profiler, L2 warm)
"""
import sys
import time

import torch

from flashmla import attention
from flashmla_core.bench import workloads


def once(row_id):
    from flashmla_core.bench.runner import _call
    w = workloads.select([row_id])[0]
    fn, _ = _call(w, workloads.make_inputs(w, "cuda"), "sm90")
    for _ in range(3):
        fn()
    torch.cuda.synchronize()


def kernels(row_ids):
    """Average GPU time of every kernel one call launches (plan outside), from the torch profiler over
    20 back-to-back calls: where a call's time goes between the attention kernel and the combine."""
    from torch.profiler import ProfilerActivity, profile

    from flashmla_core.bench.runner import _call
    for row_id in row_ids:
        w = workloads.select([row_id])[0]
        fn, _ = _call(w, workloads.make_inputs(w, "cuda"), "sm90")
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
        for e in prof.key_averages():
            if e.device_time_total > 0:
                print(f"{row_id:18s} {e.key[:60]:60s} x{e.count:<3d} {e.device_time_total / e.count:8.2f} us")


def plans(row_ids, part_counts=()):
    """Times dense decode rows with the default plan, one part per request (no split, no combine)
    and other part counts (half and twice the default, plus `part_counts`), to check the planner's choice."""
    import flashmla_sm90
    from flashmla_core.bench.runner import time_call
    ext = flashmla_sm90.backend.ext
    for row_id in row_ids:
        w = workloads.select([row_id])[0]
        inp = workloads.make_inputs(w, "cuda")
        q, cache, table, seqlens = inp["q"], inp["kv_cache"], inp["block_table"], inp["cache_seqlens"]
        rows = w.s_q * w.h_q // w.h_kv
        default = ext.default_num_parts(q, w.h_kv, rows)
        variants = {f"default ({default} parts)": ext.plan(seqlens, default, False),
                    "one part per request": ext.plan(seqlens, 0, True)}
        for parts in (default // 2, default * 2, *part_counts):
            variants[f"{parts} parts"] = ext.plan(seqlens, parts, False)
        for name, (schedule, num_splits) in variants.items():
            fn = lambda: ext.dense_decode(q, cache, table, seqlens, schedule, num_splits,  # noqa: E731
                                          w.d_qk ** -0.5, w.causal, None)
            ms, _, _ = time_call(fn, torch.device("cuda"))
            print(f"{row_id:18s} {name:24s} {ms * 1e3:8.1f} us")


def overhead():
    q, cache, table, seqlens = _small()
    plan = attention.plan_decode(seqlens, num_q_heads=16)
    import flashmla_sm90
    ext = flashmla_sm90.backend.ext
    calls = {
        "api (validate + select + kernels)": lambda: attention.dense_decode(q, cache, table, seqlens, causal=True,
                                                                             plan=plan),
        "extension call only": lambda: ext.dense_decode(q, cache, table, seqlens, plan.schedule, plan.num_splits,
                                                        576 ** -0.5, False, None),
    }
    for name, fn in calls.items():
        for _ in range(50):
            fn()
        torch.cuda.synchronize()
        n = 500
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        cpu = (time.perf_counter() - t0) / n
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) / n
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize()
        print(f"{name:40s} cpu issue {cpu * 1e6:7.1f} us/call   wall {wall * 1e6:7.1f} us   "
              f"gpu back-to-back {start.elapsed_time(end) / n * 1e3:7.1f} us")
    # GPU-only time with a CUDA graph (no CPU in the loop)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        attention.dense_decode(q, cache, table, seqlens, causal=True, plan=plan)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(200):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    print(f"{'graph replay (GPU time of main+combine)':40s} {start.elapsed_time(end) / 200 * 1e3:7.1f} us")


def _small():
    g = torch.Generator(device="cuda").manual_seed(0)
    cache = torch.randn(40, 64, 1, 576, device="cuda", generator=g).bfloat16()
    table = torch.randperm(40, device="cuda", generator=g).int()[:32].view(1, 32)
    q = torch.randn(1, 1, 16, 576, device="cuda", generator=g).bfloat16()
    return q, cache, table, torch.tensor([2048], dtype=torch.int32, device="cuda")


if __name__ == "__main__":
    if sys.argv[1] == "overhead":
        overhead()
    elif sys.argv[1] == "plans":
        counts = [int(n) for a in sys.argv[2:] if a.startswith("--parts=") for n in a[len("--parts="):].split(",")]
        plans([a for a in sys.argv[2:] if not a.startswith("--")], counts)
    elif sys.argv[1] == "kernels":
        kernels(sys.argv[2:])
    else:
        once(sys.argv[2])
