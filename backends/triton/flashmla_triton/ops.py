"""Host side of flashmla-triton: launch configurations, the decode plan, and the op launchers.

Nothing here reads a device tensor on the host: plans are made with torch ops on the device into
buffers whose sizes depend only on host-known sizes (batch size, head counts, topk, SM count), and
the ops size their grids from those buffers' shapes. Every op is CUDA-graph capturable.

Work decomposition (see kernels.py): a *unit* is what one softmax covers (a dense-decode request,
a (request, query token) of sparse decode, a query token of sparse prefill); a unit's keys are cut
into *splits*; a unit's query rows per KV head are tiled by BLOCK_H. One program = (split, KV head,
head tile); splits of a unit with more than one split are merged by the combine kernel.

The plan of dense decode (`plan_decode` with topk=None), computed on the device:
  schedule   int32 [num_parts, 8]; row p is one split:
               col 0  request index
               col 1  first token of the split (inclusive)
               col 2  last token of the split (exclusive)
               col 3  partial slot (row of the float32 partial buffers) = p
               col 4  number of splits of that request (0 marks a padding row: the program exits)
               col 5  index of the split within its request
               col 6  tokens per split of that request (the chunk)
               col 7  0 (reserved)
             Splits of one request are consecutive rows; padding rows come last.
  num_splits int32 [b + 1]: exclusive prefix sum of splits per request (request i owns rows
             num_splits[i] .. num_splits[i+1]-1).
  num_parts is target_parts + b (non-deterministic; target_parts = max(b, WAVES * SMs / programs per
  split)) or b * DET_MAX_SPLITS (deterministic); a request with a single split is finished by the
  split kernel and skipped by the combine kernel.
  Non-deterministic: request i gets ceil(L_i / c) splits for one batch-wide c >= sum(L) / target_parts
  (long requests get more splits), its tokens shared evenly among them. Deterministic: each request
  is cut by its own length only (<= DET_MAX_SPLITS splits), so its result never depends on its
  batch-mates. Chunks are whole multiples of GRANULE tokens, so a split never starts mid-tile.

The plan of sparse decode (`plan_decode` with topk=K): every (request, query token) is cut into the
same number S of splits of ceil(K / S) indices (host-known: it depends on b, s_q*h_q and K only), so
the kernel computes its ranges itself and reads no schedule. The buffers still describe it:
  schedule   int32 [b * S, 8]; row i*S + s = [i, s, s*chunk, min(K, (s+1)*chunk), S, chunk, K, 0]
  num_splits int32 [b + 1] = arange(b + 1) * S (splits per query token of each request)
  The op reads S back from schedule.shape[0] // b.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch

from . import kernels

# Chunks of the split schedule are multiples of this many tokens (a multiple of every BLOCK_N).
GRANULE = 64
# Deterministic plans split each request by its own length only (batch-invariant): at most this many splits.
DET_MAX_SPLITS = 8
# Programs a plan aims for, per SM: with fewer programs than WAVES * SMs the keys are split.
WAVES = float(os.environ.get("FLASHMLA_TRITON_WAVES", "1"))
# dense_parts, 64-row tiles: no split beyond one per request on average once b programs fill this share
# of the SMs.
WHOLE_FILL = 0.9
# Width of the NoPE operands on the TMA path (kernels.py, NOPE_W): 128, 256 or 512 (OVERRIDE["nope_w"]).
TMA_NOPE_W = 512
# Under the interpreter there are no SMs; this many keeps the split/combine path exercised on tiny shapes.
INTERPRETER_SMS = 8

# Tuning hook for benchmarks/sweeps: overrides of the launch configuration, e.g.
# flashmla_triton.ops.OVERRIDE.update(BLOCK_N=32, num_warps=8, num_stages=2). Empty in normal use.
OVERRIDE: dict = {}


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    if interpreted() or device.type != "cuda":
        return INTERPRETER_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


@dataclass(frozen=True)
class Config:
    BLOCK_H: int
    BLOCK_N: int
    num_warps: int
    num_stages: int
    p_mode: int = 1          # P @ V with bf16 inputs: 1 = two MMAs (hi + lo), 0 = one MMA (kernels.py, P_MODE)
    tma: bool = False        # dense decode's full tiles by TMA where the cache allows it (kernels.py, KV_DESC)


def block_h(rows: int) -> int:
    """Query rows per program: the smallest MMA tile (16 / 32 / 64 rows) that holds the rows, so any
    head count runs with at most one partly filled tile. OVERRIDE may force another."""
    if "BLOCK_H" in OVERRIDE:
        return OVERRIDE["BLOCK_H"]
    return 16 if rows <= 16 else 32 if rows <= 32 else 64


def config(rows: int, d_qk: int, kv_fp8: bool, device: torch.device, op: str) -> Config:
    """The launch configuration of the split kernel. Depends on the rows per KV head, head dims and
    the cache format, never on the batch (so deterministic plans stay batch-invariant)."""
    bh = block_h(rows)
    # P @ V numerics per tile size (kernels.py, P_MODE): 16-row tiles keep the exact two-MMA form (on
    # the H100 it measured as fast as the single MMA there); 32/64-row tiles use the single bf16 MMA
    # (FlashMLA's numerics, within the kit's 16-bit-probability tolerance), which keeps 64-row wgmma
    # tiles nearly free of register spills (tp2-h64-8k: 709 us, vs 1234 us for the best two-MMA form).
    p_mode = 1 if bh == 16 else 0
    if interpreted() or device.type != "cuda":
        # the interpreter runs a tile per numpy op: big tiles, few ops; TMA on, so CI runs that path too
        cfg = Config(bh, 64, 4, 1, p_mode, tma=True)
    # Measured on the H100 (tools/sweep.py, 2026-11-22; README.md has the table):
    elif bh == 16:
        cfg = Config(16, 32, 4, 3, p_mode) if kv_fp8 else Config(16, 64, 4, 2, p_mode)
    elif bh == 32:
        cfg = Config(32, 32, 4, 3, p_mode)
    else:
        # TMA on 64-row tiles only: tp2-h64-8k 658 -> 629 us (the 16-row tiles, two programs per SM, lost
        # 31-45 % with it: tp8-h16-4k 239 -> 346 us); docs/benchmarks/triton.md, seventh session
        cfg = Config(64, 64, 8, 2, p_mode, tma=True)
    if OVERRIDE:
        cfg = Config(**{**cfg.__dict__, **{k: v for k, v in OVERRIDE.items() if k in cfg.__dict__}})
    return cfg


# Configurations that did not fit a device's shared memory (a GPU with less than Hopper's 227 KB),
# mapped to the smaller one that did: fewer pipeline stages first, then smaller key tiles.
_FITTED: dict = {}


def _smaller(cfg: Config) -> Optional[Config]:
    if cfg.num_stages > 1:
        return Config(cfg.BLOCK_H, cfg.BLOCK_N, cfg.num_warps, cfg.num_stages - 1, cfg.p_mode, cfg.tma)
    if cfg.BLOCK_N > 16:
        return Config(cfg.BLOCK_H, cfg.BLOCK_N // 2, cfg.num_warps, 2, cfg.p_mode, cfg.tma)
    return None


def _target_parts(device, programs_per_split: int) -> int:
    return max(1, math.ceil(WAVES * sm_count(device) / max(1, programs_per_split)))


# ---------------------------------------------------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------------------------------------------------
def dense_parts(device, b: int, rows: int, h_kv: int, deterministic: bool) -> tuple:
    """Host-side sizing of a dense-decode plan: (num_parts, target_parts; None when deterministic)."""
    tiles = math.ceil(rows / block_h(rows)) * h_kv
    if deterministic:
        return b * DET_MAX_SPLITS, None
    # At least one split per request on average; requests longer than the batch-wide chunk are cut
    # further, so one long request in a batch (varlen) does not keep a single SM busy to the end.
    target = max(_target_parts(device, tiles), b)
    # 64-row programs run one per SM (shared memory). When one per request already fills WHOLE_FILL
    # of the SMs, cutting every request in two (b = 128 over 132 SMs) buys no parallelism and costs the
    # partials and the combine: 3 % on tp2-h64-8k. Requests then stay whole unless longer than the mean.
    # Smaller tiles fit two programs per SM and keep the split (19 % faster on tp8-h16-4k);
    # docs/benchmarks/triton.md.
    if block_h(rows) == 64 and b * tiles >= WHOLE_FILL * WAVES * sm_count(device):
        target = b
    return target + b, target


def plan_dense(device, b: int, rows: int, h_kv: int, deterministic: bool, cache_seqlens: torch.Tensor):
    """-> (schedule int32 [num_parts, 8], num_splits int32 [b + 1]), made on the device (no host sync)."""
    num_parts, target = dense_parts(device, b, rows, h_kv, deterministic)
    dev = cache_seqlens.device
    L = cache_seqlens.to(torch.int64).clamp(min=0)
    sched = torch.zeros(num_parts, 8, dtype=torch.int32, device=dev)
    if b == 0:
        return sched, torch.zeros(1, dtype=torch.int32, device=dev)
    if deterministic:
        # by the request's own length only: chunk = ceil(L / DET_MAX_SPLITS) rounded up to GRANULE
        chunk = ((L + DET_MAX_SPLITS - 1) // DET_MAX_SPLITS + GRANULE - 1) // GRANULE * GRANULE
        chunk = chunk.clamp(min=GRANULE)
    else:
        # ~target splits in all: request i gets n_i = ceil(L_i / c) splits for one batch-wide c >= total / target
        # (so sum_i n_i <= target + b), then its tokens are shared evenly among them, in whole granules
        c = ((L.sum() + target - 1) // target).clamp(min=GRANULE)
        n = ((L + c - 1) // c).clamp(min=1)
        chunk = (((L + n - 1) // n + GRANULE - 1) // GRANULE * GRANULE).clamp(min=GRANULE)
    n = ((L + chunk - 1) // chunk).clamp(min=1)          # a zero-length request still gets one (empty) split
    cum = torch.zeros(b + 1, dtype=torch.int64, device=dev)
    cum[1:] = torch.cumsum(n, 0)
    p = torch.arange(num_parts, dtype=torch.int64, device=dev)
    req = torch.searchsorted(cum[1:], p, right=True)
    ok = req < b
    req = req.clamp(max=b - 1)
    local = p - cum[req]
    c = chunk[req]
    start = local * c
    end = torch.minimum(start + c, L[req])
    zero = torch.zeros_like(p)
    cols = torch.stack([req, torch.where(ok, start, zero), torch.where(ok, end, zero), p,
                        torch.where(ok, n[req], zero), torch.where(ok, local, zero), torch.where(ok, c, zero), zero],
                       dim=1)
    sched.copy_(cols.to(torch.int32))
    return sched, cum.to(torch.int32)


def sparse_splits(device, b: int, rows: int, topk: int, deterministic: bool) -> int:
    """Splits per (request, query token) of sparse decode; host-known (b, s_q * h_q, topk only)."""
    if deterministic:
        return 1
    programs = b * math.ceil(min(rows, 128) / block_h(min(rows, 128)))
    target = WAVES * sm_count(device)
    if programs >= target:
        return 1
    s = min(math.ceil(target / programs), math.ceil(topk / GRANULE))
    chunk = math.ceil(math.ceil(topk / s) / GRANULE) * GRANULE
    return max(1, math.ceil(topk / chunk))


def plan_sparse(device, b: int, rows: int, topk: int, deterministic: bool):
    s = sparse_splits(device, b, rows, topk, deterministic)
    chunk = math.ceil(topk / s)
    p = torch.arange(max(1, b * s), dtype=torch.int32, device=device)
    local = p % s
    start = torch.clamp(local * chunk, max=topk)
    cols = [p // s, local, start, torch.clamp(start + chunk, max=topk), torch.full_like(p, s),
            torch.full_like(p, chunk), torch.full_like(p, topk), torch.zeros_like(p)]
    sched = torch.stack(cols, dim=1)
    if b == 0:
        sched = torch.zeros(1, 8, dtype=torch.int32, device=device)
    return sched, torch.arange(b + 1, dtype=torch.int32, device=device) * s


# ---------------------------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------------------------
def _launch(q, kv, o, lse, *, maxl, sink, units, units_per_req, s_q_unit, s_q, G, r_heads, rows, q_strides,
            kv_strides, o_strides, l_strides, m_strides, page_size, capacity, scale, kv_fp8, d_pe,
            sparse, causal, bt=None, seqlens=None, sched=None, num_parts=None, cum=None,
            idx=None, idx_strides=(0, 0, 0), topk=0, topk_len=None, fixed_splits=0, chunk=0, op="dense_decode"):
    dev = q.device
    interp = interpreted()
    base = config(rows, 512 + d_pe, kv_fp8, dev, op)
    cfg = _FITTED.get((base, dev), base)
    n_tiles = triton_cdiv(rows, cfg.BLOCK_H)
    parts = units * fixed_splits if sparse else num_parts
    need_combine = (fixed_splits > 1) if sparse else (num_parts > units)
    f32 = torch.float32
    if need_combine:
        po = torch.empty(parts, G, rows, 512, dtype=f32, device=dev)
        pl = torch.empty(parts, G, rows, dtype=f32, device=dev)
        po_s, pl_s = (po.stride(0), po.stride(1), po.stride(2)), (pl.stride(0), pl.stride(1))
    else:
        po = pl = lse                    # never written (every unit has a single split)
        po_s, pl_s = (0, 0, 0), (0, 0)
    grid = (parts * G * n_tiles,)
    while grid[0] > 0:
        try:
            _launch_fwd(cfg, grid, q, kv, o, lse, maxl, sink, po, pl, bt, seqlens, idx, topk_len, sched,
                        n_tiles, G, rows, r_heads, units_per_req, s_q_unit, s_q, capacity, page_size, topk,
                        fixed_splits, chunk, q_strides, kv_strides, idx_strides, o_strides, l_strides, m_strides,
                        po_s, pl_s, scale, sparse, causal, kv_fp8, d_pe, interp)
            break
        except Exception as exc:  # noqa: BLE001
            smaller = _smaller(cfg) if type(exc).__name__ == "OutOfResources" else None
            if smaller is None:
                raise
            _FITTED[(base, dev)] = cfg = smaller
    if need_combine and units > 0:
        br = 16
        ct = triton_cdiv(rows, br)
        kernels._combine_kernel[(units * G * ct,)](
            po, pl, _dummy_i32(dev) if cum is None else cum, lse if sink is None else sink, o, lse,
            ct, G, rows, r_heads, units_per_req, s_q_unit, fixed_splits if sparse else 0, int(sink is not None),
            *o_strides, *l_strides, *po_s, *pl_s,
            IS_BF16=q.dtype == torch.bfloat16, BLOCK_R=br, DV=512, INTERPRET=interp,
            num_warps=4, num_stages=2,
        )


def _launch_fwd(cfg, grid, q, kv, o, lse, maxl, sink, po, pl, bt, seqlens, idx, topk_len, sched,
                n_tiles, G, rows, r_heads, units_per_req, s_q_unit, s_q, capacity, page_size, topk, fixed_splits,
                chunk, q_strides, kv_strides, idx_strides, o_strides, l_strides, m_strides, po_s, pl_s, scale,
                sparse, causal, kv_fp8, d_pe, interp):
    # Pointers a variant never dereferences still need their declared element type (int32 or float32):
    # the untaken branches are compiled too.
    i32 = _dummy_i32(q.device)
    page_tile = bool(OVERRIDE.get("page_tile", True)) and not sparse and page_size % cfg.BLOCK_N == 0
    # NoPE operand width: the TMA path takes the whole 512-dim latent as one operand (one Q K^T MMA group
    # and one P V accumulator instead of four: each group ends in a full wgmma wait in Triton 3.6);
    # the masked-load paths keep 128-dim slices (wider ones spill there; docs/benchmarks/triton.md)
    tma_nope_w = OVERRIDE.get("nope_w", TMA_NOPE_W)
    descs = _kv_descriptors(kv, cfg, d_pe, tma_nope_w) if page_tile and not kv_fp8 and G == 1 else None
    nope_w = tma_nope_w if descs is not None else 128
    kernels._mla_fwd_kernel[grid](
        q, kv, *(descs or (kv, kv)), i32 if bt is None else bt, i32 if seqlens is None else seqlens,
        i32 if idx is None else idx, i32 if topk_len is None else topk_len,
        i32 if sched is None else sched, lse if sink is None else sink,
        o, lse, lse if maxl is None else maxl, po, pl,
        n_tiles, G, rows, r_heads, units_per_req, s_q_unit, s_q, capacity, page_size, topk, fixed_splits, chunk,
        int(causal), int(sink is not None), int(topk_len is not None),
        *q_strides, *kv_strides, bt.stride(0) if bt is not None else 0, *idx_strides,
        *o_strides, *l_strides, *m_strides, *po_s, *pl_s,
        scale * kernels.LOG2E,
        SPARSE=sparse, WRITE_MAXL=maxl is not None, KV_FP8=kv_fp8, D_PE=d_pe, IS_BF16=q.dtype == torch.bfloat16,
        P_MODE=OVERRIDE.get("p_mode", cfg.p_mode) if q.dtype == torch.bfloat16 else 0,
        BLOCK_H=cfg.BLOCK_H, BLOCK_N=cfg.BLOCK_N, INTERPRET=interp,
        PAGE_TILE=page_tile, KV_DESC=descs is not None, NOPE_W=nope_w,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def _kv_descriptors(kv, cfg: Config, d_pe: int, nope_w: int):
    """TMA descriptors of a bf16/fp16 paged cache [num_blocks, page_size, 1, d_qk] seen as the matrix
    [num_blocks * page_size, d_qk]: (the NoPE part's [BLOCK_N, nope_w] boxes, the RoPE part's [BLOCK_N, d_pe]).
    None where TMA cannot express it (no TMA before sm_90, pages not uniformly strided, misaligned rows)
    or FLASHMLA_TRITON_TMA=0; the kernel then gathers every tile with masked loads."""
    if not cfg.tma or os.environ.get("FLASHMLA_TRITON_TMA", "1") == "0":
        return None
    if not interpreted() and (kv.device.type != "cuda" or torch.cuda.get_device_capability(kv.device)[0] < 9):
        return None
    num_blocks, page_size, _, d_qk = kv.shape
    s_blk, s_page, _, s_d = kv.stride()
    item = kv.element_size()
    if (s_d != 1 or s_blk != page_size * s_page or (s_page * item) % 16 or kv.data_ptr() % 16
            or num_blocks * page_size == 0):
        return None
    from triton.tools.tensor_descriptor import TensorDescriptor
    shape, strides = [num_blocks * page_size, d_qk], [s_page, 1]
    nope = TensorDescriptor(kv, shape, strides, [cfg.BLOCK_N, nope_w])
    rope = TensorDescriptor(kv, shape, strides, [cfg.BLOCK_N, d_pe]) if d_pe > 0 else nope
    return nope, rope


@functools.lru_cache(maxsize=None)
def _dummy_i32(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int32, device=device)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _sink(attn_sink):
    return None if attn_sink is None else attn_sink.to(torch.float32).contiguous()


def dense_decode(q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale, causal, attn_sink,
                 plan):
    b, s_q, h_q, d_qk = q.shape
    page_size, h_kv = kv_cache.shape[1], kv_cache.shape[2]
    r = h_q // h_kv
    rows = s_q * r
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    if b == 0:
        return out, lse
    if plan:
        sched, cum = plan
    else:
        sched, cum = plan_dense(q.device, b, rows, h_kv, False, cache_seqlens)
    kv_fp8 = kv_format == "fp8_v32"
    _launch(q, kv_cache, out, lse, maxl=None, sink=_sink(attn_sink), units=b, units_per_req=1, s_q_unit=s_q,
            s_q=s_q, G=h_kv, r_heads=r, rows=rows, q_strides=q.stride()[:3], kv_strides=kv_cache.stride()[:3],
            o_strides=out.stride()[:3], l_strides=lse.stride(), m_strides=(0, 0), page_size=page_size,
            capacity=0, scale=softmax_scale, kv_fp8=kv_fp8, d_pe=d_qk - 512, sparse=False, causal=causal,
            bt=block_table, seqlens=cache_seqlens, sched=sched, num_parts=sched.shape[0], cum=cum)
    return out, lse


def sparse_decode(q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length, attn_sink, plan):
    b, s_q, h_q, d_qk = q.shape
    page_size = kv_cache.shape[1]
    topk = indices.shape[2]
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    if b == 0:
        return out, lse
    if plan:
        s = max(1, plan[0].shape[0] // b)
    else:
        s = sparse_splits(q.device, b, s_q * h_q, topk, False)
    chunk = triton_cdiv(topk, s)
    _launch(q, kv_cache, out, lse, maxl=None, sink=_sink(attn_sink), units=b * s_q, units_per_req=s_q, s_q_unit=1,
            s_q=s_q, G=1, r_heads=h_q, rows=h_q, q_strides=q.stride()[:3], kv_strides=kv_cache.stride()[:3],
            o_strides=out.stride()[:3], l_strides=lse.stride(), m_strides=(0, 0), page_size=page_size,
            capacity=kv_cache.shape[0] * page_size, scale=softmax_scale, kv_fp8=kv_format == "fp8_v32",
            d_pe=d_qk - 512, sparse=True, causal=False, idx=indices,
            idx_strides=(indices.stride(0), indices.stride(1), 0), topk=topk, topk_len=topk_length,
            fixed_splits=s, chunk=chunk, op="sparse_decode")
    return out, lse


def sparse_prefill(q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
    s_q, h_q, d_qk = q.shape
    s_kv, h_kv = kv.shape[0], kv.shape[1]
    topk = indices.shape[2]
    r = h_q // h_kv
    out = torch.empty(s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    max_logits = torch.empty(s_q, h_q, dtype=torch.float32, device=q.device)
    lse = torch.empty(s_q, h_q, dtype=torch.float32, device=q.device)
    if s_q == 0:
        return out, max_logits, lse
    # a query token is a unit with one split (prefill has enough of them to fill the GPU); kv is a
    # "paged cache" of page size 1: [s_kv, 1, h_kv, d_qk]
    _launch(q, kv, out, lse, maxl=max_logits, sink=_sink(attn_sink), units=s_q, units_per_req=1, s_q_unit=1,
            s_q=1, G=h_kv, r_heads=r, rows=r, q_strides=(q.stride(0), 0, q.stride(1)),
            kv_strides=(kv.stride(0), 0, kv.stride(1)), o_strides=(out.stride(0), 0, out.stride(1)),
            l_strides=(lse.stride(0), lse.stride(1), 0), m_strides=(max_logits.stride(0), max_logits.stride(1)),
            page_size=1, capacity=s_kv, scale=softmax_scale, kv_fp8=False, d_pe=d_qk - 512, sparse=True,
            causal=False, idx=indices, idx_strides=(indices.stride(0), 0, indices.stride(1)), topk=topk,
            topk_len=topk_length, fixed_splits=1, chunk=topk, op="sparse_prefill")
    return out, max_logits, lse
