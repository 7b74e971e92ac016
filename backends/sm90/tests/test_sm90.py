"""GPU tests of the sm90 backend: the conformance kit over its grid, realistic shapes against the
reference backend, and CUDA-graph capture of plan + decode. Skipped without an sm_90 GPU."""
import pytest
import torch

from flashmla import attention
from flashmla_core.registry.selection import REGISTRY
from paged_inputs import paged


def _sm90_reasons():
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() != (9, 0):
        return f"needs an sm_90 GPU, found sm_{''.join(map(str, torch.cuda.get_device_capability()))}"
    if "sm90" not in REGISTRY.records():
        return "flashmla-sm90 is not installed"
    why = REGISTRY.unavailable_reasons("sm90")
    return "; ".join(why) if why else None


SKIP = _sm90_reasons()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def _conformance_params():
    if SKIP is not None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=SKIP))]
    from flashmla_core.testing import runner
    device, cases = runner.collect("sm90", device="cuda")
    return [pytest.param((device, c), id=f"{c.op}:{c.id}") for c in cases]


@pytest.mark.parametrize("case", _conformance_params())
def test_conformance(case):
    from flashmla_core.testing import runner
    device, c = case
    result = runner.run_case("sm90", c, device)
    if result.status == "skipped":
        pytest.skip("; ".join(result.messages))
    assert result.status == "passed", "\n".join(result.messages)


@pytest.mark.parametrize("b,h_q,s_q,page,lens", [
    (8, 128, 1, 64, None), (4, 128, 2, 64, None), (16, 16, 1, 64, None), (3, 64, 2, 32, [0, 5000, 1]),
    (2, 16, 1, 128, [70000, 3]),
])
def test_against_reference_realistic(b, h_q, s_q, page, lens):
    lens = lens or [int(x) for x in torch.randint(1, 6000, (b,))]
    q, cache, table, seqlens = paged(b, lens, h_q, s_q=s_q, page=page)
    out, lse = attention.dense_decode(q, cache, table, seqlens, causal=True)
    ref_out, ref_lse = attention.dense_decode(q, cache, table, seqlens, causal=True, backend="reference")
    # 16-bit probabilities: a few elements may err by ~2^-8 of sum p|v| (see testing/compare.py)
    torch.testing.assert_close(out.float(), ref_out.float(), atol=6e-3, rtol=2e-2)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref_out.float().flatten(), dim=0)
    assert float(cos) > 0.99999
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-5)


# Shapes the seesaw kernel serves (csrc_sm90/attention/decode_seesaw.cuh; with FLASHMLA_SM90_SEESAW=0 the
# two-buffer kernel serves them instead): the binding picks it for d_qk 576, page_size a multiple of 64, more
# than 64 query rows per KV head, and plans whose parts average at least half a request: here deterministic
# plans, or b = 80 requests over the 66 parts of an H100 plan). Lengths cover empty requests, odd tile
# counts (a phantom tile), partial tiles, requests split across parts, and (s_q 2) causal limits that differ
# between the rows of a tile.
SEESAW_LENS = [0, 1, 63, 64, 65, 129, 191, 4096, 40000]


@pytest.mark.parametrize("b,h_q,s_q,page,dtype,deterministic", [
    (80, 128, 1, 64, torch.bfloat16, False), (80, 128, 2, 128, torch.bfloat16, False),
    (9, 128, 2, 64, torch.float16, True), (9, 96, 1, 256, torch.bfloat16, True),
])
def test_seesaw_shapes_against_reference(b, h_q, s_q, page, dtype, deterministic):
    g = torch.Generator().manual_seed(b + h_q + s_q)
    lens = SEESAW_LENS + [int(x) for x in torch.randint(1, 6000, (b - len(SEESAW_LENS),), generator=g)]
    q, cache, table, seqlens = paged(b, lens, h_q, s_q=s_q, page=page, dtype=dtype)
    sink = torch.randn(h_q, device="cuda")
    plan = attention.plan_decode(seqlens, num_q_heads=h_q, q_len=s_q, deterministic=deterministic)
    out, lse = attention.dense_decode(q, cache, table, seqlens, causal=True, attn_sink=sink, plan=plan)
    ref_out, ref_lse = attention.dense_decode(q, cache, table, seqlens, causal=True, attn_sink=sink,
                                              backend="reference")
    torch.testing.assert_close(out.float(), ref_out.float(), atol=6e-3, rtol=2e-2)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref_out.float().flatten(), dim=0)
    assert float(cos) > 0.99999
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-5)


def test_cuda_graph_capture_of_plan_and_decode():
    lens = [4096, 100, 0, 2048]
    q, cache, table, seqlens = paged(4, lens, 128, s_q=2)
    eager, eager_lse = attention.dense_decode(q, cache, table, seqlens, causal=True,
                                              plan=attention.plan_decode(seqlens, num_q_heads=128, q_len=2))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside capture
        attention.dense_decode(q, cache, table, seqlens, causal=True,
                               plan=attention.plan_decode(seqlens, num_q_heads=128, q_len=2))
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan = attention.plan_decode(seqlens, num_q_heads=128, q_len=2)
        out, lse = attention.dense_decode(q, cache, table, seqlens, causal=True, plan=plan)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager) and torch.equal(lse, eager_lse)
    # new lengths (within each request's blocks), same shapes: the replayed plan follows the device values
    seqlens.copy_(torch.tensor([4000, 60, 0, 1000], dtype=torch.int32))
    graph.replay()
    ref, ref_lse = attention.dense_decode(q, cache, table, seqlens, causal=True, backend="reference")
    torch.testing.assert_close(out.float(), ref.float(), atol=6e-3, rtol=2e-2)


def test_deterministic_plan_is_batch_invariant():
    lens = [3000, 17, 5000]
    q, cache, table, seqlens = paged(3, lens, 64)
    plan = attention.plan_decode(seqlens, num_q_heads=64, deterministic=True)
    out, lse = attention.dense_decode(q, cache, table, seqlens, plan=plan)
    for i in range(3):
        sl = slice(i, i + 1)
        alone, alone_lse = attention.dense_decode(
            q[sl], cache, table[sl], seqlens[sl],
            plan=attention.plan_decode(seqlens[sl], num_q_heads=64, deterministic=True))
        assert torch.equal(alone, out[sl]) and torch.equal(alone_lse, lse[sl])


@pytest.mark.parametrize("s_q,h_q,h_kv,s_kv,topk", [(70000, 16, 1, 4096, 64), (256, 128, 1, 32768, 2048),
                                                   (33, 64, 2, 500, 192)])
def test_sparse_prefill_against_reference(s_q, h_q, h_kv, s_kv, topk):
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(s_q, h_q, 576, device="cuda", generator=g).bfloat16()
    kv = torch.randn(s_kv, h_kv, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-8, s_kv + 8, (s_q, h_kv, topk), device="cuda", generator=g).int()
    lengths = torch.randint(0, topk + 1, (s_q,), device="cuda", generator=g).int()
    sink = torch.randn(h_q, device="cuda")
    out, max_logits, lse = attention.sparse_prefill(q, kv, idx, softmax_scale=576 ** -0.5, topk_length=lengths,
                                                    attn_sink=sink)
    rows = torch.arange(0, s_q, max(1, s_q // 64), device="cuda")   # the reference on a sample of rows
    ref = attention.sparse_prefill(q[rows], kv, idx[rows], softmax_scale=576 ** -0.5, topk_length=lengths[rows],
                                   attn_sink=sink, backend="reference")
    torch.testing.assert_close(out[rows].float(), ref[0].float(), atol=6e-3, rtol=2e-2)
    torch.testing.assert_close(max_logits[rows], ref[1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lse[rows], ref[2], atol=1e-4, rtol=1e-5)


def _prefill_inputs(s_q, h_q, s_kv, topk, seed):
    """Sparse prefill inputs: invalid indices (negative, past s_kv), random topk_length (0 included), and
    every kv row no index refers to set to NaN."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(s_q, h_q, 576, device="cuda", generator=g).bfloat16()
    kv = torch.randn(s_kv, 1, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-8, s_kv + 8, (s_q, 1, topk), device="cuda", generator=g).int()
    lengths = torch.randint(0, topk + 1, (s_q,), device="cuda", generator=g).int()
    lengths[:3] = torch.tensor([topk, 0, 1])
    counted = torch.arange(topk, device="cuda")[None, :] < lengths[:, None]
    used = idx[:, 0][counted & (idx[:, 0] >= 0) & (idx[:, 0] < s_kv)].long()
    referenced = torch.zeros(s_kv, dtype=torch.bool, device="cuda")
    referenced[used] = True
    kv[~referenced] = float("nan")
    return q, kv, idx, lengths, torch.randn(h_q, device="cuda", generator=g)


# The uniform plan (plan.cu) splits the tokens at its parts' boundaries when whole tokens would leave the
# CTAs over 15 % idle: more tokens than parts (h_q 64: 132 parts, h_q 128: 66), fewer (each token over
# several parts), tile counts odd and even; and whole tokens filling the parts (132 x 2 tokens: no split).
@pytest.mark.parametrize("s_q,h_q,topk", [(300, 64, 640), (200, 128, 576), (7, 64, 2048), (40, 128, 320),
                                          (264, 64, 256)])
def test_sparse_prefill_split_tokens_against_reference(s_q, h_q, topk):
    q, kv, idx, lengths, sink = _prefill_inputs(s_q, h_q, 3000, topk, seed=s_q)
    out, max_logits, lse = attention.sparse_prefill(q, kv, idx, softmax_scale=576 ** -0.5, topk_length=lengths,
                                                    attn_sink=sink)
    ref = attention.sparse_prefill(q, kv, idx, softmax_scale=576 ** -0.5, topk_length=lengths, attn_sink=sink,
                                   backend="reference")
    torch.testing.assert_close(out.float(), ref[0].float(), atol=6e-3, rtol=2e-2)
    torch.testing.assert_close(max_logits, ref[1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(lse, ref[2], atol=1e-4, rtol=1e-5)
    again = attention.sparse_prefill(q, kv, idx, softmax_scale=576 ** -0.5, topk_length=lengths, attn_sink=sink)
    assert all(torch.equal(a, b) for a, b in zip((out, max_logits, lse), again))  # run-to-run bitwise


def test_sparse_prefill_split_changes_only_boundary_tokens(monkeypatch):
    # against whole tokens (FLASHMLA_SM90_PREFILL_SPLIT=0): max_logits bit for bit everywhere (a max is exact
    # in any order), out and lse bit for bit except on the tokens split at a boundary (fewer than the parts)
    q, kv, idx, lengths, sink = _prefill_inputs(400, 64, 3000, 1024, seed=5)
    split = attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, topk_length=lengths, attn_sink=sink)
    monkeypatch.setenv("FLASHMLA_SM90_PREFILL_SPLIT", "0")
    whole = attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, topk_length=lengths, attn_sink=sink)
    assert torch.equal(split[1], whole[1])
    differ = ((split[0] != whole[0]).flatten(1).any(1) | (split[2] != whole[2]).any(1)).sum().item()
    assert 0 < differ < torch.cuda.get_device_properties(0).multi_processor_count
    torch.testing.assert_close(split[0].float(), whole[0].float(), atol=4e-3, rtol=1e-2)
    torch.testing.assert_close(split[2], whole[2], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("switch", ["FLASHMLA_SM90_PERSIST", "FLASHMLA_SM90_Q_BY_PRODUCER"])
def test_sparse_prefill_a_b_forms_agree_bitwise(switch, monkeypatch):
    # persistent CTAs over runs of whole tokens vs a CTA per token; Q loaded by the producer vs by the consumers:
    # every token's arithmetic is the same, so are the bits
    monkeypatch.setenv("FLASHMLA_SM90_PREFILL_SPLIT", "0")
    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(400, 128, 576, device="cuda", generator=g).bfloat16()
    kv = torch.randn(700, 1, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-8, 708, (400, 1, 192), device="cuda", generator=g).int()
    lengths = torch.randint(0, 193, (400,), device="cuda", generator=g).int()
    first = attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, topk_length=lengths)
    monkeypatch.setenv(switch, "0")  # read per call by the binding
    second = attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, topk_length=lengths)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def _fp8_paged(b, lens, h_q, s_q, page, seed=0):
    """paged() with the cache quantized to fp8_v32, page blocks strided by one extra slot (the kernels'
    division form of a slot's address), q non-contiguous, and every slot no request attends (past a length,
    the extra slot, unreferenced blocks) filled with 0xFF bytes: NaN e4m3 values, scales and RoPE."""
    from flashmla import kvcache
    q, values, table, seqlens = paged(b, lens, h_q, s_q=s_q, page=page, seed=seed)
    n = values.shape[0]
    tok = torch.cat([torch.arange(L, device="cuda") for L in lens]).long()
    req = torch.repeat_interleave(torch.arange(b, device="cuda"), torch.tensor(lens, device="cuda"))
    attended = torch.zeros(n, page + 1, dtype=torch.bool, device="cuda")
    attended[table[req, tok // page].long(), tok % page] = True
    packed = torch.full((n, page + 1, 1, 656), 0xFF, dtype=torch.uint8, device="cuda")
    packed[:, :page] = kvcache.quantize(values, format="fp8_v32")
    packed[~attended] = 0xFF
    return q.transpose(1, 2).contiguous().transpose(1, 2), packed[:, :page], table, seqlens


# b, h_q, s_q, page, lens: MTP causal limits that differ between the rows of a tile, empty and one-key
# requests, requests longer than a wave's share (split across parts), page sizes that are not powers of two
FP8_DENSE_SHAPES = [(8, 128, 1, 64, None), (4, 128, 2, 64, None), (16, 16, 1, 64, None),
                    (3, 64, 2, 32, [0, 5000, 1]), (2, 16, 1, 128, [70000, 3]), (80, 128, 2, 16, SEESAW_LENS),
                    (5, 8, 3, 7, [1, 2, 300, 0, 64]), (130, 32, 2, 64, [0, 1, 63, 64, 65, 129, 191, 4096])]


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("b,h_q,s_q,page,lens", FP8_DENSE_SHAPES)
def test_dense_decode_fp8_against_reference(b, h_q, s_q, page, lens, deterministic):
    g = torch.Generator().manual_seed(b + h_q + s_q)
    lens = list(lens or []) + [int(x) for x in torch.randint(1, 6000, (b - len(lens or []),), generator=g)]
    q, cache, table, seqlens = _fp8_paged(b, lens, h_q, s_q, page)
    sink = torch.randn(h_q, device="cuda")
    plan = attention.plan_decode(seqlens, num_q_heads=h_q, q_len=s_q, deterministic=deterministic,
                                 kv_format="fp8_v32")
    args = (q, cache, table, seqlens)
    out, lse = attention.dense_decode(*args, kv_format="fp8_v32", causal=True, attn_sink=sink, plan=plan)
    ref, ref_lse = attention.dense_decode(*args, kv_format="fp8_v32", causal=True, attn_sink=sink,
                                          backend="reference")
    torch.testing.assert_close(out.float(), ref.float(), atol=6e-3, rtol=2e-2)
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.float().flatten(), dim=0)
    assert float(cos) > 0.99999
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("b,h_q,page,lens", [(6, 64, 64, [1, 63, 64, 65, 3000, 0]), (3, 128, 16, [200, 4096, 5])])
def test_dense_decode_fp8_equals_sparse_decode_over_all_keys(b, h_q, page, lens):
    # keys [0, seqlen) through the block table are the sparse keys slot(0), slot(1), ... in order: with one
    # part per request (deterministic plans) the dense and sparse forms of attention/fp8_decode.cuh run the
    # same tiles in the same order, so their outputs must agree bit for bit
    q, cache, table, seqlens = _fp8_paged(b, lens, h_q, 1, page)
    plan = attention.plan_decode(seqlens, num_q_heads=h_q, deterministic=True, kv_format="fp8_v32")
    out, lse = attention.dense_decode(q, cache, table, seqlens, kv_format="fp8_v32", plan=plan)
    topk = max(lens)
    tok = torch.arange(topk, device="cuda")
    slots = table[:, tok // page] * page + tok % page
    idx = torch.where(tok[None] < seqlens[:, None], slots, -1).int()[:, None, :]
    sparse_plan = attention.plan_decode(seqlens, num_q_heads=h_q, topk=topk, deterministic=True, kv_format="fp8_v32")
    want, want_lse = attention.sparse_decode(q, cache, idx, kv_format="fp8_v32", topk_length=seqlens,
                                             plan=sparse_plan)
    assert torch.equal(out, want) and torch.equal(lse, want_lse)


def test_dense_decode_fp8_plan_and_decode_in_a_cuda_graph():
    lens = [3000, 70, 0, 1500]
    q, cache, table, seqlens = _fp8_paged(4, lens, 64, 2, 64)
    make = lambda: attention.plan_decode(seqlens, num_q_heads=64, q_len=2, kv_format="fp8_v32")  # noqa: E731
    call = lambda plan: attention.dense_decode(q, cache, table, seqlens, kv_format="fp8_v32",  # noqa: E731
                                               causal=True, plan=plan)
    eager, eager_lse = call(make())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside capture
        call(make())
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = call(make())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager) and torch.equal(lse, eager_lse)
    # shorter lengths (attended slots stay poison-free), same shapes: the replayed plan follows the device values
    seqlens.copy_(torch.tensor([2000, 64, 0, 1], dtype=torch.int32))
    graph.replay()
    ref, _ = attention.dense_decode(q, cache, table, seqlens, kv_format="fp8_v32", causal=True, backend="reference")
    torch.testing.assert_close(out.float(), ref.float(), atol=6e-3, rtol=2e-2)


def test_dense_decode_fp8_needs_bf16_queries():
    import flashmla
    q, cache, table, seqlens = _fp8_paged(2, [100, 7], 16, 1, 64)
    trace = dict(flashmla.explain("dense_decode", q.half(), cache, table, seqlens, kv_format="fp8_v32").trace)
    assert any("bfloat16 queries only" in r for r in trace["sm90"]), trace["sm90"]


def _sparse_decode_inputs(b, s_q, h_q, page, topk, kv_format, seed=1):
    """A paged cache (page blocks strided by one extra slot), non-contiguous q, indices with invalid
    entries (negative, past the capacity), random topk_length."""
    from flashmla import kvcache
    g = torch.Generator(device="cuda").manual_seed(seed)
    blocks = 8192 // page + 1
    values = torch.randn(blocks, page + 1, 1, 576, device="cuda", generator=g).bfloat16()
    cache = (kvcache.quantize(values, format="fp8_v32") if kv_format == "fp8_v32" else values)[:, :page]
    q = torch.randn(b, h_q, s_q, 576, device="cuda", generator=g).bfloat16().transpose(1, 2)
    idx = torch.randint(-4, blocks * page + 4, (b, s_q, topk), device="cuda", generator=g).int()
    lengths = torch.randint(0, topk + 1, (b,), device="cuda", generator=g).int()
    return q, cache, idx, lengths


# the last two: more query tokens than one wave of CTAs
SPARSE_DECODE_SHAPES = [(4, 2, 128, 64, 2048), (3, 1, 16, 7, 100), (64, 1, 64, 64, 2048), (2, 3, 8, 64, 64),
                        (3, 1, 96, 16, 320), (150, 2, 32, 64, 128), (100, 2, 128, 16, 192)]


@pytest.mark.parametrize("kv_format", ["bf16", "fp8_v32"])
@pytest.mark.parametrize("planned", ["none", "split", "deterministic"])
@pytest.mark.parametrize("b,s_q,h_q,page,topk", SPARSE_DECODE_SHAPES)
def test_sparse_decode_against_reference(b, s_q, h_q, page, topk, kv_format, planned):
    q, cache, idx, lengths = _sparse_decode_inputs(b, s_q, h_q, page, topk, kv_format)
    plan = None if planned == "none" else attention.plan_decode(
        lengths, num_q_heads=h_q, q_len=s_q, topk=topk, deterministic=planned == "deterministic",
        kv_format=kv_format)
    out, lse = attention.sparse_decode(q, cache, idx, kv_format=kv_format, topk_length=lengths, plan=plan)
    ref, ref_lse = attention.sparse_decode(q, cache, idx, kv_format=kv_format, topk_length=lengths,
                                           backend="reference")
    torch.testing.assert_close(out.float(), ref.float(), atol=6e-3, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("b,s_q,h_q,page,topk", SPARSE_DECODE_SHAPES)
def test_sparse_decode_fp8_equals_bf16_on_the_dequantized_cache(b, s_q, h_q, page, topk, monkeypatch):
    # the dequantization must make exactly the bf16 tile the contract defines: same bits out of the same
    # kernel, the two-buffer one (by default fp8_v32 and bf16 rows go to different producer/consumer
    # kernels, whose sums run in different orders; the fp8 one dequantizes with the same Fp8HalfRow code)
    from flashmla import kvcache
    q, cache, idx, lengths = _sparse_decode_inputs(b, s_q, h_q, page, topk, "fp8_v32")
    monkeypatch.setenv("FLASHMLA_SM90_SPARSE_SEESAW", "0")  # read per call by the binding
    out, lse = attention.sparse_decode(q, cache, idx, kv_format="fp8_v32", topk_length=lengths)
    bf16_cache = kvcache.dequantize(cache.contiguous(), format="fp8_v32")
    out_bf16, lse_bf16 = attention.sparse_decode(q, bf16_cache, idx, kv_format="bf16", topk_length=lengths)
    assert torch.equal(out, out_bf16) and torch.equal(lse, lse_bf16)


@pytest.mark.parametrize("b,s_q,h_q,page,topk", [(4, 2, 128, 64, 2048), (3, 1, 16, 7, 100)])
def test_sparse_decode_fp8_with_the_producer_dequantizing_alone(b, s_q, h_q, page, topk, monkeypatch):
    # FLASHMLA_SM90_FP8_SHARED_DEQUANT=0, the A/B form of attention/fp8_decode.cuh: no quarter of the
    # tile is dequantized by the P V warpgroup
    q, cache, idx, lengths = _sparse_decode_inputs(b, s_q, h_q, page, topk, "fp8_v32")
    monkeypatch.setenv("FLASHMLA_SM90_FP8_SHARED_DEQUANT", "0")  # read per call by the binding
    out, lse = attention.sparse_decode(q, cache, idx, kv_format="fp8_v32", topk_length=lengths)
    ref, ref_lse = attention.sparse_decode(q, cache, idx, kv_format="fp8_v32", topk_length=lengths,
                                           backend="reference")
    torch.testing.assert_close(out.float(), ref.float(), atol=6e-3, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-5)


def test_sparse_decode_split_plan_in_a_cuda_graph():
    q, cache, idx, lengths = _sparse_decode_inputs(64, 1, 64, 64, 2048, "fp8_v32")
    make = lambda: attention.plan_decode(lengths, num_q_heads=64, topk=2048, kv_format="fp8_v32")  # noqa: E731
    eager, eager_lse = attention.sparse_decode(q, cache, idx, topk_length=lengths, plan=make())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        attention.sparse_decode(q, cache, idx, topk_length=lengths, plan=make())
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = attention.sparse_decode(q, cache, idx, topk_length=lengths, plan=make())
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager) and torch.equal(lse, eager_lse)
    lengths.copy_(torch.randint(0, 2049, (64,), device="cuda").int())  # any topk_length, same plan
    graph.replay()
    ref, _ = attention.sparse_decode(q, cache, idx, topk_length=lengths, backend="reference")
    torch.testing.assert_close(out.float(), ref.float(), atol=6e-3, rtol=2e-2)
