#!/usr/bin/env bash
# GPU part of the benchmark suite (benchmarks/suite.py --size gpu --device cuda).
#
# Larger sizes than the CPU suite: MLP decoder 512x512, MNIST 10,000 items for 100 epochs,
# digits for 200 epochs, 64x64 syllable spectrograms, lattice sizes up to 10946, 3 seeds,
# IWAE-5000 cross-checks; k-NN and cost parts included (UMAP and k-NN run on the CPU).
# Budget: under 10 minutes on one H100/H200-class GPU (the script stops itself at 10 min).
#
# Usage:  bash benchmarks/gpu_suite.sh [OUT_DIR]        (default OUT_DIR: docs)
# Writes OUT_DIR/bench_suite_gpu.md and OUT_DIR/figures/suite_gpu_*.png.
# Data: fetched through the manifests into the cache (VOCALATENT_DATA, default
# ~/.cache/vocalatent/data); on a machine without registry access, copy that cache there first.
# Needs: umap-learn for the UMAP row (pip install umap-learn; the row is skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs}"
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_suite.sh: CUDA is not available (torch.cuda.is_available() is False)")
print("GPU:", torch.cuda.get_device_name(0))
PY
export VOCALATENT_NO_PROGRESS=1
timeout --signal=INT 600 python benchmarks/suite.py --out "$OUT" --size gpu --device cuda --threads 8
