"""The public ops: validate -> select a backend (cached) -> run.

Eagerly, the chosen backend is called directly (lowest per-call overhead; CUDA-graph capturable).
Under torch.compile the same request goes through the `flashmla::*` custom ops (flashmla_core.ops),
whose fake implementations give dynamo the output shapes and whose real implementations select
and run the backend at run time.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from .contract import validate
from .contract.kv_formats import get_format
from .contract.plan import DecodePlan, make_plan_key
from .errors import ContractError
from .registry.selection import REGISTRY


def _with_plan(problem, plan, q, topk, backend):
    """A plan binds its request to the backend that made it (and to its determinism)."""
    if plan is None:
        return problem, backend
    if not isinstance(plan, DecodePlan):
        raise ContractError("plan", "a DecodePlan from flashmla.attention.plan_decode", type(plan).__name__)
    plan.check_matches(make_plan_key(q.device, q.shape[0], problem.s_q, problem.h_q, problem.h_kv, topk,
                                     plan.key.deterministic))
    if backend is not None and backend != plan.backend:
        raise ContractError("backend", f"the backend the plan was made by ({plan.backend!r}) or None", repr(backend))
    if plan.key.deterministic:
        problem = dataclasses.replace(problem, deterministic=True)
    return problem, plan.backend


def dense_decode(q, kv_cache, block_table, cache_seqlens, *, head_dim_v: int = 512,
                 softmax_scale: Optional[float] = None, causal: bool = False, attn_sink=None,
                 kv_format: Optional[str] = None, plan: Optional[DecodePlan] = None, backend=None):
    """Paged MLA decode. q [b, s_q, h_q, d_qk]; kv_cache [num_blocks, page_size, h_kv, d_qk] (or
    [.., 1, 656] uint8 for kv_format "fp8_v32"); block_table [b, max_blocks] int32; cache_seqlens [b]
    int32. Returns out [b, s_q, h_q, head_dim_v] (q's dtype) and lse [b, h_q, s_q] float32 (natural log).
    """
    problem, scale = validate.check_dense_decode(q, kv_cache, block_table, cache_seqlens, head_dim_v=head_dim_v,
                                                 softmax_scale=softmax_scale, causal=causal, attn_sink=attn_sink,
                                                 kv_format=kv_format)
    problem, backend = _with_plan(problem, plan, q, None, backend)
    buffers = plan.buffers if plan is not None else []
    if torch.compiler.is_compiling():
        return torch.ops.flashmla.dense_decode(q, kv_cache, block_table, cache_seqlens, problem.kv_format, head_dim_v,
                                               scale, problem.causal, attn_sink, buffers, _joined(backend))
    be = REGISTRY.resolve("dense_decode", problem, backend)
    return be.dense_decode(q, kv_cache, block_table, cache_seqlens, kv_format=problem.kv_format,
                           head_dim_v=head_dim_v, softmax_scale=scale, causal=problem.causal, attn_sink=attn_sink,
                           plan=buffers)


def sparse_decode(q, kv_cache, indices, *, kv_format: str = "fp8_v32", head_dim_v: int = 512,
                  softmax_scale: Optional[float] = None, topk_length=None, attn_sink=None,
                  plan: Optional[DecodePlan] = None, backend=None):
    """Token-sparse MLA decode. indices [b, s_q, topk] int32 are absolute slots block * page_size + offset;
    an index < 0 or >= num_blocks * page_size is invalid (never read). Returns out, lse [b, h_q, s_q]."""
    problem, scale = validate.check_sparse_decode(q, kv_cache, indices, kv_format=kv_format, head_dim_v=head_dim_v,
                                                  softmax_scale=softmax_scale, topk_length=topk_length,
                                                  attn_sink=attn_sink)
    problem, backend = _with_plan(problem, plan, q, problem.topk, backend)
    buffers = plan.buffers if plan is not None else []
    if torch.compiler.is_compiling():
        return torch.ops.flashmla.sparse_decode(q, kv_cache, indices, kv_format, head_dim_v, scale, topk_length,
                                                attn_sink, buffers, _joined(backend))
    be = REGISTRY.resolve("sparse_decode", problem, backend)
    return be.sparse_decode(q, kv_cache, indices, kv_format=kv_format, head_dim_v=head_dim_v, softmax_scale=scale,
                            topk_length=topk_length, attn_sink=attn_sink, plan=buffers)


def sparse_prefill(q, kv, indices, *, softmax_scale: float, head_dim_v: int = 512, attn_sink=None,
                   topk_length=None, backend=None):
    """Token-sparse prefill. q [s_q, h_q, d_qk]; kv [s_kv, h_kv, d_qk]; indices [s_q, h_kv, topk] int32,
    invalid when < 0 or >= s_kv. Returns out [s_q, h_q, head_dim_v], max_logits [s_q, h_q], lse [s_q, h_q]."""
    problem, scale = validate.check_sparse_prefill(q, kv, indices, softmax_scale=softmax_scale,
                                                   head_dim_v=head_dim_v, attn_sink=attn_sink,
                                                   topk_length=topk_length)
    if torch.compiler.is_compiling():
        return torch.ops.flashmla.sparse_prefill(q, kv, indices, scale, head_dim_v, attn_sink, topk_length,
                                                 _joined(backend))
    be = REGISTRY.resolve("sparse_prefill", problem, backend)
    return be.sparse_prefill(q, kv, indices, softmax_scale=scale, head_dim_v=head_dim_v, attn_sink=attn_sink,
                             topk_length=topk_length)


def dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q: int, max_seqlen_k: int, *,
                  softmax_scale: Optional[float] = None, causal: bool = False, backend=None):
    """Varlen MHA prefill (MLA prefill shapes d_qk 192 / d_v 128, or 128/128). Causal is bottom-right
    aligned per sequence. Returns out [total_q, h_q, d_v] and lse [total_q, h_q] float32."""
    problem, scale = validate.check_dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                                  softmax_scale=softmax_scale, causal=causal)
    if torch.compiler.is_compiling():
        return torch.ops.flashmla.dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                                scale, causal, _joined(backend))
    be = REGISTRY.resolve("dense_prefill", problem, backend)
    return be.dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale=scale,
                            causal=causal)


def plan_decode(cache_seqlens, *, num_q_heads: int, num_kv_heads: int = 1, q_len: int = 1,
                topk: Optional[int] = None, topk_length=None, deterministic: bool = False,
                dtype: Optional[torch.dtype] = None, kv_format: Optional[str] = None, backend=None) -> DecodePlan:
    """Makes the split-KV schedule for one decode step, on cache_seqlens' device, without a host sync.

    Reuse the plan for every layer of the step (same cache_seqlens values). topk=None plans dense
    decode; an int plans sparse decode with that many indices per query. Passing the query dtype and
    the cache's kv_format lets selection rule out backends that plan but cannot run that format.
    """
    validate._tensor("cache_seqlens", cache_seqlens, ndim=1, dtypes=(torch.int32,), device=None)
    if topk_length is not None:
        validate._tensor("topk_length", topk_length, ndim=1, dtypes=(torch.int32,), device=cache_seqlens.device)
    key = make_plan_key(cache_seqlens.device, cache_seqlens.shape[0], q_len, num_q_heads, num_kv_heads, topk,
                        deterministic)
    op = "dense_decode" if topk is None else "sparse_decode"
    if kv_format is not None:
        get_format(kv_format)
    be = REGISTRY.resolve_planner(op, key, q_len, num_q_heads, backend, dtype=dtype, kv_format=kv_format)
    schedule, num_splits = be.plan_decode(key, cache_seqlens, topk_length)
    return DecodePlan(be.name, key, schedule, num_splits)


def _joined(backend) -> str:
    if backend is None:
        return ""
    return backend if isinstance(backend, str) else ",".join(backend)
