"""`flashmla` / `python -m flashmla`: info, matrix, conformance, bench, demo.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "info": ("flashmla_core.cli.info", "torch, devices and every backend: distribution, version, status"),
    "matrix": ("flashmla_core.cli.matrix", "capability matrix per op for this machine"),
    "conformance": ("flashmla_core.cli.conformance", "check a backend against the float64 oracle"),
    "bench": ("flashmla_core.cli.bench", "run the benchmark workloads (docs/benchmarks)"),
    "demo": ("flashmla_core.cli.demo", "one DeepSeek-V3 decode step on the best backend, checked"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="flashmla", description="Fast MLA kernels behind one API.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (mod, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        modules[name] = importlib.import_module(mod)
        modules[name].add_arguments(p)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(modules[args.command].run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
