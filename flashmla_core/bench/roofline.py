"""Device ceilings for "% of roofline": known only for GPUs whose figures we can vouch for.

% of roofline = max(bytes / memory ceiling, FLOPs / compute ceiling) / measured time: the share of
the time the slower of the two limits needs. A GPU not listed here gets None (never a guessed figure):
an H100 PCIe or NVL has other clocks and bandwidth than the SXM part, so it must not borrow its numbers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class Ceiling:
    device: str
    memory_gbps: float
    memory_source: str
    bf16_tflops: float
    bf16_source: str

    def to_dict(self) -> dict:
        return asdict(self)


# shared/targets.md, measured on the lent H100 SXM (torch 2.11+cu130). Memory: the device-to-device
# copy (bytes read + written), the figure the decode targets are stated against. Compute: the best
# measured torch bf16 GEMM 8192^3 on that machine (runs gave 687 and 770-798; the spec sheet says
# ~989 dense); the best run is used so that "% of roofline" is never flattered by a slow run.
H100_SXM = Ceiling("NVIDIA H100 80GB HBM3", 3000.0, "measured device-to-device copy, targets.md",
                   798.0, "best measured torch bf16 GEMM 8192^3 (runs: 687, 770-798), targets.md")
# No measurement of our own on an H200 yet: the spec sheet (HBM3e 4.8 TB/s, same tensor cores as H100
# SXM). Spec figures are never reached, so % of roofline there reads low; the source says so.
H200 = Ceiling("NVIDIA H200", 4800.0, "spec sheet (not measured)", 989.0, "spec sheet dense bf16 (not measured)")

_KNOWN = (  # (name test, SM count) -> ceiling; the SM count tells SXM parts from cut-down variants
    (lambda n: "H100" in n and "HBM3" in n and "PCIe" not in n and "NVL" not in n, 132, H100_SXM),
    (lambda n: "H200" in n and "NVL" not in n, 132, H200),
)


def ceiling_for(device) -> Optional[Ceiling]:
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or getattr(torch.version, "hip", None):
        return None
    props = torch.cuda.get_device_properties(device)
    for matches, sms, ceiling in _KNOWN:
        if matches(props.name) and props.multi_processor_count == sms:
            return ceiling
    return None


def roofline_ms(flops: int, nbytes: int, ceiling: Ceiling) -> float:
    return max(nbytes / (ceiling.memory_gbps * 1e9), flops / (ceiling.bf16_tflops * 1e12)) * 1e3


def bound(flops: int, nbytes: int, ceiling: Optional[Ceiling] = None) -> str:
    """Which limit a workload hits first on `ceiling` (H100 SXM when unknown: the targets' device)."""
    c = ceiling or H100_SXM
    return "memory" if nbytes / (c.memory_gbps * 1e9) >= flops / (c.bf16_tflops * 1e12) else "compute"


def percent_of_roofline(flops: int, nbytes: int, ms: float, ceiling: Optional[Ceiling]) -> Optional[float]:
    if ceiling is None or not ms:
        return None
    return 100.0 * roofline_ms(flops, nbytes, ceiling) / ms
