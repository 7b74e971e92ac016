"""What a tensor's device is, in the terms capability tables use ("cpu", "sm_90", "gfx942")."""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def _cuda_arch(index: int) -> str:
    props = torch.cuda.get_device_properties(index)
    if getattr(torch.version, "hip", None):
        return str(getattr(props, "gcnArchName", "gfx")).split(":")[0]
    return f"sm_{props.major}{props.minor}"


def arch_of(device: torch.device) -> str:
    """The architecture name of `device`: "cpu", "sm_90", "sm_100", "gfx942", or the device type."""
    if device.type == "cuda":
        return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())
    return device.type


def arch_matches(arch: str, spec: str) -> bool:
    """`spec` is "*" (any), an exact name ("sm_90"), or "sm_80+" (that CUDA capability or newer)."""
    if spec == "*" or spec == arch:
        return True
    if spec.endswith("+") and spec.startswith("sm_") and arch.startswith("sm_"):
        try:
            return int(arch[3:].rstrip("af")) >= int(spec[3:-1])
        except ValueError:
            return False
    return False


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
