"""The benchmark workloads of shared targets.md as data, their FLOP/byte formulas, and input builders.

Every number here is the one targets.md states; the formulas are copied from it term for term so
that our GB/s and TFLOP/s are comparable with the published FlashMLA figures (which use the same
formulas). `quick()` shrinks a workload so the reference backend runs the whole set on a laptop CPU.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Optional

import torch

OPS = ("dense_decode", "sparse_decode", "sparse_prefill")
FP8_V32_BYTES_PER_TOKEN = 656
VARLEN_SEED = 0


@dataclass(frozen=True)
class Target:
    """The best published FlashMLA figure for a row on the H100 (targets.md), in its own units."""

    gbps: Optional[float] = None
    tflops: Optional[float] = None
    ms: Optional[float] = None

    def __str__(self) -> str:
        metric = f"{self.gbps:g} GB/s" if self.gbps else f"{self.tflops:g} TFLOP/s" if self.tflops else ""
        t = (f"{self.ms:g} ms" if self.ms >= 0.1 else f"{self.ms * 1e3:g} µs") if self.ms else ""
        return f"{metric} ({t})" if metric and t else metric or t


TARGET_DEVICE = "NVIDIA H100 80GB HBM3"


@dataclass(frozen=True)
class Workload:
    id: str
    op: str                       # one of OPS
    b: int                        # requests (1 for sparse prefill, which has no batch)
    s_q: int                      # queries per request (decode) / query tokens (prefill)
    h_q: int
    s_k: int                      # KV tokens per request (decode: the mean when varlen) / s_kv (prefill)
    topk: Optional[int] = None
    kv_format: str = "bf16"
    varlen_std: Optional[int] = None  # dense decode only: lengths ~ N(s_k, std), clipped, seeded
    target: Optional[Target] = None
    note: str = ""
    page: int = 64
    h_kv: int = 1
    d_qk: int = 576
    d_v: int = 512
    scaled: bool = False          # True once quick() shrank it: targets no longer apply

    @property
    def causal(self) -> bool:
        return self.op == "dense_decode"  # targets.md: dense uses causal=True (matters for s_q > 1)

    @property
    def seqlens(self) -> tuple:
        return _seqlens(self.b, self.s_q, self.s_k, self.varlen_std) if self.op != "sparse_prefill" else ()

    def shape(self) -> dict:
        d = dict(b=self.b, s_q=self.s_q, h_q=self.h_q, h_kv=self.h_kv, s_k=self.s_k, topk=self.topk,
                 kv_format=self.kv_format, page=self.page, d_qk=self.d_qk, d_v=self.d_v, causal=self.causal)
        if self.varlen_std is not None:
            d.update(varlen=f"N({self.s_k}, {self.varlen_std}) clipped to [{self.s_q}, {_varlen_max(self.s_k, self.varlen_std)}], "
                            f"seed {VARLEN_SEED}", seqlen_sum=sum(self.seqlens), seqlen_max=max(self.seqlens))
        return d

    def describe(self) -> str:
        s_k = f"~N({self.s_k},{self.varlen_std})" if self.varlen_std else str(self.s_k)
        if self.op == "sparse_prefill":
            return f"s_q={self.s_q} h_q={self.h_q} s_kv={s_k} topk={self.topk}"
        return (f"b={self.b} s_q={self.s_q} h_q={self.h_q} s_k={s_k}" + (f" topk={self.topk}" if self.topk else "")
                + (f" {self.kv_format}" if self.kv_format != "bf16" else ""))

    def quick(self) -> "Workload":
        """The same op and head shapes (h_q, d_qk 576 / d_v 512, page 64), with batch, lengths and topk
        cut so the pure-PyTorch reference runs the whole set on a 2-core CPU in seconds."""
        if self.scaled:
            return self
        s_k = max(2 * self.page, self.s_k // 16)
        return dataclasses.replace(
            self, b=max(1, self.b // 32), s_k=s_k,
            s_q=max(64, self.s_q // 32) if self.op == "sparse_prefill" else self.s_q,
            topk=None if self.topk is None else min(s_k, max(64, self.topk // 16)),
            varlen_std=None if self.varlen_std is None else self.varlen_std // 16, scaled=True)


def _varlen_max(mean: int, std: int) -> int:
    return mean + 3 * std  # bounds the cache; a 3-sigma clip touches ~0.1 % of draws


@functools.lru_cache(maxsize=None)
def _seqlens(b: int, s_q: int, mean: int, std: Optional[int]) -> tuple:
    if std is None:
        return (mean,) * b
    g = torch.Generator().manual_seed(VARLEN_SEED)  # on the CPU: the same lengths on every device
    draw = torch.randn(b, generator=g, dtype=torch.float64) * std + mean
    # FlashMLA's benchmark clips below at s_q (every query needs its causal keys); we also clip above.
    return tuple(int(x) for x in draw.round().clamp(s_q, _varlen_max(mean, std)).tolist())


WORKLOADS = (
    Workload("tp8-h16-4k", "dense_decode", 128, 1, 16, 4096, target=Target(gbps=2630, ms=0.231)),
    Workload("tp8-h16-8k", "dense_decode", 128, 1, 16, 8192, target=Target(gbps=2730, ms=0.443)),
    Workload("tp4-h32-mtp2-8k", "dense_decode", 128, 2, 32, 8192, target=Target(gbps=2740, ms=0.447)),
    Workload("tp2-h64-8k", "dense_decode", 128, 1, 64, 8192, target=Target(gbps=2740, ms=0.447)),
    Workload("h128-8k", "dense_decode", 128, 1, 128, 8192, target=Target(tflops=547, ms=0.534)),
    Workload("h128-mtp2-8k", "dense_decode", 128, 2, 128, 8192, target=Target(tflops=582, ms=1.003)),
    Workload("h128-16k-varlen", "dense_decode", 64, 1, 128, 16384, varlen_std=8192, target=Target(tflops=554)),
    Workload("b1-h16-2k", "dense_decode", 1, 1, 16, 2048, target=Target(ms=0.0204)),
    Workload("b8-h128-4k", "dense_decode", 8, 1, 128, 4096, target=Target(ms=0.0399)),
    Workload("v32-h128-mtp2-topk2048", "sparse_decode", 128, 2, 128, 32768, topk=2048, kv_format="fp8_v32",
             target=Target(tflops=413, ms=0.353)),
    Workload("v32-h64-topk2048", "sparse_decode", 64, 1, 64, 32768, topk=2048, kv_format="fp8_v32",
             target=Target(tflops=209, ms=0.087)),
    # Not in targets.md's table: smaller head counts (TP-sharded V3.2) that must not be padded to 64.
    Workload("v32-h32-topk2048", "sparse_decode", 64, 1, 32, 32768, topk=2048, kv_format="fp8_v32",
             note="extra row: h_q 32 must run without padding to 64"),
    Workload("v32-h16-topk2048", "sparse_decode", 64, 1, 16, 32768, topk=2048, kv_format="fp8_v32",
             note="extra row: h_q 16 must run without padding to 64"),
    # Not in targets.md either: sparse decode on a bf16 cache (FlashMLA has none on Hopper).
    Workload("bf16-h128-mtp2-topk2048", "sparse_decode", 128, 2, 128, 32768, topk=2048,
             note="extra row: sparse decode on a bf16 cache"),
    Workload("bf16-h64-topk2048", "sparse_decode", 64, 1, 64, 32768, topk=2048,
             note="extra row: sparse decode on a bf16 cache"),
    # Not in targets.md either: dense decode on an fp8_v32 cache (FlashMLA has no fp8 dense decode on Hopper).
    Workload("fp8-tp8-h16-4k", "dense_decode", 128, 1, 16, 4096, kv_format="fp8_v32",
             note="extra row: dense decode on an fp8_v32 cache"),
    Workload("fp8-tp2-h64-8k", "dense_decode", 128, 1, 64, 8192, kv_format="fp8_v32",
             note="extra row: dense decode on an fp8_v32 cache"),
    Workload("fp8-h128-mtp2-8k", "dense_decode", 128, 2, 128, 8192, kv_format="fp8_v32",
             note="extra row: dense decode on an fp8_v32 cache"),
    Workload("h128-topk2048-32k", "sparse_prefill", 1, 4096, 128, 32768, topk=2048, target=Target(tflops=553, ms=4.22)),
    Workload("h64-topk2048-32k", "sparse_prefill", 1, 4096, 64, 32768, topk=2048, target=Target(tflops=521, ms=2.24)),
)
BY_ID = {w.id: w for w in WORKLOADS}


# ---- formulas (targets.md, exactly) ----
def flops(w: Workload) -> int:
    d = w.d_qk + w.d_v
    if w.op == "dense_decode":
        return 2 * w.s_q * w.h_q * sum(w.seqlens) * d
    if w.op == "sparse_decode":
        return 2 * w.b * w.s_q * w.topk * w.h_q * d
    return 2 * w.s_q * w.topk * w.h_q * d


def nbytes(w: Workload) -> int:
    """targets.md's formulas: the cache rows read plus q and out (decode). A cache row is h_kv x d_qk 16-bit
    values, or 656 bytes in fp8_v32 (as targets.md counts the sparse rows)."""
    q_and_out = 2 * w.b * w.s_q * w.h_q * (w.d_qk + w.d_v)
    row = FP8_V32_BYTES_PER_TOKEN if w.kv_format == "fp8_v32" else w.h_kv * w.d_qk * 2
    if w.op == "dense_decode":
        return sum(w.seqlens) * row + q_and_out
    if w.op == "sparse_decode":
        return w.b * w.s_q * w.topk * row + q_and_out
    return w.s_q * w.topk * w.d_qk * 2 + w.s_q * w.h_q * (w.d_qk + w.d_v) * 2


def roofline_bytes(w: Workload) -> int:
    """The bytes that must cross HBM, for % of roofline (GB/s columns keep the targets.md formula).

    Equal to nbytes() except for sparse prefill: there the formula counts every gathered row, but
    the whole KV (32k tokens x 576 x 2 B = 38 MB) fits in an H100's 50 MB L2 and is read from HBM
    about once, so the compulsory traffic is the KV once plus q and out; with the formula's bytes the
    published figures would sit at up to ~150 % of the copy ceiling.
    """
    if w.op != "sparse_prefill":
        return nbytes(w)
    return w.s_k * w.h_kv * w.d_qk * 2 + w.s_q * w.h_q * (w.d_qk + w.d_v) * 2


def target_ms(w: Workload) -> Optional[float]:
    """The target as a time: the stated one, else derived from the stated rate with the same formulas."""
    t = w.target
    if t is None or w.scaled:
        return None
    if t.ms:
        return t.ms
    if t.tflops:
        return flops(w) / (t.tflops * 1e12) * 1e3
    return nbytes(w) / (t.gbps * 1e9) * 1e3


def select(rows: Optional[list] = None, op: Optional[str] = None) -> list:
    """Workloads by id (in the given order) or by op; all of them when neither is given."""
    if rows:
        unknown = [r for r in rows if r not in BY_ID]
        if unknown:
            raise KeyError(f"unknown workload id(s) {unknown}; known: {', '.join(BY_ID)}")
        return [BY_ID[r] for r in rows]
    if op:
        if op not in OPS:
            raise KeyError(f"unknown op {op!r}; known: {', '.join(OPS)}")
        return [w for w in WORKLOADS if w.op == op]
    return list(WORKLOADS)


# ---- inputs ----
_CHUNK = 1 << 26  # elements per temporary: bounds the memory of quantizing / drawing indices at full size


def _distinct_positions(rows: int, n: int, k: int, g: torch.Generator, device) -> torch.Tensor:
    """[rows, k] distinct random positions in [0, n) per row (top-k of uniform noise = a random subset)."""
    out = torch.empty(rows, k, dtype=torch.long, device=device)
    step = max(1, _CHUNK // n)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        out[r0:r1] = torch.rand(r1 - r0, n, generator=g, device=device).topk(k, dim=-1).indices
    return out


def _paged(b: int, lengths, page: int, g_cpu: torch.Generator, device):
    """A randomly permuted block table (pages of one request are scattered, as in a real pool)."""
    max_blocks = max(1, math.ceil(max(lengths) / page))
    num_blocks = b * max_blocks
    table = torch.randperm(num_blocks, generator=g_cpu).view(b, max_blocks).to(torch.int32)
    return table.to(device), num_blocks


def _quantized_cache(num_blocks: int, page: int, g: torch.Generator, device) -> torch.Tensor:
    from ..contract.kv_formats import quantize
    cache = torch.empty(num_blocks, page, 1, FP8_V32_BYTES_PER_TOKEN, dtype=torch.uint8, device=device)
    step = max(1, _CHUNK // (page * 576 * 8))  # quantize works in float32 with a few temporaries
    for b0 in range(0, num_blocks, step):
        b1 = min(num_blocks, b0 + step)
        cache[b0:b1] = quantize(torch.randn(b1 - b0, page, 1, 576, generator=g, device=device).to(torch.bfloat16))
    return cache


def make_inputs(w: Workload, device, seed: int = 0) -> dict:
    """Random normal tensors (never zeros: zeros make some kernels look faster) on `device`.

    Returns the op's positional/keyword tensors plus `cache_seqlens` for decode plans.
    """
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    g_cpu = torch.Generator().manual_seed(seed)
    bf16 = torch.bfloat16
    if w.op == "sparse_prefill":
        q = torch.randn(w.s_q, w.h_q, w.d_qk, generator=g, device=device).to(bf16)
        kv = torch.randn(w.s_k, w.h_kv, w.d_qk, generator=g, device=device).to(bf16)
        idx = _distinct_positions(w.s_q * w.h_kv, w.s_k, w.topk, g, device)
        return dict(q=q, kv=kv, indices=idx.view(w.s_q, w.h_kv, w.topk).to(torch.int32),
                    softmax_scale=w.d_qk ** -0.5)
    lengths = w.seqlens
    table, num_blocks = _paged(w.b, lengths, w.page, g_cpu, device)
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    q = torch.randn(w.b, w.s_q, w.h_q, w.d_qk, generator=g, device=device).to(bf16)
    if w.kv_format == "fp8_v32":
        cache = _quantized_cache(num_blocks, w.page, g, device)
    else:
        cache = torch.randn(num_blocks, w.page, w.h_kv, w.d_qk, generator=g, device=device).to(bf16)
    if w.op == "dense_decode":
        return dict(q=q, kv_cache=cache, block_table=table, cache_seqlens=seqlens)
    # sparse decode: each query attends topk distinct tokens of its own request, as absolute slots
    pos = _distinct_positions(w.b * w.s_q, w.s_k, w.topk, g, device).view(w.b, w.s_q, w.topk)
    block = table.long().gather(1, (pos // w.page).view(w.b, -1)).view_as(pos)
    indices = (block * w.page + pos % w.page).to(torch.int32)
    return dict(q=q, kv_cache=cache, indices=indices, cache_seqlens=seqlens)
