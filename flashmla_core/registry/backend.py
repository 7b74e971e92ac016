"""The interface every backend implements — first-party CUDA packages and vendors alike.

A backend package exposes one instance through the entry-point group `flashmla.backends`:

    [project.entry-points."flashmla.backends"]
    myvendor = "flashmla_myvendor:backend"

Op methods receive validated arguments (see docs/contract.md) and must return contiguous outputs
with exactly the contract's shapes and dtypes. They are called only for problems their capability
table accepts.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..contract.plan import PlanKey
from ..contract.problem import Problem

# The contract version this core implements; a backend declares the one it was written for.
CORE_API_VERSION = 1
SUPPORTED_API_VERSIONS = (1,)


class Backend:
    name: str = "unnamed"
    priority: int = 0                      # higher wins; reference is 0, native CUDA ~100, portable ~50
    api_version: int = CORE_API_VERSION
    # Device types on which this backend may be chosen without being named (None: all it serves).
    auto_select_device_types: Optional[tuple] = None

    def capabilities(self) -> dict:
        """{op name: OpCapability} for the ops this backend implements."""
        raise NotImplementedError

    def is_available(self) -> list:
        """Reasons this backend cannot run at all here (missing driver, library not built). [] = usable."""
        return []

    def extra_reasons(self, problem: Problem) -> list:
        """Rules a table cannot express. Rarely needed; prefer declaring them in the table."""
        return []

    def not_supported_reasons(self, op: str, problem: Problem) -> list:
        cap = self.capabilities().get(op)
        if cap is None:
            return [f"op {op!r} not implemented"]
        return cap.reasons(problem) + self.extra_reasons(problem)

    # ---- ops (implement the ones your capability table declares) ----
    def plan_decode(self, key: PlanKey, cache_seqlens: torch.Tensor, topk_length: Optional[torch.Tensor]):
        """-> (schedule int32 [num_parts, 8], num_splits int32 [b + 1]), computed without a host sync."""
        b = key.batch_size
        return (torch.zeros(1, 8, dtype=torch.int32, device=key.device),
                torch.arange(b + 1, dtype=torch.int32, device=key.device))

    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale,
                     causal, attn_sink, plan):
        raise NotImplementedError

    def sparse_decode(self, q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length,
                      attn_sink, plan):
        raise NotImplementedError

    def sparse_prefill(self, q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
        raise NotImplementedError

    def dense_prefill(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale,
                      causal):
        raise NotImplementedError

    def info(self) -> dict:
        """Extra lines for `flashmla info` (build configuration, compiled variants...)."""
        return {}
