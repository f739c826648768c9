#!/usr/bin/env bash
# Install vocalatent and its test tools into the current Python environment.
# torch: install the pinned CPU build first when torch is missing, so that pip does not
# resolve an unpinned `torch` to a multi-GB CUDA build. (pyproject.toml does not cap torch.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
# The optional extras too (interactive page, SLURM, AnnData/zarr/scanpy), so that their tests
# run here and in CI instead of being skipped.
"$PY" -m pip install -q -e ".[test,interactive,cluster,anndata,zarr,scverse]"
