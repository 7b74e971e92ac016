"""Times the public ops on the workloads and turns times into TFLOP/s, GB/s and % of roofline.

What is timed is the whole public call (validation, backend dispatch, main kernel, combine, anything
else it launches), because that is what an engine pays per layer. A decode plan is made once,
outside the timed region, as an engine does once per step.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ..errors import NoBackendError
from . import roofline
from .workloads import Workload, flops, make_inputs, nbytes, roofline_bytes, target_ms

CPU_BUDGET_S = 0.5       # per row on the CPU: a few repeats are enough for a smoke figure
MIN_GPU_RUNS = 100       # targets.md: median of >= 100 timed runs
L2_FLUSH_BYTES = 256 << 20


# ---- timing ----
def _time_cpu(fn: Callable) -> tuple:
    t0 = time.perf_counter()
    fn()                                    # warm-up (first-call dispatch, allocator)
    est = time.perf_counter() - t0
    runs = max(3, min(25, int(CPU_BUDGET_S / max(est, 1e-6))))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, runs, "time.perf_counter, median"


def _events_ms(fn: Callable, n: int, flush: Optional[torch.Tensor]) -> list:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for s, e in zip(starts, ends):
        if flush is not None:
            flush.zero_()                   # evicts the inputs from L2: a decode step never finds them there
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def _time_cuda(fn: Callable) -> tuple:
    fn()
    torch.cuda.synchronize()
    est = statistics.median(_events_ms(fn, 5, None))
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        # do_bench's warmup/rep are milliseconds; stretch rep so slow calls still get >= 100 runs
        # (capped: a 100x-slow reference call must not eat the device budget).
        rep = min(30_000.0, max(200.0, 1.1 * MIN_GPU_RUNS * est))
        ms = do_bench(fn, warmup=25, rep=rep, return_mode="median")
        return float(ms), max(1, int(rep / max(est, 1e-6))), "triton.testing.do_bench (L2 flushed), median"
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device="cuda")
    n = max(MIN_GPU_RUNS, min(1000, int(200.0 / max(est, 1e-6))))
    for _ in range(max(1, min(25, int(25.0 / max(est, 1e-6))))):
        fn()
    ms = statistics.median(_events_ms(fn, n, flush))
    return ms, n, "CUDA events, 256 MB L2 flush before each run, median"


def time_call(fn: Callable, device: torch.device) -> tuple:
    """-> (median ms, timed runs, method)."""
    return _time_cuda(fn) if device.type == "cuda" else _time_cpu(fn)


# ---- one row ----
def _call(w: Workload, inp: dict, backend: Optional[str]):
    """-> (the timed callable, the backend name that serves it). Raises NoBackendError if none can."""
    from flashmla_core import api, introspect
    if w.op == "sparse_prefill":
        args = (inp["q"], inp["kv"], inp["indices"])
        chosen = introspect.explain(w.op, *args, softmax_scale=inp["softmax_scale"], head_dim_v=w.d_v,
                                    backend=backend)
        if chosen.chosen is None:
            raise NoBackendError(chosen.request, dict(chosen.trace))
        return (lambda: api.sparse_prefill(*args, softmax_scale=inp["softmax_scale"], head_dim_v=w.d_v,
                                           backend=backend)), chosen.chosen
    plan = api.plan_decode(inp["cache_seqlens"], num_q_heads=w.h_q, num_kv_heads=w.h_kv, q_len=w.s_q,
                           topk=w.topk if w.op == "sparse_decode" else None, dtype=inp["q"].dtype,
                           kv_format=w.kv_format, backend=backend)
    if w.op == "dense_decode":
        args = (inp["q"], inp["kv_cache"], inp["block_table"], inp["cache_seqlens"])
        return (lambda: api.dense_decode(*args, head_dim_v=w.d_v, causal=w.causal, kv_format=w.kv_format,
                                         plan=plan)), plan.backend
    args = (inp["q"], inp["kv_cache"], inp["indices"])
    return (lambda: api.sparse_decode(*args, kv_format=w.kv_format, head_dim_v=w.d_v, plan=plan)), plan.backend


def _first_reason(exc: NoBackendError) -> str:
    for name, reasons in exc.reasons.items():
        if reasons:
            return f"{name}: {reasons[0]}"
    return str(exc).splitlines()[-1].strip()


def _measure(w: Workload, backend: Optional[str], device: torch.device) -> dict:
    inp = make_inputs(w, device)
    fn, chosen = _call(w, inp, backend)
    out = fn()
    # A kernel that returns without writing its output would time beautifully; check once, untimed.
    finite = bool(torch.isfinite(out[0]).all())
    ms, runs, method = time_call(fn, device)
    return dict(backend=chosen, output_finite=finite, ms=ms, runs=runs, timing=method)


def run_row(w: Workload, backend: Optional[str], device: torch.device, ceiling) -> dict:
    f, by, hbm = flops(w), nbytes(w), roofline_bytes(w)
    t_ms = target_ms(w)
    row = dict(id=w.id, op=w.op, requested_backend=backend or "auto", backend=backend, status="ok",
               shape=w.shape(), scaled=w.scaled, note=w.note or None, flops=f, bytes=by, roofline_bytes=hbm,
               bound=roofline.bound(f, hbm, ceiling),
               target=None if w.target is None else str(w.target), target_ms=t_ms)
    try:
        row.update(_measure(w, backend, device))  # its inputs are freed when it returns
    except NoBackendError as exc:
        row.update(status="skipped", reason=_first_reason(exc))
    except Exception as exc:  # noqa: BLE001 - one failing row must not lose a long GPU run
        msg = str(exc).strip().splitlines()
        row.update(status="error", reason=f"{type(exc).__name__}: {msg[0] if msg else ''}")
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the next row's caches are up to a few GB
    if row["status"] == "ok":
        ms = row["ms"]
        row.update(tflops=f / ms / 1e9, gbps=by / ms / 1e6,
                   roofline_pct=roofline.percent_of_roofline(f, hbm, ms, ceiling),
                   vs_target=(t_ms / ms) if t_ms else None)
    return row


# ---- environment ----
def _git_commit() -> tuple:
    """(commit, dirty) of the checkout flashmla_core runs from. FLASHMLA_COMMIT names it where the
    tree was copied (the lent GPU machine: no .git, or a stale one) and wins when set."""
    if os.environ.get("FLASHMLA_COMMIT"):
        return os.environ["FLASHMLA_COMMIT"], None
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    if len(commit) != 40:  # no repository, or one without commits (rev-parse then echoes "HEAD")
        return os.environ.get("FLASHMLA_COMMIT") or None, None
    return commit, bool(dirty)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """What a result needs to be reproduced and compared; no hostname or user names."""
    import flashmla_core.introspect as introspect
    env = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               device_type=device.type, device=_cpu_name(),
               torch=torch.__version__, cuda=torch.version.cuda, hip=getattr(torch.version, "hip", None),
               python=platform.python_version(), os=f"{platform.system()} {platform.release()}",
               cpu_threads=torch.get_num_threads())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device=props.name, arch=f"sm_{props.major}{props.minor}", sm_count=props.multi_processor_count,
                   memory_gib=round(props.total_memory / 2**30, 1))
    try:
        import triton
        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        from importlib.metadata import version
        env["flashmla"] = version("flashmla")
    except Exception:  # noqa: BLE001
        env["flashmla"] = None
    env["commit"], env["dirty"] = _git_commit()
    env["backends"] = [{k: b[k] for k in ("name", "distribution", "version", "status")}
                       for b in introspect.backends()]
    return env


def run(workloads: list, backends: list, device, *, progress=None) -> dict:
    """Runs every workload on every backend (None = the one flashmla picks). -> the report (JSON-able)."""
    device = torch.device(device)
    ceiling = roofline.ceiling_for(device)
    report = dict(schema=1, environment=environment(device), ceiling=ceiling.to_dict() if ceiling else None,
                  quick=any(w.scaled for w in workloads), results=[])
    total, t_start = len(workloads) * len(backends), time.perf_counter()
    for i, w in enumerate(workloads):
        for j, be in enumerate(backends):
            n = i * len(backends) + j + 1
            if progress:
                progress(f"[{n:>2}/{total}] {w.id} on {be or 'auto'} ({w.describe()}) ... ", end="")
            row = run_row(w, be, device, ceiling)
            report["results"].append(row)
            if progress:
                progress(f"{row['ms']:.4g} ms" if row["status"] == "ok" else f"{row['status']}: {row['reason']}")
    report["wall_s"] = round(time.perf_counter() - t_start, 2)
    return report


def stderr_progress(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)
