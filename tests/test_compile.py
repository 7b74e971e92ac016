"""The ops are torch.library custom ops with fake implementations: torch.compile(fullgraph=True)
traces through the public API, and opcheck validates the registrations."""
import pytest
import torch

from flashmla import attention
from flashmla_core import ops

from conftest import paged_decode_inputs


def _decode_step(q, cache, table, lens):
    out, lse = attention.dense_decode(q, cache, table, lens, causal=True)
    return out.float().sum(-1), lse


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
def test_fullgraph_compile_of_dense_decode(compiler):
    torch._dynamo.reset()
    inputs = paged_decode_inputs(s_q=2)
    eager = _decode_step(*inputs)
    compiled = torch.compile(_decode_step, fullgraph=True, backend=compiler)(*inputs)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_fullgraph_compile_of_sparse_ops():
    torch._dynamo.reset()
    q = torch.randn(6, 16, 576).bfloat16()
    kv = torch.randn(40, 1, 576).bfloat16()
    idx = torch.randint(-1, 40, (6, 1, 64), dtype=torch.int32)

    def prefill(q, kv, idx):
        return attention.sparse_prefill(q, kv, idx, softmax_scale=0.05)

    for a, b in zip(prefill(q, kv, idx), torch.compile(prefill, fullgraph=True, backend="aot_eager")(q, kv, idx)):
        assert torch.equal(a, b)


def _opcheck_samples():
    q, cache, table, lens = paged_decode_inputs(s_q=2)
    yield ops.dense_decode, (q, cache, table, lens, "bf16", 512, 0.04, True, None, [], "")
    qs = torch.randn(2, 1, 16, 576).bfloat16()
    idx = torch.randint(0, 64, (2, 1, 64), dtype=torch.int32)
    yield ops.sparse_decode, (qs, cache[:, :, :1], idx, "bf16", 512, 0.04, None, None, [], "")
    qp = torch.randn(5, 16, 576).bfloat16()
    yield ops.sparse_prefill, (qp, torch.randn(30, 1, 576).bfloat16(), torch.randint(0, 30, (5, 1, 64),
                                                                                      dtype=torch.int32),
                               0.04, 512, None, None, "")
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    yield ops.dense_prefill, (torch.randn(7, 4, 192).bfloat16(), torch.randn(7, 4, 192).bfloat16(),
                              torch.randn(7, 4, 128).bfloat16(), cu, cu, 4, 4, 0.07, True, "")


@pytest.mark.parametrize("op,args", list(_opcheck_samples()), ids=["dense_decode", "sparse_decode",
                                                                    "sparse_prefill", "dense_prefill"])
def test_opcheck(op, args):
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
