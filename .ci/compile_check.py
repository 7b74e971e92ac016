"""Compile-checks every CUDA source of the CUDA backends with plain nvcc (no torch, no GPU needed).

For each .cu of csrc_sm90 and benchmarks/micro (target sm_90a): nvcc -c with -DNDEBUG and the pinned
CUTLASS headers; fails on compile errors, on any register spill reported by ptxas, and on ptxas
warning C7510 (wgmma serialized). Runs two compilations at a time.
"""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS = {"csrc_sm90": ["-gencode", "arch=compute_90a,code=sm_90a"],
           "benchmarks/micro": ["-gencode", "arch=compute_90a,code=sm_90a"]}


def cutlass_include() -> str:
    import cutlass_library
    return str(pathlib.Path(cutlass_library.__file__).parent / "source" / "include")


def check(nvcc: str, src: pathlib.Path, arch_flags: list, out_dir: str) -> tuple:
    cmd = [nvcc, "-c", "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-DNDEBUG", "-Xptxas", "-v",
           f"-I{cutlass_include()}", f"-I{src.parent.parent}", *arch_flags, str(src),
           "-o", os.path.join(out_dir, src.stem + ".o")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    log = r.stdout + r.stderr
    problems = []
    if r.returncode != 0:
        problems.append(f"nvcc exited {r.returncode}")
    for m in re.finditer(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log):
        if int(m.group(1)) or int(m.group(2)):
            problems.append(f"register spills: {m.group(0)}")
    if "C7510" in log:
        problems.append("ptxas C7510: wgmma serialized")
    regs = re.findall(r"Used (\d+) registers", log)
    return src, problems, log, max(map(int, regs)) if regs else 0


def main() -> int:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not os.path.exists(nvcc):
        print("compile-check: nvcc not found", file=sys.stderr)
        return 1
    jobs = [(src, flags) for d, flags in TARGETS.items() for src in sorted((ROOT / d).rglob("*.cu"))]
    if not jobs:
        print("compile-check: no .cu files")
        return 0
    failed = 0
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(2) as pool:
        for src, problems, log, regs in pool.map(lambda j: check(nvcc, j[0], j[1], tmp), jobs):
            rel = src.relative_to(ROOT)
            if problems:
                failed += 1
                print(f"FAIL {rel}: {'; '.join(problems)}\n{log[-3000:]}")
            else:
                print(f"ok   {rel} (max {regs} registers, no spills)")
    print(f"compile-check: {len(jobs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
