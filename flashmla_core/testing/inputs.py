"""Adversarial inputs for a conformance case (design.md §4).

Every case gets: NaN in every cache slot no query may attend (beyond a request's length, unused
blocks, unreferenced sparse slots, slots referenced only past topk_length), garbage in unused
block-table entries, randomly permuted block tables, non-contiguous views (only the last dim is
contiguous), zero-length requests, lonely queries, an invalid-index zoo, all-invalid index rows,
attn_sink with +inf and -inf entries, and a softmax_scale that is not the default.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from ..contract.kv_formats import quantize

GARBAGE_BLOCK = 2147480000
INVALID_ZOO = (-2 ** 31, -123456, -1)  # plus capacity and 2**31 - 1, added per cache


@dataclass
class Inputs:
    args: tuple
    kwargs: dict
    oracle_kwargs: dict   # kwargs with defaults resolved, for the oracle


def _noncontig(x: torch.Tensor, pad_last: int = 64) -> torch.Tensor:
    """The same values as x in a view whose dims 0..n-2 are strided (last dim stays contiguous)."""
    big = torch.empty(*[s + 1 for s in x.shape[:-1]], x.shape[-1] + pad_last, dtype=x.dtype, device=x.device)
    big.fill_(float("nan") if x.is_floating_point() else 0)
    view = big[tuple(slice(0, s) for s in x.shape)]
    view.copy_(x)
    return view


def _sink(h_q: int, g: torch.Generator, device) -> torch.Tensor:
    sink = torch.randn(h_q, generator=g) * 2
    if h_q >= 3:
        sink[0], sink[1] = float("-inf"), float("inf")
    return sink.to(device)


def _scale(case, d_qk: int):
    # alternate between the default and an explicit non-default scale (catches an ignored argument)
    return None if case.get("s_q", 1) == 1 and not case.get("attn_sink") else d_qk ** -0.55


def _cache_values(shape, kv_format: str, dtype, g) -> torch.Tensor:
    vals = torch.randn(*shape, generator=g).to(torch.bfloat16 if kv_format == "fp8_v32" else dtype)
    if kv_format != "fp8_v32":
        return vals
    packed = quantize(vals)
    # writers may store any positive float32 scale: make them not powers of two (catches an e8m0 shortcut)
    scales = packed[..., 512:528].contiguous().view(torch.float32)
    scales *= torch.empty(scales.shape).uniform_(0.6, 1.4, generator=g)
    packed[..., 512:528] = scales.view(torch.uint8)
    return packed


def _poison(cache: torch.Tensor, dead: torch.Tensor, kv_format: str) -> None:
    """Writes NaN (or NaN bytes: e4m3 0xFF, NaN scales, NaN RoPE) into cache[dead] ([blocks, page] mask)."""
    if kv_format == "fp8_v32":
        rows = cache.view(torch.uint8)
        rows[dead] = 0xFF    # 0xFF is NaN in e4m3fn, in float32 and in bfloat16
    else:
        cache[dead] = float("nan")


def _paged_cache(num_blocks, page, h_kv, d_qk, kv_format, dtype, g, dead):
    """A cache with NaN in the `dead` slots, as a view whose blocks are strided by one extra slot
    (page blocks stay page_size x row contiguous, as the contract asks). Returns (storage, view) on CPU."""
    row = 656 if kv_format == "fp8_v32" else d_qk
    vals = _cache_values((num_blocks, page, h_kv, 576 if kv_format == "fp8_v32" else d_qk), kv_format, dtype, g)
    big = torch.zeros(num_blocks, page + 1, h_kv, row, dtype=vals.dtype)
    big[:, :page] = vals
    _poison(big[:, :page], dead, kv_format)
    return big


def _on(device, big: torch.Tensor, page: int) -> torch.Tensor:
    return big.to(device)[:, :page]


def paged_layout(lens, page: int, g: torch.Generator, spare_blocks: int = 3, spare_columns: int = 1) -> tuple:
    """Shuffled blocks for requests of `lens` tokens: -> (block_table int32 [b, max_blocks + spare_columns],
    GARBAGE_BLOCK past each request's blocks; dead bool [num_blocks, page], the slots no request uses),
    with spare_blocks blocks no request owns."""
    blocks_per = [math.ceil(L / page) for L in lens]
    num_blocks = sum(blocks_per) + spare_blocks
    perm = torch.randperm(num_blocks, generator=g)
    block_table = torch.full((len(lens), max(blocks_per) + spare_columns), GARBAGE_BLOCK, dtype=torch.int32)
    dead = torch.ones(num_blocks, page, dtype=torch.bool)
    used = 0
    for i, (L, nb) in enumerate(zip(lens, blocks_per)):
        block_table[i, :nb] = perm[used:used + nb].int()
        for t in range(L):
            dead[int(block_table[i, t // page]), t % page] = False
        used += nb
    return block_table, dead


def dense_decode(case, device, g: torch.Generator) -> Inputs:
    dtype, d_qk, page, h_q, h_kv, s_q = (case[k] for k in ("dtype", "d_qk", "page_size", "h_q", "h_kv", "s_q"))
    fmt = case["kv_format"]
    lens = [150, 0, min(2 * page + 3, 200), 1]
    b = len(lens)
    block_table, dead = paged_layout(lens, page, g)
    big = _paged_cache(dead.shape[0], page, h_kv, d_qk, fmt, dtype, g, dead)
    q = torch.randn(b, h_q, s_q, d_qk, generator=g).to(dtype).to(device).transpose(1, 2)  # non-contiguous
    seqlens = torch.tensor(lens, dtype=torch.int32)
    sink = _sink(h_q, g, device) if case.get("attn_sink") else None
    scale = _scale(case, d_qk)
    kwargs = dict(head_dim_v=case["d_v"], softmax_scale=scale, causal=bool(case.get("causal")), attn_sink=sink,
                  kv_format=fmt)
    oracle = dict(kwargs, softmax_scale=scale or d_qk ** -0.5, causal=bool(case.get("causal")) and s_q > 1)
    args = (q, _on(device, big, page), _noncontig(block_table.to(device)), seqlens.to(device))
    return Inputs(args, kwargs, oracle)


def _sparse_indices(rows: int, groups: int, topk: int, capacity: int, g) -> torch.Tensor:
    """[rows, groups, topk] with valid unique slots mixed with the invalid zoo; row 0 all invalid."""
    zoo = torch.tensor(INVALID_ZOO + (capacity, 2 ** 31 - 1), dtype=torch.int64)
    idx = torch.empty(rows, groups, topk, dtype=torch.int64)
    for r in range(rows):
        for c in range(groups):
            n_valid = 0 if r == 0 else int(torch.randint(topk // 2, topk + 1, (1,), generator=g))
            n_valid = min(n_valid, capacity)
            valid = torch.randperm(capacity, generator=g)[:n_valid]
            bad = zoo[torch.randint(0, len(zoo), (topk - n_valid,), generator=g)]
            row = torch.cat([valid, bad])
            idx[r, c] = row[torch.randperm(topk, generator=g)]
    return idx.to(torch.int32)


def _topk_lengths(n: int, topk: int, g) -> torch.Tensor:
    lengths = torch.randint(0, topk + 1, (n,), generator=g)
    lengths[0] = topk
    if n > 2:
        lengths[2] = 0
    return lengths.to(torch.int32)


def _referenced(indices: torch.Tensor, lengths, capacity: int) -> torch.Tensor:
    """Slots some query attends: valid and within its topk_length."""
    flat = indices.reshape(indices.shape[0], -1, indices.shape[-1]).long()
    keep = (flat >= 0) & (flat < capacity)
    if lengths is not None:
        keep &= torch.arange(flat.shape[-1])[None, None, :] < lengths.long()[:, None, None]
    mask = torch.zeros(capacity, dtype=torch.bool)
    mask[flat[keep]] = True
    return mask


def sparse_decode(case, device, g) -> Inputs:
    d_qk, page, h_q, s_q, topk, fmt = (case[k] for k in ("d_qk", "page_size", "h_q", "s_q", "topk", "kv_format"))
    b = 3
    num_blocks = math.ceil(max(300, topk * 2) / page)
    capacity = num_blocks * page
    indices = _sparse_indices(b * s_q, 1, topk, capacity, g).reshape(b, s_q, topk)
    lengths = _topk_lengths(b, topk, g) if case.get("topk_length") else None
    dead = ~_referenced(indices, lengths, capacity)
    big = _paged_cache(num_blocks, page, 1, d_qk, fmt, torch.bfloat16, g, dead.reshape(num_blocks, page))
    q = _noncontig(torch.randn(b, s_q, h_q, d_qk, generator=g).to(torch.bfloat16).to(device))
    sink = _sink(h_q, g, device) if case.get("attn_sink") else None
    scale = _scale(case, d_qk)
    kwargs = dict(kv_format=fmt, head_dim_v=case["d_v"], softmax_scale=scale,
                  topk_length=lengths.to(device) if lengths is not None else None, attn_sink=sink)
    oracle = dict(kwargs, softmax_scale=scale or d_qk ** -0.5)
    return Inputs((q, _on(device, big, page), _noncontig(indices.to(device))), kwargs, oracle)


def sparse_prefill(case, device, g) -> Inputs:
    d_qk, h_q, h_kv, topk = (case[k] for k in ("d_qk", "h_q", "h_kv", "topk"))
    s_q, s_kv = 9, 150
    kv = torch.randn(s_kv, h_kv, d_qk, generator=g).to(torch.bfloat16)
    indices = _sparse_indices(s_q, h_kv, topk, s_kv, g)
    lengths = _topk_lengths(s_q, topk, g) if case.get("topk_length") else None
    # NaN in every (row, kv head) that no counted index of that head references
    for c in range(h_kv):
        kv[~_referenced(indices[:, c:c + 1], lengths, s_kv), c] = float("nan")
    q = _noncontig(torch.randn(s_q, h_q, d_qk, generator=g).to(torch.bfloat16).to(device))
    sink = _sink(h_q, g, device) if case.get("attn_sink") else None
    kwargs = dict(softmax_scale=0.5 * d_qk ** -0.5, head_dim_v=case["d_v"], attn_sink=sink,
                  topk_length=lengths.to(device) if lengths is not None else None)
    return Inputs((q, _noncontig(kv.to(device)), _noncontig(indices.to(device))), kwargs, dict(kwargs))


def dense_prefill(case, device, g) -> Inputs:
    dtype, d_qk, d_v, h_q, h_kv = (case[k] for k in ("dtype", "d_qk", "d_v", "h_q", "h_kv"))
    seqs = [(5, 9), (0, 4), (7, 3), (6, 6)]   # (len_q, len_k): empty, longer-q (lonely rows under causal)
    cu_q = torch.tensor([0] + list(itertools.accumulate(a for a, _ in seqs)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(itertools.accumulate(b for _, b in seqs)), dtype=torch.int32)
    total_q, total_k = int(cu_q[-1]), int(cu_k[-1])
    tail = 3  # rows past the last sequence: NaN, never read
    q = _noncontig(torch.randn(total_q, h_q, d_qk, generator=g).to(dtype).to(device))
    k = torch.randn(total_k + tail, h_kv, d_qk, generator=g).to(dtype)
    v = torch.randn(total_k + tail, h_kv, d_v, generator=g).to(dtype)
    k[total_k:], v[total_k:] = float("nan"), float("nan")
    scale = None if not case.get("causal") else d_qk ** -0.55
    kwargs = dict(softmax_scale=scale, causal=bool(case.get("causal")))
    maxq, maxk = max(a for a, _ in seqs), max(b for _, b in seqs)
    args = (q, _noncontig(k.to(device)), _noncontig(v.to(device)), cu_q.to(device), cu_k.to(device), maxq, maxk)
    return Inputs(args, kwargs, dict(kwargs, softmax_scale=scale or d_qk ** -0.5))


BUILDERS = dict(dense_decode=dense_decode, sparse_decode=sparse_decode, sparse_prefill=sparse_prefill,
                dense_prefill=dense_prefill)
