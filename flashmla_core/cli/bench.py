"""`flashmla bench`: the targets.md workloads on chosen backends -> table, JSON, Markdown, plot.

    flashmla bench                                  # every row on the backend flashmla picks
    flashmla bench --backend sm90,triton --op dense_decode --json out.json --plot out.png
    flashmla bench --quick --device cpu --backend reference --rows b1-h16-2k,b8-h128-4k
    flashmla bench --from-json out.json --save docs/benchmarks   # re-render a run made elsewhere

Rates use exactly the targets.md formulas; see docs/benchmarks/README.md for the measurement rules.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

COLUMNS = ("row", "backend", "ms", "TFLOP/s", "GB/s", "% roofline", "target", "vs target")


def add_arguments(p) -> None:
    from flashmla_core.bench.workloads import OPS
    p.add_argument("--backend", metavar="NAME[,NAME]",
                   help="backends to measure, each on every row (default: on cuda the one flashmla picks; on the "
                        "cpu the reference backend: other backends run there only when named)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--rows", metavar="ID[,ID]", help="workload ids (see --list)")
    sel.add_argument("--op", choices=OPS, help="every workload of one op")
    p.add_argument("--quick", action="store_true",
                   help="shrink batch, lengths and topk (same op and head shapes): a smoke run, not a result")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="default: cuda if available, else cpu (which implies --quick)")
    p.add_argument("--json", metavar="PATH", help="write the full report (environment, every row) as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table and the configurations as Markdown")
    p.add_argument("--plot", metavar="PATH", help="write a PNG (needs matplotlib: pip install 'flashmla[plot]')")
    p.add_argument("--save", metavar="DIR", help="write DIR/<date>-<device>-<backend>.{json,md,png}")
    p.add_argument("--from-json", metavar="PATH", help="render a saved report instead of running")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")


def run(args) -> int:
    from flashmla_core.bench import workloads as wl
    if args.list:
        for w in wl.WORKLOADS:
            print(f"{w.id:<24} {w.op:<15} {w.describe():<52} target {w.target or '-'}"
                  + (f"  ({w.note})" if w.note else ""))
        return 0
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        report = _run(args, wl)
        if report is None:
            return 2
    print(format_table(report))
    _write_outputs(report, args)
    return 1 if any(r["status"] == "error" for r in report["results"]) else 0


def _run(args, wl):
    import torch
    from flashmla_core.bench import runner
    device, quick = args.device, args.quick
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and not quick:
            quick = True
            _note("no CUDA device: running the --quick (scaled-down) workloads on the CPU")
    elif device == "cuda" and not torch.cuda.is_available():
        _note("--device cuda: torch sees no CUDA device here")
        return None
    elif device == "cpu" and not quick:
        _note("full-size workloads on the CPU need many GB and hours; add --quick for a smoke run")
    try:
        chosen = wl.select(_split(args.rows), args.op)
    except KeyError as exc:
        _note(exc.args[0])
        return None
    if quick:
        chosen = [w.quick() for w in chosen]
    # On the CPU only named backends run, the reference by default (an installed backend that also
    # takes CPU tensors, e.g. a vendor template, is measured only when asked for).
    backends = _split(args.backend) or (["reference"] if device == "cpu" else [None])
    return runner.run(chosen, backends, device, progress=runner.stderr_progress)


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _note(msg: str) -> None:
    print(f"flashmla bench: {msg}", file=sys.stderr, flush=True)


# ---- rendering ----
def _cells(r: dict) -> list:
    def num(key, fmt):  # 3 significant digits below 10 so CPU smoke figures are not all "0.0"
        v = r.get(key)
        return "–" if v is None else format(v, ".3g" if abs(v) < 10 else fmt)
    if r["status"] != "ok":
        return [r["id"], r["backend"] or r["requested_backend"], f"{r['status']}: {r['reason']}"]
    vs = "n/a (scaled)" if r["scaled"] else ("–" if r.get("vs_target") is None else f"{r['vs_target']:.2f}x")
    return [r["id"], r["backend"], f"{r['ms']:.4g}", num("tflops", ".1f"), num("gbps", ".0f"),
            num("roofline_pct", ".1f"), r["target"] or "–", vs]


def _header(report: dict) -> list:
    env = report["environment"]
    lines = [f"{env['device']} ({env.get('arch') or env['device_type']}), torch {env['torch']}, "
             f"CUDA {env['cuda'] or '-'}, triton {env.get('triton') or '-'}, commit {(env['commit'] or 'unknown')[:12]}"
             + (" (modified)" if env.get("dirty") else "") + f", {env['date']}"]
    c = report["ceiling"]
    lines.append(f"roofline: {c['memory_gbps']:g} GB/s ({c['memory_source']}), {c['bf16_tflops']:g} bf16 TFLOP/s "
                 f"({c['bf16_source']})" if c else "roofline: no ceiling known for this device (% roofline: –)")
    if report["quick"]:
        lines.append("QUICK run: shapes scaled down (batch, lengths, topk); a smoke test, not a result. "
                     "Targets apply to the full shapes only.")
    from flashmla_core.bench.workloads import TARGET_DEVICE
    if env["device"] != TARGET_DEVICE:
        lines.append(f"targets are FlashMLA's on an {TARGET_DEVICE}; this machine is not one.")
    return lines


def format_table(report: dict) -> str:
    rows = [list(COLUMNS)] + [_cells(r) for r in report["results"]]
    widths = [max(len(r[i]) for r in rows if len(r) > i and (len(r) == len(COLUMNS) or i < 2))
              for i in range(len(COLUMNS))]
    out = _header(report)
    for k, r in enumerate(rows):
        if len(r) < len(COLUMNS):  # skipped/error: the reason spans the numeric columns
            out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:2])) + "  " + r[2])
        else:
            out.append("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r)))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_markdown(report: dict) -> str:
    md = ["# flashmla bench", ""] + [f"- {line}" for line in _header(report)] + [""]
    md += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["results"]:
        cells = _cells(r)
        cells += [""] * (len(COLUMNS) - len(cells))
        md.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    md += ["", "## Configurations (d_qk 576, d_v 512, bf16 queries)", "",
           "| row | op | shape | FLOPs | bytes | bound on H100 | note |", "|---|---|---|---|---|---|---|"]
    seen = set()
    for r in report["results"]:
        if r["id"] in seen:
            continue
        seen.add(r["id"])
        shape = ", ".join(f"{k}={v}" for k, v in r["shape"].items() if v is not None)
        md.append(f"| {r['id']} | {r['op']} | {shape} | {r['flops']:.4g} | {r['bytes']:.4g} | {r['bound']} | "
                  f"{r.get('note') or ''} |")
    md += ["", "Formulas, timing rules and the ceilings: docs/benchmarks/README.md. "
               f"Timing: {_timing(report)}. Wall time of the run: {report.get('wall_s', '?')} s.", ""]
    return "\n".join(md)


def _timing(report: dict) -> str:
    return "; ".join(sorted({r["timing"] for r in report["results"] if r.get("timing")})) or "none"


def write_plot(report: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _note(f"--plot {path}: matplotlib is not installed (pip install 'flashmla[plot]'); no plot written. "
              f"Render it later with: flashmla bench --from-json REPORT.json --plot {path}")
        return False
    ok = [r for r in report["results"] if r["status"] == "ok"]
    ids = list(dict.fromkeys(r["id"] for r in ok))
    backends = list(dict.fromkeys(r["backend"] for r in ok))
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.45 * len(ids) + 2.5), sharey=True)
    height = 0.8 / max(1, len(backends))
    for k, be in enumerate(backends):
        by_id = {r["id"]: r for r in ok if r["backend"] == be}
        ys = [i + k * height for i, rid in enumerate(ids) if rid in by_id]
        axes[0].barh(ys, [by_id[rid]["ms"] for rid in ids if rid in by_id], height, label=be)
        pct = [by_id[rid].get("roofline_pct") or 0 for rid in ids if rid in by_id]
        axes[1].barh(ys, pct, height, label=be)
    target_of = {r["id"]: r["target_ms"] for r in ok if r.get("target_ms")}
    targets = [(i, target_of[rid]) for i, rid in enumerate(ids) if rid in target_of]
    if targets:
        axes[0].scatter([t for _, t in targets], [i + 0.4 - height / 2 for i, _ in targets], marker="|", s=300,
                        color="black", label="FlashMLA target (H100)", zorder=3)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms (median, lower is better)")
    axes[1].set_xlabel("% of roofline" + ("" if report["ceiling"] else " (no ceiling known for this device)"))
    axes[1].axvline(92, color="grey", ls="--", lw=0.8)
    axes[0].set_yticks([i + 0.4 - height / 2 for i in range(len(ids))], ids)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("\n".join(_header(report)[:2] + (["QUICK run (scaled shapes)"] if report["quick"] else [])),
                 fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def _write_outputs(report: dict, args) -> None:
    paths = dict(json=args.json, md=args.markdown, png=args.plot)
    if args.save:
        env = report["environment"]
        backends = "+".join(dict.fromkeys(r["backend"] or r["requested_backend"] for r in report["results"]))
        stem = f"{env['date'][:10]}-{_slug(env['device'])}-{_slug(backends) or 'none'}" + ("-quick" * report["quick"])
        for ext in paths:
            paths[ext] = paths[ext] or str(Path(args.save) / f"{stem}.{ext}")
    for ext, path in paths.items():
        if not path:
            continue
        if ext == "png":
            if write_plot(report, path):
                _note(f"wrote {path}")
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=1) + "\n" if ext == "json" else format_markdown(report)
        Path(path).write_text(text)
        _note(f"wrote {path}")
