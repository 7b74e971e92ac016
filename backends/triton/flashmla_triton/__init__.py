"""flashmla-triton: portable Triton kernels for flashmla (dense decode, sparse decode, sparse prefill).

flashmla finds it through the entry point declared in pyproject.toml:

    [project.entry-points."flashmla.backends"]
    triton = "flashmla_triton:backend"

Importing this module is cheap and never imports triton: the kernels are imported on first use
(and by `is_available()`, which reports a missing triton as a reason instead of failing).
"""
from .backend import VERIFIED_ARCHS, TritonBackend

__version__ = "0.1.0"

backend = TritonBackend()

__all__ = ["TritonBackend", "VERIFIED_ARCHS", "backend"]
