"""The "kernels" of the template backend, written in plain PyTorch.

>>> REPLACE THIS MODULE WITH YOUR KERNELS. <<<

Everything here is deliberately written the way a real attention kernel is structured, so that the
loops map one-to-one onto what you write in CUDA / HIP / Triton / your vendor language:

    for each request i                      -> a CTA / work-group per (request, kv head, row tile)
      for each KV tile of TILE tokens         -> the main loop: load K/V tile through the block table
        scores = q @ k^T * scale               -> MMA
        running max / running sum update       -> online softmax (flash-attention)
        acc = acc * alpha + p @ v              -> MMA
      out = acc / sum, lse = log(sum) + max    -> epilogue
      sink                                     -> epilogue

It is NOT fast. It exists to show the exact semantics a backend must reproduce (docs/contract.md,
design.md §2.1) and to be checked by the conformance kit, so that when you swap in your kernel you
know which behaviours the kit will hold you to:

  * out [b, s_q, h_q, head_dim_v] in q's dtype, lse [b, h_q, s_q] float32, both contiguous;
  * lse is the NATURAL log of sum(exp(scale * q.k)) over attended keys (FlashMLA's CUDA kernels
    work in base 2 internally: convert before you return);
  * a query row that attends no key (cache_seqlens[i] == 0, or causal rows with nothing visible)
    gives out = 0 and lse = +inf, never NaN;
  * causal is bottom-right aligned: query j of request i sees keys [0, L_i - s_q + j];
  * attn_sink: out *= exp(lse) / (exp(lse) + exp(sink)), lse unchanged; +inf sink -> out = 0;
  * cache slots that no query attends may hold NaN/garbage, and block-table entries past the
    blocks a request uses may hold garbage (even out-of-range block ids): never read them;
  * float32 accumulation.

This module imports nothing from flashmla_core: a vendor writes its own kernels. (The core's
reference backend is the oracle the conformance kit compares you against; copying it would
prove nothing.)
"""
from __future__ import annotations

import torch

# Keys processed per step of the main loop. A real kernel picks this from its tile shape (e.g. 64
# tokens = one page on Hopper). It must not depend on the batch: with a fixed tile, the result of a
# request depends only on that request's own inputs, which is what makes this backend
# "deterministic" (batch-invariant and bitwise reproducible) in the contract's sense.
TILE = 1024


def plan_decode(batch_size: int, device: torch.device, cache_seqlens: torch.Tensor):
    """The split-KV schedule for one decode step: (schedule int32 [num_parts, 8], num_splits int32 [b + 1]).

    Contract (design.md §2.4): computed ON THE DEVICE WITHOUT A HOST SYNC (no .item(), no int(t),
    no tensor-valued Python `if`), into buffers whose size depends only on host-known sizes, so that
    the call can be captured in a CUDA graph and reused by every layer of a step.

    This template does not split requests, so its schedule is trivial: one part per request, one
    split per request. The columns are this backend's own business (the core never reads them);
    here they are FlashMLA-like:
        [first request, first token, last request (inclusive), end token (exclusive), split id, 0, 0, 0]
    A real split-KV kernel balances Σ seqlen over its SMs here (see FlashMLA's get_mla_metadata).
    """
    b = batch_size
    num_parts = max(1, b)                      # never a 0-row buffer: CUDA graphs dislike empty allocs
    schedule = torch.zeros(num_parts, 8, dtype=torch.int32, device=device)
    if b > 0:
        req = torch.arange(b, dtype=torch.int32, device=device)
        schedule[:b, 0] = req
        schedule[:b, 2] = req
        schedule[:b, 3] = cache_seqlens.to(device=device, dtype=torch.int32)   # device-side copy, no sync
    # Exclusive prefix sum of splits per request: request i owns splits [num_splits[i], num_splits[i+1]).
    num_splits = torch.arange(b + 1, dtype=torch.int32, device=device)
    return schedule, num_splits


def dense_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
                 *, head_dim_v: int, softmax_scale: float, causal: bool, attn_sink):
    """Paged MLA decode. Arguments have already been validated by flashmla (shapes, dtypes, devices,
    last-dim contiguity, h_q % h_kv == 0) and the capability table has accepted the problem, so a
    kernel checks nothing that the table or the contract already guarantees.

    q            [b, s_q, h_q, d_qk]           bf16 / fp16 (other strides may be arbitrary)
    kv_cache     [num_blocks, page, h_kv, d_qk] same dtype; V = first head_dim_v dims of each K row
    block_table  [b, max_blocks] int32
    cache_seqlens [b] int32, 0 allowed
    """
    b, s_q, h_q, d_qk = q.shape
    page_size, h_kv = kv_cache.shape[1], kv_cache.shape[2]
    # Allocate outputs once, contiguous, with the contract's dtypes. Every element is written below.
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    if b == 0:
        return out, lse

    # Reading the lengths on the host is fine for a CPU template. A GPU kernel must NOT do this: it
    # reads cache_seqlens[i] inside the kernel (or through the plan) so the call stays sync-free.
    seqlens = cache_seqlens.tolist()
    sink = attn_sink.float() if attn_sink is not None else None

    # One iteration per request (a Python loop over requests, never over tokens). A kernel would
    # launch one grid over (request, kv head, row tile) instead.
    for i in range(b):
        o_i, lse_i = _decode_one_request(q[i], kv_cache, block_table[i], seqlens[i], page_size, h_kv,
                                         head_dim_v, softmax_scale, causal, sink)
        out[i] = o_i.to(q.dtype)
        lse[i] = lse_i
    return out, lse


def _decode_one_request(q_i, kv_cache, block_row, seqlen: int, page_size: int, h_kv: int, head_dim_v: int,
                        scale: float, causal: bool, sink):
    """One request: q_i [s_q, h_q, d_qk] -> (out [s_q, h_q, d_v] float32, lse [h_q, s_q] float32)."""
    s_q, h_q, d_qk = q_i.shape
    r = h_q // h_kv                     # query heads per KV head (GQA group; h_q for MQA/MLA)
    dev = q_i.device

    # --- prologue: load Q once, grouped by KV head -------------------------------------------------
    # Query head h uses KV head h // r. Row index within a group is j * r + (h % r): all s_q * r query
    # rows of one KV head share every K/V tile, which is why MLA decode (h_kv = 1) is a GEMM and not a
    # GEMV. A kernel tiles these rows (e.g. 64 per warpgroup).
    rows = s_q * r
    qg = q_i.float().reshape(s_q, h_kv, r, d_qk).permute(1, 0, 2, 3).reshape(h_kv, rows, d_qk)

    # Causal bottom-right alignment: row (j, h) may see key t iff t <= seqlen - s_q + j.
    # Without causal every row sees all `seqlen` keys.
    j = torch.arange(s_q, device=dev).repeat_interleave(r)                 # [rows]: query index of each row
    last_visible = seqlen - s_q + j if causal else torch.full_like(j, seqlen - 1)

    # --- running softmax state (float32), one entry per (kv head, row) ----------------------------
    m = torch.full((h_kv, rows), float("-inf"), device=dev)                # running max of the scores
    l = torch.zeros(h_kv, rows, device=dev)                                # running sum of exp(score - m)
    acc = torch.zeros(h_kv, rows, head_dim_v, device=dev)                  # running sum of p @ V

    # --- main loop over KV tiles ------------------------------------------------------------------
    # Only tokens [0, seqlen) are ever gathered, so only block_row[: ceil(seqlen / page_size)] is ever
    # read: entries past the used blocks may be garbage and unused slots may hold NaN; neither can
    # reach the output because neither is loaded. (A kernel that loads whole pages must instead zero
    # the rows past seqlen in shared memory / registers BEFORE the P @ V MMA: 0 * NaN = NaN.)
    # With causal, a query whose visible range ends early still shares the tile; its extra keys are
    # masked to -inf below, which makes their probabilities exactly 0.
    for t0 in range(0, seqlen, TILE):
        t = torch.arange(t0, min(t0 + TILE, seqlen), device=dev)         # token positions of this tile
        blocks = block_row[t // page_size].long()                         # page id of each token
        kv = kv_cache[blocks, t % page_size]                               # [n, h_kv, d_qk]: the paged gather
        k = kv.float().permute(1, 0, 2)                                    # [h_kv, n, d_qk]
        v = k[..., :head_dim_v]                                            # MLA: V is a prefix of K

        s = torch.matmul(qg, k.transpose(1, 2)) * scale                    # [h_kv, rows, n]  (MMA 1)
        if causal:
            visible = t[None, :] <= last_visible[:, None]                  # [rows, n]
            s = s.masked_fill(~visible[None], float("-inf"))

        # Online softmax. m_safe avoids (-inf) - (-inf) = NaN for rows that have seen no key yet.
        m_new = torch.maximum(m, s.amax(dim=-1))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        alpha = torch.exp(m - m_safe)                                      # rescale of the old state; 0 if m = -inf
        p = torch.exp(s - m_safe[..., None])                               # masked scores -> exactly 0
        l = l * alpha + p.sum(dim=-1)
        acc = acc * alpha[..., None] + torch.matmul(p, v)                  # (MMA 2)
        m = m_new

    # --- epilogue ---------------------------------------------------------------------------------
    has_key = l > 0                                                        # False: the row attends no key
    l_safe = torch.where(has_key, l, torch.ones_like(l))
    o = torch.where(has_key[..., None], acc / l_safe[..., None], torch.zeros_like(acc))
    lse = torch.where(has_key, torch.log(l_safe) + m, torch.full_like(l, float("inf")))   # natural log

    # Back from [h_kv, (j, h % r)] to the contract's layouts.
    o = o.reshape(h_kv, s_q, r, head_dim_v).permute(1, 0, 2, 3).reshape(s_q, h_q, head_dim_v)
    lse = lse.reshape(h_kv, s_q, r).permute(0, 2, 1).reshape(h_q, s_q)    # [h_q, s_q]

    if sink is not None:
        # out *= exp(lse) / (exp(lse) + exp(sink)) = sigmoid(lse - sink), per query head. lse is not
        # changed. Empty rows (lse = +inf) keep out = 0: guard them, since sigmoid(inf - inf) = NaN
        # when the sink is +inf too. sink = +inf -> factor 0 -> out = 0; sink = -inf -> factor 1.
        factor = torch.sigmoid(lse - sink[:, None])                        # [h_q, s_q]
        factor = torch.where(torch.isposinf(lse), torch.ones_like(factor), factor)
        o = o * factor.transpose(0, 1)[..., None]
    return o, lse
