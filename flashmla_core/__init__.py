"""flashmla_core: the machinery behind `flashmla` — contract, capabilities, registry, reference backend,
conformance kit and CLI. Users import `flashmla`; backend authors import from here."""
from . import ops as _ops  # noqa: F401  (registers the flashmla:: custom ops)
from .capability.table import IntRange, OpCapability
from .contract.plan import DecodePlan, PlanKey
from .contract.problem import FEATURES, OPS, Problem
from .errors import ContractError, NoBackendError
from .registry.backend import CORE_API_VERSION, Backend
from .registry.selection import REGISTRY, use_backends

__all__ = ["Backend", "CORE_API_VERSION", "ContractError", "DecodePlan", "FEATURES", "IntRange", "NoBackendError",
           "OPS", "OpCapability", "PlanKey", "Problem", "REGISTRY", "use_backends"]
