"""Shared float32 attention math of the reference backend: masked softmax attention and the sink."""
from __future__ import annotations

import torch

# Work is split into chunks so no intermediate exceeds this many bytes (CPU caches and RAM).
CHUNK_BYTES = 64 << 20


def chunk_size(total: int, bytes_per_item: int, batch_device: torch.device = None) -> int:
    """Items per chunk. When the items are a batch's requests on an accelerator (`batch_device`), one:
    a batched GEMM's kernel (and its rounding) depends on the batch count, so a request computed alone
    and in a batch could differ, breaking the reference's deterministic (batch-invariant) promise. CPU
    GEMMs do not vary with the batch count."""
    if batch_device is not None and batch_device.type != "cpu":
        return 1
    return max(1, min(total, CHUNK_BYTES // max(1, bytes_per_item)))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float):
    """Attention of q over the keys `mask` allows, in float32.

    q [B, S, H, D]; k [B, T, G, D]; v [B, T, G, Dv]; G divides H and query head h uses KV head
    h // (H / G); mask [B, S, G, T] bool. k and v must already be zero where no query attends
    (so NaN in unused cache slots cannot leak through 0 * NaN).
    Returns out [B, S, H, Dv], lse [B, S, H] (natural log; +inf for rows with no key) and
    max_logits [B, S, H] (-inf for rows with no key).
    """
    B, S, H, D = q.shape
    G = k.shape[2]
    if k.shape[1] == 0:  # no keys at all (every request empty)
        full = lambda v: torch.full((B, S, H), v, dtype=torch.float32, device=q.device)  # noqa: E731
        return q.new_zeros(B, S, H, v.shape[-1]), full(float("inf")), full(float("-inf"))
    qg = q.reshape(B, S, G, H // G, D)
    scores = torch.einsum("bsgrd,btgd->bsgrt", qg, k) * scale
    scores = scores.masked_fill(~mask.unsqueeze(3), float("-inf"))
    mx = scores.amax(dim=-1)
    finite = torch.isfinite(mx)
    p = torch.exp(scores - torch.where(finite, mx, torch.zeros_like(mx)).unsqueeze(-1))
    denom = p.sum(dim=-1)
    out = torch.einsum("bsgrt,btgv->bsgrv", p, v)
    has_key = denom > 0
    out = torch.where(has_key.unsqueeze(-1), out / torch.where(has_key, denom, 1.0).unsqueeze(-1), 0.0)
    lse = torch.where(has_key, torch.log(torch.where(has_key, denom, 1.0)) + mx, float("inf"))
    return out.reshape(B, S, H, -1), lse.reshape(B, S, H), mx.reshape(B, S, H)


def apply_sink(out: torch.Tensor, lse: torch.Tensor, attn_sink) -> torch.Tensor:
    """out *= exp(lse) / (exp(lse) + exp(sink)) per head (last dim of lse); lse itself is unchanged."""
    if attn_sink is None:
        return out
    factor = torch.sigmoid(lse - attn_sink.float())          # = 1 / (1 + exp(sink - lse))
    factor = torch.where(torch.isposinf(lse), 1.0, factor)  # empty row: out is already 0
    return out * factor.unsqueeze(-1)
