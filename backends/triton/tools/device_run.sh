#!/usr/bin/env bash
# One call on a GPU machine for flashmla-triton: install, (optional) config sweep, the full
# conformance kit, the benchmark. Logs and JSON go to $OUT (at most 8 files); a short summary last.
#
#   FLASHMLA_COMMIT=<sha> SWEEP=1 bash backends/triton/tools/device_run.sh [extra flashmla bench args]
#
# SWEEP=0 skips the sweep; SWEEP_ROWS / SWEEP_S choose its rows and time budget; TESTS=0 / CONF=0 /
# BENCH=0 skip the package's tests (GPU: CUDA-graph capture, no host sync) / the conformance kit / the
# benchmark. SANITIZE=1 adds compute-sanitizer memcheck, racecheck and synccheck on tests/sanitize_cases.py.
set -uo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
T0=$SECONDS
stamp() { echo "== [$((SECONDS - T0))s] $*"; }

stamp install
$PY -m pip install -q --no-build-isolation --no-deps -e . -e backends/triton > "$OUT/install.log" 2>&1 \
  || { tail -n 20 "$OUT/install.log"; exit 1; }
$PY -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(), "triton", triton.__version__)'
$PY -m flashmla info > "$OUT/info.log" 2>&1
grep -A6 -i "triton" "$OUT/info.log" | head -n 12

if [ "${SWEEP:-1}" = 1 ]; then
  stamp sweep
  timeout "${SWEEP_TIMEOUT:-300}" $PY backends/triton/tools/sweep.py --json "$OUT/sweep.json" \
    --budget-s "${SWEEP_S:-150}" ${SWEEP_ROWS:+--rows "$SWEEP_ROWS"} > "$OUT/sweep.log" 2>&1
  echo "sweep rc=$?"
  grep -E '^\[best\]|Error|error' "$OUT/sweep.log" | head -n 30
fi

if [ "${TESTS:-1}" = 1 ]; then
  stamp tests
  timeout "${TESTS_TIMEOUT:-180}" $PY -m pytest -q -rs backends/triton/tests > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"
  tail -n 6 "$OUT/tests.log"
fi

if [ "${CONF:-1}" = 1 ]; then
  stamp conformance
  timeout "${CONF_TIMEOUT:-300}" $PY -m flashmla conformance --backend triton -v > "$OUT/conformance.log" 2>&1
  echo "conformance rc=$?"
  grep -E 'FAILED|failed |cases|passed,' "$OUT/conformance.log" | tail -n 30
fi

if [ "${SANITIZE:-0}" = 1 ]; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck synccheck; do
    stamp "$tool"
    timeout 300 "$SAN" --tool $tool --error-exitcode 1 $PY backends/triton/tests/sanitize_cases.py \
      > "$OUT/sanitize.log" 2>&1
    echo "$tool rc=$?"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|ran$" "$OUT/sanitize.log" | tail -n 3
  done
fi

if [ "${BENCH:-1}" = 1 ]; then
  stamp bench
  timeout "${BENCH_TIMEOUT:-300}" $PY -m flashmla bench --backend triton --json "$OUT/bench.json" "$@" \
    > "$OUT/bench.txt" 2> "$OUT/bench.err"
  echo "bench rc=$?"
  cat "$OUT/bench.txt"
  tail -n 5 "$OUT/bench.err"
fi
stamp done
