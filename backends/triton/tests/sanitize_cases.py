"""Small calls of every flashmla-triton kernel, to run under compute-sanitizer on a GPU:

    compute-sanitizer --tool memcheck python backends/triton/tests/sanitize_cases.py
"""
import torch

from flashmla import attention, kvcache


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    dev = dict(device="cuda")
    # dense decode: split and unsplit requests, an empty one, page 16, GQA, causal MTP
    lens = [700, 0, 33]
    table = torch.full((3, 50), 2147480000, dtype=torch.int32, **dev)
    table[0, :44] = torch.arange(44, dtype=torch.int32, **dev)
    table[2, :3] = torch.arange(44, 47, dtype=torch.int32, **dev)
    cache = torch.randn(48, 16, 2, 576, generator=g, **dev).bfloat16()
    q = torch.randn(3, 2, 8, 576, generator=g, **dev).bfloat16()
    seqlens = torch.tensor(lens, dtype=torch.int32, **dev)
    plan = attention.plan_decode(seqlens, num_q_heads=8, num_kv_heads=2, q_len=2, backend="triton")
    attention.dense_decode(q, cache, table, seqlens, causal=True, plan=plan, attn_sink=torch.zeros(8, **dev))
    # dense decode, 64 query rows per KV head on page 64: full tiles by TMA, the partial last one gathered
    table64 = torch.full((3, 14), 2147480000, dtype=torch.int32, **dev)
    table64[0, :11] = torch.arange(11, dtype=torch.int32, **dev)
    table64[2, :2] = torch.arange(11, 13, dtype=torch.int32, **dev)
    cache64 = torch.randn(13, 64, 1, 576, generator=g, **dev).bfloat16()
    q64 = torch.randn(3, 2, 32, 576, generator=g, **dev).bfloat16()
    plan = attention.plan_decode(seqlens, num_q_heads=32, num_kv_heads=1, q_len=2, backend="triton")
    attention.dense_decode(q64, cache64, table64, seqlens, causal=True, plan=plan)
    # sparse decode on fp8_v32 with invalid indices and topk_length
    packed = kvcache.quantize(torch.randn(10, 64, 1, 576, generator=g, **dev).bfloat16())
    idx = torch.randint(-5, 700, (2, 1, 128), generator=g, **dev).int()
    qs = torch.randn(2, 1, 16, 576, generator=g, **dev).bfloat16()
    attention.sparse_decode(qs, packed, idx, topk_length=torch.tensor([128, 7], dtype=torch.int32, **dev),
                            backend="triton")
    # sparse prefill
    kv = torch.randn(300, 1, 576, generator=g, **dev).bfloat16()
    attention.sparse_prefill(torch.randn(5, 16, 576, generator=g, **dev).bfloat16(), kv,
                             torch.randint(-3, 310, (5, 1, 64), generator=g, **dev).int(), softmax_scale=0.04,
                             backend="triton")
    torch.cuda.synchronize()
    print("triton sanitize cases ran")


if __name__ == "__main__":
    main()
