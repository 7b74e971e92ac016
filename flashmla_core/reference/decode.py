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
    seqlens = cache_seqlens.long()
    max_len = int(seqlens.max())  # the reference may sync; it is not the fast path on GPUs
    row_bytes = max(1, max_len) * h_kv * (d_qk * 4 * 2 + s_q * h_q // h_kv * 4 * 2)
    step = chunk_size(b, row_bytes)
    t = torch.arange(max_len, device=q.device)
    j = torch.arange(s_q, device=q.device)
    for i0 in range(0, b, step):
        sl = slice(i0, min(b, i0 + step))
        L = seqlens[sl]
        valid = t[None, :] < L[:, None]                                     # [c, T]
        blocks = block_table[sl, :].long().gather(1, (t // page).expand(L.shape[0], -1)) \
            if max_len > 0 else torch.zeros(L.shape[0], 0, dtype=torch.long, device=q.device)
        blocks = torch.where(valid, blocks, 0)                              # unused entries may be garbage
        rows = _rows_to_float(kv_cache[blocks, (t % page)[None, :]], kv_format)  # [c, T, h_kv, row]
        rows = torch.where(valid[:, :, None, None], rows, 0.0)
        mask = valid[:, None, :].expand(-1, s_q, -1)                        # [c, s_q, T]
        if causal:
            last = L[:, None] - s_q + j[None, :]                            # query j sees keys <= last
            mask = mask & (t[None, None, :] <= last[:, :, None])
        mask = mask[:, :, None, :].expand(-1, -1, h_kv, -1)
        o, l, _ = attend(q[sl].float(), rows[..., :d_qk], rows[..., :head_dim_v], mask, softmax_scale)
        o = apply_sink(o, l, attn_sink)
        out[sl] = o.to(q.dtype)
        lse[sl] = l.transpose(1, 2)
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
    step = chunk_size(b, s_q * topk * (d_qk * 4 * 2 + h_q * 4 * 2))
    for i0 in range(0, b, step):
        sl = slice(i0, min(b, i0 + step))
        c = safe[sl].shape[0]
        rows = _rows_to_float(kv_cache[safe[sl] // page, safe[sl] % page, 0], kv_format)  # [c, s_q, topk, row]
        v_ = valid[sl]
        rows = torch.where(v_[..., None], rows, 0.0).reshape(c * s_q, topk, 1, -1)
        mask = v_.reshape(c * s_q, 1, 1, topk)
        o, l, _ = attend(q[sl].float().reshape(c * s_q, 1, h_q, d_qk), rows[..., :d_qk], rows[..., :head_dim_v],
                         mask, softmax_scale)
        o = apply_sink(o, l, attn_sink)
        out[sl] = o.reshape(c, s_q, h_q, head_dim_v).to(q.dtype)
        lse[sl] = l.reshape(c, s_q, h_q).transpose(1, 2)
    return out, lse
