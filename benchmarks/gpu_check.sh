#!/usr/bin/env bash
# GPU check of the QLVM engine: the CUDA tests, then the GPU benchmark. Under 5 minutes on an
# H100/H200. Needs torch with CUDA, numpy, scipy, pandas, xarray, h5py, tqdm, scikit-learn and
# pytest; NOT the audio/data layers' dependencies (librosa, soundfile, crowsetta, h5netcdf, dask)
# and no `pip install` of vocalatent: it runs with PYTHONPATH set to the repository root.
#
#   bash benchmarks/gpu_check.sh            # results in $OUT if set, else out/gpu_check/
#
# On a machine without CUDA the gpu tests are collected and skipped, the engine's other tests are
# left to the ordinary test run, and the benchmark writes {"cuda": false}. The tests' time limit
# is GPU_CHECK_TEST_TIMEOUT seconds (default 150). Exit status: non-zero if a test or the
# benchmark failed (or timed out).
set -u -o pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 VOCALATENT_NO_PROGRESS=1
PY="${PYTHON:-python3}"
RESULTS="${OUT:-out/gpu_check}"
mkdir -p "$RESULTS"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(lscpu 2>/dev/null | grep 'Model name' | sed 's/ \+/ /g')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); print('numpy', numpy.__version__)"
} 2>&1 | tee "$RESULTS/environment.txt"

status=0
start=$SECONDS
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  # The gpu-marked tests and the engine's default tests (which run on CUDA here: device="auto").
  MARKS="not slow"
else
  # No CUDA: only the gpu-marked tests, which skip (the CPU suite is the ordinary test run's job).
  echo "gpu_check: no CUDA device; the gpu tests will be skipped"
  MARKS="gpu"
fi
timeout "${GPU_CHECK_TEST_TIMEOUT:-150}" "$PY" -m pytest -q -rs -m "$MARKS" \
    -o cache_dir="${TMPDIR:-/tmp}/vocalatent_gpu_check_cache" \
    tests/test_gpu.py tests/test_model.py tests/nn tests/test_lattice.py 2>&1 | tee "$RESULTS/pytest.log"
rc=$?
[ $rc -ne 0 ] && { echo "gpu_check: tests FAILED (exit $rc)"; status=1; }
echo "gpu_check: tests took $((SECONDS - start)) s"

start=$SECONDS
timeout 140 "$PY" benchmarks/gpu_bench.py --json "$RESULTS/gpu_bench.json" 2>&1 | tee "$RESULTS/gpu_bench.log"
rc=$?
[ $rc -ne 0 ] && { echo "gpu_check: benchmark FAILED (exit $rc)"; status=1; }
echo "gpu_check: benchmark took $((SECONDS - start)) s; results in $RESULTS"
exit $status
