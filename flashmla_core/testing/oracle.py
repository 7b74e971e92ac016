"""The float64 oracle: a deliberately naive, independent statement of the contract.

It shares no code with the reference backend: rows are collected one token at a time with Python
loops, FP8 rows are decoded from their bytes here, and softmax is written out longhand. It is slow
and only meant for the small shapes of the conformance grid.
"""
from __future__ import annotations

import math

import torch

F64 = torch.float64


def dequant_row_fp8_v32(row: torch.Tensor) -> torch.Tensor:
    """One 656-byte token -> 576 values (float64 holding bf16-rounded numbers), per docs/contract.md."""
    raw = row.view(torch.uint8).reshape(656).clone()
    latent = raw[:512].view(torch.float8_e4m3fn).to(torch.float32)
    scales = raw[512:528].view(torch.float32)
    vals = torch.empty(576, dtype=torch.float32)
    for tile in range(4):
        # float32 product, then round to bf16: exactly `bf16(float(e4m3) * scale)`
        vals[tile * 128:(tile + 1) * 128] = (latent[tile * 128:(tile + 1) * 128] * scales[tile]).to(torch.bfloat16)
    vals[512:] = raw[528:].view(torch.bfloat16).to(torch.float32)
    return vals.to(F64)


def _row(cache_row: torch.Tensor, kv_format: str) -> torch.Tensor:
    return dequant_row_fp8_v32(cache_row) if kv_format == "fp8_v32" else cache_row.to(F64)


def _tokens(slot: torch.Tensor, kv_format: str) -> torch.Tensor:
    """A cache slot [h_kv, row] -> [h_kv, d] float64."""
    return torch.stack([_row(slot[g], kv_format) for g in range(slot.shape[0])])


def _stack(rows: list):
    return torch.stack(rows) if rows else None


def _softmax_attend(q: torch.Tensor, K, V, scale: float):
    """q [d] float64; K [n, d], V [n, dv] float64 (None: no key) -> (out [dv] or None, lse, max_logit,
    magnitude [dv] or None). magnitude = sum_t softmax_t * |v_t|: the scale of the terms an output
    element sums. A kernel that rounds probabilities to 16 bits (every fast one) errs by up to 2^-8
    of it however small the output itself is (cancellation); the kit's tolerance accounts for it."""
    if K is None:
        return None, math.inf, -math.inf, None
    logits = (K @ q) * scale
    m = float(logits.max())
    w = torch.exp(logits - m)
    total = float(w.sum())
    return (w @ V) / total, m + math.log(total), m, (w @ V.abs()) / total


def _sink(out, lse: float, sink: float):
    if out is None:
        return None
    if sink == math.inf:
        return out * 0.0
    if sink == -math.inf:
        return out
    return out * (1.0 / (1.0 + math.exp(sink - lse)))


def _head(q_row, K, V, scale, sink=None):
    """One query head -> (out row, lse, magnitude row), sink applied; zeros where no key is attended."""
    o, lse_value, _, a = _softmax_attend(q_row, K, V, scale)
    if sink is not None:
        o = _sink(o, lse_value, sink)
    return (o if o is not None else 0.0), lse_value, (a if a is not None else 0.0)


def dense_decode(q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale, causal,
                 attn_sink, return_magnitude=False):
    b, s_q, h_q, d = q.shape
    page, h_kv = kv_cache.shape[1], kv_cache.shape[2]
    out = torch.zeros(b, s_q, h_q, head_dim_v, dtype=F64)
    mag = torch.zeros_like(out)
    lse = torch.zeros(b, h_q, s_q, dtype=F64)
    sinks = attn_sink.tolist() if attn_sink is not None else None
    for i in range(b):
        L = int(cache_seqlens[i])
        # token t of request i lives at kv_cache[block_table[i, t // page], t % page]
        tokens = [_tokens(kv_cache[int(block_table[i, t // page]), t % page], kv_format) for t in range(L)]
        for j in range(s_q):
            visible = L - s_q + j + 1 if causal else L
            per_group = [_stack([tok[g, :d] for tok in tokens[:max(0, visible)]]) for g in range(h_kv)]
            for h in range(h_q):
                K = per_group[h // (h_q // h_kv)]
                V = K[:, :head_dim_v] if K is not None else None
                out[i, j, h], lse[i, h, j], mag[i, j, h] = _head(q[i, j, h].to(F64), K, V, softmax_scale,
                                                                 sinks[h] if sinks else None)
    return (out, lse, mag) if return_magnitude else (out, lse)


def sparse_decode(q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length, attn_sink,
                  return_magnitude=False):
    b, s_q, h_q, d = q.shape
    page = kv_cache.shape[1]
    capacity = kv_cache.shape[0] * page
    out = torch.zeros(b, s_q, h_q, head_dim_v, dtype=F64)
    mag = torch.zeros_like(out)
    lse = torch.zeros(b, h_q, s_q, dtype=F64)
    sinks = attn_sink.tolist() if attn_sink is not None else None
    for i in range(b):
        n_used = int(topk_length[i]) if topk_length is not None else indices.shape[2]
        for j in range(s_q):
            ks = []
            for slot in indices[i, j, :n_used].tolist():
                if 0 <= slot < capacity:
                    tok = _row(kv_cache[slot // page, slot % page, 0], kv_format)
                    ks.append(tok[:d])
            K = _stack(ks)
            V = K[:, :head_dim_v] if K is not None else None
            qij = q[i, j].to(F64)
            for h in range(h_q):
                out[i, j, h], lse[i, h, j], mag[i, j, h] = _head(qij[h], K, V, softmax_scale,
                                                                 sinks[h] if sinks else None)
    return (out, lse, mag) if return_magnitude else (out, lse)


def sparse_prefill(q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length, return_magnitude=False):
    s_q, h_q, d = q.shape
    s_kv, h_kv = kv.shape[0], kv.shape[1]
    out = torch.zeros(s_q, h_q, head_dim_v, dtype=F64)
    mag = torch.zeros_like(out)
    max_logits = torch.zeros(s_q, h_q, dtype=F64)
    lse = torch.zeros(s_q, h_q, dtype=F64)
    sinks = attn_sink.tolist() if attn_sink is not None else None
    for s in range(s_q):
        n_used = int(topk_length[s]) if topk_length is not None else indices.shape[2]
        for g in range(h_kv):
            ks = [kv[t, g].to(F64) for t in indices[s, g, :n_used].tolist() if 0 <= t < s_kv]
            K = _stack(ks)
            V = K[:, :head_dim_v] if K is not None else None
            for h in range(g * (h_q // h_kv), (g + 1) * (h_q // h_kv)):
                o, lse_value, m, a = _softmax_attend(q[s, h].to(F64), K, V, softmax_scale)
                if sinks is not None:
                    o = _sink(o, lse_value, sinks[h])
                out[s, h] = o if o is not None else 0.0
                mag[s, h] = a if a is not None else 0.0
                lse[s, h], max_logits[s, h] = lse_value, m
    return (out, max_logits, lse, mag) if return_magnitude else (out, max_logits, lse)


def dense_prefill(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, softmax_scale, causal,
                  return_magnitude=False):
    total_q, h_q, _ = q.shape
    h_k, d_v = k.shape[1], v.shape[2]
    out = torch.zeros(total_q, h_q, d_v, dtype=F64)
    mag = torch.zeros_like(out)
    lse = torch.full((total_q, h_q), math.inf, dtype=F64)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cq) - 1):
        lq, lk = cq[i + 1] - cq[i], ck[i + 1] - ck[i]
        for j in range(lq):
            visible = lk - lq + j + 1 if causal else lk
            n = max(0, min(lk, visible))
            for h in range(h_q):
                g = h // (h_q // h_k)
                K = _stack([k[ck[i] + t, g].to(F64) for t in range(n)])
                V = _stack([v[ck[i] + t, g].to(F64) for t in range(n)])
                out[cq[i] + j, h], lse[cq[i] + j, h], mag[cq[i] + j, h] = _head(q[cq[i] + j, h].to(F64), K, V,
                                                                                softmax_scale)
    return (out, lse, mag) if return_magnitude else (out, lse)
