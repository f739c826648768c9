"""Time to a converged map: held-out log p(x) against wall time for training settings side by side.

Every configuration trains on the same items with the same held-out split and seed, in one run
of this script (so machine load affects them alike), and reports: epochs run, whether it ended
by early stopping or at the epoch cap, wall time, the best validation estimate, the held-out
log p(x) on the split (scored at the evaluation lattice), and the first wall time at which its
validation curve reached the *old* defaults' best validation score (the time-to-quality ratio).

Data sets:

- ``readme``: the README main job's own syllables (Bengalese finch, fetched through the data
  manifest ``bengalese_finch_pykanto``; segmented and spectrogrammed with the
  ``bengalese_finch`` preset into a syllable store, then read lazily);
- ``digits``: scikit-learn's 8x8 digits in [0, 1] (Gaussian likelihood; cheap).

Configurations: ``old`` (lr 1e-3, constant, one lattice, raw early stopping, patience 20,
max 150 epochs — the job's settings before this change), ``lr3e-3`` (only the learning rate
changed) and ``auto`` (lr 3e-3 with ``schedule="auto"``: warm-up, reduce-on-plateau, a
growing lattice, median-smoothed early stopping).

Usage::

    python benchmarks/bench_time_to_map.py --data readme --json out/ttm_readme.json
    python benchmarks/bench_time_to_map.py --data digits
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_time_to_map")

CONFIGS = {
    "old": dict(lr=1e-3, schedule="none", patience=20),
    "lr3e-3": dict(lr=3e-3, schedule="none", patience=20),
    "auto": dict(lr=3e-3, schedule="auto", patience=20),
}


def readme_items(workdir: Path):
    """The README job's syllable spectrograms as a lazily read array (N, 128, 128)."""
    from vocalatent.data.manifests import fetch
    from vocalatent.data.store import SyllableStore

    data = fetch("bengalese_finch_pykanto")
    out = workdir / "store"
    if not (out / "syllables.h5").is_file():
        subprocess.run([sys.executable, "-m", "vocalatent", "spectrograms", str(data), "-o", str(out),
                        "-p", "bengalese_finch", "-q"], check=True)
    store = SyllableStore(out / "syllables.h5")
    return store.spectrograms, "gaussian", {}


def digits_items():
    from sklearn.datasets import load_digits

    X = (load_digits().data / 16.0).astype(np.float32)
    return X, "gaussian", {"decoder": "mlp"}


def split(n: int, fraction: float, seed: int):
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else np.asarray(X[np.sort(idx)], dtype=np.float32)


def run_config(name, params, X_train, X_val, likelihood, extra, *, max_epochs, seed, n_eval):
    from vocalatent import QLVM

    model = QLVM(2, likelihood=likelihood, max_epochs=max_epochs, random_state=seed, verbose=False,
                 **extra, **params)
    t0 = time.perf_counter()
    model.fit(X_train, validation=X_val)
    fit_s = time.perf_counter() - t0
    hist = model.history_
    ev = model.evaluate(X_val, n_lattice=n_eval, n_shifts=2)
    return {"config": name, "params": params, "epochs": int(model.n_epochs_),
            "ended_by": "early stopping" if model.n_epochs_ < max_epochs else "epoch cap",
            "fit_seconds": fit_s, "best_val": float(np.nanmax(hist["val_log_likelihood"])),
            "heldout": float(ev["log_likelihood"]), "heldout_stderr": float(ev["stderr"]),
            "n_eval_lattice": int(ev.get("n_lattice", n_eval)),
            "converged": ev.get("converged_fraction"),
            "curve_seconds": [float(s) for s in hist["seconds"]],
            "curve_val": [float(v) for v in hist["val_log_likelihood"]]}


def time_to_reach(res, target):
    for s, v in zip(res["curve_seconds"], res["curve_val"]):
        if math.isfinite(v) and v >= target:
            return s
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("readme", "digits"), default="digits")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--max-epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-eval", type=int, default=2584)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        X, likelihood, extra = readme_items(Path(tmp)) if args.data == "readme" else digits_items()
        n = int(X.shape[0])
        tr, va = split(n, 0.1, args.seed)
        X_train, X_val = take(X, tr), take(X, va)
        results = []
        for name in args.configs:
            res = run_config(name, CONFIGS[name], X_train, X_val, likelihood, extra,
                             max_epochs=args.max_epochs, seed=args.seed, n_eval=args.n_eval)
            results.append(res)
            logger.info("%-7s %3d epochs (%s) %7.1f s  best val %.2f  held-out %.2f ± %.2f",
                        name, res["epochs"], res["ended_by"], res["fit_seconds"], res["best_val"],
                        res["heldout"], res["heldout_stderr"])
    old = next((r for r in results if r["config"] == "old"), None)
    if old is not None:
        for r in results:
            t = time_to_reach(r, old["best_val"])
            r["seconds_to_old_best"] = t
            logger.info("%-7s reaches the old defaults' best validation (%.2f) after %s", r["config"],
                        old["best_val"], "never" if t is None else f"{t:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": args.data, "n_items": n, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
