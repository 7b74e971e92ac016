"""Reference sparse prefill (token-sparse, per-query index lists) and dense varlen prefill."""
from __future__ import annotations

import torch

from .math import apply_sink, attend, chunk_size


def sparse_prefill(q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
    s_q, h_q, d_qk = q.shape
    s_kv, h_kv = kv.shape[0], kv.shape[1]
    topk = indices.shape[2]
    out = torch.empty(s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    max_logits = torch.empty(s_q, h_q, dtype=torch.float32, device=q.device)
    lse = torch.empty(s_q, h_q, dtype=torch.float32, device=q.device)
    groups = torch.arange(h_kv, device=q.device)[None, :, None]
    step = chunk_size(s_q, h_kv * topk * (d_qk * 4 * 2 + h_q // h_kv * 4 * 2), q.device)
    for i0 in range(0, s_q, step):
        sl = slice(i0, min(s_q, i0 + step))
        idx = indices[sl].long()                                            # [c, h_kv, topk]
        valid = (idx >= 0) & (idx < s_kv)
        if topk_length is not None:
            valid &= torch.arange(topk, device=q.device)[None, None, :] < topk_length[sl].long()[:, None, None]
        rows = kv[torch.where(valid, idx, 0), groups].float()                # [c, h_kv, topk, d_qk]
        rows = torch.where(valid[..., None], rows, 0.0).transpose(1, 2)      # [c, topk, h_kv, d_qk]
        c = rows.shape[0]
        o, lse_rows, m = attend(q[sl].float().unsqueeze(1), rows, rows[..., :head_dim_v], valid.unsqueeze(1),
                                softmax_scale)
        o = apply_sink(o, lse_rows, attn_sink)
        out[sl] = o.reshape(c, h_q, head_dim_v).to(q.dtype)
        lse[sl] = lse_rows.reshape(c, h_q)
        max_logits[sl] = m.reshape(c, h_q)
    return out, max_logits, lse


def dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale, causal):
    total_q, h_q, d_qk = q.shape
    h_k, d_v = k.shape[1], v.shape[2]
    out = torch.zeros(total_q, h_q, d_v, dtype=q.dtype, device=q.device)
    lse = torch.full((total_q, h_q), float("inf"), dtype=torch.float32, device=q.device)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()   # the reference may sync
    for i in range(len(cq) - 1):
        q0, q1, k0, k1 = cq[i], cq[i + 1], ck[i], ck[i + 1]
        lq, lk = q1 - q0, k1 - k0
        if lq == 0:
            continue
        kk = k[k0:k1].float().unsqueeze(0)
        vv = v[k0:k1].float().unsqueeze(0)
        t = torch.arange(lk, device=q.device)
        step = chunk_size(lq, max(1, lk) * h_q * 4 * 3)  # rows of one sequence: no batch to vary
        for j0 in range(0, lq, step):
            j1 = min(lq, j0 + step)
            j = torch.arange(j0, j1, device=q.device)
            mask = torch.ones(j1 - j0, lk, dtype=torch.bool, device=q.device)
            if causal:                                  # bottom-right aligned
                mask = t[None, :] <= (lk - lq + j)[:, None]
            mask = mask[None, :, None, :].expand(1, -1, h_k, -1)
            o, lse_rows, _ = attend(q[q0 + j0:q0 + j1].float().unsqueeze(0), kk, vv, mask, softmax_scale)
            out[q0 + j0:q0 + j1] = o[0].to(q.dtype)
            lse[q0 + j0:q0 + j1] = lse_rows[0]
    return out, lse
