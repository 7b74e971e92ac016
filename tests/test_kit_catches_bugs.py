"""The conformance kit must fail a backend with each classic bug: these mutants of the reference
backend each carry one, and the kit has to notice. They run on the CPU on every machine: what is
tested is the kit's logic, and a mutant that reads out of bounds on a GPU trips a device-side assert
that poisons the CUDA context for every later test."""
import math

import pytest
import torch

from flashmla_core.reference.backend import ReferenceBackend
from flashmla_core.registry.selection import REGISTRY
from flashmla_core.testing import runner


class _Mutant(ReferenceBackend):
    priority = -100


class LseBase2(_Mutant):
    def dense_decode(self, *a, **kw):
        out, lse = super().dense_decode(*a, **kw)
        return out, lse / math.log(2)


class CausalOffByOne(_Mutant):
    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, **kw):
        if kw["causal"]:   # lets every query see one key too many
            return super().dense_decode(q, kv_cache, block_table, (cache_seqlens + 1).clamp(max=cache_seqlens.max()),
                                        **kw)
        return super().dense_decode(q, kv_cache, block_table, cache_seqlens, **kw)


class ReadsWholeLastPage(_Mutant):
    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, **kw):
        page = kv_cache.shape[1]   # attends the tail of the last page: NaN-poisoned slots leak
        return super().dense_decode(q, kv_cache, block_table, (cache_seqlens + page - 1) // page * page, **kw)


class IgnoresTopkLength(_Mutant):
    def sparse_decode(self, *a, **kw):
        return super().sparse_decode(*a, **dict(kw, topk_length=None))


class ClampsInvalidIndices(_Mutant):
    def sparse_decode(self, q, kv_cache, indices, **kw):
        capacity = kv_cache.shape[0] * kv_cache.shape[1]
        return super().sparse_decode(q, kv_cache, indices.clamp(0, capacity - 1), **kw)


class PowerOfTwoScales(_Mutant):
    """Reads fp8 scales through e8m0 (rounded to a power of two): wrong for arbitrary writer scales."""
    def sparse_decode(self, q, kv_cache, indices, **kw):
        if kw["kv_format"] == "fp8_v32":
            kv_cache = kv_cache.clone()
            s = kv_cache[..., 512:528].contiguous().view(torch.float32)
            kv_cache[..., 512:528] = torch.exp2(torch.ceil(torch.log2(s))).view(torch.uint8)
        return super().sparse_decode(q, kv_cache, indices, **kw)


class IgnoresSoftmaxScale(_Mutant):
    def sparse_prefill(self, q, kv, indices, **kw):
        return super().sparse_prefill(q, kv, indices, **dict(kw, softmax_scale=q.shape[-1] ** -0.5))


class IgnoresSink(_Mutant):
    def sparse_prefill(self, *a, **kw):
        return super().sparse_prefill(*a, **dict(kw, attn_sink=None))


class NotCausalPrefill(_Mutant):
    def dense_prefill(self, *a, **kw):
        return super().dense_prefill(*a, **dict(kw, causal=False))


class NeverWrites(_Mutant):
    def sparse_prefill(self, q, kv, indices, **kw):
        s_q, h_q = q.shape[:2]
        return (torch.empty(s_q, h_q, kw["head_dim_v"], dtype=q.dtype), torch.empty(s_q, h_q),
                torch.empty(s_q, h_q))


class ClaimsUnimplementedFeature(_Mutant):
    """Accepts requests with attn_sink but silently ignores the sink (a wrong answer, not a refusal)."""
    def dense_decode(self, *a, **kw):
        return super().dense_decode(*a, **dict(kw, attn_sink=None))


MUTANTS = [(LseBase2, "dense_decode"), (CausalOffByOne, "dense_decode"), (ReadsWholeLastPage, "dense_decode"),
           (IgnoresTopkLength, "sparse_decode"), (ClampsInvalidIndices, "sparse_decode"),
           (PowerOfTwoScales, "sparse_decode"), (IgnoresSoftmaxScale, "sparse_prefill"),
           (IgnoresSink, "sparse_prefill"), (NotCausalPrefill, "dense_prefill"), (NeverWrites, "sparse_prefill"),
           (ClaimsUnimplementedFeature, "dense_decode")]


@pytest.mark.parametrize("mutant,op", MUTANTS, ids=[m.__name__ for m, _ in MUTANTS])
def test_kit_fails_the_mutant(mutant, op):
    backend = mutant()
    backend.name = "mutant_" + mutant.__name__.lower()
    REGISTRY.register(backend)
    try:
        results = runner.run(backend.name, ops=[op], device="cpu")
    finally:
        REGISTRY.unregister(backend.name)
    failed = [r for r in results if r.status == "failed"]
    assert failed, f"the kit passed a backend with bug {mutant.__name__}"
    assert all(r.messages for r in failed)


def test_kit_fails_a_backend_that_accepts_what_it_does_not_declare():
    from flashmla_core.capability.table import OpCapability

    class Overreaching(_Mutant):
        name = "mutant_overreaching"
        _caps = dict(ReferenceBackend._caps, dense_decode=OpCapability(
            "dense_decode", dtypes=ReferenceBackend._caps["dense_decode"].dtypes, page_sizes=(64,),
            kv_formats=frozenset({"bf16", "fp16"})))

        def not_supported_reasons(self, op, problem):
            return []   # declares little but accepts everything: the probes must catch it

    REGISTRY.register(Overreaching())
    try:
        results = runner.run("mutant_overreaching", ops=["dense_decode"], device="cpu")
    finally:
        REGISTRY.unregister("mutant_overreaching")
    probes = [r for r in results if r.case.expect_rejection]
    assert probes and all(r.status == "failed" for r in probes)
