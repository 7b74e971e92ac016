"""The flashmla-triton backend object: what it declares, when it is available, and the op methods.

Kernels (kernels.py) and launchers (ops.py) are imported lazily, so discovering this backend never
imports triton; a missing triton shows up as a reason from is_available().
"""
from __future__ import annotations

import os

import torch

from flashmla_core import Backend, IntRange, OpCapability
from flashmla_core.contract.plan import PlanKey

_ANY = IntRange(1, None)
_DECODE_HEADS = frozenset({(576, 512), (512, 512)})

# Archs on which the whole conformance kit has passed on real hardware (H100: sm_90). Widen at your
# own risk with FLASHMLA_TRITON_ARCHS (comma list of capability specs, e.g. "sm_80+" or "sm_89,gfx942"),
# then run `flashmla conformance --backend triton` on that device.
VERIFIED_ARCHS = ("sm_90",)


def interpreted() -> bool:
    """True under the Triton interpreter (TRITON_INTERPRET=1): kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _archs() -> tuple:
    extra = tuple(a.strip() for a in os.environ.get("FLASHMLA_TRITON_ARCHS", "").split(",") if a.strip())
    archs = extra or VERIFIED_ARCHS
    return archs + (("cpu",) if interpreted() else ())


def _interpreter_reasons(kernels) -> list:
    """Runs a tiny kernel with a runtime loop bound on the CPU (once, at discovery)."""
    try:
        x = torch.tensor([2, 0], dtype=torch.int32)
        kernels._probe_kernel[(1,)](x, 1)
        if int(x[1]) != 3:
            return [f"the Triton interpreter ran a probe kernel wrongly (got {int(x[1])}, want 3)"]
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).strip().splitlines()
        hint = ""
        try:
            import numpy
            if tuple(int(v) for v in numpy.__version__.split(".")[:2]) >= (2, 4):
                hint = (f" (numpy {numpy.__version__}: the Triton 3.6 interpreter needs numpy < 2.4, "
                        "triton-lang/triton#9171)")
        except Exception:  # noqa: BLE001
            pass
        return [f"the Triton interpreter cannot run the kernels: {type(exc).__name__}: "
                f"{msg[-1] if msg else ''}{hint}"]
    return []


class TritonBackend(Backend):
    name = "triton"
    # Below the native CUDA backends (~100): on Hopper `sm90` wins where installed; above the reference (0).
    priority = 50
    api_version = 1

    def __init__(self):
        self._interpreted = interpreted()
        archs = _archs()
        # Picked without being named on GPU tensors only (ROCm builds of torch use the "cuda" type too).
        # Under the interpreter it serves CPU tensors when named (the conformance kit and tests do), never
        # by default: the interpreter is ~1000x slower than the reference backend, and a slow path is
        # never a silent fallback.
        self.auto_select_device_types = ("cuda",)
        common = dict(archs=archs, head_dims=_DECODE_HEADS, h_q=_ANY)
        self._caps = {
            "dense_decode": OpCapability(
                "dense_decode", dtypes=frozenset({torch.bfloat16, torch.float16}), h_kv=_ANY, s_q=_ANY,
                page_sizes=None, kv_formats=frozenset({"bf16", "fp16", "fp8_v32"}),
                features=frozenset({"causal", "attn_sink", "deterministic"}),
                notes="split-KV + combine; any page size; fp8_v32 dequantized in-kernel (bf16 queries)", **common),
            "sparse_decode": OpCapability(
                "sparse_decode", dtypes=frozenset({torch.bfloat16}), h_kv=IntRange(1, 1), s_q=_ANY,
                page_sizes=None, kv_formats=frozenset({"bf16", "fp8_v32"}), topk=_ANY,
                features=frozenset({"attn_sink", "topk_length", "deterministic"}),
                notes="split over topk + combine; fp8_v32 dequantized in-kernel", **common),
            "sparse_prefill": OpCapability(
                "sparse_prefill", dtypes=frozenset({torch.bfloat16}), h_kv=_ANY, topk=_ANY,
                features=frozenset({"attn_sink", "topk_length", "deterministic"}),
                notes="one program per (query token, kv head, head tile)", **common),
        }

    def capabilities(self) -> dict:
        return self._caps

    def is_available(self) -> list:
        try:
            import triton  # noqa: F401

            from . import kernels
        except Exception as exc:  # noqa: BLE001
            return [f"triton kernels failed to import: {type(exc).__name__}: {exc}"]
        if self._interpreted:
            return _interpreter_reasons(kernels)
        if not torch.cuda.is_available():
            return ["no GPU visible to torch (and TRITON_INTERPRET is not 1, so the kernels cannot run on the CPU)"]
        return []

    def extra_reasons(self, problem) -> list:
        if problem.kv_format == "fp8_v32" and problem.dtype != torch.bfloat16:
            return ["kv_format 'fp8_v32' is served with bfloat16 queries only (dequantized values are bf16)"]
        return []

    # ---- plans ----
    def plan_decode(self, key: PlanKey, cache_seqlens: torch.Tensor, topk_length):
        from . import ops
        device = cache_seqlens.device
        if key.topk is None:
            return ops.plan_dense(device, key.batch_size, key.rows_per_kv_head, key.num_kv_heads, key.deterministic,
                                  cache_seqlens)
        return ops.plan_sparse(device, key.batch_size, key.rows_per_kv_head, key.topk, key.deterministic)

    # ---- ops ----
    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale,
                     causal, attn_sink, plan):
        from . import ops
        return ops.dense_decode(q, kv_cache, block_table, cache_seqlens, kv_format=kv_format, head_dim_v=head_dim_v,
                                softmax_scale=softmax_scale, causal=causal, attn_sink=attn_sink, plan=plan)

    def sparse_decode(self, q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length, attn_sink,
                      plan):
        from . import ops
        return ops.sparse_decode(q, kv_cache, indices, kv_format=kv_format, head_dim_v=head_dim_v,
                                 softmax_scale=softmax_scale, topk_length=topk_length, attn_sink=attn_sink, plan=plan)

    def sparse_prefill(self, q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
        from . import ops
        return ops.sparse_prefill(q, kv, indices, softmax_scale=softmax_scale, head_dim_v=head_dim_v,
                                  attn_sink=attn_sink, topk_length=topk_length)

    def info(self) -> dict:
        d = {"implementation": "Triton kernels (split-KV + combine)",
             "mode": "interpreter (TRITON_INTERPRET=1, CPU tensors)" if self._interpreted else "compiled (GPU)",
             "archs": ", ".join(self._caps["dense_decode"].archs),
             "verified archs": ", ".join(VERIFIED_ARCHS)}
        try:
            import triton
            d["triton"] = triton.__version__
        except Exception as exc:  # noqa: BLE001
            d["triton"] = f"not importable ({type(exc).__name__})"
        return d
