"""The signature of one request: what backends declare against and what selection caches on.

A Problem holds no tensors and no sizes that change every step (batch size, sequence lengths),
so one selection decision serves every layer and every step of a model.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch

OPS = ("dense_decode", "sparse_decode", "sparse_prefill", "dense_prefill")

# Names of optional behaviours a request can ask for; capability tables list the ones they serve.
FEATURES = ("causal", "attn_sink", "topk_length", "deterministic")


@dataclass(frozen=True, eq=True)
class Problem:
    op: str
    device_type: str
    arch: str
    dtype: torch.dtype
    d_qk: int
    d_v: int
    h_q: int
    h_kv: int
    s_q: Optional[int] = None          # decode: query tokens per request (1, or 2+ for MTP)
    page_size: Optional[int] = None    # paged caches
    kv_format: Optional[str] = None    # "bf16" | "fp16" | "fp8_v32"
    topk: Optional[int] = None         # sparse ops
    causal: bool = False
    attn_sink: bool = False
    topk_length: bool = False
    deterministic: bool = False

    def __hash__(self) -> int:
        # a Problem is the selection cache key of every call: hash its fields once
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def features(self) -> frozenset:
        return frozenset(f for f in FEATURES if getattr(self, f))

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "op" or v is None or v is False:
                continue
            if isinstance(v, torch.dtype):
                v = str(v).replace("torch.", "")
            parts.append(f"{f.name}={v}")
        return f"{self.op}({', '.join(parts)})"
