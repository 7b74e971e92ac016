"""The attention ops (see docs/contract.md for shapes and semantics)."""
from flashmla_core.api import dense_decode, dense_prefill, plan_decode, sparse_decode, sparse_prefill
from flashmla_core.contract.plan import DecodePlan

__all__ = ["DecodePlan", "dense_decode", "dense_prefill", "plan_decode", "sparse_decode", "sparse_prefill"]
