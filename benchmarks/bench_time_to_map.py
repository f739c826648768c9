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
- ``digits``: scikit-learn's 8x8 digits in [0, 1] (Gaussian likelihood; cheap);
- ``synth``: ``--n-synth`` (10,000) syllables of 8 known types sung by 2 birds
  (:mod:`vocalatent.data.repertoire`, seed 0), as small ``--synth-px`` x ``--synth-px``
  (default 32 x 32, "window" time mode) spectrograms so the set fits the loaded 2-core machine;
  cached under ``--cache``, keyed on the size and on the source of the modules that render it
  (a changed generator or spectrogram makes a new set; until session 9 the key was the size
  alone, so the 10k tables from 2026-12-01 14:51 UTC to session 8 ran on the set rendered at
  11:07 that day, before window-mode spectrograms masked the columns outside a syllable).

For data with labels (``synth``, ``digits``) every configuration also reports the map's label
k-NN accuracy (k = 5, fitted on the training items' map positions, scored on the held-out
items; on the torus the positions are (cos, sin) of each angle). The ``vae-umap``
configuration is the AVA recipe with this package's own VAE: a 32-D
:class:`vocalatent.baselines.VAE` on the same decoder family, then a 2-D UMAP of its latent
means (fitted on all items); its held-out figure is its importance-sampled estimate
(``VAE.iwae_bound``, k = 64: a lower bound), not the lattice estimate.

Configurations: ``old`` (lr 1e-3, constant, one lattice, raw early stopping, patience 20,
max 150 epochs — the job's settings before this change), ``lr3e-3`` (only the learning rate
changed), ``auto`` (lr 3e-3 with ``schedule="auto"``: warm-up, reduce-on-plateau, a
growing lattice, median-smoothed early stopping, the weight average), ``new`` (the vocal
presets' training: ``auto`` with patience 10, the cost model's batch and a 400-epoch cap) and
``new-unaveraged`` (``new`` without the weight average, ``average_epochs=0``). Until the
weight average became part of ``schedule="auto"`` (session 8), ``"schedule": "auto"`` in a
``--config`` meant no average; add ``"average_epochs": 0`` to rerun the earlier tables.

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
    "old": dict(lr=1e-3, schedule="none", patience=20, batch_size=256),
    "lr3e-3": dict(lr=3e-3, schedule="none", patience=20),
    "auto": dict(lr=3e-3, schedule="auto", patience=20),
    "auto-b1024": dict(lr=3e-3, schedule="auto", patience=20, batch_size=1024),
    # the vocal presets' training (pipelines/default.toml), with and without the weight
    # average that schedule="auto" includes
    "new": dict(lr=3e-3, schedule="auto", patience=10, batch_size="auto", max_epochs=400),
    "new-unaveraged": dict(lr=3e-3, schedule="auto", patience=10, batch_size="auto", max_epochs=400,
                           average_epochs=0),
    "vae-umap": dict(lr=1e-3, patience=20),
}


def readme_items(workdir: Path, store: Path | None = None):
    """The README job's syllable spectrograms (N, 128, 128), read into memory.

    ``store``: the job's own ``syllables.h5`` (``OUT/syllables.h5`` of a run of the README
    command); otherwise the recordings are fetched and prepared with the job's preset.
    """
    from vocalatent.data.manifests import fetch
    from vocalatent.data.store import SyllableStore

    if store is not None:
        with SyllableStore(store) as st:
            return np.asarray(st.spectrograms[:], dtype=np.float32), "gaussian", {}
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


def synth_items(cache: Path, n: int, px: int):
    """``n`` syllables of known types rendered by the repertoire generator, (n, px, px) in [0, 1]."""
    from vocalatent.data.repertoire import renderer_digest

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"synth_{n}_{px}_{renderer_digest()}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["X"], f["y"]
    from vocalatent.audio.spectrogram import SpectrogramParams
    from vocalatent.data.repertoire import RepertoireSpec, make_repertoire, repertoire_recordings, \
        repertoire_spectrograms

    rep = make_repertoire(RepertoireSpec(n_types=8, n_birds=2, n_syllables=n, seed=0))
    audio, seg = repertoire_recordings(rep, n_recordings=max(4, n // 500))
    params = SpectrogramParams(n_freq=px, n_time=px, f_min=500.0, f_max=11000.0,
                               time_mode="window", window_dur_s=0.3, level="recording")
    X = repertoire_spectrograms(audio, seg, params, level="recording").astype(np.float32)
    y = seg["type"].to_numpy()
    np.savez(path, X=X, y=y)
    return X, y


def knn_accuracy(z_train, y_train, z_val, y_val, *, torus: bool, k: int = 5) -> float:
    """Label accuracy of a k-NN classifier fitted on the training items' map positions."""
    from sklearn.neighbors import KNeighborsClassifier

    def feat(z):
        z = np.asarray(z, dtype=float)
        return np.concatenate([np.cos(2 * np.pi * z), np.sin(2 * np.pi * z)], axis=1) if torus else z

    clf = KNeighborsClassifier(n_neighbors=k).fit(feat(z_train), y_train)
    return float(clf.score(feat(z_val), y_val))


def split(n: int, fraction: float, seed: int):
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def take(X, idx):
    return X[idx] if isinstance(X, np.ndarray) else np.asarray(X[np.sort(idx)], dtype=np.float32)


def _set_threads(threads):
    """One torch thread count per (spawned) benchmark process; None keeps torch's default."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def run_vae_umap(name, params, X_train, X_val, likelihood, extra, *, max_epochs, seed, labels,
                 threads=None):
    import umap

    from vocalatent.baselines import VAE

    _set_threads(threads)

    model = VAE(32, likelihood=likelihood, max_epochs=max_epochs, random_state=seed, verbose=False,
                **extra, **params)
    t0 = time.perf_counter()
    model.fit(X_train, validation=X_val)
    z_all = np.concatenate([model.transform(X_train), model.transform(X_val)])
    emb = umap.UMAP(n_components=2, random_state=seed).fit_transform(z_all)
    total_s = time.perf_counter() - t0
    hist = model.history_
    bound = model.iwae_bound(X_val, k=64, random_state=seed)     # a lower bound on log p(x)
    ev = {"log_likelihood": float(np.mean(bound)), "stderr": float(np.std(bound) / np.sqrt(bound.size))}
    val_key = next(k for k in hist if k.startswith("val_"))
    res = {"config": name, "params": params, "epochs": int(model.n_epochs_),
           "ended_by": "early stopping" if model.n_epochs_ < max_epochs else "epoch cap",
           "fit_seconds": total_s, "best_val": float(np.nanmax(hist[val_key])), "val_metric": val_key,
           "heldout": float(ev["log_likelihood"]), "heldout_stderr": float(ev.get("stderr", math.nan)),
           "heldout_estimator": "IWAE bound, k=64 (a lower bound)",
           "curve_seconds": [float(s) for s in hist["seconds"]],
           "curve_val": [float(v) for v in hist[val_key]]}
    if labels is not None:
        n_tr = X_train.shape[0]
        res["knn_accuracy"] = knn_accuracy(emb[:n_tr], labels[0], emb[n_tr:], labels[1], torus=False)
    return res


def run_config(name, params, X_train, X_val, likelihood, extra, *, max_epochs, seed, n_eval,
               labels=None, job=None, threads=None):
    from vocalatent import QLVM

    _set_threads(threads)

    if name.startswith("vae-umap"):
        return run_vae_umap(name, params, X_train, X_val, likelihood, extra, max_epochs=max_epochs,
                            seed=seed, labels=labels)
    params = dict(params)
    cap = int(params.pop("max_epochs", max_epochs))
    if job is not None:
        # the README job's own model: its preset's [model] table on CPU (m = 377, evaluation
        # lattice 2584 with 2 shifts), then only this configuration's settings changed
        from vocalatent.workflow import make_model

        model = make_model(job, device="cpu", seed=seed, verbose=False)
        model.set_params(max_epochs=cap, **params)
    else:
        model = QLVM(2, likelihood=likelihood, max_epochs=cap, random_state=seed, verbose=False,
                     **extra, **params)
    t0 = time.perf_counter()
    model.fit(X_train, validation=X_val)
    fit_s = time.perf_counter() - t0
    hist = model.history_
    t1 = time.perf_counter()
    # the job's held-out figure: the adaptive, convergence-checked estimate
    ev = (model.evaluate(X_val, n_lattice="auto") if job is not None
          else model.evaluate(X_val, n_lattice=n_eval, n_shifts=2))
    eval_s = time.perf_counter() - t1
    knn = None
    if labels is not None:
        knn = knn_accuracy(model.transform(X_train, n_lattice=n_eval, n_shifts=1), labels[0],
                           model.transform(X_val, n_lattice=n_eval, n_shifts=1), labels[1],
                           torus=True)
    return {"knn_accuracy": knn, "config": name, "params": params, "epochs": int(model.n_epochs_),
            "ended_by": "early stopping" if model.n_epochs_ < cap else "epoch cap", "max_epochs": cap,
            "fit_seconds": fit_s, "eval_seconds": eval_s,
            "batch_size": int(getattr(model, "batch_size_", model.batch_size)),
            "n_lattice": int(model.n_lattice_), "best_val": float(np.nanmax(hist["val_log_likelihood"])),
            "heldout": float(ev["log_likelihood"]), "heldout_stderr": float(ev["stderr"]),
            "n_eval_lattice": int(ev.get("n_lattice", n_eval)),
            "converged": ev.get("converged_fraction"),
            "curve_n_lattice": [int(v) for v in hist.get("n_lattice", [])],
            "curve_lr": [float(v) for v in hist.get("lr", [])],
            "curve_seconds": [float(s) for s in hist["seconds"]],
            "curve_val": [float(v) for v in hist["val_log_likelihood"]]}


def time_to_reach(res, target):
    for s, v in zip(res["curve_seconds"], res["curve_val"]):
        if math.isfinite(v) and v >= target:
            return s
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("readme", "digits", "synth"), default="digits")
    ap.add_argument("--n-synth", type=int, default=10_000)
    ap.add_argument("--synth-px", type=int, default=32)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vocalatent_bench")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--config", action="append", default=[], metavar="NAME=JSON",
                    help='an extra configuration, e.g. \'fast={"lr": 0.003, "schedule": "auto"}\' '
                         '(QLVM arguments; "max_epochs" overrides --max-epochs); run it by adding '
                         'NAME to --configs')
    ap.add_argument("--store", type=Path,
                    help="--data readme: the job's own syllables.h5 (OUT/syllables.h5 of a README "
                         "run) instead of fetching and preparing the recordings")
    ap.add_argument("--max-epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-eval", type=int, default=2584)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--parallel", action="store_true",
                    help="run the configurations side by side, one process (one thread) each")
    args = ap.parse_args(argv)
    for item in args.config:
        name, _, text = item.partition("=")
        CONFIGS[name] = json.loads(text)
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; known: {sorted(CONFIGS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        y = None
        job = None
        if args.data == "readme":
            from vocalatent.workflow import resolve

            X, likelihood, extra = readme_items(Path(tmp), args.store)
            job = resolve(pipeline="bengalese_finch")
        elif args.data == "synth":
            X, y = synth_items(args.cache, args.n_synth, args.synth_px)
            X = X.reshape(X.shape[0], -1)          # small images: the MLP decoder (both models)
            likelihood, extra = "gaussian", {"decoder": "mlp"}
        else:
            X, likelihood, extra = digits_items()
            from sklearn.datasets import load_digits
            y = load_digits().target
        n = int(X.shape[0])
        if job is not None:     # the job's own split
            from vocalatent.workflow import split_indices

            tr, va = split_indices(n, float(job["model"]["validation"]), args.seed)
        else:
            tr, va = split(n, 0.1, args.seed)
        X_train, X_val = take(X, tr), take(X, va)
        labels = None if y is None else (y[tr], y[va])
        results = []
        # --parallel: one thread per process (spawned processes would otherwise each start
        # torch's default of one thread per core, and oversubscribed threads spin)
        kw = dict(max_epochs=args.max_epochs, seed=args.seed, n_eval=args.n_eval, labels=labels,
                  threads=1 if args.parallel else None)
        qkw = dict(kw, job=job)
        pending = {}
        if args.parallel:
            # every configuration in its own process at the same time: on a shared, loaded
            # machine they then see the same load (one thread each)
            import concurrent.futures as cf
            import multiprocessing as mp

            pool = cf.ProcessPoolExecutor(max_workers=len(args.configs), mp_context=mp.get_context("spawn"))
            pending = {name: pool.submit(run_config, name, CONFIGS[name], X_train, X_val, likelihood,
                                         extra, **(kw if name.startswith("vae-umap") else qkw))
                       for name in args.configs}
        for name in args.configs:
            res = (pending[name].result() if name in pending else
                   run_config(name, CONFIGS[name], X_train, X_val, likelihood, extra,
                              **(kw if name.startswith("vae-umap") else qkw)))
            res["parallel"] = bool(args.parallel)
            results.append(res)
            logger.info("%-8s %3d epochs (%s) %7.1f s  best val %.2f  held-out %.2f ± %.2f  k-NN %s",
                        name, res["epochs"], res["ended_by"], res["fit_seconds"], res["best_val"],
                        res["heldout"], res["heldout_stderr"], res.get("knn_accuracy"))
            if args.json:   # partial results survive a killed run
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"data": args.data, "n_items": n, "results": results},
                                                indent=1))
    old = next((r for r in results if r["config"] == "old"), None)
    if old is not None:
        for r in results:
            if r["config"].startswith("vae-umap"):
                continue      # its validation curve is a bound, not the lattice estimate
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
