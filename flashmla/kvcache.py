"""KV-cache formats and the reference (de)quantizer. `fp8_v32`: 656 bytes per token (docs/contract.md)."""
from flashmla_core.contract.kv_formats import KV_FORMATS, dequantize, quantize

__all__ = ["KV_FORMATS", "dequantize", "quantize"]
