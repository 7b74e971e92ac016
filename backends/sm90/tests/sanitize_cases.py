"""A few small sm90 calls covering every kernel path, to run under compute-sanitizer:

    compute-sanitizer --tool memcheck python backends/sm90/tests/sanitize_cases.py
    compute-sanitizer --tool racecheck python backends/sm90/tests/sanitize_cases.py
"""
import torch

from flashmla import attention
from paged_inputs import paged


def case(b, lens, h_q, h_kv, s_q, page, dtype, d, deterministic=False, sink=False, fp8=False):
    q, cache, table, seqlens = paged(b, lens, h_q, h_kv=h_kv, s_q=s_q, page=page, dtype=dtype, d=d)
    kv_format = None
    if fp8:  # dense decode over an fp8_v32 cache (attention/fp8_decode.cuh)
        from flashmla import kvcache
        cache, kv_format = kvcache.quantize(cache, format="fp8_v32"), "fp8_v32"
    attn_sink = torch.randn(h_q, device="cuda") if sink else None
    plan = attention.plan_decode(seqlens, num_q_heads=h_q, num_kv_heads=h_kv, q_len=s_q, deterministic=deterministic,
                                 kv_format=kv_format)
    out, lse = attention.dense_decode(q, cache, table, seqlens, causal=s_q > 1, attn_sink=attn_sink, plan=plan,
                                      kv_format=kv_format)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any()


if __name__ == "__main__":
    case(3, [300, 0, 1], 16, 1, 1, 64, torch.bfloat16, 576)                 # split + unsplit + empty
    case(2, [130, 77], 128, 1, 2, 16, torch.float16, 576, sink=True)         # 2 m-tiles... (rows 256), causal
    case(2, [129, 64], 6, 3, 2, 7, torch.bfloat16, 512)                      # GQA, odd page, d 512
    case(2, [200, 3], 32, 1, 1, 64, torch.bfloat16, 576, deterministic=True)
    case(3, [1000, 33, 64], 128, 1, 2, 128, torch.bfloat16, 576, sink=True)  # TMA tiles: tails, 2 m-tiles
    # the seesaw kernel (unless FLASHMLA_SM90_SEESAW=0): 40 requests (parts average half a request or more),
    # odd tile counts, a split request
    case(40, [0, 1, 65, 129, 9000] + [300] * 35, 128, 1, 1, 64, torch.bfloat16, 576, sink=True)
    case(3, [130, 0, 64], 128, 1, 2, 64, torch.float16, 576, deterministic=True)
    # the same with s_q 2 (four query tiles per KV head, causal limits differing between rows)
    case(40, [0, 1, 65, 129, 9000] + [300] * 35, 128, 1, 2, 64, torch.bfloat16, 576, sink=True)
    # dense decode on fp8_v32: split and unsplit requests, empty ones, causal rows (s_q 3), page 7, 2 m-tiles
    case(4, [300, 0, 1, 2000], 16, 1, 3, 7, torch.bfloat16, 576, sink=True, fp8=True)
    case(3, [130, 64, 0], 128, 1, 1, 64, torch.bfloat16, 576, deterministic=True, fp8=True)
    # sparse prefill: invalid indices, topk_length, GQA, topk not a multiple of 64, sink
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(5, 16, 576, device="cuda", generator=g).bfloat16()
    kv = torch.randn(300, 2, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-3, 310, (5, 2, 100), device="cuda", generator=g).int()
    attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, topk_length=torch.tensor([100, 0, 7, 64, 65],
                             dtype=torch.int32, device="cuda"), attn_sink=torch.zeros(16, device="cuda"))
    # gathered rows with two 64-row query tiles: sparse prefill with 128 heads, invalid indices, topk_length
    # 0 and odd tile counts; bf16 sparse decode with one part per token (deterministic plan)
    q = torch.randn(4, 128, 576, device="cuda", generator=g).bfloat16()
    kv = torch.randn(300, 1, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-3, 310, (4, 1, 200), device="cuda", generator=g).int()
    attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, topk_length=torch.tensor([200, 0, 65, 130],
                             dtype=torch.int32, device="cuda"), attn_sink=torch.zeros(128, device="cuda"))
    cache = torch.randn(20, 7, 1, 576, device="cuda", generator=g).bfloat16()
    lengths = torch.tensor([130, 3], dtype=torch.int32, device="cuda")
    plan = attention.plan_decode(lengths, num_q_heads=128, q_len=2, topk=130, deterministic=True, kv_format="bf16")
    attention.sparse_decode(torch.randn(2, 2, 128, 576, device="cuda", generator=g).bfloat16(), cache,
                            torch.randint(-3, 145, (2, 2, 130), device="cuda", generator=g).int(), kv_format="bf16",
                            topk_length=lengths, plan=plan)
    # d_qk 512 gathered rows (P in its own buffers in the producer/consumer kernel)
    q = torch.randn(3, 64, 512, device="cuda", generator=g).bfloat16()
    kv = torch.randn(300, 1, 512, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-3, 310, (3, 1, 192), device="cuda", generator=g).int()
    attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, head_dim_v=512,
                             topk_length=torch.tensor([192, 1, 100], dtype=torch.int32, device="cuda"))
    # sparse decode on a bf16 paged cache (page 7), s_q 2
    cache = torch.randn(20, 7, 1, 576, device="cuda", generator=g).bfloat16()
    attention.sparse_decode(torch.randn(2, 2, 16, 576, device="cuda", generator=g).bfloat16(), cache,
                            torch.randint(-3, 145, (2, 2, 70), device="cuda", generator=g).int(), kv_format="bf16",
                            topk_length=torch.tensor([70, 3], dtype=torch.int32, device="cuda"))
    # sparse decode on fp8_v32 (page 7, s_q 2): the token-split plan with combine, and unsplit
    from flashmla import kvcache
    packed = kvcache.quantize(torch.randn(40, 7, 1, 576, device="cuda", generator=g).bfloat16(), format="fp8_v32")
    q = torch.randn(3, 2, 16, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-3, 290, (3, 2, 300), device="cuda", generator=g).int()
    lengths = torch.tensor([300, 0, 130], dtype=torch.int32, device="cuda")
    for deterministic in (False, True):
        plan = attention.plan_decode(lengths, num_q_heads=16, q_len=2, topk=300, deterministic=deterministic,
                                     kv_format="fp8_v32")
        attention.sparse_decode(q, packed, idx, topk_length=lengths, plan=plan, attn_sink=torch.randn(16, device="cuda"))
    # h_q 96: two m-tiles (the second CTA's rows half empty)
    q = torch.randn(3, 2, 96, 576, device="cuda", generator=g).bfloat16()
    attention.sparse_decode(q, packed, idx, topk_length=lengths)
    # more query tokens than one wave of CTAs, with topk_length 0 and partial tiles among them: sparse prefill
    # (h_q 128) on persistent CTAs, each a run of whole tokens; fp8_v32 decode (h_q 128, s_q 2), a CTA per token
    q = torch.randn(300, 128, 576, device="cuda", generator=g).bfloat16()
    kv = torch.randn(500, 1, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-3, 510, (300, 1, 128), device="cuda", generator=g).int()
    attention.sparse_prefill(q, kv, idx, softmax_scale=0.04,
                             topk_length=torch.randint(0, 129, (300,), dtype=torch.int32, device="cuda", generator=g))
    # sparse prefill on the uniform plan: tokens split at part boundaries (150 tokens of 5 tile pairs on 132
    # parts; 3 tokens of 4 pairs, one pair per part), their partials and max_logits merged by the combine
    for n, topk in ((150, 640), (3, 512)):
        q = torch.randn(n, 64, 576, device="cuda", generator=g).bfloat16()
        idx = torch.randint(-3, 510, (n, 1, topk), device="cuda", generator=g).int()
        attention.sparse_prefill(q, kv, idx, softmax_scale=0.04, attn_sink=torch.randn(64, device="cuda"),
                                 topk_length=torch.randint(0, topk + 1, (n,), dtype=torch.int32, device="cuda",
                                                           generator=g))
    q = torch.randn(80, 2, 128, 576, device="cuda", generator=g).bfloat16()
    idx = torch.randint(-3, 290, (80, 2, 128), device="cuda", generator=g).int()
    attention.sparse_decode(q, packed, idx, topk_length=torch.randint(0, 129, (80,), dtype=torch.int32, device="cuda",
                                                                      generator=g))
    torch.cuda.synchronize()
    print("sanitize cases ran")
