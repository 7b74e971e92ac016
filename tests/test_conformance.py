"""The conformance kit over every installed backend that runs here (the reference, and the vendor
template when CI has installed it). The grid comes from each backend's own capability table."""
import pytest

from flashmla_core.registry.selection import REGISTRY
from flashmla_core.testing import runner


def _params():
    params = []
    for name in sorted(REGISTRY.records()):
        if REGISTRY.unavailable_reasons(name):
            continue
        device, cases = runner.collect(name)
        params += [pytest.param(name, device, c, id=f"{name}:{c.op}:{c.id}") for c in cases]
    return params


@pytest.mark.parametrize("backend,device,case", _params())
def test_conformance(backend, device, case):
    result = runner.run_case(backend, case, device)
    if result.status == "skipped":
        pytest.skip("; ".join(result.messages))
    assert result.status == "passed", "\n".join(result.messages)


def test_summary_counts_every_case():
    results = runner.run("reference", ops=["sparse_prefill"])
    text = runner.summary("reference", results, "cpu")
    assert f"{len(results)} passed, 0 failed, 0 skipped" in text
    assert "sparse_prefill" in text and "dense_decode" in text
    assert "declared absent" not in text  # ops left out by the filter are declared, not absent
