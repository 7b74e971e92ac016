"""Reference dense and sparse decode: gather the attended rows, dequantize, attend in float32."""
from __future__ import annotations

import torch

from ..contract.kv_formats import dequantize
from .math import apply_sink, attend, chunk_size


def _rows_to_float(rows: torch.Tensor, kv_format: str) -> torch.Tensor:
    if kv_format == "fp8_v32":
        rows = dequantize(rows)
    return rows.float()


def dense_decode(q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale, causal,
                 attn_sink):
    b, s_q, h_q, d_qk = q.shape
    page, h_kv = kv_cache.shape[1], kv_cache.shape[2]
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    if b == 0:
        return out, lse
    # One request at a time, padded to nothing: a request's arithmetic never depends on its
    # batch-mates (bitwise batch invariance), and memory stays bounded by the longest request.
    lengths = cache_seqlens.tolist()  # the reference may sync; it is not the fast path on GPUs
    j = torch.arange(s_q, device=q.device)
    for i, L in enumerate(lengths):
        t = torch.arange(L, device=q.device)
        blocks = block_table[i, :-(-L // page)].long().repeat_interleave(page)[:L]   # never reads garbage
        rows = _rows_to_float(kv_cache[blocks, t % page], kv_format).unsqueeze(0)    # [1, L, h_kv, row]
        mask = torch.ones(1, s_q, L, dtype=torch.bool, device=q.device)
        if causal:
            mask = (t[None, :] <= (L - s_q + j)[:, None]).unsqueeze(0)              # bottom-right aligned
        mask = mask[:, :, None, :].expand(-1, -1, h_kv, -1)
        o, lse_rows, _ = attend(q[i:i + 1].float(), rows[..., :d_qk], rows[..., :head_dim_v], mask,
                                softmax_scale)
        o = apply_sink(o, lse_rows, attn_sink)
        out[i] = o[0].to(q.dtype)
        lse[i] = lse_rows[0].transpose(0, 1)
    return out, lse


def sparse_decode(q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length, attn_sink):
    b, s_q, h_q, d_qk = q.shape
    page = kv_cache.shape[1]
    topk = indices.shape[2]
    capacity = kv_cache.shape[0] * page
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    idx = indices.long()
    valid = (idx >= 0) & (idx < capacity)
    if topk_length is not None:
        valid &= torch.arange(topk, device=q.device)[None, None, :] < topk_length.long()[:, None, None]
    safe = torch.where(valid, idx, 0)
    step = chunk_size(b, s_q * topk * (d_qk * 4 * 2 + h_q * 4 * 2), q.device)
    for i0 in range(0, b, step):
        sl = slice(i0, min(b, i0 + step))
        c = safe[sl].shape[0]
        rows = _rows_to_float(kv_cache[safe[sl] // page, safe[sl] % page, 0], kv_format)  # [c, s_q, topk, row]
        v_ = valid[sl]
        rows = torch.where(v_[..., None], rows, 0.0).reshape(c * s_q, topk, 1, -1)
        mask = v_.reshape(c * s_q, 1, 1, topk)
        o, lse_rows, _ = attend(q[sl].float().reshape(c * s_q, 1, h_q, d_qk), rows[..., :d_qk],
                                rows[..., :head_dim_v], mask, softmax_scale)
        o = apply_sink(o, lse_rows, attn_sink)
        out[sl] = o.reshape(c, s_q, h_q, head_dim_v).to(q.dtype)
        lse[sl] = lse_rows.reshape(c, s_q, h_q).transpose(1, 2)
    return out, lse
