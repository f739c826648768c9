"""Fit time and peak memory of the single-cell and neural pipelines' models on CPU.

Cases (simulated, so anyone can rerun them):

- ``cells``: 10,000 cells x 2,000 genes, 5 types, multinomial likelihood, 2-D latent,
  MLP (256, 256), batch 256, m = 987 (the single_cell pipeline's model);
- ``neurons``: 100 head-direction cells x 100,000 bins of 50 ms, Poisson, 1-D latent,
  MLP (64, 64), batch 128 (the neural pipeline's model).

Each case runs in its own process (peak RSS from ``resource.getrusage``) for ``--epochs``
epochs without early stopping; the time per epoch and the transform time are reported.

    python benchmarks/bench_domains.py --epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def run_case(case: str, epochs: int, threads: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from vocalatent.data.simulate import head_direction_cells, simulate_cell_types
    from vocalatent.model import QLVM

    t0 = time.perf_counter()
    if case == "cells":
        X = simulate_cell_types(10_000, 2_000, 5, random_state=0).matrix.dense()
        model = QLVM(2, likelihood="multinomial", decoder="mlp", batch_size=256, max_epochs=epochs,
                     decoder_options={"hidden": (256, 256)}, random_state=0, verbose=False)
    else:
        X = head_direction_cells(100, 100_000, bin_s=0.05, random_state=0).counts.astype(np.float32)
        model = QLVM(1, likelihood="poisson", decoder="mlp", batch_size=128, max_epochs=epochs, lr=3e-3,
                     decoder_options={"hidden": (64, 64)}, random_state=0, verbose=False)
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(X)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.transform_dataset(X, n_shifts=1)
    t_transform = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "shape": list(X.shape), "epochs": epochs, "threads": threads,
            "data_s": round(t_data, 1), "fit_s": round(t_fit, 1),
            "s_per_epoch": round(t_fit / epochs, 1), "transform_s": round(t_transform, 1),
            "peak_rss_mib": round(rss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--case", choices=["cells", "neurons"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.epochs, args.threads)))
        return
    import torch

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    for case in ("cells", "neurons"):
        out = subprocess.run([sys.executable, __file__, "--case", case, "--epochs", str(args.epochs),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
