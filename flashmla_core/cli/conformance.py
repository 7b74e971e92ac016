"""`flashmla conformance --backend NAME`: the conformance kit with a per-op summary."""
from __future__ import annotations

import sys


def add_arguments(p):
    p.add_argument("--backend", required=True, help="installed backend to check (see `flashmla info`)")
    p.add_argument("--op", action="append", help="only this op (repeatable)")
    p.add_argument("--device", default=None, help="device to run on (default: accelerator if served, else cpu)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case")


def run(args) -> int:
    from ..registry.selection import REGISTRY
    from ..testing import runner

    if args.backend not in REGISTRY.records():
        failed = {f.name: f.error for f in REGISTRY.failures()}
        why = f"failed to load: {failed[args.backend]}" if args.backend in failed else \
            f"not installed (installed: {sorted(REGISTRY.records())})"
        print(f"backend {args.backend!r} {why}", file=sys.stderr)
        return 2
    device, cases = runner.collect(args.backend, args.op, args.device)
    if device is None:
        print(f"backend {args.backend!r} serves no device available here", file=sys.stderr)
        return 2

    def progress(i, n, r):
        if args.verbose or r.status == "failed":
            print(f"[{i}/{n}] {r.status:7s} {r.case.op}:{r.case.id} ({r.seconds:.2f}s)"
                  + "".join(f"\n      {m}" for m in r.messages if r.status != "passed"), file=sys.stderr)
        elif sys.stderr.isatty():
            print(f"\r[{i}/{n}] {r.case.op}", end="", file=sys.stderr, flush=True)

    results = []
    for i, case in enumerate(cases):
        r = runner.run_case(args.backend, case, device)
        results.append(r)
        progress(i + 1, len(cases), r)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(runner.summary(args.backend, results, device))
    return 1 if any(r.status == "failed" for r in results) else 0
