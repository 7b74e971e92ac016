"""What is installed and why a request goes where it goes: backends(), capabilities(), explain()."""
from __future__ import annotations

from dataclasses import dataclass

from .contract import validate
from .registry.selection import REGISTRY

_DEFAULTS = {
    "dense_decode": dict(head_dim_v=512, softmax_scale=None, causal=False, attn_sink=None, kv_format=None),
    "sparse_decode": dict(kv_format="fp8_v32", head_dim_v=512, softmax_scale=None, topk_length=None, attn_sink=None),
    "sparse_prefill": dict(head_dim_v=512, attn_sink=None, topk_length=None),
    "dense_prefill": dict(softmax_scale=None, causal=False),
}
_POSITIONAL = {
    "dense_decode": ("q", "kv_cache", "block_table", "cache_seqlens"),
    "sparse_decode": ("q", "kv_cache", "indices"),
    "sparse_prefill": ("q", "kv", "indices"),
    "dense_prefill": ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k"),
}


def backends() -> list:
    """Every discovered backend (loaded or failed) with its distribution, priority and availability."""
    out = []
    for name, rec in sorted(REGISTRY.records().items(), key=lambda kv: -kv[1].backend.priority):
        why = REGISTRY.unavailable_reasons(name)
        out.append(dict(name=name, distribution=rec.distribution, version=rec.version,
                        priority=rec.backend.priority, api_version=getattr(rec.backend, "api_version", None),
                        status="available" if not why else "unavailable", reasons=why,
                        ops=sorted(rec.backend.capabilities())))
    for f in REGISTRY.failures():
        out.append(dict(name=f.name, distribution=f.distribution, version=f.version, priority=None,
                        api_version=None, status="failed to load", reasons=[f.error], ops=[]))
    return out


def capabilities() -> dict:
    """{backend: {op: OpCapability}} for every loaded backend."""
    return {name: dict(rec.backend.capabilities()) for name, rec in REGISTRY.records().items()}


@dataclass
class Explanation:
    op: str
    request: str
    chosen: object          # backend name or None
    trace: list             # [(backend, [reasons])], in the order they were considered

    def __str__(self) -> str:
        lines = [f"{self.request}: " + (f"runs on {self.chosen!r}" if self.chosen else "no backend can run it")]
        for name, reasons in self.trace:
            mark = "accepted" if not reasons else "rejected"
            lines.append(f"  {name}: {mark}" + "".join(f"\n    - {r}" for r in reasons))
        return "\n".join(lines)


def explain(op: str, *args, backend=None, **kwargs) -> Explanation:
    """Validates a request like the op would and reports, per backend, whether it accepts it and why not."""
    if op not in validate.CHECKS:
        from .errors import ContractError
        raise ContractError("op", f"one of {sorted(validate.CHECKS)}", repr(op))
    named = dict(zip(_POSITIONAL[op], args))
    named.update(kwargs)
    opts = {k: named.pop(k, v) for k, v in _DEFAULTS[op].items()}
    if op == "sparse_prefill":
        opts["softmax_scale"] = named.pop("softmax_scale", 1.0)
    problem, _ = validate.CHECKS[op](*(named[n] for n in _POSITIONAL[op]), **opts)
    trace = REGISTRY.decide(op, problem, backend)
    chosen = next((n for n, r in trace if not r), None)
    return Explanation(op, problem.describe(), chosen, trace)
