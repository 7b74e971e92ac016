"""flashmla.compat: FlashMLA's historic names give bitwise the results of flashmla.attention (CPU, reference)."""
import gc

import pytest
import torch

import flashmla
from flashmla import attention, compat, kvcache

D_QK, D_V = 576, 512


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(x, y)


def _dense(b=3, s_q=1, h_q=16, h_kv=1, page=64, seqlens=(37, 0, 200), seed=0):
    g = torch.Generator().manual_seed(seed)
    max_blocks = (max(seqlens) + page - 1) // page
    num_blocks = b * max_blocks + 2
    q = torch.randn(b, s_q, h_q, D_QK, generator=g).bfloat16()
    kv = torch.randn(num_blocks, page, h_kv, D_QK, generator=g).bfloat16()
    block_table = torch.randperm(num_blocks, generator=g)[:b * max_blocks].view(b, max_blocks).int()
    return q, kv, block_table, torch.tensor(seqlens[:b], dtype=torch.int32)


def _sparse(b=2, s_q=1, h_q=16, page=16, num_blocks=13, topk=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, s_q, h_q, D_QK, generator=g).bfloat16()
    kv = torch.randn(num_blocks, page, 1, D_QK, generator=g).bfloat16()
    capacity = num_blocks * page
    indices = torch.randint(-3, capacity + 3, (b, s_q, topk), generator=g, dtype=torch.int32)
    return q, kv, indices


# ---- get_mla_metadata, old tensor form ----

def test_old_form_returns_int32_tensors_and_round_trips_across_layers():
    q, kv, bt, sl = _dense(s_q=2, h_q=16)
    sched, splits = compat.get_mla_metadata(sl, 2 * 16 // 1, 1)   # v1 positional: s_q * h_q / h_kv, h_kv
    assert sched.dtype == splits.dtype == torch.int32
    assert sched.dim() == 2 and sched.shape[1] == 8 and splits.shape == (3 + 1,)
    for layer in range(2):   # one metadata, two "layers" (different q / cache, same problem)
        q, kv, _, _ = _dense(s_q=2, h_q=16, seed=10 + layer)
        got = compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, sched, splits, causal=True)
        _same(got, attention.dense_decode(q, kv, bt, sl, causal=True))


def test_old_form_v2_keywords_and_engine_copies():
    q, kv, bt, sl = _dense(s_q=2, h_q=8, h_kv=2, page=16)
    sched, splits = compat.get_mla_metadata(sl, num_q_tokens_per_head_k=2 * 8 // 2, num_heads_k=2, num_heads_q=8)
    # an engine copies the metadata into its own (e.g. CUDA-graph) buffers: unknown ids, rebuilt plan
    own_sched, own_splits = torch.zeros_like(sched), torch.zeros_like(splits)
    own_sched.copy_(sched)
    own_splits.copy_(splits)
    assert id(own_sched) not in compat._OLD_FORM_PLANS
    want = attention.dense_decode(q, kv, bt, sl, softmax_scale=0.1)
    for meta in ((sched, splits), (own_sched, own_splits)):
        _same(compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, *meta, softmax_scale=0.1), want)


def test_old_form_registry_entry_dies_with_the_tensor():
    sl = torch.tensor([5, 9], dtype=torch.int32)
    sched, splits = compat.get_mla_metadata(sl, 16, 1)
    key = id(sched)
    assert key in compat._OLD_FORM_PLANS
    del sched, splits
    gc.collect()
    assert key not in compat._OLD_FORM_PLANS


def test_old_form_used_for_another_problem_is_a_contract_error():
    q, kv, bt, sl = _dense(s_q=1, h_q=16)
    sched, splits = compat.get_mla_metadata(sl, 32, 1)           # planned for 32 rows per KV head
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, sched, splits)
    assert e.value.argument == "tile_scheduler_metadata"
    with pytest.raises(flashmla.ContractError) as e:              # the same for an engine's copy
        compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, sched.clone(), splits[:2].clone())
    assert e.value.argument == "num_splits"


def test_old_form_sparse_fp8():
    q, kv, indices = _sparse(b=2, h_q=16, topk=64)
    packed = kvcache.quantize(kv)
    assert packed.shape[-1] == 656 and packed.dtype == torch.uint8
    sl = torch.tensor([100, 150], dtype=torch.int32)
    sched, splits = compat.get_mla_metadata(sl, 16, 1, num_heads_q=16, is_fp8_kvcache=True, topk=64)
    got = compat.flash_mla_with_kvcache(q, packed, None, None, D_V, sched, splits, is_fp8_kvcache=True,
                                        indices=indices)
    _same(got, attention.sparse_decode(q, packed, indices, kv_format="fp8_v32"))


def test_old_form_sparse_num_splits_may_count_query_tokens():
    # a sparse plan may count splits per query token ([b * s_q + 1], the sm90 backend's); b + 1 stays valid
    q, kv, indices = _sparse(b=2, s_q=2, h_q=16, topk=64)
    sl = torch.tensor([100, 150], dtype=torch.int32)
    sched, splits = compat.get_mla_metadata(sl, 32, 1, num_heads_q=16, topk=64)
    want = attention.sparse_decode(q, kv, indices, kv_format="bf16")
    for n in (2 + 1, 2 * 2 + 1):  # engine copies of either length
        got = compat.flash_mla_with_kvcache(q, kv, None, None, D_V, sched.clone(), torch.zeros(n, dtype=torch.int32),
                                            indices=indices)
        _same(got, want)
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, None, None, D_V, sched.clone(), torch.zeros(4, dtype=torch.int32),
                                      indices=indices)
    assert e.value.argument == "num_splits"


# ---- get_mla_metadata, v3 object form ----

def test_v3_object_filled_lazily_then_reused():
    meta, none = compat.get_mla_metadata()
    assert none is None and isinstance(meta, compat.FlashMLASchedMeta) and not meta.have_initialized
    assert meta.tile_scheduler_metadata is None and meta.num_splits is None and meta.config is None
    q, kv, bt, sl = _dense(s_q=2, h_q=16, page=16)
    sink = torch.tensor([0.5, float("inf"), float("-inf")] + [0.0] * 13)
    got = compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, meta, causal=True, attn_sink=sink)
    _same(got, attention.dense_decode(q, kv, bt, sl, causal=True, attn_sink=sink))
    assert meta.have_initialized and meta.config.b == 3 and meta.config.s_q == 2 and meta.config.page_block_size == 16
    assert meta.tile_scheduler_metadata.dtype == meta.num_splits.dtype == torch.int32
    sched = meta.tile_scheduler_metadata
    q2, kv2, _, _ = _dense(s_q=2, h_q=16, page=16, seed=7)          # the next layer reuses it
    _same(compat.flash_mla_with_kvcache(q2, kv2, bt, sl, D_V, meta, causal=True, attn_sink=sink),
          attention.dense_decode(q2, kv2, bt, sl, causal=True, attn_sink=sink))
    assert meta.tile_scheduler_metadata is sched


@pytest.mark.parametrize("change", ["h_q", "causal", "fp8"])
def test_v3_object_reused_for_another_problem_is_a_contract_error(change):
    meta, _ = compat.get_mla_metadata()
    q, kv, bt, sl = _dense(s_q=2, h_q=16)
    compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, meta, causal=True)
    kwargs = dict(causal=True)
    if change == "h_q":
        q = q[:, :, :8]
    elif change == "causal":
        kwargs["causal"] = False
    else:
        kv, kwargs["is_fp8_kvcache"] = kvcache.quantize(kv), True
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, meta, **kwargs)
    assert e.value.argument == "tile_scheduler_metadata"


def test_v3_object_stays_empty_when_the_first_call_is_rejected():
    meta, _ = compat.get_mla_metadata()
    q, kv, bt, sl = _dense()
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, bt, sl, 256, meta)
    assert e.value.argument == "head_dim_v"
    assert not meta.have_initialized and meta.config is None


def test_v3_sparse_bf16_without_block_table_and_seqlens():
    meta, _ = compat.get_mla_metadata()
    q, kv, indices = _sparse(b=3, s_q=2, h_q=16, page=64, num_blocks=3, topk=128)
    lengths = torch.tensor([0, 50, 128], dtype=torch.int32)
    got = compat.flash_mla_with_kvcache(q, kv, None, None, D_V, meta, indices=indices, topk_length=lengths,
                                        softmax_scale=0.05)
    _same(got, attention.sparse_decode(q, kv, indices, kv_format="bf16", topk_length=lengths, softmax_scale=0.05))
    assert meta.config.topk == 128 and meta.config.is_fp8_kvcache is False


def test_batch_invariant_plans_deterministically():
    meta, _ = compat.get_mla_metadata()
    q, kv, bt, sl = _dense()
    got = compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, meta, enable_batch_invariant=True)
    _same(got, attention.dense_decode(q, kv, bt, sl))
    assert meta.config.enable_batch_invariant and meta._plan.key.deterministic
    sched, splits = compat.get_mla_metadata(sl, 16, 1)
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, sched, splits, enable_batch_invariant=True)
    assert e.value.argument == "enable_batch_invariant"


# ---- flash_mla_with_kvcache: every path equals the flashmla.attention call ----

@pytest.mark.parametrize("page", [16, 64])
@pytest.mark.parametrize("s_q,causal", [(1, False), (2, True)])
def test_dense_fp8_without_metadata(page, s_q, causal):
    q, kv, bt, sl = _dense(s_q=s_q, h_q=16, page=page)
    packed = kvcache.quantize(kv)
    got = compat.flash_mla_with_kvcache(q, packed, bt, sl, D_V, None, causal=causal, is_fp8_kvcache=True)
    _same(got, attention.dense_decode(q, packed, bt, sl, causal=causal, kv_format="fp8_v32"))


def test_sparse_fp8_with_sink_and_topk_length_non_contiguous_q():
    q, kv, indices = _sparse(b=2, s_q=1, h_q=32)
    q = q[:, :, ::2]                                    # non-contiguous heads
    packed = kvcache.quantize(kv)
    sink = torch.linspace(-1, 1, 16)
    lengths = torch.tensor([64, 10], dtype=torch.int32)
    got = compat.flash_mla_with_kvcache(q, packed, None, None, D_V, None, is_fp8_kvcache=True, indices=indices,
                                        attn_sink=sink, topk_length=lengths)
    _same(got, attention.sparse_decode(q, packed, indices, attn_sink=sink, topk_length=lengths))


# ---- unsupported arguments ----

@pytest.mark.parametrize("name", ["extra_k_cache", "extra_indices_in_kvcache", "extra_topk_length"])
def test_second_kv_pool_is_rejected_by_name(name):
    q, kv, indices = _sparse()
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, None, None, D_V, None, indices=indices,
                                      **{name: torch.zeros(2, dtype=torch.int32)})
    assert e.value.argument == name and name in str(e.value)


def test_decode_argument_errors_name_the_compat_argument():
    q, kv, indices = _sparse()
    cases = [
        (dict(indices=indices, causal=True), "causal"),
        (dict(topk_length=torch.zeros(2, dtype=torch.int32)), "topk_length"),
        (dict(indices=indices, is_fp8_kvcache=True), "k_cache"),     # a bf16 cache is not fp8_v32 bytes
    ]
    bt, sl = torch.zeros(2, 1, dtype=torch.int32), torch.tensor([3, 4], dtype=torch.int32)
    for kwargs, name in cases:
        with pytest.raises(flashmla.ContractError) as e:
            compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, None, **kwargs)
        assert e.value.argument == name, kwargs
    meta, _ = compat.get_mla_metadata()
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, meta, torch.zeros(3, dtype=torch.int32))
    assert e.value.argument == "num_splits"
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_with_kvcache(q, kv, bt, sl, D_V, "metadata")
    assert e.value.argument == "tile_scheduler_metadata"
    with pytest.raises(flashmla.ContractError) as e:
        compat.get_mla_metadata(sl, 16, 1, num_heads_q=3)
    assert e.value.argument == "num_heads_q"


# ---- prefill ----

def test_flash_mla_sparse_fwd():
    g = torch.Generator().manual_seed(3)
    s_q, s_kv, h_q, topk = 20, 150, 16, 64
    q = torch.randn(s_q, h_q, D_QK, generator=g).bfloat16()
    kv = torch.randn(s_kv, 1, D_QK, generator=g).bfloat16()
    indices = torch.randint(-2, s_kv + 2, (s_q, 1, topk), generator=g, dtype=torch.int32)
    sink = torch.randn(h_q, generator=g)
    lengths = torch.randint(0, topk + 1, (s_q,), generator=g, dtype=torch.int32)
    got = compat.flash_mla_sparse_fwd(q, kv, indices, 0.04, attn_sink=sink, topk_length=lengths)
    assert len(got) == 3
    _same(got, attention.sparse_prefill(q, kv, indices, softmax_scale=0.04, attn_sink=sink, topk_length=lengths))
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_sparse_fwd(q, kv, indices, None)
    assert e.value.argument == "sm_scale"
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_mla_sparse_fwd(q, kv, indices, 0.04, d_v=128)
    assert e.value.argument == "d_v"


def _varlen(lens_q=(30, 1, 45), lens_k=(40, 17, 45), h_q=4, h_k=2, d_qk=192, d_v=128, seed=4):
    g = torch.Generator().manual_seed(seed)
    cu = lambda lens: torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)  # noqa: E731
    q = torch.randn(sum(lens_q), h_q, d_qk, generator=g).bfloat16()
    k = torch.randn(sum(lens_k), h_k, d_qk, generator=g).bfloat16()
    v = torch.randn(sum(lens_k), h_k, d_v, generator=g).bfloat16()
    return q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k)


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_varlen_func(causal):
    args = _varlen()
    got = compat.flash_attn_varlen_func(*args, softmax_scale=0.1, causal=causal)
    _same(got, attention.dense_prefill(*args, softmax_scale=0.1, causal=causal))


@pytest.mark.parametrize("causal", [False, True])
def test_packed_varlen_match_the_unpacked_call(causal):
    lens = (30, 1, 45)
    q, k, v, cu, _, mx, _ = _varlen(lens_q=lens, lens_k=lens, h_q=4, h_k=4)
    qkv = torch.cat([q, k, v], dim=-1)                       # packed along the last dim, as upstream
    want = attention.dense_prefill(q, k, v, cu, cu, mx, mx, causal=causal)
    _same(compat.flash_attn_varlen_qkvpacked_func(qkv, cu, mx, 192, causal=causal), want)

    q, k, v, cu_q, cu_k, mx_q, mx_k = _varlen(d_qk=128)
    kv = torch.cat([k, v], dim=-1)
    _same(compat.flash_attn_varlen_kvpacked_func(q, kv, cu_q, cu_k, mx_q, mx_k, 128, causal=causal),
          attention.dense_prefill(q, k, v, cu_q, cu_k, mx_q, mx_k, causal=causal))


def test_prefill_argument_errors_name_the_compat_argument():
    q, k, v, cu_q, cu_k, mx_q, mx_k = _varlen()
    for kwargs, name in ((dict(dropout_p=0.1), "dropout_p"), (dict(deterministic=True), "deterministic"),
                         (dict(is_varlen=None), "is_varlen")):
        with pytest.raises(flashmla.ContractError) as e:
            compat.flash_attn_varlen_func(q, k, v, cu_q, cu_k, mx_q, mx_k, **kwargs)
        assert e.value.argument == name
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 1, mx_k)
    assert e.value.argument == "max_seqlen_qo"
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_attn_varlen_func(q, k, v, cu_q, cu_k[:2], mx_q, mx_k)
    assert e.value.argument == "cu_seqlens_kv"
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_attn_varlen_qkvpacked_func(torch.cat([q, q], -1), cu_q, mx_q, 192)
    assert e.value.argument == "qkv"
    with pytest.raises(flashmla.ContractError) as e:
        compat.flash_attn_varlen_kvpacked_func(q, torch.cat([k, v], -1), cu_q, cu_k, mx_q, mx_k, 192,
                                               dropout_p=0.5)
    assert e.value.argument == "dropout_p"


def test_reachable_as_flashmla_compat():
    assert flashmla.compat is compat
    assert set(compat.__all__) >= {"get_mla_metadata", "flash_mla_with_kvcache", "flash_mla_sparse_fwd",
                                   "flash_attn_varlen_func", "flash_attn_varlen_qkvpacked_func",
                                   "flash_attn_varlen_kvpacked_func"}
