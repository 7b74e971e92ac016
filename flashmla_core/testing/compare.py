"""Tolerances of the conformance kit (design.md §4), returning readable failure messages."""
from __future__ import annotations

import torch

OUT_ABS, OUT_REL, OUT_COS = 1e-3, 0.02, 0.99999
# 16-bit probabilities: a fast kernel rounds softmax weights to bf16/fp16 before P @ V, which errs by
# up to 2^-8 (bf16 half-ulp) of sum_t p_t |v_t| (the oracle's `magnitude`) even where that sum cancels.
OUT_TERM_REL = 2.0 ** -8
LSE_REL = 1e-4


def _special_positions_match(name: str, got: torch.Tensor, want: torch.Tensor) -> list:
    errs = []
    for what, fn in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        g, w = fn(got), fn(want)
        if not torch.equal(g, w):
            bad = (g != w).nonzero()[:3].tolist()
            errs.append(f"{name}: {what} positions differ from the oracle (got {int(g.sum())}, "
                        f"want {int(w.sum())}; first differing at {bad})")
    return errs


def _comparable(name: str, got: torch.Tensor, want: torch.Tensor) -> tuple:
    """Both as CPU float64, and the shape / special-value mismatches that end the comparison."""
    got = got.detach().to("cpu", torch.float64)
    want = want.to(torch.float64)
    if got.shape != want.shape:
        return got, want, [f"{name}: shape {list(got.shape)}, want {list(want.shape)}"]
    return got, want, _special_positions_match(name, got, want)


def check_out(name: str, got: torch.Tensor, want: torch.Tensor, magnitude=None) -> list:
    """Per element |got - want| <= max(1e-3, 2% |want|, 2^-8 magnitude), and cosine similarity >= 0.99999.

    magnitude (from the oracle) is sum_t p_t |v_t| per element; see OUT_TERM_REL."""
    got, want, errs = _comparable(name, got, want)
    if errs:
        return errs
    finite = torch.isfinite(want)
    g, w = got[finite], want[finite]
    err = (g - w).abs()
    bound = torch.clamp(OUT_REL * w.abs(), min=OUT_ABS)
    if magnitude is not None:
        bound = torch.maximum(bound, OUT_TERM_REL * magnitude.to(torch.float64)[finite])
    bad = err > bound
    if bad.any():
        i = int(bad.nonzero()[0])
        errs.append(f"{name}: {int(bad.sum())}/{bad.numel()} elements out of tolerance "
                    f"(max abs err {float(err.max()):.3g}; e.g. got {float(g[i]):.6g}, want {float(w[i]):.6g})")
    denom = float((g * g).sum() + (w * w).sum())
    if denom > 0:
        cos = 2 * float((g * w).sum()) / denom
        if cos < OUT_COS:
            errs.append(f"{name}: cosine similarity {cos:.7f} < {OUT_COS}")
    return errs


def check_lse(name: str, got: torch.Tensor, want: torch.Tensor) -> list:
    """Relative error <= 1e-4 (absolute below magnitude 1); +-inf positions exact."""
    got, want, errs = _comparable(name, got, want)
    if errs:
        return errs
    finite = torch.isfinite(want)
    err = (got[finite] - want[finite]).abs() / torch.clamp(want[finite].abs(), min=1.0)
    if err.numel() and float(err.max()) > LSE_REL:
        errs.append(f"{name}: max relative error {float(err.max()):.3g} > {LSE_REL}")
    return errs


def check_dtype(name: str, got: torch.Tensor, dtype: torch.dtype) -> list:
    return [] if got.dtype == dtype else [f"{name}: dtype {got.dtype}, want {dtype}"]
