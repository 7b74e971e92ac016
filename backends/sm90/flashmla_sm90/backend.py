"""The sm90 backend object: a capability table declared from what was compiled, and the ops."""
from __future__ import annotations

import pathlib

import torch

from flashmla_core import Backend, IntRange, OpCapability

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _compiled_variants() -> list:
    path = pathlib.Path(__file__).with_name("variants.txt")
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


class SM90Backend(Backend):
    name = "sm90"
    priority = 100
    auto_select_device_types = ("cuda",)

    def __init__(self):
        self._ext = None
        self._caps = self._declare()

    def _declare(self) -> dict:
        variants = _compiled_variants()
        dense = [(v[1], int(v[2])) for v in variants if v[0] == "dense_decode"]
        dense_fp8 = any(v[0] == "dense_decode_fp8_v32" for v in variants)
        sparse_prefill = [(v[1], int(v[2])) for v in variants if v[0] == "sparse_prefill"]
        fp8_decode = [(v[1], int(v[2])) for v in variants if v[0] == "sparse_decode_fp8_v32"]
        caps = {}
        # sparse decode: the sparse prefill instantiations serve a bf16 cache, the fp8 ones fp8_v32
        sparse_decode = sparse_prefill + fp8_decode
        if sparse_decode:
            caps["sparse_decode"] = OpCapability(
                "sparse_decode", archs=("sm_90",), dtypes=frozenset(_DTYPES[d] for d, _ in sparse_decode),
                head_dims=frozenset((d, 512) for _, d in sparse_decode), h_q=IntRange(1, 128),
                h_kv=IntRange(1, 1), s_q=IntRange(1, None), page_sizes=None,
                kv_formats=frozenset(({"bf16"} if sparse_prefill else set()) | ({"fp8_v32"} if fp8_decode else set())),
                topk=IntRange(1, None), features=frozenset({"attn_sink", "topk_length", "deterministic"}),
                notes="fp8_v32 dequantized in shared memory under the wgmmas; split-KV per query token")
        if sparse_prefill:
            caps["sparse_prefill"] = OpCapability(
                "sparse_prefill", archs=("sm_90",), dtypes=frozenset(_DTYPES[d] for d, _ in sparse_prefill),
                head_dims=frozenset((d, 512) for _, d in sparse_prefill), h_q=IntRange(1, 128),
                h_kv=IntRange(1, 128), topk=IntRange(1, None),
                features=frozenset({"attn_sink", "topk_length", "deterministic"}),
                notes="the dense kernel with keys gathered by index (invalid: < 0 or >= s_kv), one CTA per query")
        if dense:
            caps["dense_decode"] = OpCapability(
                "dense_decode", archs=("sm_90",),
                dtypes=frozenset(_DTYPES[d] for d, _ in dense),
                head_dims=frozenset((d, 512) for _, d in dense),
                h_q=IntRange(1, 128), h_kv=IntRange(1, 128), s_q=IntRange(1, None),
                page_sizes=None, kv_formats=frozenset({d for d, _ in dense} | ({"fp8_v32"} if dense_fp8 else set())),
                features=frozenset({"causal", "attn_sink", "deterministic"}),
                notes="wgmma, TMA or cp.async tiles, split-KV with on-device plan; any page size; fp8_v32 "
                      "dequantized by a producer warpgroup (bf16 q)")
        return caps

    @property
    def ext(self):
        if self._ext is None:
            from . import _C
            self._ext = _C
        return self._ext

    def capabilities(self):
        return self._caps

    def extra_reasons(self, problem) -> list:
        if problem.kv_format == "fp8_v32" and problem.dtype != torch.bfloat16:
            return ["kv_format 'fp8_v32' is served with bfloat16 queries only (its rows dequantize to bf16 tiles)"]
        return []

    def is_available(self):
        reasons = []
        if not self._caps:
            reasons.append("no kernels compiled (variants.txt missing: build with pip install -e backends/sm90)")
        try:
            self.ext
        except Exception as exc:  # noqa: BLE001 - shown by `flashmla info`
            reasons.append(f"extension not built or not loadable: {exc}")
        if not torch.cuda.is_available():
            reasons.append("no CUDA device")
        return reasons

    def info(self):
        return {"compiled": ", ".join(" ".join(v) for v in _compiled_variants()) or "nothing"}

    def plan_decode(self, key, cache_seqlens, topk_length):
        if key.topk is not None:
            return self._plan_sparse(cache_seqlens, key.batch_size * key.q_len, key.topk,
                                     key.rows_per_kv_head // key.q_len, key.deterministic)
        num_parts = self.ext.default_num_parts(cache_seqlens, key.num_kv_heads, key.rows_per_kv_head)
        # deterministic: a part per request (0); requests of unequal lengths would unbalance grouped parts
        schedule, num_splits = self.ext.plan(cache_seqlens, 0 if key.deterministic else num_parts, key.deterministic)
        return schedule, num_splits

    def _plan_sparse(self, like, tokens, topk, h_q, deterministic):
        """Each query token is a run of topk keys (topk_length only shortens runs inside their parts,
        so the plan is right for any topk_length): splits count per token, num_splits [tokens + 1].
        All runs being equal, each is cut into the same number of parts: as many as fill the SMs
        (one, no split and no combine, once the tokens alone fill them)."""
        work = torch.full((tokens,), topk, dtype=torch.int32, device=like.device)
        if deterministic:
            return self.ext.plan(work, 0, True)  # a part per token (the binding groups them into persistent CTAs)
        ctas_per_sm_pass = self.ext.default_num_parts(like, 1, h_q)  # SMs / CTAs per token (m-tiles)
        splits = max(1, min(ctas_per_sm_pass // max(tokens, 1), -(-topk // 64)))
        return self.ext.plan(work, tokens * splits, False, splits)

    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale,
                     causal, attn_sink, plan):
        if plan:
            schedule, num_splits = plan
        else:
            rows = q.shape[1] * q.shape[2] // kv_cache.shape[2]
            parts = self.ext.default_num_parts(q, kv_cache.shape[2], rows)
            schedule, num_splits = self.ext.plan(cache_seqlens, parts, False)
        out, lse = self.ext.dense_decode(q, kv_cache, block_table, cache_seqlens, schedule, num_splits,
                                         softmax_scale, causal, attn_sink)
        return out, lse

    def sparse_prefill(self, q, kv, indices, *, softmax_scale, head_dim_v, attn_sink, topk_length):
        lengths = topk_length.contiguous() if topk_length is not None else None
        return tuple(self.ext.sparse_attention(q, kv.unsqueeze(1), indices, lengths, softmax_scale, attn_sink,
                                               True, None, None, False))

    def sparse_decode(self, q, kv_cache, indices, *, kv_format, head_dim_v, softmax_scale, topk_length,
                      attn_sink, plan):
        # Query tokens are independent runs over their own index lists: (b, s_q) -> b * s_q tokens
        # (views where the strides allow, small copies otherwise), split across CTAs by the plan.
        b, s_q, h_q, d = q.shape
        tokens = b * s_q
        schedule, num_splits = plan if plan else self._plan_sparse(q, tokens, indices.shape[-1], h_q, False)
        # one part per token (deterministic, or one split each): nothing to merge, so no workspace and no combine
        # launch; the call runs the planned schedule rather than planning again (a plan kernel less per call)
        unsplit = schedule.shape[0] == tokens
        lengths = topk_length[:, None].expand(b, s_q).contiguous().view(tokens) if topk_length is not None else None
        out, _, lse = self.ext.sparse_attention(q.reshape(tokens, h_q, d), kv_cache,
                                                indices.reshape(tokens, 1, indices.shape[-1]), lengths,
                                                softmax_scale, attn_sink, False, schedule, num_splits, unsplit)
        return out.view(b, s_q, h_q, -1), lse.view(b, s_q, h_q).transpose(1, 2).contiguous()
