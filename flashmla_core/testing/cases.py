"""The conformance grid, generated from a backend's own capability table.

For each op: every "kernel identity" the table declares (dtype x head dims x kv format) with all
adversarial inputs on, then one factor at a time over page sizes, head counts, s_q, topk and each
declared feature, then everything at once. Values come from small pools intersected with the
declaration, so a backend is tested on what it claims and nothing else. A few probes just outside
the declaration check that the backend refuses them with a reason instead of answering.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from ..capability.table import OpCapability
from ..contract.problem import Problem

PAGE_POOL = (64, 16, 7)
HEAD_POOL = ((16, 1), (1, 1), (128, 1), (3, 1), (8, 2), (6, 3))
S_Q_POOL = (1, 2, 4)
TOPK_POOL = (64, 128, 40)


@dataclass(frozen=True)
class Case:
    op: str
    params: tuple                  # sorted (name, value) pairs
    expect_rejection: bool = False  # a probe outside the declaration
    tags: tuple = field(default=(), compare=False)

    def __getitem__(self, k):
        return dict(self.params)[k]

    def get(self, k, default=None):
        return dict(self.params).get(k, default)

    @property
    def id(self) -> str:
        p = dict(self.params)
        short = {torch.bfloat16: "bf16", torch.float16: "fp16"}
        parts = [short.get(p.get("dtype"), str(p.get("dtype")))]
        for k in ("kv_format", "d_qk", "d_v", "page_size", "h_q", "h_kv", "s_q", "topk"):
            if k in p:
                parts.append(f"{k}{p[k]}")
        parts += [f for f in ("causal", "attn_sink", "topk_length") if p.get(f)]
        return "-".join(parts) + ("-probe" if self.expect_rejection else "")

    def problem(self, arch: str, device_type: str) -> Problem:
        p = dict(self.params)
        return Problem(self.op, device_type, arch, p["dtype"], p["d_qk"], p["d_v"], p["h_q"], p["h_kv"],
                       s_q=p.get("s_q"), page_size=p.get("page_size"), kv_format=p.get("kv_format"),
                       topk=p.get("topk"), causal=bool(p.get("causal")) and p.get("s_q", 2) > 1,
                       attn_sink=bool(p.get("attn_sink")), topk_length=bool(p.get("topk_length")))


def _case(op, expect_rejection=False, **params) -> Case:
    return Case(op, tuple(sorted(params.items(), key=lambda kv: kv[0])), expect_rejection)


def _kernel_identities(cap: OpCapability):
    for dtype, (d_qk, d_v), fmt in itertools.product(
            sorted(cap.dtypes, key=str), sorted(cap.head_dims), sorted(cap.kv_formats)):
        if fmt == "fp8_v32" and (d_qk != 576 or dtype != torch.bfloat16):
            continue
        if fmt in ("bf16", "fp16") and {"bf16": torch.bfloat16, "fp16": torch.float16}[fmt] != dtype:
            continue
        yield dict(dtype=dtype, d_qk=d_qk, d_v=d_v, kv_format=fmt)


def _grid(op: str, cap: OpCapability, arch: str, device_type: str, base: dict, axes: dict, everything: dict,
          identities) -> list:
    ok = lambda c: not cap.reasons(c.problem(arch, device_type))  # noqa: E731
    cases, seen = [], set()

    def add(c):
        if c.params not in seen and ok(c):
            seen.add(c.params)
            cases.append(c)

    idents = list(identities)
    for ident in idents:
        add(_case(op, **{**base, **ident}))
    first = {**base, **idents[0]} if idents else None
    if first is None:
        return cases
    for axis, values in axes.items():
        for v in values:
            add(_case(op, **{**first, **(v if isinstance(v, dict) else {axis: v})}))
    for ident in idents:
        add(_case(op, **{**base, **ident, **everything}))
    return cases


def _first(pool, accept, fallback):
    return next((v for v in pool if accept(v)), fallback)


def cases_for(op: str, cap: OpCapability, arch: str, device_type: str) -> list:
    """All cases the declaration covers, plus rejection probes."""
    pages = [p for p in PAGE_POOL if cap.page_sizes is None or p in cap.page_sizes] or list(cap.page_sizes or [64])
    heads = [(hq, hk) for hq, hk in HEAD_POOL if hq in cap.h_q and hk in cap.h_kv and hq % hk == 0]
    base_heads = heads[0] if heads else (cap.h_q.lo, 1)
    features = cap.features
    if op == "dense_decode":
        base = dict(page_size=pages[0], h_q=base_heads[0], h_kv=base_heads[1], s_q=1, causal=False, attn_sink=False)
        axes = dict(page_size=pages[1:], heads=[dict(h_q=a, h_kv=b) for a, b in heads[1:]],
                    s_q=[s for s in S_Q_POOL[1:] if cap.s_q is None or s in cap.s_q])
        if "causal" in features:
            axes["causal"] = [dict(causal=True, s_q=2)]
        if "attn_sink" in features:
            axes["attn_sink"] = [True]
        everything = dict(s_q=2, causal="causal" in features, attn_sink="attn_sink" in features)
        cases = _grid(op, cap, arch, device_type, base, axes, everything, _kernel_identities(cap))
    elif op == "sparse_decode":
        topks = [t for t in TOPK_POOL if cap.topk is None or t in cap.topk]
        sheads = [h for h in heads if h[1] == 1]
        base = dict(page_size=pages[0], h_q=(sheads or [base_heads])[0][0], h_kv=1, s_q=1,
                    topk=topks[0] if topks else 64, attn_sink=False, topk_length=False)
        axes = dict(page_size=pages[1:], heads=[dict(h_q=a) for a, _ in sheads[1:]], topk=topks[1:],
                    s_q=[s for s in S_Q_POOL[1:2] if cap.s_q is None or s in cap.s_q])
        for f in ("attn_sink", "topk_length"):
            if f in features:
                axes[f] = [True]
        everything = dict(s_q=2, attn_sink="attn_sink" in features, topk_length="topk_length" in features)
        cases = _grid(op, cap, arch, device_type, base, axes, everything, _kernel_identities(cap))
    elif op == "sparse_prefill":
        topks = [t for t in TOPK_POOL if cap.topk is None or t in cap.topk]
        base = dict(h_q=base_heads[0], h_kv=base_heads[1], topk=topks[0] if topks else 64, attn_sink=False,
                    topk_length=False, kv_format="bf16")
        axes = dict(heads=[dict(h_q=a, h_kv=b) for a, b in heads[1:]], topk=topks[1:])
        for f in ("attn_sink", "topk_length"):
            if f in features:
                axes[f] = [True]
        everything = dict(attn_sink="attn_sink" in features, topk_length="topk_length" in features)
        idents = [dict(dtype=d, d_qk=a, d_v=b) for d in sorted(cap.dtypes, key=str) for a, b in sorted(cap.head_dims)]
        cases = _grid(op, cap, arch, device_type, base, axes, everything, idents)
    elif op == "dense_prefill":
        pre_heads = [h for h in ((4, 4), (8, 2), (1, 1), (6, 3)) if h[0] in cap.h_q and h[1] in cap.h_kv]
        base = dict(h_q=(pre_heads or [base_heads])[0][0], h_kv=(pre_heads or [base_heads])[0][1], causal=False)
        axes = dict(heads=[dict(h_q=a, h_kv=b) for a, b in pre_heads[1:]])
        if "causal" in features:
            axes["causal"] = [True]
        idents = [dict(dtype=d, d_qk=a, d_v=b) for d in sorted(cap.dtypes, key=str) for a, b in sorted(cap.head_dims)]
        cases = _grid(op, cap, arch, device_type, base, axes, dict(causal="causal" in features), idents)
    else:
        raise ValueError(op)
    return cases + _probes(op, cap, arch, device_type, cases)


def _probes(op: str, cap: OpCapability, arch: str, device_type: str, cases: list) -> list:
    """Requests just outside the declaration: an undeclared feature or page size must be refused."""
    if not cases:
        return []
    first = dict(cases[0].params)
    probes = []
    for f in ("causal", "attn_sink", "topk_length"):
        if f in first and f not in cap.features:
            extra = dict(s_q=2) if f == "causal" and "s_q" in first else {}
            probes.append(_case(op, True, **{**first, f: True, **extra}))
    if "page_size" in first and cap.page_sizes is not None:
        odd = next(p for p in (7, 5, 3) if p not in cap.page_sizes)
        probes.append(_case(op, True, **{**first, "page_size": odd}))
    return [p for p in probes if cap.reasons(p.problem(arch, device_type))]
