"""Argument validation for every op (docs/contract.md §2.3).

Each `check_*` function inspects only metadata (shapes, dtypes, strides, devices) — never tensor
values on an accelerator, which would need a host sync — raises ContractError naming the first
bad argument, and returns the Problem the request poses.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from ..capability.device import arch_of
from ..errors import ContractError
from .kv_formats import FORMAT_OF_DTYPE, FP8_V32, get_format
from .problem import Problem

_MEMO_LIMIT = 4096


def _signature(v):
    if isinstance(v, torch.Tensor):
        return (v.shape, v.stride(), v.dtype, v.device)
    return v if isinstance(v, (int, float, str, bool, type(None))) else id(v)


def memoized(check):
    """Caches a check's result per metadata signature of its arguments, for accelerator tensors only:
    those checks read metadata alone, so equal signatures give equal answers (CPU checks also read
    values). Saves most of the validation cost of a decode step's per-layer calls."""
    memo = {}

    def wrapper(q, *args, **kwargs):
        if not isinstance(q, torch.Tensor) or q.device.type == "cpu" or torch.compiler.is_compiling():
            return check(q, *args, **kwargs)
        key = (_signature(q), tuple(map(_signature, args)), tuple((k, _signature(v)) for k, v in kwargs.items()))
        hit = memo.get(key)
        if hit is None:
            hit = check(q, *args, **kwargs)
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[key] = hit
        return hit

    wrapper.__wrapped__ = check
    wrapper.__doc__ = check.__doc__
    return wrapper


DECODE_D_QK = (576, 512)
DECODE_D_V = (512,)
HALF_DTYPES = (torch.bfloat16, torch.float16)


def _desc(t: object) -> str:
    if isinstance(t, torch.Tensor):
        return f"tensor{list(t.shape)} {str(t.dtype).replace('torch.', '')} on {t.device}"
    return f"{type(t).__name__} {t!r}"


def _tensor(name: str, t: object, *, ndim: int, dtypes: Sequence[torch.dtype], device: Optional[torch.device]):
    if not isinstance(t, torch.Tensor):
        raise ContractError(name, "a torch.Tensor", _desc(t))
    if t.dim() != ndim:
        raise ContractError(name, f"a {ndim}-d tensor", _desc(t))
    if t.dtype not in dtypes:
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ContractError(name, f"dtype {names}", _desc(t))
    if device is not None and t.device != device:
        raise ContractError(name, f"a tensor on {device} (the device of q)", _desc(t))
    if t.numel() > 0 and t.stride(-1) != 1 and t.shape[-1] > 1:
        raise ContractError(name, "a contiguous last dimension (stride(-1) == 1)", f"strides {t.stride()}")
    return t


def _shape(name: str, t: torch.Tensor, expected: Sequence[Optional[int]], labels: str):
    for want, got in zip(expected, t.shape):
        if want is not None and want != got:
            want = ", ".join("any" if e is None else str(e) for e in expected)
            raise ContractError(name, f"shape [{labels}] = [{want}]", f"shape {list(t.shape)}")


def _scale(softmax_scale: object, d_qk: int, required: bool = False) -> float:
    if softmax_scale is None:
        if required:
            raise ContractError("softmax_scale", "a positive float (required for this op)", "None")
        return d_qk ** -0.5
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)) \
            or not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ContractError("softmax_scale", "a positive finite float", repr(softmax_scale))
    return float(softmax_scale)


def _flag(name: str, v: object) -> bool:
    if not isinstance(v, bool):
        raise ContractError(name, "a bool", repr(v))
    return v


def _sink(attn_sink: object, h_q: int, device: torch.device) -> bool:
    if attn_sink is None:
        return False
    _tensor("attn_sink", attn_sink, ndim=1, dtypes=(torch.float32,), device=device)
    _shape("attn_sink", attn_sink, [h_q], "h_q")
    return True


def _head_dim_v(head_dim_v: object, allowed: Sequence[int]) -> int:
    if isinstance(head_dim_v, bool) or not isinstance(head_dim_v, int) or head_dim_v not in allowed:
        raise ContractError("head_dim_v", f"one of {list(allowed)}", repr(head_dim_v))
    return head_dim_v


def _cpu_values_in(name: str, t: torch.Tensor, lo: int, hi: Optional[int], what: str):
    """Value checks run only where they cost no device sync (CPU tensors)."""
    if t.device.type != "cpu" or t.numel() == 0 or torch.compiler.is_compiling():
        return
    if int(t.min()) < lo or (hi is not None and int(t.max()) > hi):
        raise ContractError(name, what, f"values in [{int(t.min())}, {int(t.max())}]")


def _sparse_indices(indices, lead: list, labels: str, topk_length, length_label: str, device) -> tuple:
    """indices [*lead, topk] int32 and optional topk_length [lead[0]] int32 -> (topk, has topk_length)."""
    _tensor("indices", indices, ndim=3, dtypes=(torch.int32,), device=device)
    _shape("indices", indices, lead + [None], labels)
    topk = indices.shape[2]
    if topk < 1:
        raise ContractError("indices", "topk (last dim) >= 1", _desc(indices))
    if topk_length is None:
        return topk, False
    _tensor("topk_length", topk_length, ndim=1, dtypes=(torch.int32,), device=device)
    _shape("topk_length", topk_length, lead[:1], length_label)
    _cpu_values_in("topk_length", topk_length, 0, topk, f"0 <= topk_length <= topk = {topk}")
    return topk, True


def _paged_cache(kv_cache: object, kv_format: str, d_qk: int, device, dtype_of_q) -> tuple[int, int]:
    """Validates a paged cache [num_blocks, page_size, h_kv, row]; returns (page_size, h_kv)."""
    fmt = get_format(kv_format)
    if fmt is FP8_V32:
        _tensor("kv_cache", kv_cache, ndim=4, dtypes=fmt.storage_dtypes, device=device)
        if d_qk != FP8_V32.d_qk:
            raise ContractError("q", f"d_qk {FP8_V32.d_qk} for kv_format 'fp8_v32'", _desc(kv_cache))
        _shape("kv_cache", kv_cache, [None, None, 1, 656], "num_blocks, page_size, h_kv, bytes_per_token")
        if kv_cache.shape[1] > 1 and kv_cache.stride(1) != 656:
            raise ContractError("kv_cache", "page blocks of page_size x 656 contiguous bytes (stride(1) == 656)",
                                f"strides {kv_cache.stride()}")
    else:
        if fmt.storage_dtypes[0] != dtype_of_q:
            raise ContractError("kv_format", f"the format of q's dtype ({FORMAT_OF_DTYPE.get(dtype_of_q)})",
                                repr(kv_format))
        _tensor("kv_cache", kv_cache, ndim=4, dtypes=fmt.storage_dtypes, device=device)
        _shape("kv_cache", kv_cache, [None, None, None, d_qk], "num_blocks, page_size, h_kv, d_qk")
    if kv_cache.shape[1] < 1:
        raise ContractError("kv_cache", "page_size (dim 1) >= 1", _desc(kv_cache))
    if kv_cache.shape[2] < 1:
        raise ContractError("kv_cache", "h_kv (dim 2) >= 1", _desc(kv_cache))
    return kv_cache.shape[1], kv_cache.shape[2]


@memoized
def check_dense_decode(q, kv_cache, block_table, cache_seqlens, *, head_dim_v, softmax_scale, causal,
                       attn_sink, kv_format=None):
    _tensor("q", q, ndim=4, dtypes=HALF_DTYPES, device=None)
    b, s_q, h_q, d_qk = q.shape
    if d_qk not in DECODE_D_QK:
        raise ContractError("q", f"d_qk (last dim) in {list(DECODE_D_QK)}", _desc(q))
    if s_q < 1 or h_q < 1:
        raise ContractError("q", "s_q >= 1 and h_q >= 1", _desc(q))
    dv = _head_dim_v(head_dim_v, DECODE_D_V)
    if kv_format is None:
        if not isinstance(kv_cache, torch.Tensor):
            raise ContractError("kv_cache", "a torch.Tensor", _desc(kv_cache))
        kv_format = FORMAT_OF_DTYPE.get(kv_cache.dtype, "fp8_v32")
        if kv_cache.dtype in HALF_DTYPES and kv_cache.dtype != q.dtype:
            raise ContractError("kv_cache", f"dtype {str(q.dtype).replace('torch.', '')} (q's dtype)", _desc(kv_cache))
    page_size, h_kv = _paged_cache(kv_cache, kv_format, d_qk, q.device, q.dtype)
    if h_q % h_kv != 0:
        raise ContractError("kv_cache", f"h_kv (dim 2) dividing h_q = {h_q}", f"h_kv = {h_kv}")
    _tensor("block_table", block_table, ndim=2, dtypes=(torch.int32,), device=q.device)
    _shape("block_table", block_table, [b, None], "b, max_blocks")
    _tensor("cache_seqlens", cache_seqlens, ndim=1, dtypes=(torch.int32,), device=q.device)
    _shape("cache_seqlens", cache_seqlens, [b], "b")
    _cpu_values_in("cache_seqlens", cache_seqlens, 0, block_table.shape[1] * page_size,
                   f"0 <= seqlen <= max_blocks * page_size = {block_table.shape[1] * page_size}")
    has_sink = _sink(attn_sink, h_q, q.device)
    causal = _flag("causal", causal) and s_q > 1   # with one query token causal is the identity
    problem = Problem("dense_decode", q.device.type, arch_of(q.device), q.dtype, d_qk, dv, h_q, h_kv, s_q=s_q,
                      page_size=page_size, kv_format=kv_format, causal=causal, attn_sink=has_sink)
    return problem, _scale(softmax_scale, d_qk)


@memoized
def check_sparse_decode(q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length, attn_sink):
    _tensor("q", q, ndim=4, dtypes=(torch.bfloat16,), device=None)
    b, s_q, h_q, d_qk = q.shape
    if d_qk not in DECODE_D_QK:
        raise ContractError("q", f"d_qk (last dim) in {list(DECODE_D_QK)}", _desc(q))
    if s_q < 1 or h_q < 1:
        raise ContractError("q", "s_q >= 1 and h_q >= 1", _desc(q))
    dv = _head_dim_v(head_dim_v, DECODE_D_V)
    page_size, h_kv = _paged_cache(kv_cache, kv_format, d_qk, q.device, q.dtype)
    if h_kv != 1:
        raise ContractError("kv_cache", "h_kv (dim 2) == 1 for sparse decode", f"h_kv = {h_kv}")
    topk, has_len = _sparse_indices(indices, [b, s_q], "b, s_q, topk", topk_length, "b", q.device)
    has_sink = _sink(attn_sink, h_q, q.device)
    problem = Problem("sparse_decode", q.device.type, arch_of(q.device), q.dtype, d_qk, dv, h_q, 1, s_q=s_q,
                      page_size=page_size, kv_format=kv_format, topk=topk, attn_sink=has_sink,
                      topk_length=has_len)
    return problem, _scale(softmax_scale, d_qk)


@memoized
def check_sparse_prefill(q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
    _tensor("q", q, ndim=3, dtypes=(torch.bfloat16,), device=None)
    s_q, h_q, d_qk = q.shape
    if d_qk not in DECODE_D_QK:
        raise ContractError("q", f"d_qk (last dim) in {list(DECODE_D_QK)}", _desc(q))
    if h_q < 1:
        raise ContractError("q", "h_q >= 1", _desc(q))
    dv = _head_dim_v(head_dim_v, DECODE_D_V)
    _tensor("kv", kv, ndim=3, dtypes=(torch.bfloat16,), device=q.device)
    _shape("kv", kv, [None, None, d_qk], "s_kv, h_kv, d_qk")
    h_kv = kv.shape[1]
    if h_kv < 1 or h_q % h_kv != 0:
        raise ContractError("kv", f"h_kv (dim 1) >= 1 dividing h_q = {h_q}", f"h_kv = {h_kv}")
    topk, has_len = _sparse_indices(indices, [s_q, h_kv], "s_q, h_kv, topk", topk_length, "s_q", q.device)
    has_sink = _sink(attn_sink, h_q, q.device)
    problem = Problem("sparse_prefill", q.device.type, arch_of(q.device), q.dtype, d_qk, dv, h_q, h_kv,
                      kv_format="bf16", topk=topk, attn_sink=has_sink, topk_length=has_len)
    return problem, _scale(softmax_scale, d_qk, required=True)


@memoized
def check_dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale, causal):
    _tensor("q", q, ndim=3, dtypes=HALF_DTYPES, device=None)
    _, h_q, d_qk = q.shape
    _tensor("k", k, ndim=3, dtypes=(q.dtype,), device=q.device)
    _shape("k", k, [None, None, d_qk], "total_k, h_k, d_qk")
    total_k, h_k = k.shape[0], k.shape[1]
    _tensor("v", v, ndim=3, dtypes=(q.dtype,), device=q.device)
    _shape("v", v, [total_k, h_k, None], "total_k, h_k, d_v")
    if h_k < 1 or h_q % h_k != 0:
        raise ContractError("k", f"h_k (dim 1) >= 1 dividing h_q = {h_q}", f"h_k = {h_k}")
    _tensor("cu_seqlens_q", cu_seqlens_q, ndim=1, dtypes=(torch.int32,), device=q.device)
    _tensor("cu_seqlens_k", cu_seqlens_k, ndim=1, dtypes=(torch.int32,), device=q.device)
    if cu_seqlens_q.shape[0] < 1 or cu_seqlens_k.shape != cu_seqlens_q.shape:
        raise ContractError("cu_seqlens_k", f"shape [b + 1] = {list(cu_seqlens_q.shape)} (as cu_seqlens_q)",
                            _desc(cu_seqlens_k))
    for name, v_ in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(v_, bool) or not isinstance(v_, int) or v_ < 0:
            raise ContractError(name, "a non-negative int", repr(v_))
    _cpu_values_in("cu_seqlens_q", cu_seqlens_q, 0, q.shape[0], f"offsets within total_q = {q.shape[0]}")
    _cpu_values_in("cu_seqlens_k", cu_seqlens_k, 0, total_k, f"offsets within total_k = {total_k}")
    if cu_seqlens_q.device.type == "cpu" and cu_seqlens_q.numel() > 1 and not torch.compiler.is_compiling():
        for name, cu, mx in (("cu_seqlens_q", cu_seqlens_q, max_seqlen_q), ("cu_seqlens_k", cu_seqlens_k, max_seqlen_k)):
            lens = cu[1:] - cu[:-1]
            if int(lens.min()) < 0:
                raise ContractError(name, "non-decreasing offsets", f"{cu.tolist()}")
            if int(lens.max()) > mx:
                raise ContractError(f"max_seqlen_{name[-1]}", f">= the longest sequence ({int(lens.max())})", mx)
    problem = Problem("dense_prefill", q.device.type, arch_of(q.device), q.dtype, d_qk, v.shape[2], h_q, h_k,
                      causal=_flag("causal", causal))
    return problem, _scale(softmax_scale, d_qk)


# op name -> its check, for callers that dispatch on the op (explain, the conformance kit)
CHECKS = dict(dense_decode=check_dense_decode, sparse_decode=check_sparse_decode,
              sparse_prefill=check_sparse_prefill, dense_prefill=check_dense_prefill)
