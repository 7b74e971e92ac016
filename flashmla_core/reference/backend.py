"""The reference backend: pure PyTorch, float32 accumulation, any device, every op.

It is the CPU user's main path and the definition of the semantics in executable form. It
registers through the same entry-point group as every other backend. On accelerators it serves
only when named: a 100x slower path is never a silent fallback.
"""
from __future__ import annotations

import torch

from ..capability.table import IntRange, OpCapability
from ..registry.backend import Backend
from . import decode, prefill

_HALF = frozenset({torch.bfloat16, torch.float16})
_DECODE_HEADS = frozenset({(576, 512), (512, 512)})
_ANY = IntRange(1, None)


class ReferenceBackend(Backend):
    name = "reference"
    priority = 0
    auto_select_device_types = ("cpu",)

    _caps = {
        "dense_decode": OpCapability(
            "dense_decode", dtypes=_HALF, head_dims=_DECODE_HEADS, h_q=_ANY, h_kv=_ANY, s_q=_ANY,
            kv_formats=frozenset({"bf16", "fp16", "fp8_v32"}),
            features=frozenset({"causal", "attn_sink", "deterministic"})),
        "sparse_decode": OpCapability(
            "sparse_decode", head_dims=_DECODE_HEADS, h_q=_ANY, h_kv=IntRange(1, 1), s_q=_ANY,
            kv_formats=frozenset({"bf16", "fp8_v32"}), topk=_ANY,
            features=frozenset({"attn_sink", "topk_length", "deterministic"})),
        "sparse_prefill": OpCapability(
            "sparse_prefill", head_dims=_DECODE_HEADS, h_q=_ANY, h_kv=_ANY, topk=_ANY,
            features=frozenset({"attn_sink", "topk_length", "deterministic"})),
        "dense_prefill": OpCapability(
            "dense_prefill", dtypes=_HALF, head_dims=frozenset({(192, 128), (128, 128)}), h_q=_ANY, h_kv=_ANY,
            features=frozenset({"causal", "deterministic"})),
    }

    def capabilities(self):
        return self._caps

    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale,
                     causal, attn_sink, plan):
        return decode.dense_decode(q, kv_cache, block_table, cache_seqlens, kv_format=kv_format,
                                   head_dim_v=head_dim_v, softmax_scale=softmax_scale, causal=causal,
                                   attn_sink=attn_sink)

    def sparse_decode(self, q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length,
                      attn_sink, plan):
        return decode.sparse_decode(q, kv_cache, indices, kv_format=kv_format, head_dim_v=head_dim_v,
                                    softmax_scale=softmax_scale, topk_length=topk_length, attn_sink=attn_sink)

    def sparse_prefill(self, q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
        return prefill.sparse_prefill(q, kv, indices, softmax_scale=softmax_scale, head_dim_v=head_dim_v,
                                      attn_sink=attn_sink, topk_length=topk_length)

    def dense_prefill(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale,
                      causal):
        return prefill.dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                     softmax_scale=softmax_scale, causal=causal)

    def info(self):
        return {"implementation": "pure PyTorch, float32 accumulation", "devices": "any (auto-selected on cpu)"}


backend = ReferenceBackend()
