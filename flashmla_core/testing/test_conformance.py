"""Conformance of one backend, as a pytest module: `pytest --pyargs flashmla_core.testing --flashmla-backend NAME`.

One test per case of the grid generated from that backend's capability table.
"""
import pytest

from flashmla_core.registry.selection import REGISTRY
from flashmla_core.testing import runner


def pytest_generate_tests(metafunc):
    if "conformance_case" not in metafunc.fixturenames:
        return
    name = metafunc.config.getoption("--flashmla-backend")
    if not name:
        metafunc.parametrize("conformance_case", [pytest.param(None, marks=pytest.mark.skip(
            reason="pass --flashmla-backend NAME to check a backend"))])
        return
    if name not in REGISTRY.records():
        failed = {f.name: f.error for f in REGISTRY.failures()}
        raise pytest.UsageError(f"backend {name!r} is not installed" +
                                (f" (it failed to load: {failed[name]})" if name in failed else
                                 f"; installed: {sorted(REGISTRY.records())}"))
    device, cases = runner.collect(name, device=metafunc.config.getoption("--flashmla-device"))
    metafunc.parametrize("conformance_case", [(name, device, c) for c in cases], ids=[c.op + ":" + c.id for c in cases])


def test_conformance(conformance_case):
    name, device, case = conformance_case
    result = runner.run_case(name, case, device)
    if result.status == "skipped":
        pytest.skip("; ".join(result.messages))
    assert result.status == "passed", "\n".join(result.messages)
