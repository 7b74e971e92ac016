"""Declarative capability tables.

A backend declares, per op, what it serves. One declaration drives three things: the runtime check
(`OpCapability.reasons`), the text of NoBackendError, and the conformance grid
(flashmla_core.testing.grid). Nothing else in the code base checks archs or dtypes by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..contract.problem import FEATURES, OPS, Problem
from .device import arch_matches


@dataclass(frozen=True)
class IntRange:
    """lo <= v <= hi and v % multiple_of == 0."""

    lo: int = 1
    hi: Optional[int] = None
    multiple_of: int = 1

    def __contains__(self, v: int) -> bool:
        return v >= self.lo and (self.hi is None or v <= self.hi) and v % self.multiple_of == 0

    def describe(self) -> str:
        s = f"{self.lo}..{self.hi if self.hi is not None else 'inf'}"
        return s + (f" (multiple of {self.multiple_of})" if self.multiple_of > 1 else "")


@dataclass(frozen=True)
class OpCapability:
    """What a backend serves for one op. Fields left at their defaults mean 'any'."""

    op: str
    archs: tuple = ("*",)                          # "cpu", "sm_90", "sm_80+", "gfx942", "*"
    dtypes: frozenset = frozenset({torch.bfloat16})
    head_dims: frozenset = frozenset({(576, 512), (512, 512)})   # (d_qk, d_v)
    h_q: IntRange = IntRange(1, 128)
    h_kv: IntRange = IntRange(1, 128)
    s_q: Optional[IntRange] = None                 # decode only
    page_sizes: Optional[tuple] = None             # None: any page size >= 1
    kv_formats: frozenset = frozenset({"bf16"})
    topk: Optional[IntRange] = None                # sparse ops only
    features: frozenset = frozenset()              # subset of problem.FEATURES
    notes: str = ""

    def __post_init__(self):
        assert self.op in OPS, self.op
        unknown = set(self.features) - set(FEATURES)
        assert not unknown, f"unknown features {unknown}"

    def reasons(self, p: Problem) -> list:
        """Why this declaration does not cover `p` (empty: it does)."""
        out = []
        if not any(arch_matches(p.arch, a) for a in self.archs):
            out.append(f"device arch {p.arch} not in {list(self.archs)}")
        if p.dtype not in self.dtypes:
            out.append(f"dtype {_dt(p.dtype)} not in {sorted(_dt(d) for d in self.dtypes)}")
        if (p.d_qk, p.d_v) not in self.head_dims:
            out.append(f"head dims (d_qk={p.d_qk}, d_v={p.d_v}) not in {sorted(self.head_dims)}")
        if p.h_q not in self.h_q:
            out.append(f"h_q={p.h_q} not in {self.h_q.describe()}")
        if p.h_kv not in self.h_kv:
            out.append(f"h_kv={p.h_kv} not in {self.h_kv.describe()}")
        if p.s_q is not None and self.s_q is not None and p.s_q not in self.s_q:
            out.append(f"s_q={p.s_q} not in {self.s_q.describe()}")
        if p.page_size is not None and self.page_sizes is not None and p.page_size not in self.page_sizes:
            out.append(f"page_size={p.page_size} not in {list(self.page_sizes)}")
        if p.kv_format is not None and p.kv_format not in self.kv_formats:
            out.append(f"kv_format {p.kv_format!r} not in {sorted(self.kv_formats)}")
        if p.topk is not None and self.topk is not None and p.topk not in self.topk:
            out.append(f"topk={p.topk} not in {self.topk.describe()}")
        for f in sorted(p.features - self.features):
            out.append(f"feature {f!r} not supported")
        return out

    def summary(self) -> dict:
        """A flat, printable description (used by `flashmla matrix`)."""
        return {
            "archs": ", ".join(self.archs),
            "dtypes": ", ".join(sorted(_dt(d) for d in self.dtypes)),
            "head dims": ", ".join(f"{a}/{b}" for a, b in sorted(self.head_dims)),
            "h_q": self.h_q.describe(),
            "h_kv": self.h_kv.describe(),
            "s_q": self.s_q.describe() if self.s_q else ("any" if self.op.endswith("decode") else "-"),
            "page sizes": ("any" if self.page_sizes is None else ", ".join(map(str, self.page_sizes)))
            if self.op.endswith("decode") else "-",
            "kv formats": ", ".join(sorted(self.kv_formats)),
            "topk": (self.topk.describe() if self.topk else "any") if self.op.startswith("sparse") else "-",
            "features": ", ".join(sorted(self.features)) or "-",
        }


def _dt(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")
