"""GPU benchmark of the QLVM engine (run by benchmarks/gpu_check.sh; a few minutes on an H100).

Measures on CUDA:

1. the likelihood kernels (``bench_kernel``): the Gaussian kernel vs its per-pair reference at
   B=64, m=610, D=4096; a Gaussian training step at B=256, m=610, D=16384 against its bare
   GEMMs, and its peak memory beyond the inputs (``torch.cuda.max_memory_allocated``); the
   count kernels;
2. training throughput of the default 128 x 128 convolutional decoder at n_lattice=987 with
   batch sizes 256 and 1024, in float32 and under bf16 autocast, on 4,096 spectrogram-like
   images; and held-out scoring throughput (4 shifts x 6,765 points);
3. the fit time of the digits benchmark's model (binarized scikit-learn digits, Bernoulli, MLP
   decoder, n_lattice 987 and 2584, 100 epochs, batch 128, lr 3e-3) and its held-out log p(x)
   (4 shifts x 10,946 points), to compare with the CPU figures of bench_digits_lattice.py.

It imports only the engine (vocalatent.model / nn / lattice), torch, numpy and scikit-learn
(for the digits), so it runs with ``PYTHONPATH=.`` on a machine that lacks the audio and data
layers' dependencies. Without CUDA it logs that and exits 0 after writing ``{"cuda": false}``.

Usage::

    PYTHONPATH=. python benchmarks/gpu_bench.py --json "$OUT/gpu_bench.json"
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_kernel  # noqa: E402
import bench_train  # noqa: E402

from vocalatent._utils import atomic_path  # noqa: E402
from vocalatent.model import QLVM  # noqa: E402

logger = logging.getLogger("gpu_bench")


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.cuda.is_available(), "host_cpus": os.cpu_count()}
    if env["cuda"]:
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=props.total_memory / 2**30, cuda_runtime=torch.version.cuda,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                   tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return env


def bench_conv_training(device: torch.device, *, n_items: int = 4096, n_lattice: int = 987,
                        batch_sizes=(256, 1024), precisions=("32", "bf16"), epochs: int = 3) -> list[dict]:
    """Conv decoder 128 x 128 training throughput through ``QLVM.fit``."""
    X = bench_train.spectrogram_like(n_items, (128, 128), seed=0)
    rows = []
    for precision in precisions:
        for b in batch_sizes:
            logger.info("conv decoder: m=%d B=%d precision=%s", n_lattice, b, precision)
            r = bench_train.measure_fit(X, decoder="conv", n_lattice=n_lattice, batch_size=b,
                                        epochs=epochs, device=str(device), precision=precision)
            r["data"] = "spectrogram"
            rows.append(r)
    return rows


def bench_scoring(device: torch.device, *, n_items: int = 1024, n_lattice: int = 6765,
                  n_shifts: int = 4) -> dict:
    """Held-out scoring (``score_samples``) throughput of a conv-decoder model (1 epoch trained)."""
    X = bench_train.spectrogram_like(n_items, (128, 128), seed=1)
    model = QLVM(2, decoder="conv", n_lattice=987, batch_size=256, max_epochs=1, device=str(device),
                 random_state=0, verbose=False).fit(X)
    model.score_samples(X[:64], n_lattice=n_lattice, n_shifts=1)  # warm-up
    bench_kernel._sync(device)
    t0 = time.perf_counter()
    ll = model.score_samples(X, n_lattice=n_lattice, n_shifts=n_shifts)
    bench_kernel._sync(device)
    dt = time.perf_counter() - t0
    return {"n_items": n_items, "n_lattice": n_lattice, "n_shifts": n_shifts, "seconds": dt,
            "items_per_s": n_items / dt, "decoded_points_per_s": n_lattice * n_shifts / dt,
            "mean_log_likelihood": float(np.mean(ll))}


def bench_digits(device: torch.device, *, n_lattices=(987, 2584), epochs: int = 100, batch_size: int = 128,
                 lr: float = 3e-3, seed: int = 0) -> list[dict]:
    """The digits benchmark's model on CUDA: fit time and held-out log p(x)."""
    X, _ = bench_train.load_digits_binary(source="sklearn")
    Xb = (X > 0.5).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(Xb))
    te, tr = perm[:360], perm[360:]
    rows = []
    for m in n_lattices:
        logger.info("digits: m=%d, %d epochs", m, epochs)
        t0 = time.perf_counter()
        model = QLVM(2, likelihood="bernoulli", n_lattice=m, batch_size=batch_size, max_epochs=epochs,
                     lr=lr, random_state=seed, device=str(device), verbose=False).fit(Xb[tr])
        bench_kernel._sync(device)
        fit_s = time.perf_counter() - t0
        ev = model.evaluate(Xb[te], n_lattice=10946, n_shifts=4, random_state=1000 + seed)
        rows.append({"n_lattice": m, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                     "fit_s": fit_s, "steps": epochs * math.ceil(len(tr) / batch_size),
                     "test_log_likelihood": ev["log_likelihood"], "test_shift_stderr": ev["stderr"],
                     "train_log_likelihood": float(model.history_["train_log_likelihood"][-1])})
    return rows


def format_report(res: dict) -> str:
    env = res["environment"]
    lines = [f"GPU benchmark: {env.get('device_name')} (capability {env.get('capability')}, "
             f"{env.get('memory_gib', 0):.0f} GiB), torch {env['torch']}, CUDA {env.get('cuda_runtime')}, "
             f"TF32 matmul={env.get('tf32_matmul')} cuDNN={env.get('tf32_cudnn')}", "",
             bench_kernel.format_report(res["kernel"]), "",
             "conv decoder 128x128 training (QLVM.fit, 4096 spectrogram-like items):",
             f"   {'m':>5}{'B':>6}{'prec':>6}{'ms/step':>9}{'steps/s':>9}{'items/s':>9}"
             f"{'s/epoch(10k)':>13}{'CUDA peak GiB':>14}"]
    for r in res["conv_training"]:
        lines.append(f"   {r['n_lattice']:>5}{r['batch_size']:>6}{r['precision']:>6}{1e3 * r['step_s']:>9.1f}"
                     f"{r['steps_per_s']:>9.1f}{r['items_per_s']:>9.0f}{r['epoch_s_per_10k_items']:>13.2f}"
                     f"{r.get('cuda_peak_gib', float('nan')):>14.2f}")
    s = res["scoring"]
    lines += ["", f"scoring: {s['n_items']} items x {s['n_shifts']} shifts x {s['n_lattice']} points in "
                  f"{s['seconds']:.2f} s ({s['items_per_s']:.0f} items/s)", "",
              "digits (binarized, Bernoulli, MLP), held-out log p(x) with 4 x 10946 points:"]
    for r in res["digits"]:
        lines.append(f"   m={r['n_lattice']:>5}: {r['epochs']} epochs ({r['steps']} steps) in {r['fit_s']:.1f} s; "
                     f"test log p {r['test_log_likelihood']:.3f} (shift s.e. {r['test_shift_stderr']:.1e}); "
                     f"train {r['train_log_likelihood']:.3f}")
    lines.append(f"\ntotal {res['seconds']:.0f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test, not a benchmark)")
    parser.add_argument("--device", default="cuda",
                        help="cuda (default); 'cpu' only to smoke-test this script's code with --quick")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    res = {"environment": environment()}
    device = torch.device(args.device)
    if device.type == "cuda" and not res["environment"]["cuda"]:
        logger.warning("no CUDA device here (torch.cuda.is_available() is False): GPU benchmark skipped")
        print("GPU benchmark skipped: no CUDA device")
    else:
        res["kernel"] = bench_kernel.run_all(device, repeats=10, quick=args.quick)
        if args.quick:
            res["conv_training"] = bench_conv_training(device, n_items=512, n_lattice=89, batch_sizes=(64,),
                                                       epochs=2)
            res["scoring"] = bench_scoring(device, n_items=128, n_lattice=987, n_shifts=2)
            res["digits"] = bench_digits(device, n_lattices=(55,), epochs=2)
        else:
            res["conv_training"] = bench_conv_training(device)
            res["scoring"] = bench_scoring(device)
            res["digits"] = bench_digits(device)
        res["seconds"] = time.perf_counter() - t0
        print(format_report(res))
    if args.json is not None:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
