#!/usr/bin/env bash
# Run fitkit's GPU checks on a machine with a CUDA GPU, in under ten minutes:
#   1. pytest -m gpu tests/gpu     (accelerator, precision and other GPU-marked tests)
#   2. benchmarks/gpu.py           (fitkit vs a raw loop, steps/s per precision)
#
# Usage (from anywhere):  tests/gpu/run.sh
# Results go to $OUT when it is set (a device runner collects that folder), else to
# benchmarks/results/gpu-run/: nvidia-smi.txt, gpu-tests.log, gpu-tests.xml (JUnit),
# gpu-bench.log, gpu.json, summary.txt.
#
# Python: .venv/bin/python when it imports torch (the venv `make test` builds, if it
# came along), else python3 when it imports torch, else `make .venv/.installed`
# (needs the network). fitkit always comes from this working tree (PYTHONPATH=src),
# whatever the venv's editable install points at.
# Exit status: the test run's (0 when everything passed or was skipped).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
ROOT="$PWD"
RESULTS="${OUT:-$ROOT/benchmarks/results/gpu-run}"
mkdir -p "$RESULTS"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

log() { echo "[run.sh] $*" | tee -a "$RESULTS/summary.txt"; }
has_torch() { [ -n "$1" ] && "$1" -c "import torch" >/dev/null 2>&1; }

PY=""
if has_torch "$ROOT/.venv/bin/python"; then
    PY="$ROOT/.venv/bin/python"
elif has_torch "$(command -v python3 || true)"; then
    PY="$(command -v python3)"
elif command -v make >/dev/null 2>&1; then
    log "no Python with torch found: building .venv with make (needs the network)"
    timeout 300 make .venv/.installed >"$RESULTS/make-venv.log" 2>&1 || log "make .venv/.installed failed"
    has_torch "$ROOT/.venv/bin/python" && PY="$ROOT/.venv/bin/python"
fi
if [ -z "$PY" ]; then
    log "no Python with torch available: nothing run"
    exit 2
fi
if ! "$PY" -c "import pytest" >/dev/null 2>&1; then
    log "pytest missing for $PY: trying pip"
    timeout 120 "$PY" -m pip install -q pytest pytest-timeout >>"$RESULTS/summary.txt" 2>&1 || true
fi

log "python: $PY"
"$PY" - <<'PY' 2>&1 | tee -a "$RESULTS/summary.txt"
import torch, fitkit
n = torch.cuda.device_count()
names = [torch.cuda.get_device_name(i) for i in range(n)]
print(f"[run.sh] torch {torch.__version__} (CUDA {torch.version.cuda}), fitkit {fitkit.__version__} "
      f"from {fitkit.__file__}, {n} CUDA device(s): {names}")
PY
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >"$RESULTS/nvidia-smi.txt" 2>&1

START=$SECONDS
log "tests: pytest -m gpu tests/gpu"
timeout 360 "$PY" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider \
    --junitxml="$RESULTS/gpu-tests.xml" 2>&1 | tee "$RESULTS/gpu-tests.log"
TESTS_RC=${PIPESTATUS[0]}
log "tests: exit $TESTS_RC after $((SECONDS - START)) s"

START=$SECONDS
log "benchmark: benchmarks/gpu.py"
timeout 200 "$PY" benchmarks/gpu.py --out "$RESULTS/gpu.json" 2>&1 | tee "$RESULTS/gpu-bench.log"
BENCH_RC=${PIPESTATUS[0]}
log "benchmark: exit $BENCH_RC after $((SECONDS - START)) s"

[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -ne 0 ] && exit "$BENCH_RC"
exit "$TESTS_RC"
