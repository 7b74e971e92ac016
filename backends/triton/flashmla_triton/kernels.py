"""The Triton kernels of flashmla-triton: one split-KV attention kernel for every MLA op, one combine kernel.

Imported lazily (by `is_available()` and the op methods): importing it imports triton.

_mla_fwd_kernel serves all three ops. The work is cut into *units* (one per dense-decode request,
one per (request, query token) in sparse decode, one per query token in sparse prefill), each unit
into *splits* (token ranges), and the unit's query rows (s_q_unit * h_q / h_kv rows per KV head)
into head tiles of BLOCK_H rows. One program = (split, KV head, head tile). It loops over its keys
BLOCK_N at a time with an online softmax in float32 (log2 domain), and either

  * writes the final out / lse (natural log) / max_logits, applying attn_sink, when its unit has
    exactly one split, or
  * writes a float32 partial out (already divided by its own softmax sum) and a natural-log partial
    lse (-inf for "no key") that _combine_kernel merges, applying attn_sink.

Keys come from
  * dense decode:  tokens [start, end) of the request, through the block table (any page size);
  * sparse ops:    the index list, where an index < 0 or >= capacity (or past topk_length) is invalid.
Invalid / out-of-range keys are never read (masked loads with other=0) and their scores are -inf,
so NaN in cache slots nobody attends can never reach an output.

KV_DESC (dense decode, bf16/fp16 pages holding whole BLOCK_N-key tiles, sm_90+): every full tile of a
split comes by TMA (tensor descriptors KD / KPD over the cache seen as a [num_blocks * page_size, d_qk]
matrix) straight into shared memory, with no address tensors in registers; the split's last, partial
tile takes the masked gather. The NoPE dims are one 512-wide operand there (NOPE_W): Triton 3.6 ends
every Q K^T MMA group with a full wgmma wait, so one group instead of four shortens each tile's serial
chain. Elsewhere NOPE_W is 128 (four slices; wider ones spill under the masked gather, and fp8_v32's
scale groups are 128 dims).

fp8_v32 rows are dequantized in-kernel exactly as docs/contract.md says:
bf16(float32(e4m3) * float32 scale) for the 512 NoPE dims, the 64 RoPE dims are bf16 already.

INTERPRET (constexpr) is True under TRITON_INTERPRET=1. The Triton 3.6 interpreter multiplies bf16
tensors as raw uint16 bits and truncates float32 -> bf16, so in that mode the kernels keep every
operand as float32 holding the exact bf16/fp16 value (upcasts are exact; downcasts go through an
explicit round-to-nearest-even), which reproduces the GPU numerics (bf16/fp16 MMA operands, float32
accumulation) on the CPU.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _rne(x, IS_BF16: tl.constexpr):
    """float32 -> float32 holding x rounded (nearest even) to bf16 / fp16 (the interpreter path)."""
    if IS_BF16:
        u = x.to(tl.uint32, bitcast=True)
        u = u + 0x7FFF + ((u >> 16) & 1)
        u = (u >> 16) << 16
        y = u.to(tl.float32, bitcast=True)
    else:
        y = x.to(tl.float16).to(tl.float32)
    return y


@triton.jit
def _to_half(x, IS_BF16: tl.constexpr):
    """-> bf16 or fp16 (round to nearest even)."""
    if IS_BF16:
        y = x.to(tl.bfloat16)
    else:
        y = x.to(tl.float16)
    return y


@triton.jit
def _operand(x, IS_BF16: tl.constexpr, INTERPRET: tl.constexpr):
    """A float32 tile -> an MMA operand of the compute dtype (bf16/fp16; fp32-held values when interpreted)."""
    if INTERPRET:
        y = _rne(x, IS_BF16)
    else:
        y = _to_half(x, IS_BF16)
    return y


@triton.jit
def _as_operand(x, INTERPRET: tl.constexpr):
    """A bf16/fp16 tile loaded from memory -> an MMA operand (exact float32 when interpreted)."""
    if INTERPRET:
        y = x.to(tl.float32)
    else:
        y = x
    return y


@triton.jit
def _store_value(x, IS_BF16: tl.constexpr, INTERPRET: tl.constexpr):
    """A float32 tile -> q's dtype for storing (round to nearest even on every path)."""
    # already that dtype when compiled; when interpreted, float32 holding the rounded value (exact cast)
    return _to_half(_operand(x, IS_BF16, INTERPRET), IS_BF16)


@triton.jit
def _load_nope(KV, row_off, valid, C0: tl.constexpr, KV_FP8: tl.constexpr, IS_BF16: tl.constexpr,
               INTERPRET: tl.constexpr, W: tl.constexpr = 128):
    """W NoPE dims [C0, C0 + W) of BLOCK_N cache rows -> [BLOCK_N, W] MMA operand."""
    d = tl.arange(0, W)
    if KV_FP8:
        tl.static_assert(W == 128, "fp8_v32 slices are its 128-dim scale groups")
        raw = tl.load(KV + row_off[:, None] + (C0 + d)[None, :], mask=valid[:, None], other=0)
        x = raw.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        sc_ptr = (KV + row_off + (512 + 4 * (C0 // 128))).to(tl.pointer_type(tl.float32))
        sc = tl.load(sc_ptr, mask=valid, other=0.0)
        # bf16(float32(e4m3) * float32 scale): the product in float32, then one rounding to bf16
        y = _operand(x * sc[:, None], True, INTERPRET)
    else:
        x = tl.load(KV + row_off[:, None] + (C0 + d)[None, :], mask=valid[:, None], other=0.0)
        y = _as_operand(x, INTERPRET)
    return y


@triton.jit
def _load_rope(KV, row_off, valid, D_PE: tl.constexpr, KV_FP8: tl.constexpr, INTERPRET: tl.constexpr):
    """The D_PE RoPE dims (after the 512 NoPE dims) -> [BLOCK_N, D_PE] MMA operand."""
    d = tl.arange(0, D_PE)
    if KV_FP8:
        ptr = (KV + row_off + 528).to(tl.pointer_type(tl.bfloat16))
        x = tl.load(ptr[:, None] + d[None, :], mask=valid[:, None], other=0.0)
    else:
        x = tl.load(KV + row_off[:, None] + (512 + d)[None, :], mask=valid[:, None], other=0.0)
    return _as_operand(x, INTERPRET)


@triton.jit
def _load_q(Q, q_off, row_ok, C0: tl.constexpr, W: tl.constexpr, INTERPRET: tl.constexpr):
    d = tl.arange(0, W)
    x = tl.load(Q + q_off[:, None] + (C0 + d)[None, :], mask=row_ok[:, None], other=0.0)
    return _as_operand(x, INTERPRET)


@triton.jit
def _gather_tile(KV, BT, IDX, bt_base, idx_base, t0, end, g, capacity, page_size, skv_blk, skv_page, skv_h,
                 SPARSE: tl.constexpr, PAGE_TILE: tl.constexpr, KV_FP8: tl.constexpr, D_PE: tl.constexpr,
                 IS_BF16: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr, NOPE_W: tl.constexpr):
    """Keys [t0, t0 + BLOCK_N) by masked loads -> (k0..k3 NoPE slices, RoPE part, t, valid)."""
    t = t0 + tl.arange(0, BLOCK_N)
    in_range = t < end
    if SPARSE:
        idx = tl.load(IDX + idx_base + t, mask=in_range, other=-1)
        valid = in_range & (idx >= 0) & (idx < capacity)
        slot_id = tl.where(valid, idx, 0)
        blk = slot_id // page_size
        off = slot_id % page_size
    elif PAGE_TILE:
        # page_size % BLOCK_N == 0 and tiles start at multiples of BLOCK_N: one page per tile, one
        # block-table read (t0 < end: a used entry) instead of a dependent gather per key
        valid = in_range
        blk = tl.load(BT + bt_base + t0 // page_size)
        off = t % page_size
    else:
        valid = in_range
        blk = tl.load(BT + bt_base + t // page_size, mask=valid, other=0)
        off = t % page_size
    row_off = blk.to(tl.int64) * skv_blk + off.to(tl.int64) * skv_page + g.to(tl.int64) * skv_h
    k0 = _load_nope(KV, row_off, valid, 0, KV_FP8, IS_BF16, INTERPRET, NOPE_W)
    if NOPE_W < 512:
        k1 = _load_nope(KV, row_off, valid, NOPE_W, KV_FP8, IS_BF16, INTERPRET, NOPE_W)
    else:
        k1 = k0                        # never used
    if NOPE_W == 128:
        k2 = _load_nope(KV, row_off, valid, 256, KV_FP8, IS_BF16, INTERPRET)
        k3 = _load_nope(KV, row_off, valid, 384, KV_FP8, IS_BF16, INTERPRET)
    else:
        k2 = k0                        # never used
        k3 = k0
    if D_PE > 0:
        kp = _load_rope(KV, row_off, valid, D_PE, KV_FP8, INTERPRET)
    else:
        kp = k0                        # never used
    return k0, k1, k2, k3, kp, t, valid


@triton.jit
def _attend_tile(q0, q1, q2, q3, qp, k0, k1, k2, k3, kp, keep, scale_log2, m_i, l_i, acc0, acc1, acc2, acc3,
                 D_PE: tl.constexpr, IS_BF16: tl.constexpr, P_MODE: tl.constexpr, INTERPRET: tl.constexpr,
                 NOPE_W: tl.constexpr):
    """One key tile of the online softmax: scores (keys where `keep` is false score -inf), the running
    maximum / sum, and P @ V into the four 128-column accumulators."""
    s = tl.dot(q0, tl.trans(k0))
    if NOPE_W < 512:
        s = tl.dot(q1, tl.trans(k1), s)
    if NOPE_W == 128:
        s = tl.dot(q2, tl.trans(k2), s)
        s = tl.dot(q3, tl.trans(k3), s)
    if D_PE > 0:
        s = tl.dot(qp, tl.trans(kp), s)
    s = tl.where(keep, s * scale_log2, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)     # no key yet: avoid (-inf) - (-inf)
    alpha = tl.math.exp2(m_i - m_use)
    pr = tl.math.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(pr, 1)
    # unconditional: skipping it when no row maximum moved (a branch on a reduction) measured 13-15 %
    # slower on 64-row tiles (it stops the MMA pipelining; docs/benchmarks/triton.md)
    acc0 = acc0 * alpha[:, None]
    if NOPE_W < 512:
        acc1 = acc1 * alpha[:, None]
    if NOPE_W == 128:
        acc2 = acc2 * alpha[:, None]
        acc3 = acc3 * alpha[:, None]
    # P @ V. The weights are rounded to bf16 (fp16 for fp16 inputs) for the MMA, which errs by up
    # to 2^-8 of sum_t p_t |v_t| (FlashMLA's numerics; the conformance tolerance allows exactly
    # this). With bf16 inputs P_MODE 1 adds the rounding residual as a second bf16 MMA
    # (p = hi + lo, error ~2^-16): ops.config picks it where it costs nothing measurable.
    pp = _operand(pr, IS_BF16, INTERPRET)
    acc0, acc1, acc2, acc3 = _weights_times_values(pp, k0, k1, k2, k3, acc0, acc1, acc2, acc3, NOPE_W)
    if P_MODE == 1:
        pl = _operand(pr - pp.to(tl.float32), IS_BF16, INTERPRET)
        acc0, acc1, acc2, acc3 = _weights_times_values(pl, k0, k1, k2, k3, acc0, acc1, acc2, acc3, NOPE_W)
    return m_new, l_i, acc0, acc1, acc2, acc3


@triton.jit
def _weights_times_values(w, k0, k1, k2, k3, acc0, acc1, acc2, acc3, NOPE_W: tl.constexpr):
    """acc += w @ V over the NoPE slices in use (V = the tile's NoPE dims)."""
    acc0 = tl.dot(w, k0, acc0)
    if NOPE_W < 512:
        acc1 = tl.dot(w, k1, acc1)
    if NOPE_W == 128:
        acc2 = tl.dot(w, k2, acc2)
        acc3 = tl.dot(w, k3, acc3)
    return acc0, acc1, acc2, acc3


# Sizes are not specialized (a value of 1 or a multiple of 16 would otherwise compile a new variant);
# strides are, so that rows whose stride is a multiple of 16 elements get 16-byte vector loads.
_SIZES = ["n_tiles", "G", "rows", "r_heads", "units_per_req", "s_q_unit", "s_q", "capacity", "page_size", "topk",
          "fixed_splits", "chunk", "causal", "has_sink", "has_topk_len"]


@triton.jit(do_not_specialize=_SIZES)
def _mla_fwd_kernel(
    Q, KV, KD, KPD, BT, SEQ, IDX, TOPKLEN, SCHED, SINK,
    O, LSE, MAXL, PO, PLSE,
    n_tiles, G, rows, r_heads, units_per_req, s_q_unit, s_q, capacity, page_size, topk, fixed_splits, chunk,
    causal, has_sink, has_topk_len,
    sq_b, sq_s, sq_h,
    skv_blk, skv_page, skv_h,
    sbt_b,
    si_b, si_s, si_g,
    so_b, so_s, so_h,
    sl_b, sl_h, sl_s,
    sm_b, sm_h,
    spo_p, spo_g, spo_r,
    spl_p, spl_g,
    scale_log2,
    SPARSE: tl.constexpr,
    WRITE_MAXL: tl.constexpr, KV_FP8: tl.constexpr, D_PE: tl.constexpr, IS_BF16: tl.constexpr,
    P_MODE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr,
    PAGE_TILE: tl.constexpr = False, KV_DESC: tl.constexpr = False,
    NOPE_W: tl.constexpr = 128,
):
    pid = tl.program_id(0)
    tg = pid % (n_tiles * G)           # head tiles of one split are neighbours: they share its keys in L2
    p = pid // (n_tiles * G)
    g = tg // n_tiles
    tile = tg % n_tiles

    # ---- which unit / keys this program owns ----
    if SPARSE:
        # fixed_splits splits of `chunk` indices per unit, computed here (no schedule needed)
        u = p // fixed_splits
        local = p % fixed_splits
        i = u // units_per_req
        n_keys = topk
        if has_topk_len != 0:
            n_keys = tl.minimum(tl.maximum(tl.load(TOPKLEN + i), 0), topk)
        start = local * chunk
        end = tl.minimum(start + chunk, n_keys)
        n_split = fixed_splits
        slot = p
        part_ok = p >= 0
    else:
        # the plan's schedule row: [request, token start, token end, partial slot, splits of request, ...]
        u = tl.load(SCHED + p * 8 + 0)
        start = tl.load(SCHED + p * 8 + 1)
        end = tl.load(SCHED + p * 8 + 2)
        slot = tl.load(SCHED + p * 8 + 3)
        n_split = tl.load(SCHED + p * 8 + 4)
        part_ok = n_split > 0          # padding rows of the fixed-size schedule: 0 splits, start == end == 0
        i = u
        n_keys = tl.load(SEQ + i)
    j0 = (u % units_per_req) * s_q_unit
    i64 = i.to(tl.int64)

    # ---- the query rows of this tile: row m = (query token jj, head hh within the KV group) ----
    m = tile * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = m < rows
    jj = m // r_heads
    hh = m % r_heads
    j = j0 + jj
    head = g * r_heads + hh
    q_off = i64 * sq_b + j.to(tl.int64) * sq_s + head.to(tl.int64) * sq_h
    q_ok = row_ok & part_ok
    q0 = _load_q(Q, q_off, q_ok, 0, NOPE_W, INTERPRET)
    if NOPE_W < 512:
        q1 = _load_q(Q, q_off, q_ok, NOPE_W, NOPE_W, INTERPRET)
    else:
        q1 = q0                        # never used
    if NOPE_W == 128:
        q2 = _load_q(Q, q_off, q_ok, 256, 128, INTERPRET)
        q3 = _load_q(Q, q_off, q_ok, 384, 128, INTERPRET)
    else:
        q2 = q0                        # never used
        q3 = q0
    if D_PE > 0:
        qp = _load_q(Q, q_off, q_ok, 512, D_PE, INTERPRET)
    else:
        qp = q0                        # never used
    # causal, bottom-right aligned: query j sees keys [0, L - s_q + j], i.e. t < n_vis
    n_vis = tl.where(causal != 0, n_keys - s_q + j + 1, n_keys)
    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc0 = tl.zeros([BLOCK_H, NOPE_W], tl.float32)
    if NOPE_W < 512:
        acc1 = tl.zeros([BLOCK_H, NOPE_W], tl.float32)
    else:
        acc1 = tl.zeros([1, 1], tl.float32)     # never used
    if NOPE_W == 128:
        acc2 = tl.zeros([BLOCK_H, 128], tl.float32)
        acc3 = tl.zeros([BLOCK_H, 128], tl.float32)
    else:
        acc2 = tl.zeros([1, 1], tl.float32)     # never used
        acc3 = tl.zeros([1, 1], tl.float32)

    if SPARSE:
        idx_base = i64 * si_b + j0.to(tl.int64) * si_s + g.to(tl.int64) * si_g
        bt_base = i64 * 0
    else:
        idx_base = i64 * 0
        bt_base = i64 * sbt_b
    if KV_DESC:
        # Full tiles through TMA (bf16/fp16 pages holding whole tiles, KD / KPD: the cache as a
        # [num_blocks * page_size, d_qk] matrix): the copies land in shared memory with no address
        # tensors in registers. The last, partial tile (if any) takes the masked gather below, so
        # cache rows past the request's end are never read.
        t_full = start + (end - start) // BLOCK_N * BLOCK_N
        # the block-table entry of the next tile is read one iteration ahead, so its latency is not
        # in front of the next tile's TMA issue (1-4 % on 64-row tiles, H100)
        blk_next = tl.load(BT + bt_base + start // page_size, mask=start < t_full, other=0)
        for t0 in range(start, t_full, BLOCK_N):
            blk = blk_next
            blk_next = tl.load(BT + bt_base + (t0 + BLOCK_N) // page_size, mask=t0 + BLOCK_N < t_full, other=0)
            r0 = blk * page_size + t0 % page_size
            k0 = _as_operand(KD.load([r0, 0]), INTERPRET)
            if NOPE_W < 512:
                k1 = _as_operand(KD.load([r0, NOPE_W]), INTERPRET)
            else:
                k1 = k0                # never used
            if NOPE_W == 128:
                k2 = _as_operand(KD.load([r0, 256]), INTERPRET)
                k3 = _as_operand(KD.load([r0, 384]), INTERPRET)
            else:
                k2 = k0                # never used
                k3 = k0
            if D_PE > 0:
                kp = _as_operand(KPD.load([r0, 512]), INTERPRET)
            else:
                kp = k0                # never used
            t = t0 + tl.arange(0, BLOCK_N)
            keep = t[None, :] < n_vis[:, None]
            m_i, l_i, acc0, acc1, acc2, acc3 = _attend_tile(
                q0, q1, q2, q3, qp, k0, k1, k2, k3, kp, keep, scale_log2, m_i, l_i, acc0, acc1, acc2, acc3,
                D_PE, IS_BF16, P_MODE, INTERPRET, NOPE_W)
        if t_full < end:
            k0, k1, k2, k3, kp, t, valid = _gather_tile(
                KV, BT, IDX, bt_base, idx_base, t_full, end, g, capacity, page_size, skv_blk, skv_page, skv_h,
                False, PAGE_TILE, KV_FP8, D_PE, IS_BF16, BLOCK_N, INTERPRET, NOPE_W)
            keep = valid[None, :] & (t[None, :] < n_vis[:, None])
            m_i, l_i, acc0, acc1, acc2, acc3 = _attend_tile(
                q0, q1, q2, q3, qp, k0, k1, k2, k3, kp, keep, scale_log2, m_i, l_i, acc0, acc1, acc2, acc3,
                D_PE, IS_BF16, P_MODE, INTERPRET, NOPE_W)
    else:
        for t0 in range(start, end, BLOCK_N):
            k0, k1, k2, k3, kp, t, valid = _gather_tile(
                KV, BT, IDX, bt_base, idx_base, t0, end, g, capacity, page_size, skv_blk, skv_page, skv_h,
                SPARSE, PAGE_TILE, KV_FP8, D_PE, IS_BF16, BLOCK_N, INTERPRET, NOPE_W)
            if SPARSE:
                keep = valid[None, :]
            else:
                keep = valid[None, :] & (t[None, :] < n_vis[:, None])
            m_i, l_i, acc0, acc1, acc2, acc3 = _attend_tile(
                q0, q1, q2, q3, qp, k0, k1, k2, k3, kp, keep, scale_log2, m_i, l_i, acc0, acc1, acc2, acc3,
                D_PE, IS_BF16, P_MODE, INTERPRET, NOPE_W)

    # ---- epilogue ----
    has_key = l_i > 0.0
    inv_l = tl.where(has_key, 1.0 / tl.where(has_key, l_i, 1.0), 0.0)
    lse = tl.where(has_key, (m_i + tl.math.log2(tl.where(has_key, l_i, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    dv = tl.arange(0, NOPE_W)
    if n_split == 1:
        # the unit's only split: final outputs here, no combine
        factor = inv_l
        if has_sink != 0:
            sink = tl.load(SINK + head, mask=row_ok, other=0.0)
            # out *= exp(lse) / (exp(lse) + exp(sink)); sink=+inf -> 0, sink=-inf -> 1 (empty rows stay 0)
            factor = tl.where(has_key, factor / (1.0 + tl.exp(sink - tl.where(has_key, lse, 0.0))), 0.0)
        o_ptr = O + (i64 * so_b + j.to(tl.int64) * so_s + head.to(tl.int64) * so_h)[:, None] + dv[None, :]
        st = (row_ok & part_ok)[:, None]
        tl.store(o_ptr, _store_value(acc0 * factor[:, None], IS_BF16, INTERPRET), mask=st)
        if NOPE_W < 512:
            tl.store(o_ptr + NOPE_W, _store_value(acc1 * factor[:, None], IS_BF16, INTERPRET), mask=st)
        if NOPE_W == 128:
            tl.store(o_ptr + 256, _store_value(acc2 * factor[:, None], IS_BF16, INTERPRET), mask=st)
            tl.store(o_ptr + 384, _store_value(acc3 * factor[:, None], IS_BF16, INTERPRET), mask=st)
        lse_out = tl.where(has_key, lse, float("inf"))
        tl.store(LSE + i64 * sl_b + head.to(tl.int64) * sl_h + j.to(tl.int64) * sl_s, lse_out,
                 mask=row_ok & part_ok)
        if WRITE_MAXL:
            tl.store(MAXL + i64 * sm_b + head.to(tl.int64) * sm_h, m_i * 0.6931471805599453,
                     mask=row_ok & part_ok)
    else:
        po = PO + slot.to(tl.int64) * spo_p + g.to(tl.int64) * spo_g + (m.to(tl.int64) * spo_r)[:, None] + dv[None, :]
        st = (row_ok & part_ok)[:, None]
        tl.store(po, acc0 * inv_l[:, None], mask=st)
        if NOPE_W < 512:
            tl.store(po + NOPE_W, acc1 * inv_l[:, None], mask=st)
        if NOPE_W == 128:
            tl.store(po + 256, acc2 * inv_l[:, None], mask=st)
            tl.store(po + 384, acc3 * inv_l[:, None], mask=st)
        tl.store(PLSE + slot.to(tl.int64) * spl_p + g.to(tl.int64) * spl_g + m, lse, mask=row_ok & part_ok)


@triton.jit(do_not_specialize=["n_tiles", "G", "rows", "r_heads", "units_per_req", "s_q_unit", "fixed_splits",
                               "has_sink"])
def _combine_kernel(
    PO, PLSE, CUM, SINK, O, LSE,
    n_tiles, G, rows, r_heads, units_per_req, s_q_unit, fixed_splits, has_sink,
    so_b, so_s, so_h,
    sl_b, sl_h, sl_s,
    spo_p, spo_g, spo_r,
    spl_p, spl_g,
    IS_BF16: tl.constexpr, BLOCK_R: tl.constexpr, DV: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Merges the splits of one unit: out = sum_s exp(lse_s - lse) out_s, lse = log sum_s exp(lse_s).

    Units with a single split were written by the split kernel and are skipped here."""
    pid = tl.program_id(0)
    tg = pid % (n_tiles * G)
    u = pid // (n_tiles * G)
    g = tg // n_tiles
    tile = tg % n_tiles
    if fixed_splits > 0:
        base = u * fixed_splits
        n = fixed_splits
    else:
        base = tl.load(CUM + u)
        n = tl.load(CUM + u + 1) - base
    i = u // units_per_req
    j0 = (u % units_per_req) * s_q_unit
    m = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = (m < rows) & (n > 1)
    dv = tl.arange(0, DV)
    m_i = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_R], tl.float32)
    acc = tl.zeros([BLOCK_R, DV], tl.float32)
    n_loop = tl.where(n > 1, n, 0)
    for s in range(0, n_loop):
        sl = (base + s).to(tl.int64)
        lse_s = tl.load(PLSE + sl * spl_p + g.to(tl.int64) * spl_g + m, mask=row_ok, other=float("-inf"))
        o_s = tl.load(PO + sl * spo_p + g.to(tl.int64) * spo_g + (m.to(tl.int64) * spo_r)[:, None] + dv[None, :],
                      mask=row_ok[:, None], other=0.0)
        m_new = tl.maximum(m_i, lse_s)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_use)
        w = tl.exp(lse_s - m_use)
        l_i = l_i * alpha + w
        acc = acc * alpha[:, None] + w[:, None] * o_s
        m_i = m_new
    has_key = l_i > 0.0
    lse = tl.where(has_key, m_i + tl.log(tl.where(has_key, l_i, 1.0)), float("inf"))
    factor = tl.where(has_key, 1.0 / tl.where(has_key, l_i, 1.0), 0.0)
    jj = m // r_heads
    hh = m % r_heads
    j = j0 + jj
    head = g * r_heads + hh
    if has_sink != 0:
        sink = tl.load(SINK + head, mask=row_ok, other=0.0)
        factor = tl.where(has_key, factor / (1.0 + tl.exp(sink - tl.where(has_key, lse, 0.0))), 0.0)
    i64 = i.to(tl.int64)
    o_ptr = O + (i64 * so_b + j.to(tl.int64) * so_s + head.to(tl.int64) * so_h)[:, None] + dv[None, :]
    tl.store(o_ptr, _store_value(acc * factor[:, None], IS_BF16, INTERPRET), mask=row_ok[:, None])
    tl.store(LSE + i64 * sl_b + head.to(tl.int64) * sl_h + j.to(tl.int64) * sl_s, lse, mask=row_ok)


@triton.jit
def _probe_kernel(X, n):
    """is_available() runs this under the interpreter: a loop with a runtime bound, as the kernels have."""
    acc = 0.0
    for _ in range(0, tl.load(X + 0) + n):
        acc += 1.0
    tl.store(X + 1, acc.to(tl.int32))
