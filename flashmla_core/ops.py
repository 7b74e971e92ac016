"""`flashmla::*` torch.library custom ops, used when a call is traced by torch.compile.

The fake implementations state output shapes; the real ones re-validate (metadata only), select
the backend and run it. Backends are opaque to the compiler, so any backend works under
torch.compile(fullgraph=True) and in CUDA graphs.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .contract import validate
from .registry.selection import REGISTRY


def _backend_arg(s: str):
    return s or None


@torch.library.custom_op("flashmla::dense_decode", mutates_args=())
def dense_decode(q: Tensor, kv_cache: Tensor, block_table: Tensor, cache_seqlens: Tensor, kv_format: str,
                 head_dim_v: int, softmax_scale: float, causal: bool, attn_sink: Optional[Tensor],
                 plan: List[Tensor], backend: str) -> tuple[Tensor, Tensor]:
    problem, _ = validate.check_dense_decode(q, kv_cache, block_table, cache_seqlens, head_dim_v=head_dim_v,
                                             softmax_scale=softmax_scale, causal=causal, attn_sink=attn_sink,
                                             kv_format=kv_format)
    be = REGISTRY.resolve("dense_decode", problem, _backend_arg(backend))
    out, lse = be.dense_decode(q, kv_cache, block_table, cache_seqlens, kv_format=kv_format, head_dim_v=head_dim_v,
                               softmax_scale=softmax_scale, causal=problem.causal, attn_sink=attn_sink, plan=plan)
    return out.contiguous(), lse.contiguous()


@dense_decode.register_fake
def _(q, kv_cache, block_table, cache_seqlens, kv_format, head_dim_v, softmax_scale, causal, attn_sink, plan,
      backend):
    b, s_q, h_q, _ = q.shape
    return q.new_empty(b, s_q, h_q, head_dim_v), q.new_empty(b, h_q, s_q, dtype=torch.float32)


@torch.library.custom_op("flashmla::sparse_decode", mutates_args=())
def sparse_decode(q: Tensor, kv_cache: Tensor, indices: Tensor, kv_format: str, head_dim_v: int,
                  softmax_scale: float, topk_length: Optional[Tensor], attn_sink: Optional[Tensor],
                  plan: List[Tensor], backend: str) -> tuple[Tensor, Tensor]:
    problem, _ = validate.check_sparse_decode(q, kv_cache, indices, kv_format=kv_format, head_dim_v=head_dim_v,
                                              softmax_scale=softmax_scale, topk_length=topk_length,
                                              attn_sink=attn_sink)
    be = REGISTRY.resolve("sparse_decode", problem, _backend_arg(backend))
    out, lse = be.sparse_decode(q, kv_cache, indices, kv_format=kv_format, head_dim_v=head_dim_v,
                                softmax_scale=softmax_scale, topk_length=topk_length, attn_sink=attn_sink, plan=plan)
    return out.contiguous(), lse.contiguous()


@sparse_decode.register_fake
def _(q, kv_cache, indices, kv_format, head_dim_v, softmax_scale, topk_length, attn_sink, plan, backend):
    b, s_q, h_q, _ = q.shape
    return q.new_empty(b, s_q, h_q, head_dim_v), q.new_empty(b, h_q, s_q, dtype=torch.float32)


@torch.library.custom_op("flashmla::sparse_prefill", mutates_args=())
def sparse_prefill(q: Tensor, kv: Tensor, indices: Tensor, softmax_scale: float, head_dim_v: int,
                   attn_sink: Optional[Tensor], topk_length: Optional[Tensor],
                   backend: str) -> tuple[Tensor, Tensor, Tensor]:
    problem, _ = validate.check_sparse_prefill(q, kv, indices, softmax_scale=softmax_scale, head_dim_v=head_dim_v,
                                               attn_sink=attn_sink, topk_length=topk_length)
    be = REGISTRY.resolve("sparse_prefill", problem, _backend_arg(backend))
    out, max_logits, lse = be.sparse_prefill(q, kv, indices, softmax_scale=softmax_scale, head_dim_v=head_dim_v,
                                             attn_sink=attn_sink, topk_length=topk_length)
    return out.contiguous(), max_logits.contiguous(), lse.contiguous()


@sparse_prefill.register_fake
def _(q, kv, indices, softmax_scale, head_dim_v, attn_sink, topk_length, backend):
    s_q, h_q, _ = q.shape
    f32 = dict(dtype=torch.float32)
    return q.new_empty(s_q, h_q, head_dim_v), q.new_empty(s_q, h_q, **f32), q.new_empty(s_q, h_q, **f32)


@torch.library.custom_op("flashmla::dense_prefill", mutates_args=())
def dense_prefill(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: int,
                  max_seqlen_k: int, softmax_scale: float, causal: bool, backend: str) -> tuple[Tensor, Tensor]:
    problem, _ = validate.check_dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                              softmax_scale=softmax_scale, causal=causal)
    be = REGISTRY.resolve("dense_prefill", problem, _backend_arg(backend))
    out, lse = be.dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                softmax_scale=softmax_scale, causal=causal)
    return out.contiguous(), lse.contiguous()


@dense_prefill.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal, backend):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2]), q.new_empty(q.shape[0], q.shape[1], dtype=torch.float32)
