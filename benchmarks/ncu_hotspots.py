"""Summarizes an `ncu --page source --csv --print-source sass` export: the instructions with the most
warp-stall samples, and the stall reasons summed over the kernel (run next to ncu on the GPU machine).

    ncu -i rep.ncu-rep --page source --csv --print-source sass > sass.csv
    python benchmarks/ncu_hotspots.py sass.csv [top_n]
"""
import csv
import sys
from collections import Counter


def main(path, top=30):
    with open(path, newline="") as f:
        first = f.readline()  # "Kernel Name", ... when ncu prints the kernel first
        if not first.startswith('"Kernel Name"'):
            f.seek(0)
        rows = [{k: v for k, v in r.items() if k} for r in csv.DictReader(f)]
    rows = [r for r in rows if str(r.get("Address", "")).startswith("0x")]
    if not rows:
        print("no rows")
        return
    cols = list(rows[0].keys())
    sample_col = next(c for c in cols if c.startswith("Warp Stall Sampling (All"))
    stall_cols = [c for c in cols if c.startswith("stall_") and "Not Issued" not in c]

    def num(v):
        try:
            return float(str(v).replace(",", ""))
        except ValueError:
            return 0.0

    total = sum(num(r[sample_col]) for r in rows) or 1.0
    print(f"{len(rows)} SASS lines, {total:.0f} stall samples")
    reasons = Counter()
    for r in rows:
        for c in stall_cols:
            reasons[c] += num(r[c])
    for c, v in reasons.most_common(12):
        print(f"  {v / total:6.1%}  {c}")
    ranked = sorted(rows, key=lambda r: -num(r[sample_col]))[:top]
    index = {id(r): i for i, r in enumerate(rows)}
    for r in ranked:
        top_reason = max(stall_cols, key=lambda c: num(r[c])) if stall_cols else ""
        print(f"{num(r[sample_col]) / total:6.1%}  #{index[id(r)]:<5d} {r.get('Source', '').strip()[:70]:70s}  {top_reason}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30)
