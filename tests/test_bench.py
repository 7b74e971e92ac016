"""`flashmla bench`: the targets.md formulas, the input builders, and the command on the CPU."""
import json
import sys

import pytest
import torch

from flashmla_core.bench import roofline, workloads as wl
from flashmla_core.cli import main as cli


def test_formulas_match_hand_computed_values():
    # tp8-h16-4k: 2 * (128*4096*576 + 128*16*576 + 128*16*512) bytes; 2 * 16 * 128*4096 * 1088 FLOPs
    w = wl.BY_ID["tp8-h16-4k"]
    assert wl.nbytes(w) == 608_436_224
    assert wl.flops(w) == 18_253_611_008
    # v32-h128-mtp2-topk2048: 128*2*2048*656 + 2*128*2*128*1088 bytes; 2*128*2*2048*128*1088 FLOPs
    w = wl.BY_ID["v32-h128-mtp2-topk2048"]
    assert wl.nbytes(w) == 415_236_096
    assert wl.flops(w) == 146_028_888_064
    # h128-topk2048-32k: 4096*2048*576*2 + 4096*128*1088*2 bytes; 2*4096*2048*128*1088 FLOPs
    w = wl.BY_ID["h128-topk2048-32k"]
    assert wl.nbytes(w) == 10_804_527_104
    assert wl.flops(w) == 2_336_462_209_024


@pytest.mark.parametrize("w", [w for w in wl.WORKLOADS if w.target and w.target.ms and (w.target.gbps or w.target.tflops)],
                         ids=lambda w: w.id)
def test_published_rate_and_time_agree_under_our_formulas(w):
    # FlashMLA states each figure as a rate and a time; our formulas must turn one into the other.
    rate = wl.nbytes(w) / w.target.ms / 1e6 if w.target.gbps else wl.flops(w) / w.target.ms / 1e9
    assert rate == pytest.approx(w.target.gbps or w.target.tflops, rel=0.01)


def test_varlen_lengths_are_seeded_clipped_and_summed():
    w = wl.BY_ID["h128-16k-varlen"]
    lens = w.seqlens
    assert len(lens) == 64 and lens == wl.BY_ID["h128-16k-varlen"].seqlens
    assert min(lens) >= w.s_q and max(lens) <= 16384 + 3 * 8192 and len(set(lens)) > 32
    assert wl.flops(w) == 2 * 1 * 128 * sum(lens) * 1088
    assert wl.target_ms(w) == pytest.approx(wl.flops(w) / 554e12 * 1e3)


def test_quick_keeps_the_character_of_every_row():
    for w in wl.WORKLOADS:
        q = w.quick()
        assert (q.op, q.h_q, q.h_kv, q.d_qk, q.d_v, q.page, q.kv_format) == \
               (w.op, w.h_q, w.h_kv, w.d_qk, w.d_v, w.page, w.kv_format)
        assert q.scaled and wl.target_ms(q) is None and wl.flops(q) <= wl.flops(w) / 16
        assert q.topk is None or q.topk <= q.s_k


def test_inputs_are_random_paged_and_valid():
    w = wl.BY_ID["v32-h64-topk2048"].quick()
    inp = wl.make_inputs(w, "cpu")
    cache, idx = inp["kv_cache"], inp["indices"]
    assert cache.dtype == torch.uint8 and cache.shape[1:] == (64, 1, 656)
    assert idx.shape == (w.b, 1, w.topk) and idx.dtype == torch.int32
    assert int(idx.min()) >= 0 and int(idx.max()) < cache.shape[0] * 64
    assert all(len(set(r.tolist())) == w.topk for r in idx.view(-1, w.topk))  # distinct per query
    assert inp["q"].float().abs().min() > 0 or inp["q"].float().std() > 0.5
    d = wl.make_inputs(wl.BY_ID["tp8-h16-4k"].quick(), "cpu")
    table = d["block_table"]
    assert sorted(table.flatten().tolist()) == list(range(d["kv_cache"].shape[0]))  # a permutation
    assert table.flatten().tolist() != sorted(table.flatten().tolist())
    assert d["kv_cache"].float().std() > 0.5


def test_roofline_only_for_known_devices():
    assert roofline.ceiling_for("cpu") is None
    assert roofline.percent_of_roofline(1, 1, 1.0, None) is None
    w = wl.BY_ID["tp8-h16-4k"]  # memory-bound: 608436224 B at 3000 GB/s = 0.20281 ms
    pct = roofline.percent_of_roofline(wl.flops(w), wl.nbytes(w), 0.231, roofline.H100_SXM)
    assert pct == pytest.approx(100 * (608436224 / 3000e9 * 1e3) / 0.231, rel=1e-9)  # 87.8 %
    assert roofline.bound(wl.flops(w), wl.nbytes(w)) == "memory"
    w = wl.BY_ID["h128-mtp2-8k"]  # 584 GFLOP at 798 TFLOP/s (0.73 ms) > 1.25 GB at 3000 GB/s (0.42 ms)
    assert roofline.bound(wl.flops(w), wl.nbytes(w)) == "compute"


@pytest.fixture
def bench_cli(monkeypatch):
    # Only the bench subcommand: this test must not depend on the other subcommands' modules.
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"bench": cli.SUBCOMMANDS["bench"]})
    return cli.main


def test_bench_quick_cpu_writes_json(bench_cli, tmp_path, capsys):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    rc = bench_cli(["bench", "--quick", "--device", "cpu", "--backend", "reference",
                    "--rows", "b1-h16-2k,v32-h16-topk2048", "--json", str(out), "--markdown", str(md)])
    assert rc == 0
    report = json.loads(out.read_text())
    rows = report["results"]
    assert [r["id"] for r in rows] == ["b1-h16-2k", "v32-h16-topk2048"]
    for r in rows:
        assert r["status"] == "ok" and r["backend"] == "reference" and r["ms"] > 0
        assert r["tflops"] > 0 and r["gbps"] > 0 and r["roofline_pct"] is None and r["output_finite"]
        assert r["scaled"] and r["vs_target"] is None
    env = report["environment"]
    assert env["device_type"] == "cpu" and env["torch"] == torch.__version__ and env["date"]
    assert report["quick"] is True
    table = capsys.readouterr().out
    assert "b1-h16-2k" in table and "QUICK" in table
    assert "| b1-h16-2k | reference |" in md.read_text()


def test_unservable_row_is_skipped_with_a_reason(bench_cli, tmp_path):
    out = tmp_path / "bench.json"
    rc = bench_cli(["bench", "--quick", "--device", "cpu", "--backend", "no-such-backend",
                    "--rows", "b1-h16-2k", "--json", str(out)])
    assert rc == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["status"] == "skipped" and "no-such-backend" in row["reason"] and "not installed" in row["reason"]


def test_unknown_row_and_missing_matplotlib_are_reported(bench_cli, tmp_path, capsys, monkeypatch):
    assert bench_cli(["bench", "--device", "cpu", "--rows", "nope"]) == 2
    assert "unknown workload id" in capsys.readouterr().err
    from flashmla_core.cli import bench
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    report = dict(results=[], environment={}, ceiling=None, quick=True)
    assert bench.write_plot(report, str(tmp_path / "x.png")) is False
    assert "matplotlib is not installed" in capsys.readouterr().err
