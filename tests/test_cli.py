"""The command line on a CPU machine: info, matrix, conformance, demo (the README's main job)."""
import subprocess
import sys
import time

from flashmla_core.cli.main import main


def test_info_lists_reference_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "reference" in out and "available" in out and "torch" in out


def test_matrix_markdown(tmp_path, capsys):
    path = tmp_path / "matrix.md"
    assert main(["matrix", "--markdown", str(path)]) == 0
    text = path.read_text()
    for op in ("dense_decode", "sparse_decode", "sparse_prefill", "dense_prefill"):
        assert f"## {op}" in text
    assert "| reference |" in text
    assert main(["matrix"]) == 0
    assert "page sizes" in capsys.readouterr().out


def test_conformance_command(capsys):
    assert main(["conformance", "--backend", "reference", "--op", "sparse_prefill"]) == 0
    out = capsys.readouterr().out
    assert "sparse_prefill" in out and " 0 failed" in out


def test_conformance_unknown_backend(capsys):
    assert main(["conformance", "--backend", "no_such_backend"]) == 2
    assert "not installed" in capsys.readouterr().err


def test_demo_runs_checked_and_fast(capsys):
    t0 = time.perf_counter()
    assert main(["demo"]) == 0
    assert time.perf_counter() - t0 < 60
    out = capsys.readouterr().out
    assert "demo passed" in out and out.count("-> OK") == 2


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "flashmla", "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "reference" in r.stdout
