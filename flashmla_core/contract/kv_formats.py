"""KV-cache formats: names, byte layouts, and the reference quantizer/dequantizer.

`fp8_v32` (DeepSeek-V3.2), 656 bytes per token:
    bytes   0..511  512 x float8_e4m3fn  latent ("NoPE") dims, quantized
    bytes 512..527    4 x float32        scale k covers latent dims [128k, 128k + 128)
    bytes 528..655   64 x bfloat16       RoPE dims, not quantized
Dequant: x[d] = bf16(float(e4m3[d]) * scale[d // 128]). Any positive float32 scale a writer stores
is honoured exactly; the reference quantizer picks amax / 448 rounded up to a power of two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ContractError


@dataclass(frozen=True)
class KVFormat:
    name: str
    storage_dtypes: tuple          # dtypes the cache tensor may have
    bytes_per_token: Optional[int]  # packed formats only
    d_qk: Optional[int]             # packed formats fix the head dim
    description: str


FP8_V32 = KVFormat(
    name="fp8_v32",
    storage_dtypes=(torch.uint8, torch.int8, torch.float8_e4m3fn),
    bytes_per_token=656,
    d_qk=576,
    description="512 x e4m3 latent + 4 x fp32 scales (tile 128) + 64 x bf16 RoPE, 656 B/token",
)
KV_FORMATS = {
    "bf16": KVFormat("bf16", (torch.bfloat16,), None, None, "bfloat16 rows of d_qk"),
    "fp16": KVFormat("fp16", (torch.float16,), None, None, "float16 rows of d_qk"),
    "fp8_v32": FP8_V32,
}
FORMAT_OF_DTYPE = {torch.bfloat16: "bf16", torch.float16: "fp16"}

_LATENT, _TILE, _ROPE = 512, 128, 64
_E4M3_MAX = 448.0
_SCALE_FLOOR = 1e-4


def get_format(name: object, argument: str = "kv_format") -> KVFormat:
    if not isinstance(name, str) or name not in KV_FORMATS:
        raise ContractError(argument, f"one of {sorted(KV_FORMATS)}", repr(name))
    return KV_FORMATS[name]


def quantize(kv: torch.Tensor, format: str = "fp8_v32") -> torch.Tensor:
    """[..., 576] bf16 -> [..., 656] uint8 in `format` (only "fp8_v32" is a quantized format)."""
    fmt = get_format(format, "format")
    if fmt is not FP8_V32:
        raise ContractError("format", "a quantized format ('fp8_v32')", repr(format))
    if not isinstance(kv, torch.Tensor) or kv.dtype != torch.bfloat16 or kv.dim() < 1 or kv.shape[-1] != 576:
        given = f"{tuple(kv.shape)} {kv.dtype}" if isinstance(kv, torch.Tensor) else type(kv).__name__
        raise ContractError("kv", "a bfloat16 tensor [..., 576]", given)
    lead = kv.shape[:-1]
    latent = kv[..., :_LATENT].float().reshape(*lead, _LATENT // _TILE, _TILE)
    amax = latent.abs().amax(dim=-1)
    scale = torch.exp2(torch.ceil(torch.log2(torch.clamp(amax / _E4M3_MAX, min=_SCALE_FLOOR))))
    q = (latent / scale.unsqueeze(-1)).reshape(*lead, _LATENT).to(torch.float8_e4m3fn)
    rope = kv[..., _LATENT:].contiguous()
    return torch.cat(
        [q.view(torch.uint8), scale.to(torch.float32).contiguous().view(torch.uint8), rope.view(torch.uint8)],
        dim=-1,
    )


def dequantize(packed: torch.Tensor, format: str = "fp8_v32") -> torch.Tensor:
    """[..., 656] fp8_v32 bytes -> [..., 576] bf16, exactly as every backend must dequantize."""
    fmt = get_format(format, "format")
    if fmt is not FP8_V32:
        raise ContractError("format", "a quantized format ('fp8_v32')", repr(format))
    if not isinstance(packed, torch.Tensor) or packed.dtype not in fmt.storage_dtypes or packed.shape[-1] != 656:
        given = f"{tuple(packed.shape)} {packed.dtype}" if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise ContractError("packed", "a uint8/int8/float8_e4m3fn tensor [..., 656]", given)
    raw = packed.view(torch.uint8)
    if raw.stride(-1) != 1:
        raw = raw.contiguous()
    lead = raw.shape[:-1]
    latent = raw[..., :_LATENT].view(torch.float8_e4m3fn).float().reshape(*lead, _LATENT // _TILE, _TILE)
    scale = raw[..., _LATENT:_LATENT + 16].view(torch.float32)
    latent = (latent * scale.unsqueeze(-1)).reshape(*lead, _LATENT).to(torch.bfloat16)
    rope = raw[..., _LATENT + 16:].view(torch.bfloat16)
    return torch.cat([latent, rope], dim=-1)
