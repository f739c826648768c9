"""Training throughput of the QLVM estimator (``QLVM.fit``), and a check of the cost model.

Measures, through the public ``QLVM.fit`` (shift draw, decoder, likelihood kernel, logsumexp,
backward, Adam step — everything a real run does):

- the default 128 x 128 convolutional decoder (``QLVM(latent_dim=2, decoder="conv")``) on
  random spectrogram-like images in [0, 1] (harmonic stacks with frequency sweeps, onsets and
  offsets, and noise), for n_lattice m in {377, 987} and batch sizes B in {64, 256};
- an MLP decoder on the real scikit-learn digits (1,437 training items, 64 pixels).

For each configuration: seconds per step, steps/s, items/s, seconds per epoch of 10,000 items,
and the peak resident memory of the process that ran it (each configuration runs in its own
fresh Python process on CPU, so peaks do not mix).

Cost model (docs/method.md): one step costs m decoder passes, shared by the batch, plus
~6 B m D flops in the likelihood kernel. On CPU with a conv decoder the decoder dominates, so
the time per step should grow about linearly in m and only weakly in B; the script prints the
measured ratios next to the model's.

Usage::

    python benchmarks/bench_train.py                   # CPU, all configurations
    python benchmarks/bench_train.py --json out/train.json
    python benchmarks/bench_train.py --quick           # tiny sizes: a smoke test

Importable: ``benchmarks/gpu_bench.py`` reuses :func:`spectrogram_like`, :func:`measure_fit` and
:func:`load_digits_binary`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_train")

ROOT = Path(__file__).resolve().parents[1]
EPOCH_ITEMS = 10_000


# ------------------------------------------------------------------------------------ data
def spectrogram_like(n: int, shape=(128, 128), *, seed: int = 0) -> np.ndarray:
    """Random syllable-spectrogram-like images.

    Each item is a harmonic stack (1-4 harmonics with decaying amplitude) whose fundamental
    sweeps linearly over the item's duration, switched on between a random onset and offset,
    on a noise floor, clipped to [0, 1].

    Parameters
    ----------
    n : int
        Number of items.
    shape : (int, int)
        (F, T) frequency bins x time frames.
    seed : int
        Seed of the NumPy generator.

    Returns
    -------
    X : np.ndarray [shape=(n, F, T), dtype=float32, range=[0, 1]]
    """
    rng = np.random.default_rng(seed)
    f_bins, t_bins = shape
    f = np.arange(f_bins, dtype=np.float32)[None, :, None]
    t = np.linspace(0, 1, t_bins, dtype=np.float32)[None, None, :]
    f0_start = rng.uniform(0.05, 0.3, (n, 1, 1)).astype(np.float32) * f_bins
    f0_end = f0_start * rng.uniform(0.6, 1.6, (n, 1, 1)).astype(np.float32)
    f0 = f0_start + (f0_end - f0_start) * t                     # (n, 1, T)
    width = rng.uniform(1.0, 3.0, (n, 1, 1)).astype(np.float32)
    n_harm = rng.integers(1, 5, n)
    out = np.zeros((n, f_bins, t_bins), dtype=np.float32)
    for k in range(1, 5):
        amp = np.where(n_harm >= k, 0.9 / k, 0.0).astype(np.float32)[:, None, None]
        out += amp * np.exp(-0.5 * ((f - k * f0) / width) ** 2)
    onset = rng.uniform(0.0, 0.3, (n, 1, 1))
    offset = rng.uniform(0.7, 1.0, (n, 1, 1))
    out *= ((t >= onset) & (t <= offset)).astype(np.float32)
    out += 0.05 * rng.random((n, f_bins, t_bins), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def load_digits_binary(*, source: str = "vocalatent"):
    """The 1,797 scikit-learn digits in [0, 1] and their labels.

    ``source="vocalatent"`` reads them through the project's data manifests
    (``vocalatent.data.images.load_digits``); ``"sklearn"`` through ``sklearn.datasets`` (same
    pixels, for machines without the data layer's dependencies).

    Returns
    -------
    X : np.ndarray [shape=(1797, 64), dtype=float32, range=[0, 1]]
    y : np.ndarray [shape=(1797,), dtype=int64]
    """
    if source == "vocalatent":
        from vocalatent.data.images import load_digits

        return load_digits()
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


# ------------------------------------------------------------------------------------ measurement
def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure_fit(X, *, decoder: str, likelihood: str = "gaussian", n_lattice: int, batch_size: int,
                epochs: int = 3, device: str = "cpu", precision: str = "32", seed: int = 0) -> dict:
    """Fit a 2-D QLVM for ``epochs`` epochs and report its per-step time.

    The first epoch is a warm-up (allocations, kernel selection); the step time is the best
    later epoch's time divided by its number of steps.

    Returns
    -------
    result : dict
        ``step_s``, ``steps_per_s``, ``items_per_s``, ``epoch_s_per_10k_items``, ``epoch_s``
        (this data set), per-epoch seconds, ``peak_rss_gib`` (process peak so far) and, on
        CUDA, ``cuda_peak_gib``.
    """
    import torch

    from vocalatent.model import QLVM

    n = len(X)
    steps = math.ceil(n / batch_size)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    model = QLVM(2, decoder=decoder, likelihood=likelihood, n_lattice=n_lattice,
                 batch_size=batch_size, max_epochs=epochs, random_state=seed, device=device,
                 precision=precision, verbose=False)
    t0 = time.perf_counter()
    model.fit(X)
    wall = time.perf_counter() - t0
    cum = np.asarray(model.history_["seconds"])
    per_epoch = np.diff(np.concatenate([[0.0], cum]))
    best = float(per_epoch[1:].min()) if epochs > 1 else float(per_epoch[0])
    step = best / steps
    res = {"decoder": decoder, "likelihood": likelihood, "n_lattice": n_lattice,
           "batch_size": batch_size, "n_items": n, "n_features": int(np.prod(X.shape[1:])),
           "device": device, "precision": precision, "epochs": epochs, "steps_per_epoch": steps,
           "epoch_seconds": per_epoch.tolist(), "fit_wall_s": wall, "epoch_s": best,
           "step_s": step, "steps_per_s": 1.0 / step, "items_per_s": batch_size / step,
           "epoch_s_per_10k_items": math.ceil(EPOCH_ITEMS / batch_size) * step,
           "train_log_likelihood": float(model.history_["train_log_likelihood"][-1]),
           "peak_rss_gib": _maxrss_bytes() / 2**30}
    if dev.type == "cuda":
        res["cuda_peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return res


def run_config(cfg: dict) -> dict:
    """Build the data a configuration names and measure it (in this process)."""
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg["threads"]))
    if cfg["data"] == "spectrogram":
        X = spectrogram_like(cfg["n_items"], tuple(cfg["shape"]), seed=0)
    elif cfg["data"] == "digits":
        X, _ = load_digits_binary(source=cfg.get("source", "vocalatent"))
        X = X[np.random.default_rng(0).permutation(len(X))[:cfg["n_items"]]]
    else:
        raise ValueError(f"unknown data {cfg['data']!r}")
    rss_data = _maxrss_bytes()
    res = measure_fit(X, decoder=cfg["decoder"], n_lattice=cfg["n_lattice"],
                      batch_size=cfg["batch_size"], epochs=cfg["epochs"],
                      device=cfg.get("device", "cpu"))
    res["data"] = cfg["data"]
    res["threads"] = cfg.get("threads")
    res["peak_rss_before_fit_gib"] = rss_data / 2**30
    return res


def run_config_subprocess(cfg: dict) -> dict:
    """:func:`run_config` in a fresh Python process (so that its peak RSS is its own)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("VOCALATENT_NO_PROGRESS", "1")
    code = f"import json, bench_train as bt; print(json.dumps(bt.run_config(json.loads({json.dumps(json.dumps(cfg))}))))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def configs(quick: bool = False) -> list[dict]:
    """The configurations of the CPU benchmark (``quick``: tiny smoke-test sizes)."""
    if quick:
        conv = [dict(data="spectrogram", shape=[32, 32], decoder="conv", n_lattice=m, batch_size=b,
                     n_items=b, epochs=3) for m in (34, 89) for b in (8, 32)]
        return conv + [dict(data="digits", decoder="mlp", n_lattice=55, batch_size=256, n_items=512, epochs=2)]
    # One step per epoch for the conv decoder (n_items = batch size): epoch 1 warms up, the
    # best of epochs 2-3 is the step time.
    conv = [dict(data="spectrogram", shape=[128, 128], decoder="conv", n_lattice=m, batch_size=b,
                 n_items=b, epochs=3) for m in (377, 987) for b in (64, 256)]
    digits = [dict(data="digits", decoder="mlp", n_lattice=m, batch_size=256, n_items=1437, epochs=3)
              for m in (987, 2584)]
    return conv + digits


def cost_model_check(rows: list[dict]) -> list[str]:
    """Compare measured step-time ratios with the cost model's expectations."""
    conv = {(r["n_lattice"], r["batch_size"]): r["step_s"] for r in rows if r["decoder"] == "conv"}
    ms = sorted({k[0] for k in conv})
    bs = sorted({k[1] for k in conv})
    lines = []
    if len(ms) >= 2:
        m0, m1 = ms[0], ms[-1]
        for b in bs:
            if (m0, b) in conv and (m1, b) in conv:
                lines.append(f"   B={b}: step(m={m1}) / step(m={m0}) = {conv[m1, b] / conv[m0, b]:.2f} "
                             f"(linear in m: {m1 / m0:.2f})")
    if len(bs) >= 2:
        b0, b1 = bs[0], bs[-1]
        for m in ms:
            if (m, b0) in conv and (m, b1) in conv:
                lines.append(f"   m={m}: step(B={b1}) / step(B={b0}) = {conv[m, b1] / conv[m, b0]:.2f} "
                             f"(B grew {b1 / b0:.0f}x; items/s grew {conv[m, b0] / conv[m, b1] * b1 / b0:.1f}x)")
    return lines


def format_report(rows: list[dict], header: str = "") -> str:
    lines = [header] if header else []
    lines.append(f"{'decoder':<8}{'data':<13}{'D':>6}{'m':>6}{'B':>6}{'s/step':>9}{'steps/s':>9}"
                 f"{'items/s':>9}{'s/epoch(10k)':>13}{'peak RSS GiB':>13}")
    for r in rows:
        lines.append(f"{r['decoder']:<8}{r['data']:<13}{r['n_features']:>6}{r['n_lattice']:>6}"
                     f"{r['batch_size']:>6}{r['step_s']:>9.3f}{r['steps_per_s']:>9.2f}"
                     f"{r['items_per_s']:>9.0f}{r['epoch_s_per_10k_items']:>13.0f}{r['peak_rss_gib']:>13.2f}")
    digits = [r for r in rows if r["data"] == "digits"]
    for r in digits:
        lines.append(f"digits MLP m={r['n_lattice']} B={r['batch_size']}: one epoch of {r['n_items']} "
                     f"items takes {r['epoch_s']:.2f} s")
    check = cost_model_check(rows)
    if check:
        lines += ["cost model check (conv decoder):"] + check
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, not a benchmark)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in each run (default: torch's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = []
    for cfg in configs(args.quick):
        if args.threads:
            cfg["threads"] = args.threads
        logger.info("running %s", cfg)
        rows.append(run_config_subprocess(cfg))
        logger.info("  %.3f s/step", rows[-1]["step_s"])
    import torch

    header = (f"CPU training throughput (torch {torch.__version__}, "
              f"{args.threads or torch.get_num_threads()} threads)")
    print(format_report(rows, header))
    if args.json is not None:
        sys.path.insert(0, str(ROOT))
        from vocalatent._utils import atomic_path

        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
