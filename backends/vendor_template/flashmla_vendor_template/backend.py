"""The template backend: how a vendor package declares itself to flashmla.

A backend is one object with:
  name / priority / api_version / auto_select_device_types   (class attributes)
  capabilities()          -> {op: OpCapability}: WHAT you serve, declaratively
  is_available()          -> [reasons]: whether you can run AT ALL on this machine
  plan_decode(...)        -> the split-KV schedule (decode backends)
  dense_decode(...) etc.  -> the ops your table declares

The capability table is the single source of truth. flashmla uses it for
  1. the runtime check: a request your table does not cover is never sent to you (so your op
     methods need no "if arch != ... raise" code);
  2. the error text: NoBackendError lists, per backend, the table's reasons for declining;
  3. the conformance grid: `flashmla conformance --backend vendor_template` generates its test
     cases from this table, so everything you declare is tested and nothing else is.
Declare exactly what you serve: claiming too much fails conformance; claiming too little makes
flashmla route those requests elsewhere.
"""
from __future__ import annotations

import torch

# A backend may import the interface types from flashmla_core (Backend, OpCapability, IntRange,
# the plan types). It must not rely on flashmla_core internals beyond those.
from flashmla_core import Backend, IntRange, OpCapability
from flashmla_core.contract.plan import PlanKey

_ANY = IntRange(1, None)          # IntRange(lo, hi=None, multiple_of=1): hi=None means "no upper bound"


class VendorTemplateBackend(Backend):
    # The name users pass as backend="vendor_template", use_backends("vendor_template") and
    # FLASHMLA_BACKEND=vendor_template. It MUST equal the entry-point name in pyproject.toml.
    name = "vendor_template"

    # Higher wins among backends that accept a request. Conventions: reference 0, portable
    # (Triton) ~50, native CUDA ~100. 10 beats the core's reference backend (priority 0), so
    # installing this package makes it serve CPU dense decode by default: that is on purpose, so
    # CI exercises the whole third-party path (entry point -> selection -> op) end to end.
    # Uninstall it, set FLASHMLA_DISABLE_BACKENDS=vendor_template, or pass backend="reference"
    # to get the reference backend back.
    priority = 10

    # The backend-contract version this package was written for. flashmla refuses (marks
    # "unavailable", with the reason) a backend whose api_version it does not support.
    api_version = 1

    # Device types on which flashmla may pick this backend WITHOUT being asked by name. This
    # plain-PyTorch code would technically run on CUDA tensors too, but a silent 100x-slower path
    # on a GPU is worse than an error, so GPU requests reach it only via backend="vendor_template".
    # A real GPU backend sets this to ("cuda",) (or leaves it None = every device its table serves).
    auto_select_device_types = ("cpu",)

    # What we serve. Fields left out keep OpCapability's defaults; check them (table.py) before
    # relying on them: e.g. h_q/h_kv default to 1..128, dtypes to bf16 only, kv_formats to bf16.
    _caps = {
        "dense_decode": OpCapability(
            "dense_decode",
            archs=("*",),                                      # any device arch ("cpu", "sm_90", "gfx942", ...)
            dtypes=frozenset({torch.bfloat16, torch.float16}),
            head_dims=frozenset({(576, 512), (512, 512)}),     # (d_qk, d_v)
            h_q=_ANY, h_kv=_ANY, s_q=_ANY,                     # any head count, any MTP length
            page_sizes=None,                                   # None: any page size
            kv_formats=frozenset({"bf16", "fp16"}),            # no fp8_v32: we do not dequantize
            # "deterministic": batch-invariant and bitwise reproducible (fixed KV tile, one request
            # at a time). Only declare it if it is true: the kit re-runs and compares bit for bit.
            features=frozenset({"causal", "attn_sink", "deterministic"}),
            notes="plain PyTorch template; replace kernels.py with your kernels",
        ),
        # No "sparse_decode", "sparse_prefill" or "dense_prefill": those requests go to other
        # backends, and NoBackendError says "op 'sparse_decode' not implemented" for this one.
    }

    def capabilities(self) -> dict:
        return self._caps

    def is_available(self) -> list:
        """Reasons this backend cannot run here at all ([] = usable). Called once, at discovery.

        Typical checks: your compiled extension imports, your driver / runtime is present and new
        enough, a device of your kind exists. Keep it cheap and never raise: return the reasons as
        strings, they appear verbatim in `flashmla info` and NoBackendError. Import heavy native
        modules lazily here, not at module import, so a missing library never breaks discovery.
        """
        try:
            from . import kernels  # noqa: F401  (a compiled backend would import its _C module here)
        except Exception as exc:  # noqa: BLE001
            return [f"kernels failed to import: {type(exc).__name__}: {exc}"]
        return []

    # ---- plans ----
    def plan_decode(self, key: PlanKey, cache_seqlens: torch.Tensor, topk_length):
        """-> (schedule int32 [num_parts, 8], num_splits int32 [b + 1]), without a host sync.

        `key` (PlanKey) holds what the schedule may depend on: device, batch_size, q_len, rows_per_kv_head
        (s_q * h_q / h_kv), num_kv_heads, topk (None for dense decode) and deterministic.
        flashmla wraps the result in a DecodePlan bound to this backend; the op methods then get
        the same two tensors back as `plan=[schedule, num_splits]` (or `plan=[]` when the caller
        passed no plan: then make what you need yourself).
        """
        from . import kernels
        return kernels.plan_decode(key.batch_size, key.device, cache_seqlens)

    # ---- ops ----
    def dense_decode(self, q, kv_cache, block_table, cache_seqlens, *, kv_format, head_dim_v, softmax_scale,
                     causal, attn_sink, plan):
        # Arguments arrive validated (flashmla.ContractError is raised before we are called) and
        # the problem matches our table: kv_format is "bf16" or "fp16", softmax_scale is a float
        # (the default d_qk ** -0.5 already applied), causal is already False when s_q == 1.
        # This template does not split KV, so it ignores `plan`.
        from . import kernels
        return kernels.dense_decode(q, kv_cache, block_table, cache_seqlens, head_dim_v=head_dim_v,
                                    softmax_scale=softmax_scale, causal=causal, attn_sink=attn_sink)

    def info(self) -> dict:
        """Extra lines for `flashmla info` (your build configuration, compiled variants, versions)."""
        from . import kernels
        return {"implementation": "plain PyTorch (template)", "kv tile": str(kernels.TILE),
                "auto-selected on": ", ".join(self.auto_select_device_types)}
