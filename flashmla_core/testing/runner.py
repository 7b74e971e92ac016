"""Runs conformance cases against a backend and summarises them per op."""
from __future__ import annotations

import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .. import api
from ..capability.device import arch_of, arch_matches
from ..contract import validate
from ..errors import NoBackendError
from ..registry.selection import REGISTRY
from . import compare, oracle
from .cases import Case, cases_for
from .inputs import BUILDERS

_OUTPUTS = dict(dense_decode=("out", "lse"), sparse_decode=("out", "lse"),
                sparse_prefill=("out", "max_logits", "lse"), dense_prefill=("out", "lse"))


@dataclass
class CaseResult:
    case: Case
    status: str                    # passed | failed | skipped
    messages: list = field(default_factory=list)
    seconds: float = 0.0


def device_for(backend, requested: Optional[str] = None) -> Optional[str]:
    """The device the kit runs a backend on: the accelerator if its table serves this one's arch, else CPU."""
    caps = backend.capabilities().values()
    candidates = [requested] if requested else (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    for dev in candidates:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            continue
        arch = arch_of(torch.device(dev))
        if any(arch_matches(arch, a) for c in caps for a in c.archs):
            return dev
    return None


def collect(backend_name: str, ops=None, device: Optional[str] = None):
    """-> (device, [Case]) for every op the backend declares (optionally only `ops`)."""
    backend = REGISTRY.get(backend_name)
    dev = device_for(backend, device)
    if dev is None:
        return None, []
    arch, dtype = arch_of(torch.device(dev)), torch.device(dev).type
    cases = []
    for op, cap in sorted(backend.capabilities().items()):
        if ops is None or op in ops:
            cases.extend(cases_for(op, cap, arch, dtype))
    return dev, cases


def _cpu(x):
    return x.detach().cpu() if isinstance(x, torch.Tensor) else x


def _generator(case: Case) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(case.id.encode()))


def _check_outputs(op: str, got, want, q_dtype) -> list:
    """want: the oracle's outputs followed by its magnitude of out."""
    errs = compare.check_dtype("out", got[0], q_dtype)
    for name, g, w in zip(_OUTPUTS[op], got, want):
        if name == "out":
            errs += compare.check_out(name, g, w, magnitude=want[-1])
        else:
            errs += compare.check_lse(name, g, w) + compare.check_dtype(name, g, torch.float32)
    return errs


def _bitwise_equal(a, b) -> bool:
    return all(torch.equal(x, y) or (torch.isnan(x).any() and torch.equal(x.nan_to_num(), y.nan_to_num()))
               for x, y in zip(a, b))


def _decode_plan(op, args, kwargs, backend_name, deterministic=False):
    q = args[0]
    b, s_q, h_q = q.shape[:3]
    if op == "dense_decode":
        return api.plan_decode(args[3], num_q_heads=h_q, num_kv_heads=args[1].shape[2], q_len=s_q,
                               deterministic=deterministic, backend=backend_name)
    seqlens = torch.zeros(b, dtype=torch.int32, device=q.device)
    return api.plan_decode(seqlens, num_q_heads=h_q, q_len=s_q, topk=args[2].shape[2],
                           topk_length=kwargs.get("topk_length"), deterministic=deterministic, backend=backend_name)


def _request_slice(op, args, kwargs, i):
    """Request i of a decode batch, alone."""
    sl = slice(i, i + 1)
    if op == "dense_decode":
        q, cache, table, seqlens = args
        return (q[sl], cache, table[sl], seqlens[sl]), kwargs
    q, cache, indices = args
    kw = dict(kwargs)
    if kw.get("topk_length") is not None:
        kw["topk_length"] = kw["topk_length"][sl]
    return (q[sl], cache, indices[sl]), kw


def run_case(backend_name: str, case: Case, device: str) -> CaseResult:
    t0 = time.perf_counter()
    backend = REGISTRY.get(backend_name)
    inp = BUILDERS[case.op](case, device, _generator(case))
    fn = getattr(api, case.op)
    if case.expect_rejection:
        try:
            fn(*inp.args, **inp.kwargs, backend=backend_name)
        except NoBackendError:
            return CaseResult(case, "passed", [], time.perf_counter() - t0)
        return CaseResult(case, "failed", ["accepted a request outside its declared capabilities"],
                          time.perf_counter() - t0)
    problem, _ = validate.CHECKS[case.op](*inp.args, **inp.kwargs)
    reasons = backend.not_supported_reasons(case.op, problem)
    if reasons:
        return CaseResult(case, "skipped", reasons, time.perf_counter() - t0)
    try:
        got = fn(*inp.args, **inp.kwargs, backend=backend_name)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - a crash is a failure of the backend, reported as such
        return CaseResult(case, "failed", [f"raised {type(exc).__name__}: {exc}"], time.perf_counter() - t0)
    want = getattr(oracle, case.op)(*map(_cpu, inp.args), **{k: _cpu(v) for k, v in inp.oracle_kwargs.items()},
                                    return_magnitude=True)
    errs = _check_outputs(case.op, got, want, inp.args[0].dtype)
    cap = backend.capabilities()[case.op]
    if case.op.endswith("decode"):
        plan = _decode_plan(case.op, inp.args, inp.kwargs, backend_name)
        again = fn(*inp.args, **inp.kwargs, plan=plan)
        errs += [f"with a plan: {e}" for e in _check_outputs(case.op, again, want, inp.args[0].dtype)]
    if "deterministic" in cap.features:
        rerun = fn(*inp.args, **inp.kwargs, backend=backend_name)
        if not _bitwise_equal(got, rerun):
            errs.append("declares 'deterministic' but a re-run is not bitwise identical")
        if case.op.endswith("decode"):
            plan = _decode_plan(case.op, inp.args, inp.kwargs, backend_name, deterministic=True)
            batched = fn(*inp.args, **inp.kwargs, plan=plan)
            for i in range(inp.args[0].shape[0]):
                a, kw = _request_slice(case.op, inp.args, inp.kwargs, i)
                alone = fn(*a, **kw, plan=_decode_plan(case.op, a, kw, backend_name, deterministic=True))
                if not _bitwise_equal([batched[0][i:i + 1], batched[1][i:i + 1]], alone):
                    errs.append(f"deterministic plan: request {i} differs alone vs in its batch (not batch-invariant)")
                    break
    return CaseResult(case, "failed" if errs else "passed", errs, time.perf_counter() - t0)


def run(backend_name: str, ops=None, device: Optional[str] = None,
        progress: Optional[Callable[[int, int, CaseResult], None]] = None) -> list:
    dev, cases = collect(backend_name, ops, device)
    results = []
    for i, case in enumerate(cases):
        r = run_case(backend_name, case, dev)
        results.append(r)
        if progress:
            progress(i + 1, len(cases), r)
    return results


def summary(backend_name: str, results: list, device: Optional[str]) -> str:
    by_op = defaultdict(list)
    for r in results:
        by_op[r.case.op].append(r)
    lines = [f"conformance of backend {backend_name!r} on {device}:"]
    backend = REGISTRY.get(backend_name)
    for op in sorted(set(backend.capabilities()) | set(by_op)):
        rs = by_op.get(op, [])
        c = Counter(r.status for r in rs)
        lines.append(f"  {op:15s} {len(rs):4d} cases  {c['passed']:4d} passed  {c['failed']:4d} failed  "
                     f"{c['skipped']:4d} skipped")
        skipped = Counter(r.messages[0] for r in rs if r.status == "skipped")
        lines += [f"      skipped x{n}: {why}" for why, n in skipped.items()]
        lines += [f"      FAILED {r.case.id}: " + "; ".join(r.messages) for r in rs if r.status == "failed"]
    declared = set(backend.capabilities()) | set(by_op)  # an op filtered out (--op) is declared, not absent
    for op in sorted({"dense_decode", "sparse_decode", "sparse_prefill", "dense_prefill"} - declared):
        lines.append(f"  {op:15s} not implemented (declared absent)")
    total = Counter(r.status for r in results)
    lines.append(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return "\n".join(lines)
