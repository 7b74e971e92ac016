"""Chooses the backend for a problem: priority order, overrides, cached decisions.

Order of authority: the per-call `backend=` argument, then `use_backends(...)`, then the environment
variable FLASHMLA_BACKEND; otherwise every installed backend by descending priority.
FLASHMLA_DISABLE_BACKENDS removes backends in every mode. A backend that declares
`auto_select_device_types` is considered for other device types only when named (this is how the
reference backend never becomes a silent fallback for GPU tensors).
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from typing import Optional, Sequence, Union

from ..contract.problem import Problem
from ..errors import NoBackendError
from . import discovery
from .backend import SUPPORTED_API_VERSIONS

_override: contextvars.ContextVar = contextvars.ContextVar("flashmla_use_backends", default=None)


def _names(v: Union[str, Sequence[str], None]) -> Optional[tuple]:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.split(",")
    out = tuple(s.strip() for s in v if s and s.strip())
    return out or None


class Registry:
    def __init__(self, eps=None):
        self._eps = eps
        self._lock = threading.Lock()
        self._records = None
        self._failures = []
        self._unavailable = {}
        self._decisions = {}

    # ---- discovery ----
    def _ensure_loaded(self):
        if self._records is None:
            with self._lock:
                if self._records is None:
                    records, failures = discovery.load_all(self._eps)
                    self._failures = failures
                    self._unavailable = {}
                    for name, rec in records.items():
                        self._unavailable[name] = self._availability(rec.backend)
                    self._records = records

    @staticmethod
    def _availability(backend) -> list:
        if getattr(backend, "api_version", None) not in SUPPORTED_API_VERSIONS:
            return [f"api_version {getattr(backend, 'api_version', None)!r} is not one this flashmla core "
                    f"supports {list(SUPPORTED_API_VERSIONS)}"]
        try:
            return list(backend.is_available())
        except Exception as exc:  # noqa: BLE001
            return [f"is_available() raised {type(exc).__name__}: {exc}"]

    def register(self, backend, distribution: str = "(registered in code)", version: str = "") -> None:
        """Adds a backend object directly (tests, notebooks); same checks as an entry point."""
        self._ensure_loaded()
        with self._lock:
            if backend.name in self._records:
                raise ValueError(f"duplicate backend name {backend.name!r}")
            self._records[backend.name] = discovery.BackendRecord(backend, distribution, version, repr(backend))
            self._unavailable[backend.name] = self._availability(backend)
            self._decisions.clear()

    def unregister(self, name: str) -> None:
        self._ensure_loaded()
        with self._lock:
            self._records.pop(name, None)
            self._unavailable.pop(name, None)
            self._decisions.clear()

    def reload(self) -> None:
        with self._lock:
            self._records = None
            self._decisions.clear()

    def records(self) -> dict:
        self._ensure_loaded()
        return dict(self._records)

    def failures(self) -> list:
        self._ensure_loaded()
        return list(self._failures)

    def unavailable_reasons(self, name: str) -> list:
        self._ensure_loaded()
        return list(self._unavailable.get(name, []))

    def get(self, name: str):
        self._ensure_loaded()
        rec = self._records.get(name)
        if rec is None:
            raise KeyError(name)
        return rec.backend

    # ---- selection ----
    def _order(self, requested, override, env_order) -> tuple:
        """-> (ordered candidate names, named explicitly?)."""
        for src in (requested, override, env_order):
            if src:
                return tuple(src), True
        by_priority = sorted(self._records.values(), key=lambda r: (-r.backend.priority, r.backend.name))
        return tuple(r.backend.name for r in by_priority), False

    def decide(self, op: str, problem: Optional[Problem], backend=None, device_type: Optional[str] = None) -> list:
        """-> [(name, reasons)] in candidate order; the first with no reasons is the one chosen.

        With problem=None only availability, overrides and the op's presence are checked (planning).
        """
        self._ensure_loaded()
        device_type = problem.device_type if problem is not None else device_type
        env_order, env_disabled = os.environ.get("FLASHMLA_BACKEND"), os.environ.get("FLASHMLA_DISABLE_BACKENDS")
        override = _override.get()
        # the hot path: one dict lookup on what the caller gave, before anything is parsed or sorted
        fast_key = (op, problem, device_type, backend if not isinstance(backend, list) else tuple(backend),
                    override, env_order, env_disabled)
        hit = self._decisions.get(fast_key)
        if hit is not None:
            return hit
        disabled = frozenset(_names(env_disabled) or ())
        order, named = self._order(_names(backend), override, _names(env_order))
        trace, failed = [], {f.name: f for f in self._failures}
        for name in order:
            rec = self._records.get(name)
            if name in disabled:
                trace.append((name, ["disabled by FLASHMLA_DISABLE_BACKENDS"]))
            elif rec is None:
                why = f"failed to load: {failed[name].error}" if name in failed else \
                    f"not installed (installed: {sorted(self._records)})"
                trace.append((name, [why]))
            elif self._unavailable[name]:
                trace.append((name, [f"unavailable: {r}" for r in self._unavailable[name]]))
            else:
                b = rec.backend
                if problem is not None:
                    reasons = list(b.not_supported_reasons(op, problem))
                else:
                    reasons = [] if op in b.capabilities() else [f"op {op!r} not implemented"]
                auto = getattr(b, "auto_select_device_types", None)
                if not named and auto is not None and device_type not in auto:
                    reasons.append(f"serves {device_type} tensors only when named (backend={name!r}); "
                                   f"it is never a silent fallback there")
                trace.append((name, reasons))
        if not named:  # show broken plugins too: the user may have expected one of them
            trace.extend((f.name, [f"failed to load: {f.error}"]) for f in self._failures)
        self._decisions[fast_key] = trace
        return trace

    def resolve(self, op: str, problem: Problem, backend=None):
        trace = self.decide(op, problem, backend)
        for name, reasons in trace:
            if not reasons:
                return self._records[name].backend
        reasons = {}
        for name, why in trace:
            reasons.setdefault(name, []).extend(why)
        raise NoBackendError(problem.describe(), reasons)


    def resolve_planner(self, op: str, key, q_len: int, num_q_heads: int, backend=None, dtype=None,
                        kv_format=None):
        """The backend that will serve a decode step planned with `key`: the first that serves its
        device, head counts, s_q, topk, determinism and (when given) dtype and kv_format for `op`."""
        from ..capability.device import arch_of
        self._ensure_loaded()
        reasons_by_name = {}
        arch = arch_of(key.device)
        for name, reasons in self.decide(op, None, backend, device_type=key.device.type):
            if reasons:
                reasons_by_name[name] = reasons
                continue
            cap = self._records[name].backend.capabilities()[op]
            probe = Problem(op, key.device.type, arch, dtype or next(iter(cap.dtypes)), *next(iter(cap.head_dims)),
                            h_q=num_q_heads, h_kv=key.num_kv_heads, s_q=q_len, kv_format=kv_format, topk=key.topk,
                            deterministic=key.deterministic)
            why = cap.reasons(probe)
            if not why:
                return self._records[name].backend
            reasons_by_name[name] = why
        raise NoBackendError(f"plan_decode for {op} ({key.describe()}) on {arch}", reasons_by_name)


REGISTRY = Registry()


@contextlib.contextmanager
def use_backends(*names: str):
    """Within the block, only these backends are considered, in this order (names may be comma lists)."""
    flat = _names(",".join(names))
    if not flat:
        raise ValueError("use_backends() needs at least one backend name")
    token = _override.set(flat)
    try:
        yield
    finally:
        _override.reset(token)
