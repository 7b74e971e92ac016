"""`flashmla info`: torch, devices, and every backend with its distribution, version and status."""
from __future__ import annotations

import platform


def add_arguments(p):
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _devices() -> list:
    import torch

    from ..capability.device import arch_of
    devs = [dict(device="cpu", name=platform.processor() or platform.machine(), arch="cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            d = torch.device("cuda", i)
            devs.append(dict(device=str(d), name=torch.cuda.get_device_name(i), arch=arch_of(d)))
    return devs


def run(args) -> int:
    import json

    import torch

    import flashmla
    from ..registry.selection import REGISTRY

    backends = flashmla.backends()
    for b in backends:
        rec = REGISTRY.records().get(b["name"])
        b["details"] = rec.backend.info() if rec is not None else {}
    report = dict(flashmla=flashmla.__version__, python=platform.python_version(), torch=torch.__version__,
                  cuda=torch.version.cuda, hip=getattr(torch.version, "hip", None), devices=_devices(),
                  backends=backends)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"flashmla {report['flashmla']}  python {report['python']}  torch {report['torch']}  "
          f"cuda {report['cuda']}" + (f"  hip {report['hip']}" if report["hip"] else ""))
    print("devices:")
    for d in report["devices"]:
        print(f"  {d['device']:8s} {d['arch']:8s} {d['name']}")
    print("backends (entry-point group 'flashmla.backends'):")
    for b in backends:
        prio = "" if b["priority"] is None else f"priority {b['priority']}"
        print(f"  {b['name']:16s} {b['status']:15s} {b['distribution']} {b['version']}  {prio}")
        if b["ops"]:
            print(f"      ops: {', '.join(b['ops'])}")
        for r in b["reasons"]:
            print(f"      reason: {r}")
        for k, v in b["details"].items():
            print(f"      {k}: {v}")
    if not backends:
        print("  (none installed)")
    return 0
