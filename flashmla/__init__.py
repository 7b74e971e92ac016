"""flashmla: fast Multi-head Latent Attention kernels behind one API.

    from flashmla import attention, kvcache
    out, lse = attention.dense_decode(q, kv_cache, block_table, cache_seqlens, causal=True)

Backends are separate packages found through the entry-point group `flashmla.backends`;
`flashmla.backends()` lists them and `flashmla.explain(...)` says which one a request goes to and why.
"""
from flashmla_core.errors import ContractError, NoBackendError
from flashmla_core.introspect import backends, capabilities, explain
from flashmla_core.registry.selection import use_backends

from . import attention, kvcache

__version__ = "0.1.0"
__all__ = ["ContractError", "NoBackendError", "attention", "backends", "capabilities", "compat", "explain",
           "kvcache", "use_backends"]


def __getattr__(name):
    if name == "compat":  # imported on first use: engines that do not need it pay nothing
        import importlib
        return importlib.import_module("flashmla.compat")
    raise AttributeError(name)
