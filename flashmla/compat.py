"""DeepSeek FlashMLA's historic Python names, on top of flashmla's ops: switch an engine by one import.

    from flashmla.compat import get_mla_metadata, flash_mla_with_kvcache   # was: from flash_mla import ...

Every function here only translates arguments and calls flashmla_core.api (dense_decode,
sparse_decode, sparse_prefill, dense_prefill, plan_decode); there is no attention math in this module,
so backend selection, validation and results are exactly those of `flashmla.attention`.

Names and the FlashMLA era they come from
-----------------------------------------
get_mla_metadata                  v1 (2025-02): (cache_seqlens, num_heads_per_head_k, num_heads_k) -> tensors
                                  v2 (2025-09): (cache_seqlens, num_q_tokens_per_head_k, num_heads_k,
                                                 num_heads_q=None, is_fp8_kvcache=False, topk=None) -> tensors
                                  v3 (2026-01 on): () -> (FlashMLASchedMeta(), None), filled lazily
flash_mla_with_kvcache            v1 (2025-02) positional form, v2 (2025-09) + is_fp8_kvcache/indices,
                                  2026-01..04 snapshot keywords (attn_sink, topk_length, extra_*), and the
                                  2026-09 keyword enable_batch_invariant
FlashMLASchedMeta                 2026-01 on (the v3 metadata object; not in upstream's __all__)
flash_mla_sparse_fwd              2025-09 on (sparse prefill)
flash_attn_varlen_func,           2025-08 on (dense MHA prefill, SM100-only upstream)
flash_attn_varlen_qkvpacked_func,
flash_attn_varlen_kvpacked_func

How get_mla_metadata tells its forms apart
------------------------------------------
By `cache_seqlens` (first positional argument or keyword): a tensor selects the old tensor form (v1/v2;
both have the same positional layout, v1's keyword `num_heads_per_head_k` is accepted as an alias of
`num_q_tokens_per_head_k`); absent or None selects the v3 object form, and then any other argument is
ignored, as upstream's v3 ignored them. A v3-era engine that still passes the old arguments therefore
gets tensors, which flash_mla_with_kvcache accepts just the same.

The old form returns the two buffers of a flashmla DecodePlan. The plan itself is remembered, keyed
by id() of the schedule tensor (dropped when that tensor dies), so flash_mla_with_kvcache finds it.
Tensors the engine made itself (copied into its own CUDA-graph buffers, say) are unknown: a plan is
rebuilt around them for the call's problem with the backend plan_decode would select. Their contents
are trusted as FlashMLA trusted them: a schedule made for other cache_seqlens values is not detected.
Likewise a v3 object is checked on reuse for its problem (shapes and flags, its `config`) but not for
the values of cache_seqlens/topk_length, exactly as upstream.

Differences from upstream (all deliberate)
------------------------------------------
- Every lse (and max_logits) is natural log. The Sep-2025 flash_mla_sparse_fwd returned base-2 values.
- Sparse decode: an index is invalid when < 0 or >= num_blocks * page_size (upstream: only -1, with no
  upper-bound check). Sparse prefill: < 0 or >= s_kv, as upstream.
- flash_mla_with_kvcache(indices=..., is_fp8_kvcache=False) runs sparse decode on a bf16 cache (upstream
  required FP8); is_fp8_kvcache=True without indices runs dense decode on an `fp8_v32` cache (the
  snapshot had no FP8 dense path). The only FP8 layout is V3.2's 656 bytes/token; MODEL1/V4 (584 B)
  and V4.1 (528/288 B) caches raise ContractError.
- Not supported, raising ContractError naming the argument: extra_k_cache, extra_indices_in_kvcache,
  extra_topk_length (the second KV pool), causal=True with indices (upstream asserted it too),
  topk_length without indices, dropout_p != 0 and deterministic=True (upstream asserted both).
- block_table and cache_seqlens are not used by sparse decode (may be None, as upstream).
- tile_scheduler_metadata=None is accepted: the op plans internally (upstream v1/v2 required tensors).
  num_splits must accompany tensor metadata and be None with a FlashMLASchedMeta or with None.
- get_mla_metadata's is_fp8_kvcache does not change the schedule here; num_heads_q, when given, only
  tells the planner the real h_q (and so s_q) for backend selection.
- enable_batch_invariant=True needs a plan made for it: with tensor metadata from the old form (never
  batch-invariant) it is a ContractError; with a FlashMLASchedMeta or None a deterministic plan is made.
- Shapes, dtypes, page sizes and head counts are whatever the selected backend declares (see
  `flashmla matrix`), not upstream's fixed SM90/SM100 limits; no request silently returns unwritten
  output (upstream's dense prefill did for unsupported head dims).
- Outputs are contiguous (upstream returned lse as transposed views); dense prefill is forward only
  (no autograd, upstream had a backward); is_varlen=False is accepted and cu_seqlens are always honoured.
- A ContractError names this module's argument (sm_scale, cu_seqlens_qo, k_cache, ...), not the
  name the underlying flashmla op uses.
"""
from __future__ import annotations

import contextlib
import dataclasses
import weakref
from typing import Optional

import torch

from flashmla_core import api
from flashmla_core.contract import validate
from flashmla_core.contract.plan import DecodePlan, PlanKey, make_plan_key
from flashmla_core.errors import ContractError
from flashmla_core.registry.selection import REGISTRY

__all__ = ["FlashMLASchedMeta", "flash_attn_varlen_func", "flash_attn_varlen_kvpacked_func",
           "flash_attn_varlen_qkvpacked_func", "flash_mla_sparse_fwd", "flash_mla_with_kvcache",
           "get_mla_metadata"]

# id(schedule tensor) -> (backend name, PlanKey) of the old-form plans still alive. The tensors are not
# held here (that would keep them alive forever); the plan is rebuilt around the tensors passed in.
_OLD_FORM_PLANS: dict[int, tuple[str, PlanKey]] = {}


@dataclasses.dataclass
class FlashMLASchedMeta:
    """The v3 metadata object: empty from get_mla_metadata(), filled by the first flash_mla_with_kvcache
    call, then valid for every call with the same problem (e.g. all layers of one decode step)."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        b: int
        s_q: int
        h_q: int
        page_block_size: int
        h_k: int
        causal: bool
        is_fp8_kvcache: bool
        topk: Optional[int]
        extra_page_block_size: Optional[int] = None
        extra_topk: Optional[int] = None
        enable_batch_invariant: bool = False

    have_initialized: bool = False
    config: Optional[Config] = None
    tile_scheduler_metadata: Optional[torch.Tensor] = None
    num_splits: Optional[torch.Tensor] = None
    _plan: Optional[DecodePlan] = dataclasses.field(default=None, repr=False, compare=False)


@contextlib.contextmanager
def _named_as(**renames):
    """Re-raises the core's ContractErrors under the argument names of the compat signature."""
    try:
        yield
    except ContractError as e:
        if e.argument not in renames:
            raise
        raise ContractError(renames[e.argument], e.expected, e.given) from None


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ContractError(name, "a positive int", repr(v))
    return v


def _rank(name: str, t, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != ndim:
        raise ContractError(name, f"a {ndim}-d torch.Tensor", validate._desc(t))
    return t


def get_mla_metadata(cache_seqlens=None, num_q_tokens_per_head_k=None, num_heads_k=None, num_heads_q=None,
                     is_fp8_kvcache=False, topk=None, *, num_heads_per_head_k=None):
    """-> (tile_scheduler_metadata int32 [num_parts, 8], num_splits int32 [b + 1]) for a tensor
    cache_seqlens (v1/v2 form), else (FlashMLASchedMeta(), None) (v3 form). See the module docstring."""
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    if num_q_tokens_per_head_k is None:
        num_q_tokens_per_head_k = num_heads_per_head_k
    rows = _positive_int("num_q_tokens_per_head_k", num_q_tokens_per_head_k)   # = s_q * h_q / h_kv
    h_kv = _positive_int("num_heads_k", num_heads_k)
    validate._flag("is_fp8_kvcache", is_fp8_kvcache)
    h_q, s_q = rows * h_kv, 1        # v1 does not say how rows split into tokens and heads; the key is the same
    if num_heads_q is not None:      # v2 does: give the planner the real h_q so it selects the real backend
        h_q = _positive_int("num_heads_q", num_heads_q)
        if h_q % h_kv or (rows * h_kv) % h_q:
            raise ContractError("num_heads_q", f"a multiple of num_heads_k = {h_kv} dividing "
                                f"num_q_tokens_per_head_k * num_heads_k = {rows * h_kv}", h_q)
        s_q = rows * h_kv // h_q
    with _named_as(num_q_heads="num_heads_q", num_kv_heads="num_heads_k"):
        plan = api.plan_decode(cache_seqlens, num_q_heads=h_q, num_kv_heads=h_kv, q_len=s_q, topk=topk,
                               kv_format="fp8_v32" if is_fp8_kvcache else None)
    _OLD_FORM_PLANS[id(plan.schedule)] = (plan.backend, plan.key)
    weakref.finalize(plan.schedule, _OLD_FORM_PLANS.pop, id(plan.schedule), None)
    return plan.schedule, plan.num_splits


def _plan_of_tensors(schedule, num_splits, q, key: PlanKey, op: str, kv_format) -> DecodePlan:
    """The plan behind old-form metadata: the remembered one, or one rebuilt around an engine's copies."""
    validate._tensor("tile_scheduler_metadata", schedule, ndim=2, dtypes=(torch.int32,), device=q.device)
    validate._shape("tile_scheduler_metadata", schedule, [None, 8], "num_parts, 8")
    validate._tensor("num_splits", num_splits, ndim=1, dtypes=(torch.int32,), device=q.device)
    # dense plans count splits per request; a sparse plan may count them per query token instead
    lengths = {key.batch_size + 1} | ({key.batch_size * key.q_len + 1} if op == "sparse_decode" else set())
    if num_splits.shape[0] not in lengths:
        raise ContractError("num_splits", f"int32 [{' or '.join(map(str, sorted(lengths)))}] from get_mla_metadata",
                            validate._desc(num_splits))
    known = _OLD_FORM_PLANS.get(id(schedule))
    if known is not None:
        return DecodePlan(known[0], known[1], schedule, num_splits)
    s_q, h_q = q.shape[1], q.shape[2]
    planner = REGISTRY.resolve_planner(op, key, s_q, h_q, dtype=q.dtype, kv_format=kv_format)
    return DecodePlan(planner.name, key, schedule, num_splits)


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                           num_splits=None, softmax_scale=None, causal=False, is_fp8_kvcache=False, indices=None,
                           attn_sink=None, extra_k_cache=None, extra_indices_in_kvcache=None, topk_length=None,
                           extra_topk_length=None, enable_batch_invariant=False):
    """Paged MLA decode -> (out [b, s_q, h_q, head_dim_v], lse [b, h_q, s_q] float32, natural log).
    indices None: dense decode over block_table/cache_seqlens; indices [b, s_q, topk]: sparse decode."""
    for name, value in (("extra_k_cache", extra_k_cache), ("extra_indices_in_kvcache", extra_indices_in_kvcache),
                        ("extra_topk_length", extra_topk_length)):
        if value is not None:
            raise ContractError(name, "None (flashmla has no second KV pool)", validate._desc(value))
    is_fp8 = validate._flag("is_fp8_kvcache", is_fp8_kvcache)
    batch_invariant = validate._flag("enable_batch_invariant", enable_batch_invariant)
    sparse = indices is not None
    if sparse and causal is not False:
        raise ContractError("causal", "False for sparse decode (indices choose the keys)", repr(causal))
    if not sparse and topk_length is not None:
        raise ContractError("topk_length", "None for dense decode (it applies to indices)",
                            validate._desc(topk_length))
    b, s_q, h_q, _ = _rank("q", q, 4).shape
    page_size, h_kv = _rank("k_cache", k_cache, 4).shape[1:3]
    topk = _rank("indices", indices, 3).shape[2] if sparse else None
    op = "sparse_decode" if sparse else "dense_decode"
    kv_format = "fp8_v32" if is_fp8 else ("bf16" if sparse else None)   # None: dense, q's dtype
    meta = tile_scheduler_metadata
    renames = dict(plan="tile_scheduler_metadata", kv_cache="k_cache", kv_format="is_fp8_kvcache",
                   num_kv_heads="k_cache", num_q_heads="q")

    def fresh_plan():   # v3 / batch-invariant planning; a sparse request's work is its topk, not its cache length
        seqlens = torch.full((b,), topk, dtype=torch.int32, device=q.device) if sparse else cache_seqlens
        return api.plan_decode(seqlens, num_q_heads=h_q, num_kv_heads=1 if sparse else h_kv, q_len=s_q,
                               topk=topk, topk_length=topk_length, deterministic=batch_invariant,
                               dtype=q.dtype, kv_format=kv_format)

    with _named_as(**renames):
        config = None
        if isinstance(meta, FlashMLASchedMeta):
            if num_splits is not None:
                raise ContractError("num_splits", "None with a FlashMLASchedMeta", validate._desc(num_splits))
            is_causal = causal is True and s_q > 1     # causal is the identity for one token, as upstream
            config = FlashMLASchedMeta.Config(b, s_q, h_q, page_size, h_kv, is_causal, is_fp8, topk,
                                              enable_batch_invariant=batch_invariant)
            if meta.have_initialized and meta.config != config:
                raise ContractError("tile_scheduler_metadata", f"a FlashMLASchedMeta reused only for its own "
                                    f"problem {meta.config}", f"a call with {config}")
            plan = meta._plan if meta.have_initialized else fresh_plan()
        elif isinstance(meta, torch.Tensor):
            if batch_invariant:
                raise ContractError("enable_batch_invariant", "False with tensor metadata (old-form plans are "
                                    "not batch-invariant; use get_mla_metadata())", True)
            key = make_plan_key(q.device, b, s_q, h_q, 1 if sparse else h_kv, topk, False)
            plan = _plan_of_tensors(meta, num_splits, q, key, op, kv_format)
        elif meta is None:
            if num_splits is not None:
                raise ContractError("num_splits", "None when tile_scheduler_metadata is None",
                                    validate._desc(num_splits))
            plan = fresh_plan() if batch_invariant else None
        else:
            raise ContractError("tile_scheduler_metadata", "tensors from get_mla_metadata(cache_seqlens, ...), a "
                                "FlashMLASchedMeta from get_mla_metadata(), or None", validate._desc(meta))

        if sparse:
            result = api.sparse_decode(q, k_cache, indices, kv_format="fp8_v32" if is_fp8 else "bf16",
                                       head_dim_v=head_dim_v, softmax_scale=softmax_scale, topk_length=topk_length,
                                       attn_sink=attn_sink, plan=plan)
        else:
            result = api.dense_decode(q, k_cache, block_table, cache_seqlens, head_dim_v=head_dim_v,
                                      softmax_scale=softmax_scale, causal=causal, attn_sink=attn_sink,
                                      kv_format="fp8_v32" if is_fp8 else None, plan=plan)
    if config is not None and not meta.have_initialized:   # only a call that ran initialises the object
        meta.config, meta._plan = config, plan
        meta.tile_scheduler_metadata, meta.num_splits = plan.schedule, plan.num_splits
        meta.have_initialized = True
    return result


def flash_mla_sparse_fwd(q, kv, indices, sm_scale, d_v=512, attn_sink=None, topk_length=None):
    """Sparse prefill -> (out [s_q, h_q, d_v], max_logits [s_q, h_q], lse [s_q, h_q]), natural log."""
    with _named_as(softmax_scale="sm_scale", head_dim_v="d_v"):
        return api.sparse_prefill(q, kv, indices, softmax_scale=sm_scale, head_dim_v=d_v, attn_sink=attn_sink,
                                  topk_length=topk_length)


def _prefill(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p, softmax_scale,
             causal, deterministic, is_varlen, renames=None):
    if dropout_p != 0:
        raise ContractError("dropout_p", "0.0 (no dropout in inference kernels)", repr(dropout_p))
    if deterministic is not False:
        raise ContractError("deterministic", "False (as upstream)", repr(deterministic))
    validate._flag("is_varlen", is_varlen)
    names = dict(cu_seqlens_q="cu_seqlens_qo", cu_seqlens_k="cu_seqlens_kv", max_seqlen_q="max_seqlen_qo",
                 max_seqlen_k="max_seqlen_kv")
    with _named_as(**{**names, **(renames or {})}):
        return api.dense_prefill(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv,
                                 softmax_scale=softmax_scale, causal=causal)


def flash_attn_varlen_func(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p=0.0,
                           softmax_scale=None, causal=False, deterministic=False, is_varlen=True):
    """Varlen dense prefill -> (out [total_q, h_q, d_v], lse [total_q, h_q] float32, natural log)."""
    return _prefill(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p, softmax_scale,
                    causal, deterministic, is_varlen)


def _split_last(name: str, packed, head_dim_qk, n_qk: int):
    """Views of a tensor packed along its last dim as n_qk x head_dim_qk then d_v (upstream's layout)."""
    _rank(name, packed, 3)
    d = _positive_int("head_dim_qk", head_dim_qk)
    if packed.shape[-1] <= n_qk * d:
        raise ContractError(name, f"last dim {n_qk} * head_dim_qk ({d}) + d_v", validate._desc(packed))
    return [packed[..., i * d:(i + 1) * d] for i in range(n_qk)] + [packed[..., n_qk * d:]]


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, head_dim_qk, dropout_p=0.0, softmax_scale=None,
                                     causal=False, deterministic=False, is_varlen=True):
    """qkv [T, H, 2 * head_dim_qk + d_v] -> flash_attn_varlen_func on its q, k, v views."""
    q, k, v = _split_last("qkv", qkv, head_dim_qk, 2)
    return _prefill(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                    deterministic, is_varlen, dict(q="qkv", k="qkv", v="qkv", cu_seqlens_q="cu_seqlens",
                    cu_seqlens_k="cu_seqlens", max_seqlen_q="max_seqlen", max_seqlen_k="max_seqlen"))


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, head_dim_qk,
                                    dropout_p=0.0, softmax_scale=None, causal=False, deterministic=False,
                                    is_varlen=True):
    """q [T_q, H, head_dim_qk], kv [T_kv, H_kv, head_dim_qk + d_v] -> flash_attn_varlen_func on k, v views."""
    k, v = _split_last("kv", kv, head_dim_qk, 1)
    return _prefill(q, k, v, cu_seqlens_qo, cu_seqlens_kv, max_seqlen_qo, max_seqlen_kv, dropout_p, softmax_scale,
                    causal, deterministic, is_varlen, dict(k="kv", v="kv"))
