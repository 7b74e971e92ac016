import sys, torch
sys.path.insert(0, "backends/sm90/tests")
from paged_inputs import paged
from flashmla import attention
q, cache, table, seqlens = paged(40, [256] * 40, 128, page=64)
plan = attention.plan_decode(seqlens, num_q_heads=128)
attention.dense_decode(q, cache, table, seqlens, causal=False, plan=plan)
torch.cuda.synchronize()
print("seesaw case without tail zeroing ran")
