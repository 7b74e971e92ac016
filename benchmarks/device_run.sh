#!/usr/bin/env bash
# One call on the lent GPU (shared/device.md): install, build the CUDA backend if there is one,
# `flashmla info`, the GPU tests, the benchmarks; logs and results go to $OUT; a short table last
# (only the tail of the output comes back).
#
#   run: FLASHMLA_COMMIT=<sha of this tree> bash benchmarks/device_run.sh [flashmla bench args...]
#   e.g. bash benchmarks/device_run.sh --rows b1-h16-2k,h128-8k --backend sm90
#
# Optional: carry `.whl` (nvidia-cutlass wheel, for the sm90 build); SKIP_BUILD=1, SKIP_TESTS=1;
# SANITIZE=1 (memcheck, racecheck, synccheck on backends/sm90/tests/sanitize_cases.py); environment
# switches pass through to every step (FLASHMLA_SM90_SEESAW=0 tests the two-buffer kernel on the seesaw's shapes,
# FLASHMLA_SM90_SPARSE_SEESAW=0 on gathered bf16 and fp8_v32 rows);
# GPU_TESTS="pytest args" replaces the test selection; SAVE_BUILD=1 copies the built .so files to
# $OUT/build (carry them next time to skip the build: they only fit that machine's torch).
# A failing step is recorded and the next one still runs: one broken test must not cost the numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
LOGS=$OUT/logs
mkdir -p "$LOGS"
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}  # unset: the build crashes
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SUMMARY=$OUT/steps.txt
: > "$SUMMARY"
FAILED=0

step() {  # step NAME TIMEOUT_S CMD... : runs CMD with its output in $LOGS/NAME.log, records rc and time
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc
  echo "== $name: $*"
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  printf '%-10s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$SUMMARY"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    echo "-- $name failed (rc=$rc), last lines of $LOGS/$name.log:"
    tail -n 15 "$LOGS/$name.log"
  fi
  return "$rc"
}

step env 60 bash -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'; $PY -c 'import triton; print(\"triton\", triton.__version__)'; true"  # informational

if compgen -G ".whl/*.whl" > /dev/null; then
  step wheels 300 $PY -m pip install -q --no-index --no-deps --no-build-isolation .whl/*.whl
fi
step install 300 $PY -m pip install -q --no-build-isolation --no-deps -e . || { cat "$SUMMARY"; exit 1; }

if [ -d backends/sm90 ] && { [ -f backends/sm90/pyproject.toml ] || [ -f backends/sm90/setup.py ]; }; then
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    step build-sm90 540 $PY -m pip install -v --no-build-isolation --no-deps -e backends/sm90
    if [ "${SAVE_BUILD:-0}" = 1 ]; then
      mkdir -p "$OUT/build" && find backends/sm90 -name '*.so' -exec cp --parents {} "$OUT/build" \;
    fi
  fi
else
  echo "no backends/sm90 package yet: measuring whatever backends are installed" | tee -a "$SUMMARY"
fi

step info 120 $PY -m flashmla info

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  # GPU tests: files or folders whose name says gpu, plus the backends' own tests; CPU tests run in CI.
  if [ -n "${GPU_TESTS:-}" ]; then
    read -r -a sel <<< "$GPU_TESTS"
  else
    mapfile -t sel < <(find tests backends/*/tests -name '*gpu*' \( -name 'test_*.py' -o -type d \) 2>/dev/null | sort)
    [ -d backends/sm90/tests ] && sel+=(backends/sm90/tests)
  fi
  if [ "${#sel[@]}" -gt 0 ]; then
    step gpu-tests 420 $PY -m pytest -q -rs "${sel[@]}"
  else
    echo "no GPU tests found" | tee -a "$SUMMARY"
  fi
fi

if [ "${SANITIZE:-0}" = 1 ] && [ -f backends/sm90/tests/sanitize_cases.py ]; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  step memcheck 300 "$SAN" --tool memcheck --error-exitcode 1 $PY backends/sm90/tests/sanitize_cases.py
  step racecheck 300 "$SAN" --tool racecheck --error-exitcode 1 $PY backends/sm90/tests/sanitize_cases.py
  # synccheck: barrier misuse racecheck does not name (e.g. an .aligned bar.sync reached from different
  # instructions by different warps)
  step synccheck 300 "$SAN" --tool synccheck --error-exitcode 1 $PY backends/sm90/tests/sanitize_cases.py
fi

[ "${SKIP_BENCH:-0}" = 1 ] || step bench 540 $PY -m flashmla bench --json "$OUT/bench.json" --markdown "$OUT/bench.md" --plot "$OUT/bench.png" "$@"

echo
echo "== steps (logs in \$OUT/logs)"
cat "$SUMMARY"
if [ -f "$OUT/bench.json" ]; then
  echo
  $PY -m flashmla bench --from-json "$OUT/bench.json" 2>/dev/null
fi
exit $FAILED
