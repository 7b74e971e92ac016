"""Backend discovery and selection (design.md §3), on CPU, with synthetic entry points.

Every test builds its own `Registry(eps=[...])` from `importlib.metadata.EntryPoint` objects whose
modules are planted in `sys.modules` (or written to a temporary directory), so nothing here depends
on which backend packages happen to be installed. The last tests run a subprocess with a fake
`*.dist-info` on PYTHONPATH to check the real discovery path end to end.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import types
from importlib.metadata import EntryPoint

import pytest
import torch

from flashmla_core import Backend, IntRange, NoBackendError, OpCapability, Problem
from flashmla_core.registry import discovery
from flashmla_core.registry.backend import SUPPORTED_API_VERSIONS
from flashmla_core.registry.selection import Registry, use_backends

GROUP = discovery.GROUP
ANY = IntRange(1, None)


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------

class FakeBackend(Backend):
    """A configurable backend that serves dense_decode for the archs it is given, and counts how
    often selection asks it about a problem."""

    def __init__(self, name, priority=0, archs=("*",), auto=None, api_version=1, unavailable=(),
                 ops=("dense_decode",)):
        self.name = name
        self.priority = priority
        self.api_version = api_version
        self.auto_select_device_types = auto
        self._unavailable = list(unavailable)
        self._caps = {op: OpCapability(op, archs=tuple(archs), dtypes=frozenset({torch.bfloat16}),
                                       h_q=ANY, h_kv=ANY, s_q=ANY) for op in ops}
        self.calls = 0

    def capabilities(self):
        return self._caps

    def is_available(self):
        return list(self._unavailable)

    def not_supported_reasons(self, op, problem):
        self.calls += 1
        return super().not_supported_reasons(op, problem)


class _Dist:
    def __init__(self, name, version="1.0"):
        self.name, self.version = name, version


def make_ep(name, value, dist=None):
    """An importlib.metadata.EntryPoint in the flashmla group, optionally attached to a distribution."""
    ep = EntryPoint(name, value, GROUP)
    if dist is not None and hasattr(ep, "_for"):
        ep = ep._for(_Dist(dist))      # what importlib.metadata itself does to attach .dist
    return ep


_counter = [0]


def plant(monkeypatch, obj, attr="backend"):
    """Puts `obj` into a fresh module in sys.modules; returns 'module:attr' for an entry point."""
    _counter[0] += 1
    mod_name = f"_flashmla_fake_backend_{_counter[0]}"
    mod = types.ModuleType(mod_name)
    setattr(mod, attr, obj)
    monkeypatch.setitem(sys.modules, mod_name, mod)
    return f"{mod_name}:{attr}"


def ep_for(monkeypatch, backend, name=None, dist=None):
    return make_ep(name or backend.name, plant(monkeypatch, backend), dist=dist or f"dist-{backend.name}")


def cpu_problem(**kw):
    base = dict(op="dense_decode", device_type="cpu", arch="cpu", dtype=torch.bfloat16, d_qk=576, d_v=512,
                h_q=16, h_kv=1, s_q=1, page_size=64, kv_format="bf16")
    base.update(kw)
    return Problem(**base)


def gpu_problem(**kw):
    return cpu_problem(**{"device_type": "cuda", "arch": "sm_90", **kw})


def chosen(reg, problem, op="dense_decode", backend=None):
    return reg.resolve(op, problem, backend).name


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("FLASHMLA_BACKEND", "FLASHMLA_DISABLE_BACKENDS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def raising_module(tmp_path, monkeypatch):
    """A real module on sys.path whose import raises."""
    (tmp_path / "_flashmla_raises_on_import.py").write_text(
        "raise RuntimeError('vendor driver libfoo.so not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("_flashmla_raises_on_import", None)
    yield "_flashmla_raises_on_import"
    sys.modules.pop("_flashmla_raises_on_import", None)


# ---------------------------------------------------------------------------------------------------
# loading: broken plugins are recorded, never raised
# ---------------------------------------------------------------------------------------------------

def test_good_backends_load_with_distribution(monkeypatch):
    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("a", 5), dist="flashmla-a")])
    rec = reg.records()["a"]
    assert rec.distribution == "flashmla-a" and rec.version == "1.0"
    assert reg.failures() == []
    assert chosen(reg, cpu_problem()) == "a"


def test_zero_arg_factory_entry_point(monkeypatch):
    class Factory(FakeBackend):
        def __init__(self):
            super().__init__("fac", 3)

    reg = Registry(eps=[make_ep("fac", plant(monkeypatch, Factory))])
    assert chosen(reg, cpu_problem()) == "fac"


def test_broken_entry_points_are_recorded_and_do_not_break_selection(monkeypatch, raising_module):
    good = FakeBackend("good", 1)
    eps = [
        make_ep("missing_module", "_flashmla_no_such_module_xyz:backend", dist="flashmla-missing"),
        make_ep("raises", f"{raising_module}:backend", dist="flashmla-raises"),
        make_ep("missing_attr", plant(monkeypatch, object(), attr="other").replace(":other", ":backend")),
        make_ep("wrong_object", plant(monkeypatch, 42)),
        make_ep("not_a_backend", plant(monkeypatch, types.SimpleNamespace(name="not_a_backend"))),
        ep_for(monkeypatch, good),
    ]
    reg = Registry(eps=eps)                               # constructing never loads
    assert chosen(reg, cpu_problem()) == "good"           # first use loads; failures do not propagate
    failures = {f.name: f for f in reg.failures()}
    assert set(failures) == {"missing_module", "raises", "missing_attr", "wrong_object", "not_a_backend"}
    assert set(reg.records()) == {"good"}
    assert "ModuleNotFoundError" in failures["missing_module"].error
    assert failures["missing_module"].distribution == "flashmla-missing"
    assert "RuntimeError: vendor driver libfoo.so not found" in failures["raises"].error
    assert failures["raises"].distribution == "flashmla-raises"
    assert "AttributeError" in failures["missing_attr"].error
    assert "not a flashmla backend" in failures["wrong_object"].error
    assert "missing 'priority'" in failures["not_a_backend"].error


def test_load_failures_appear_in_no_backend_error(monkeypatch, raising_module):
    eps = [make_ep("raises", f"{raising_module}:backend"),
           ep_for(monkeypatch, FakeBackend("sm90_only", 100, archs=("sm_90",)))]
    reg = Registry(eps=eps)
    with pytest.raises(NoBackendError) as ei:
        reg.resolve("dense_decode", cpu_problem())
    msg = str(ei.value)
    assert "dense_decode(" in msg and "bfloat16" in msg and "device_type=cpu" in msg   # the request
    assert "sm90_only:" in msg and "device arch cpu not in ['sm_90']" in msg            # a decline
    assert "raises:" in msg and "failed to load: RuntimeError: vendor driver libfoo.so not found" in msg
    assert set(ei.value.reasons) == {"sm90_only", "raises"}


def test_duplicate_names_keep_the_first_and_record_the_second(monkeypatch):
    first, second = FakeBackend("dup", 1), FakeBackend("dup", 99)
    reg = Registry(eps=[ep_for(monkeypatch, first, dist="flashmla-first"),
                        ep_for(monkeypatch, second, dist="flashmla-second")])
    assert reg.get("dup") is first
    [f] = reg.failures()
    assert f.name == "dup" and f.distribution == "flashmla-second"
    assert "duplicate backend name 'dup'" in f.error and "flashmla-first" in f.error
    assert chosen(reg, cpu_problem()) == "dup" and reg.get("dup") is first
    with pytest.raises(NoBackendError, match="duplicate backend name 'dup'"):   # shown when nothing serves
        reg.resolve("dense_decode", cpu_problem(dtype=torch.float16))


def test_entry_point_name_must_equal_backend_name(monkeypatch):
    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("real_name", 1), name="alias")])
    assert reg.records() == {}
    [f] = reg.failures()
    assert f.name == "alias" and "names a backend called 'real_name'" in f.error
    with pytest.raises(NoBackendError, match="failed to load: ValueError: entry point 'alias'"):
        reg.resolve("dense_decode", cpu_problem())


def test_register_in_code_rejects_duplicates(monkeypatch):
    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("a", 1))])
    reg.register(FakeBackend("b", 2))
    assert chosen(reg, cpu_problem()) == "b"
    with pytest.raises(ValueError, match="duplicate backend name 'a'"):
        reg.register(FakeBackend("a", 3))
    reg.unregister("b")
    assert chosen(reg, cpu_problem()) == "a"


# ---------------------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------------------

def test_unsupported_api_version_is_unavailable_with_reason(monkeypatch):
    future = FakeBackend("future", 100, api_version=99)
    reg = Registry(eps=[ep_for(monkeypatch, future), ep_for(monkeypatch, FakeBackend("ok", 0))])
    assert "future" in reg.records()                       # loaded, but not usable
    [why] = reg.unavailable_reasons("future")
    assert "api_version 99" in why and str(list(SUPPORTED_API_VERSIONS)) in why
    assert chosen(reg, cpu_problem()) == "ok"              # despite its higher priority
    assert future.calls == 0                               # never asked about problems
    with pytest.raises(NoBackendError, match="unavailable: api_version 99"):
        reg.resolve("dense_decode", cpu_problem(), backend="future")


def test_is_available_reasons_and_exceptions(monkeypatch):
    class Exploding(FakeBackend):
        def is_available(self):
            raise OSError("driver crashed")

    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("nodrv", 50, unavailable=["no libvendor.so"])),
                        ep_for(monkeypatch, Exploding("boom", 40)),
                        ep_for(monkeypatch, FakeBackend("ok", 0))])
    assert reg.unavailable_reasons("nodrv") == ["no libvendor.so"]
    assert reg.unavailable_reasons("boom") == ["is_available() raised OSError: driver crashed"]
    assert chosen(reg, cpu_problem()) == "ok"
    with pytest.raises(NoBackendError) as ei:
        reg.resolve("dense_decode", cpu_problem(), backend="nodrv,boom")
    assert ei.value.reasons == {"nodrv": ["unavailable: no libvendor.so"],
                                "boom": ["unavailable: is_available() raised OSError: driver crashed"]}


# ---------------------------------------------------------------------------------------------------
# selection order: priority, env vars, use_backends, per-call backend=
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def three(monkeypatch):
    """high (100) > mid (50) > low (0); all serve CPU dense decode."""
    bs = [FakeBackend("low", 0), FakeBackend("high", 100), FakeBackend("mid", 50)]
    return Registry(eps=[ep_for(monkeypatch, b) for b in bs])


def test_highest_priority_wins(three):
    assert chosen(three, cpu_problem()) == "high"
    assert [n for n, _ in three.decide("dense_decode", cpu_problem())] == ["high", "mid", "low"]


def test_op_not_implemented_falls_through(monkeypatch):
    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("decode_only", 100)),
                        ep_for(monkeypatch, FakeBackend("all", 0, ops=("dense_decode", "sparse_decode")))])
    assert reg.resolve("sparse_decode", cpu_problem(op="sparse_decode", topk=64)).name == "all"
    trace = dict(reg.decide("sparse_decode", cpu_problem(op="sparse_decode", topk=64)))
    assert trace["decode_only"] == ["op 'sparse_decode' not implemented"]


def test_env_flashmla_backend_forces_order(three, monkeypatch):
    monkeypatch.setenv("FLASHMLA_BACKEND", "low")
    assert chosen(three, cpu_problem()) == "low"
    monkeypatch.setenv("FLASHMLA_BACKEND", " mid , low ")
    assert [n for n, _ in three.decide("dense_decode", cpu_problem())] == ["mid", "low"]   # only those named
    assert chosen(three, cpu_problem()) == "mid"


def test_env_flashmla_backend_unknown_name(three, monkeypatch):
    monkeypatch.setenv("FLASHMLA_BACKEND", "nosuch")
    with pytest.raises(NoBackendError) as ei:
        three.resolve("dense_decode", cpu_problem())
    [why] = ei.value.reasons["nosuch"]
    assert why.startswith("not installed") and "'high'" in why


def test_env_disable_backends_removes_them(three, monkeypatch):
    monkeypatch.setenv("FLASHMLA_DISABLE_BACKENDS", "high,mid")
    assert chosen(three, cpu_problem()) == "low"
    assert dict(three.decide("dense_decode", cpu_problem()))["high"] == ["disabled by FLASHMLA_DISABLE_BACKENDS"]
    # Disabling wins over naming, in every mode.
    with pytest.raises(NoBackendError, match="disabled by FLASHMLA_DISABLE_BACKENDS"):
        three.resolve("dense_decode", cpu_problem(), backend="high")
    monkeypatch.setenv("FLASHMLA_BACKEND", "mid,low")
    assert chosen(three, cpu_problem()) == "low"
    monkeypatch.setenv("FLASHMLA_DISABLE_BACKENDS", "high,mid,low")
    with pytest.raises(NoBackendError):
        three.resolve("dense_decode", cpu_problem())


def test_use_backends_is_scoped_and_nests(three, monkeypatch):
    assert chosen(three, cpu_problem()) == "high"
    with use_backends("low"):
        assert chosen(three, cpu_problem()) == "low"
        with use_backends("mid", "low"):
            assert chosen(three, cpu_problem()) == "mid"
        assert chosen(three, cpu_problem()) == "low"
        with use_backends("nosuch,mid"):                 # comma lists work too; order is kept
            assert [n for n, _ in three.decide("dense_decode", cpu_problem())] == ["nosuch", "mid"]
            assert chosen(three, cpu_problem()) == "mid"
    assert chosen(three, cpu_problem()) == "high"        # restored on exit
    with pytest.raises(RuntimeError):
        with use_backends("low"):
            raise RuntimeError("boom")
    assert chosen(three, cpu_problem()) == "high"        # ... also on an exception
    with pytest.raises(ValueError):
        with use_backends():
            pass


def test_use_backends_beats_env_and_per_call_beats_both(three, monkeypatch):
    monkeypatch.setenv("FLASHMLA_BACKEND", "low")
    with use_backends("mid"):
        assert chosen(three, cpu_problem()) == "mid"
        assert chosen(three, cpu_problem(), backend="high") == "high"
        assert chosen(three, cpu_problem(), backend=["low", "high"]) == "low"
    assert chosen(three, cpu_problem()) == "low"


def test_named_backend_that_declines_reports_only_itself(monkeypatch):
    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("sm90", 100, archs=("sm_90",))),
                        ep_for(monkeypatch, FakeBackend("any", 0))])
    with pytest.raises(NoBackendError) as ei:
        reg.resolve("dense_decode", cpu_problem(), backend="sm90")
    assert list(ei.value.reasons) == ["sm90"]            # no silent fallback to "any"
    assert ei.value.reasons["sm90"] == ["device arch cpu not in ['sm_90']"]


def test_no_backend_error_lists_every_backend(monkeypatch, raising_module):
    reg = Registry(eps=[
        ep_for(monkeypatch, FakeBackend("sm90", 100, archs=("sm_90",))),
        ep_for(monkeypatch, FakeBackend("old", 90, api_version=0)),
        ep_for(monkeypatch, FakeBackend("nodrv", 80, unavailable=["no driver"])),
        ep_for(monkeypatch, FakeBackend("prefill", 70, ops=("dense_prefill",))),
        make_ep("raises", f"{raising_module}:backend"),
    ])
    with pytest.raises(NoBackendError) as ei:
        reg.resolve("dense_decode", cpu_problem(dtype=torch.float16))
    r = ei.value.reasons
    assert set(r) == {"sm90", "old", "nodrv", "prefill", "raises"}
    assert "device arch cpu not in ['sm_90']" in r["sm90"] and "dtype float16 not in ['bfloat16']" in r["sm90"]
    assert r["old"][0].startswith("unavailable: api_version 0")
    assert r["nodrv"] == ["unavailable: no driver"]
    assert r["prefill"] == ["op 'dense_decode' not implemented"]
    assert r["raises"][0].startswith("failed to load: RuntimeError: vendor driver libfoo.so not found")
    msg = str(ei.value)
    for name, reasons in r.items():
        assert f"  {name}:" in msg
        for why in reasons:
            assert f"    - {why}" in msg


def test_no_backends_at_all():
    with pytest.raises(NoBackendError, match="no backends are installed or enabled"):
        Registry(eps=[]).resolve("dense_decode", cpu_problem())


# ---------------------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------------------

def test_decisions_are_cached_per_problem(monkeypatch):
    hi, lo = FakeBackend("hi", 10, archs=("sm_90",)), FakeBackend("lo", 0)
    reg = Registry(eps=[ep_for(monkeypatch, hi), ep_for(monkeypatch, lo)])
    p = cpu_problem()
    for _ in range(5):
        assert chosen(reg, p) == "lo"
    assert (hi.calls, lo.calls) == (1, 1)
    assert chosen(reg, cpu_problem()) == "lo"             # an equal Problem hits the same entry
    assert (hi.calls, lo.calls) == (1, 1)
    chosen(reg, cpu_problem(h_q=128))                     # a new signature is decided once more
    assert (hi.calls, lo.calls) == (2, 2)
    for _ in range(3):                                    # rejections are cached too
        with pytest.raises(NoBackendError):
            reg.resolve("dense_decode", cpu_problem(dtype=torch.float16))
    assert (hi.calls, lo.calls) == (3, 3)


def test_cache_respects_overrides_and_registration(monkeypatch):
    a, b = FakeBackend("a", 10), FakeBackend("b", 0)
    reg = Registry(eps=[ep_for(monkeypatch, a), ep_for(monkeypatch, b)])
    p = cpu_problem()
    assert chosen(reg, p) == "a"
    monkeypatch.setenv("FLASHMLA_DISABLE_BACKENDS", "a")
    assert chosen(reg, p) == "b"                          # the env is part of the decision key
    monkeypatch.delenv("FLASHMLA_DISABLE_BACKENDS")
    with use_backends("b"):
        assert chosen(reg, p) == "b"
    assert chosen(reg, p) == "a"
    calls = (a.calls, b.calls)
    assert chosen(reg, p) == "a" and (a.calls, b.calls) == calls
    reg.register(FakeBackend("c", 20))                    # registering invalidates the cache
    assert chosen(reg, p) == "c"


# ---------------------------------------------------------------------------------------------------
# device types: CPU-only backends are never a silent fallback for GPU tensors
# ---------------------------------------------------------------------------------------------------

def test_cpu_auto_backend_does_not_serve_gpu_unless_named(monkeypatch):
    cpu_only = FakeBackend("cpuish", 10, archs=("*",), auto=("cpu",))
    reg = Registry(eps=[ep_for(monkeypatch, cpu_only)])
    assert chosen(reg, cpu_problem()) == "cpuish"
    with pytest.raises(NoBackendError) as ei:
        reg.resolve("dense_decode", gpu_problem())
    [why] = ei.value.reasons["cpuish"]
    assert "serves cuda tensors only when named (backend='cpuish')" in why
    assert "sm_90" in str(ei.value)                       # the request names the device arch
    assert chosen(reg, gpu_problem(), backend="cpuish") == "cpuish"
    with use_backends("cpuish"):
        assert chosen(reg, gpu_problem()) == "cpuish"
    monkeypatch.setenv("FLASHMLA_BACKEND", "cpuish")
    assert chosen(reg, gpu_problem()) == "cpuish"


def test_gpu_backend_wins_gpu_and_cpu_backend_wins_cpu(monkeypatch):
    reg = Registry(eps=[
        ep_for(monkeypatch, FakeBackend("sm90", 100, archs=("sm_90",), auto=None)),
        ep_for(monkeypatch, FakeBackend("sm80plus", 50, archs=("sm_80+",))),
        ep_for(monkeypatch, FakeBackend("cpuish", 10, auto=("cpu",))),
    ])
    assert chosen(reg, gpu_problem()) == "sm90"
    assert chosen(reg, gpu_problem(arch="sm_100")) == "sm80plus"
    assert chosen(reg, cpu_problem()) == "cpuish"
    with pytest.raises(NoBackendError) as ei:
        reg.resolve("dense_decode", gpu_problem(arch="sm_75"))
    assert set(ei.value.reasons) == {"sm90", "sm80plus", "cpuish"}


def test_real_reference_backend_is_not_a_gpu_fallback():
    ref = make_ep("reference", "flashmla_core.reference.backend:backend", dist="flashmla")
    reg = Registry(eps=[ref])
    assert chosen(reg, cpu_problem()) == "reference"
    with pytest.raises(NoBackendError, match="only when named"):
        reg.resolve("dense_decode", gpu_problem())
    assert chosen(reg, gpu_problem(), backend="reference") == "reference"


def test_planning_decision_without_problem_respects_device_type(monkeypatch):
    reg = Registry(eps=[ep_for(monkeypatch, FakeBackend("cpuish", 10, auto=("cpu",)))])
    assert reg.decide("dense_decode", None, device_type="cpu") == [("cpuish", [])]
    [(name, reasons)] = reg.decide("dense_decode", None, device_type="cuda")
    assert name == "cpuish" and "only when named" in reasons[0]
    assert reg.decide("dense_decode", None, backend="cpuish", device_type="cuda") == [("cpuish", [])]


@pytest.mark.skipif(importlib.util.find_spec("flashmla_vendor_template") is None,
                    reason="backends/vendor_template is not installed (CI installs it)")
def test_installed_vendor_template_is_discovered():
    reg = Registry()                                      # the real entry points of this environment
    rec = reg.records()["vendor_template"]
    assert rec.distribution == "flashmla-vendor-template"
    assert rec.entry_point == "flashmla_vendor_template:backend"
    assert reg.unavailable_reasons("vendor_template") == []
    assert chosen(reg, cpu_problem()) == "vendor_template"              # priority 10 > reference's 0
    assert chosen(reg, cpu_problem(kv_format="fp8_v32")) == "reference"  # not declared: falls through
    gpu_trace = dict(reg.decide("dense_decode", gpu_problem()))  # GPU backends may be installed too
    assert "only when named" in gpu_trace["vendor_template"][0]


# ---------------------------------------------------------------------------------------------------
# the real entry-point path: a fake distribution on PYTHONPATH, in a subprocess
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def fake_dist_path(tmp_path):
    """A site directory holding a distribution 'flashmla-brokenvendor' whose backend raises on import."""
    dist_info = tmp_path / "flashmla_brokenvendor-3.1.4.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: flashmla-brokenvendor\nVersion: 3.1.4\n")
    (dist_info / "entry_points.txt").write_text(
        "[flashmla.backends]\nbrokenvendor = flashmla_brokenvendor:backend\n")
    (tmp_path / "flashmla_brokenvendor.py").write_text(textwrap.dedent("""\
        raise ImportError("libbrokenvendor.so: cannot open shared object file")
        """))
    return tmp_path


def _run(code, path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("FLASHMLA_BACKEND", None)
    env.pop("FLASHMLA_DISABLE_BACKENDS", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_broken_installed_backend_does_not_break_import(fake_dist_path):
    code = textwrap.dedent("""\
        import flashmla
        for b in flashmla.backends():
            print(b)
        import torch
        from flashmla import attention
        q = torch.randn(1, 1, 4, 576, dtype=torch.bfloat16)
        kv = torch.randn(2, 64, 1, 576, dtype=torch.bfloat16)
        out, lse = attention.dense_decode(q, kv, torch.zeros(1, 2, dtype=torch.int32),
                                          torch.tensor([10], dtype=torch.int32))
        print("decode ok", tuple(out.shape))
        """)
    r = _run(code, fake_dist_path)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "'brokenvendor'" in ln]
    assert len(lines) == 1, r.stdout
    line = lines[0]
    assert "'status': 'failed to load'" in line
    assert "'distribution': 'flashmla-brokenvendor'" in line and "'version': '3.1.4'" in line
    assert "ImportError: libbrokenvendor.so: cannot open shared object file" in line
    assert "'name': 'reference'" in r.stdout                 # the other backends are still there
    assert "decode ok (1, 1, 4, 512)" in r.stdout            # and still serve requests


def test_broken_installed_backend_shows_in_no_backend_error(fake_dist_path):
    code = textwrap.dedent("""\
        import torch, flashmla
        from flashmla import attention
        q = torch.randn(1, 1, 4, 576, dtype=torch.bfloat16)
        kv = torch.randn(2, 64, 1, 576, dtype=torch.bfloat16)
        try:
            attention.dense_decode(q, kv, torch.zeros(1, 2, dtype=torch.int32),
                                   torch.tensor([10], dtype=torch.int32), backend="brokenvendor")
        except flashmla.NoBackendError as e:
            print(e)
        """)
    r = _run(code, fake_dist_path)
    assert r.returncode == 0, r.stderr
    assert "brokenvendor:" in r.stdout
    assert "failed to load: ImportError: libbrokenvendor.so: cannot open shared object file" in r.stdout


def test_flashmla_info_lists_broken_backend(fake_dist_path):
    if importlib.util.find_spec("flashmla_core.cli.info") is None:
        pytest.skip("flashmla_core.cli.info is not written yet")
    r = _run("import sys; from flashmla_core.cli.main import main; sys.exit(main(['info']))", fake_dist_path)
    if r.returncode != 0 and "No module named 'flashmla_core.cli." in r.stderr:
        pytest.skip(f"the CLI is incomplete: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    assert "brokenvendor" in r.stdout and "flashmla-brokenvendor" in r.stdout
    assert "libbrokenvendor.so: cannot open shared object file" in r.stdout
