"""Decode plans: a split-KV schedule made once per step, reused by every layer.

A plan is computed on the device without a host sync into buffers of fixed size, so it can be
captured in a CUDA graph. It records the problem it was made for; using it for another problem is a
ContractError. Its two buffers follow FlashMLA's layout so `flashmla.compat` can hand them out as
the historic (tile_scheduler_metadata, num_splits) tensors:
  schedule    int32 [num_parts, 8]   per-part work ranges; the meaning of the columns is the backend's
  num_splits  int32 [b + 1]          exclusive prefix sum of the number of splits per request
                                     (a sparse plan may count per query token: [b * s_q + 1])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ContractError


@dataclass(frozen=True)
class PlanKey:
    """What a schedule depends on. Query rows per KV head (s_q * h_q / h_kv) is what a dense kernel
    tiles; a sparse kernel may run each of the b * q_len query tokens over its own index list, so
    q_len is part of sparse keys (None in dense ones, whose old-form metadata never told it)."""

    device: torch.device
    batch_size: int
    q_len: Optional[int]
    rows_per_kv_head: int
    num_kv_heads: int
    topk: Optional[int]          # None for dense decode
    deterministic: bool

    def describe(self) -> str:
        s_q = f"s_q={self.q_len}, " if self.q_len is not None else ""
        return (f"b={self.batch_size}, {s_q}rows_per_kv_head={self.rows_per_kv_head}, h_kv={self.num_kv_heads}, "
                f"topk={self.topk}, deterministic={self.deterministic}, device={self.device}")


@dataclass
class DecodePlan:
    backend: str
    key: PlanKey
    schedule: torch.Tensor
    num_splits: torch.Tensor

    @property
    def buffers(self) -> list:
        return [self.schedule, self.num_splits]

    def check_matches(self, key: PlanKey) -> None:
        if key != self.key:
            raise ContractError("plan", f"a plan made for this problem ({key.describe()})",
                                f"a plan made for ({self.key.describe()})")


def make_plan_key(device, batch_size: int, q_len: int, num_q_heads: int, num_kv_heads: int,
                  topk: Optional[int], deterministic: bool) -> PlanKey:
    for name, v in (("num_q_heads", num_q_heads), ("num_kv_heads", num_kv_heads), ("q_len", q_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ContractError(name, "a positive int", repr(v))
    if num_q_heads % num_kv_heads != 0:
        raise ContractError("num_kv_heads", f"a divisor of num_q_heads = {num_q_heads}", num_kv_heads)
    if topk is not None and (isinstance(topk, bool) or not isinstance(topk, int) or topk < 1):
        raise ContractError("topk", "None (dense decode) or a positive int", repr(topk))
    if not isinstance(deterministic, bool):
        raise ContractError("deterministic", "a bool", repr(deterministic))
    return PlanKey(torch.device(device), batch_size, q_len if topk is not None else None,
                   q_len * num_q_heads // num_kv_heads, num_kv_heads, topk, deterministic)
