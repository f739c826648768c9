"""Held-out log p(x) of 2-D QLVMs on the real scikit-learn digits as the training lattice grows.

Trains ``QLVM(latent_dim=2, likelihood="bernoulli")`` (MLP decoder, default widths) on the
1,797 scikit-learn digits binarized at 0.5 (pixel intensity > 8 of 16), with a fixed
train/test split (1,437 / 360 items, permutation from ``numpy.random.default_rng(0)``), for
training lattices n_lattice in {55, 233, 987, 2584} with the same epochs, batch size,
learning rate and seeds. Each model is scored on the test items with
``model.evaluate(X_test, n_lattice=10946, n_shifts=4)`` (the union of 4 shifted 10,946-point
Fibonacci lattices; nats per item, with the − log m term).

The Bernoulli likelihood on binarized pixels is used because it is a proper discrete
likelihood (log p <= 0, comparable across models); a Gaussian density on 17-level pixels is
unbounded as a learned variance shrinks on the many constant border pixels.

Writes (``--out``, default ``out/digits_lattice``): ``results.json`` (per run and aggregated),
and the figures ``docs/figures/method_digits_lattice.png`` (held-out log p vs n_lattice) and
``docs/figures/method_digits_map.png`` (decoded digits tiled over the torus, and the test
digits' embeddings coloured by label) unless ``--no-figures``.

Usage::

    python benchmarks/bench_digits_lattice.py                    # 2 seeds, 100 epochs, lr 3e-3
    python benchmarks/bench_digits_lattice.py --seeds 0 1 2 --epochs 150
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vocalatent._utils import atomic_path  # noqa: E402
from vocalatent.model import QLVM  # noqa: E402

logger = logging.getLogger("bench_digits_lattice")

N_LATTICES = (55, 233, 987, 2584)
N_EVAL, N_EVAL_SHIFTS = 10946, 4


def digits_split(*, seed: int = 0, n_test: int = 360, threshold: float = 0.5, source: str = "vocalatent"):
    """Binarized digits and a fixed train/test split.

    ``source``: ``"vocalatent"`` reads the digits through the project's data manifests,
    ``"sklearn"`` through ``sklearn.datasets`` (the same 1,797 images; for machines without
    the data layer, e.g. the GPU machine).

    Returns
    -------
    X_train, X_test : np.ndarray [shape=(n, 64), dtype=float32, values {0, 1}]
    y_train, y_test : np.ndarray [shape=(n,), dtype=int64]
    """
    from bench_train import load_digits_binary

    X, y = load_digits_binary(source=source)
    Xb = (X > threshold).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(X))
    te, tr = perm[:n_test], perm[n_test:]
    return Xb[tr], Xb[te], y[tr], y[te]


def train_and_score(X_train, X_test, *, n_lattice: int, seed: int, epochs: int, batch_size: int,
                    lr: float, device: str = "cpu", validation: float | None = None,
                    patience: int = 20, hidden=None):
    """Fit one model and evaluate it on the test items; return (model, result dict).

    With ``validation`` (a fraction of X_train, drawn with the seed: the same items for every
    n_lattice) training stops early on the validation log-likelihood and keeps the best epoch.
    """
    t0 = time.perf_counter()
    model = QLVM(2, likelihood="bernoulli", n_lattice=n_lattice, batch_size=batch_size,
                 max_epochs=epochs, lr=lr, patience=patience, random_state=seed, device=device,
                 decoder_options=None if hidden is None else dict(hidden=tuple(hidden)), verbose=False)
    model.fit(X_train, validation=validation)
    fit_s = time.perf_counter() - t0
    ev = model.evaluate(X_test, n_lattice=N_EVAL, n_shifts=N_EVAL_SHIFTS, random_state=1000 + seed)
    # The same test items scored with the training lattice size (a lower estimate: m is small).
    at_train_m = model.score(X_test, n_lattice=n_lattice, n_shifts=1, random_state=2000 + seed)
    res = {"n_lattice": n_lattice, "seed": seed, "fit_s": fit_s, "epochs_run": model.n_epochs_,
           "train_log_likelihood": float(model.history_["train_log_likelihood"][-1]),
           "test_log_likelihood": ev["log_likelihood"], "test_shift_stderr": ev["stderr"],
           "test_bits_per_dim": ev["bits_per_dim"], "test_log_likelihood_at_train_m": at_train_m,
           "test_converged_fraction": ev["converged_fraction"]}
    return model, res


def aggregate(runs: list[dict]) -> list[dict]:
    """Mean over seeds per n_lattice, with the standard error over seeds."""
    out = []
    for m in sorted({r["n_lattice"] for r in runs}):
        vals = np.array([r["test_log_likelihood"] for r in runs if r["n_lattice"] == m])
        se = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else math.nan
        out.append({"n_lattice": m, "n_seeds": len(vals), "test_log_likelihood": float(vals.mean()),
                    "stderr_over_seeds": se,
                    "max_shift_stderr": max(r["test_shift_stderr"] for r in runs if r["n_lattice"] == m),
                    # the smallest fraction of test items whose estimate converged (docs/method.md §7.1)
                    "min_converged": min(r.get("test_converged_fraction", float("nan")) for r in runs
                                         if r["n_lattice"] == m),
                    "train_log_likelihood": float(np.mean([r["train_log_likelihood"] for r in runs
                                                           if r["n_lattice"] == m])),
                    "fit_s": float(np.mean([r["fit_s"] for r in runs if r["n_lattice"] == m])),
                    "epochs_run": float(np.mean([r["epochs_run"] for r in runs if r["n_lattice"] == m]))})
    return out


def plot_lattice(runs, agg, path: Path, *, protocol: str) -> None:
    """Held-out log p(x) against the training lattice size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=150)
    for r in runs:
        ax.plot(r["n_lattice"], r["test_log_likelihood"], "o", color="0.6", ms=4, zorder=2)
    ms = [a["n_lattice"] for a in agg]
    mean = [a["test_log_likelihood"] for a in agg]
    err = [0.0 if math.isnan(a["stderr_over_seeds"]) else a["stderr_over_seeds"] for a in agg]
    ax.errorbar(ms, mean, yerr=err, fmt="-o", color="C0", capsize=3, zorder=3,
                label=f"held-out, mean ± s.e. over {agg[0]['n_seeds']} seeds")
    ax.plot(ms, [a["train_log_likelihood"] for a in agg], "--s", color="C1", ms=4,
            label="training items, last epoch (training lattice)")
    ax.set_xscale("log")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.minorticks_off()
    ax.set_xlabel("training lattice size n_lattice (Fibonacci)")
    ax.set_ylabel("log p(x) (nats / digit)")
    ax.set_title(f"2-D QLVM, binarized digits (Bernoulli), {protocol}\n"
                 f"held-out items scored with 4 shifts x {N_EVAL} points", fontsize=8)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_protocols(results: list[tuple[str, dict]], path: Path) -> None:
    """Held-out (left) and training (right) log p(x) vs n_lattice for several protocols.

    ``results``: (label, contents of a results.json written by this script) pairs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=150)
    for k, (label, res) in enumerate(results):
        agg = res["aggregate"]
        ms = [a["n_lattice"] for a in agg]
        off = 1 + 0.03 * (k - (len(results) - 1) / 2)  # spread the markers a little
        for r in res["runs"]:
            ax.plot(r["n_lattice"] * off, r["test_log_likelihood"], ".", color=f"C{k}", alpha=0.4, ms=5)
        ax.errorbar([m * off for m in ms], [a["test_log_likelihood"] for a in agg],
                    yerr=[a["stderr_over_seeds"] for a in agg], fmt="-o", color=f"C{k}", capsize=3,
                    label=f"{label} ({agg[0]['n_seeds']} seeds)")
        ax2.plot(ms, [a["train_log_likelihood"] for a in agg], "-s", color=f"C{k}", ms=4, label=label)
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xticks(ms, [str(m) for m in ms])
        a.minorticks_off()
        a.ticklabel_format(axis="y", useOffset=False)
        a.set_xlabel("training lattice size n_lattice (Fibonacci)")
        a.grid(alpha=0.3)
    ax.set_ylabel("log p(x), nats / digit")
    ax.set_title(f"held-out digits (360), 4 shifts x {N_EVAL} points; mean ± s.e. over seeds", fontsize=8)
    ax2.set_title("training digits: lattice estimate at the training m, last epoch", fontsize=8)
    ax.legend(fontsize=7, loc="lower center")
    fig.suptitle("2-D QLVM on binarized scikit-learn digits (Bernoulli, B=128, lr=3e-3)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_map(model, X_test, y_test, path: Path, *, n_grid: int = 16) -> None:
    """Decoded digits tiled over the torus, and the test digits' embeddings by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = (np.arange(n_grid) + 0.5) / n_grid
    z1, z2 = np.meshgrid(g, g, indexing="xy")            # z1 along columns, z2 along rows
    grid = np.stack([z1.ravel(), z2.ravel()], 1)
    imgs = model.decode(grid).reshape(n_grid, n_grid, 8, 8)
    # one blank (NaN) pixel between tiles so that neighbouring digits do not run together
    padded = np.full((n_grid, n_grid, 9, 9), np.nan)
    padded[:, :, :8, :8] = imgs
    mosaic = padded.transpose(0, 2, 1, 3).reshape(n_grid * 9, n_grid * 9)
    emb = model.transform_dataset(X_test, n_lattice=N_EVAL, n_shifts=2)["embedding"].values

    fig, axes = plt.subplots(1, 2, figsize=(10, 5), dpi=150)
    cmap = matplotlib.colormaps["gray_r"].copy()
    cmap.set_bad("#9ec5e8")
    axes[0].imshow(mosaic, cmap=cmap, extent=(0, 1, 1, 0), vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title(f"decoded P(pixel on) on a {n_grid}x{n_grid} grid of the torus", fontsize=9)
    sc = axes[1].scatter(emb[:, 0], emb[:, 1], c=y_test, cmap="tab10", s=10, vmin=-0.5, vmax=9.5)
    for k in range(10):
        sel = y_test == k
        if sel.any():
            # circular mean of each class's embedding, as a label
            ang = 2 * np.pi * emb[sel]
            c = (np.arctan2(np.sin(ang).mean(0), np.cos(ang).mean(0)) / (2 * np.pi)) % 1
            axes[1].text(c[0], c[1], str(k), fontsize=12, weight="bold", ha="center", va="center",
                         bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
    axes[1].set_xlim(0, 1)
    axes[1].set_ylim(1, 0)
    axes[1].set_aspect("equal")
    axes[1].set_title("held-out digits: posterior circular mean, coloured by label", fontsize=9)
    fig.colorbar(sc, ax=axes[1], ticks=range(10), fraction=0.046)
    for ax in axes:
        ax.set_xlabel("z1")
        ax.set_ylabel("z2")
    fig.suptitle(f"2-D QLVM on the scikit-learn digits (n_lattice={model.n_lattice_}); "
                 "both panels share the torus coordinates", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-lattice", type=int, nargs="+", default=list(N_LATTICES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "digits_lattice")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--validation", type=float, default=None,
                        help="hold out this fraction of the training digits for early stopping")
    parser.add_argument("--patience", type=int, default=20, help="early-stopping patience (epochs)")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="MLP hidden widths (default: the engine's, 256 256)")
    parser.add_argument("--source", choices=("vocalatent", "sklearn"), default="vocalatent",
                        help="where the digits come from (the same pixels either way)")
    parser.add_argument("--combine", nargs="+", metavar="LABEL=RESULTS_JSON", default=None,
                        help="only redraw method_digits_lattice.png from earlier runs' results.json")
    parser.add_argument("--map-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="only redraw method_digits_map.png from a saved model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.combine or args.map_from:
        if args.combine:
            pairs = [item.split("=", 1) for item in args.combine]
            plot_protocols([(label, json.loads(Path(p).read_text())) for label, p in pairs],
                           args.figures / "method_digits_lattice.png")
        if args.map_from:
            _, X_test, _, y_test = digits_split(source=args.source)
            plot_map(QLVM.load(args.map_from, device=args.device), X_test, y_test,
                     args.figures / "method_digits_map.png")
        return 0
    X_train, X_test, y_train, y_test = digits_split(source=args.source)
    runs, best_model = [], None
    config = {"likelihood": "bernoulli (pixels > 0.5)",
              "decoder": f"mlp {tuple(args.hidden) if args.hidden else '(engine default widths)'}, periodic input",
              "validation": args.validation, "patience": args.patience if args.validation else None,
              "n_train": len(X_train), "n_test": len(X_test), "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "seeds": args.seeds,
              "n_eval_lattice": N_EVAL, "n_eval_shifts": N_EVAL_SHIFTS, "device": args.device,
              "source": args.source}
    for seed in args.seeds:
        for m in args.n_lattice:
            model, res = train_and_score(X_train, X_test, n_lattice=m, seed=seed, epochs=args.epochs,
                                         batch_size=args.batch_size, lr=args.lr, device=args.device,
                                         validation=args.validation, patience=args.patience,
                                         hidden=args.hidden)
            runs.append(res)
            logger.info("m=%d seed=%d: test log p = %.3f (shift s.e. %.1e), train %.3f, %d epochs, fit %.0f s",
                        m, seed, res["test_log_likelihood"], res["test_shift_stderr"],
                        res["train_log_likelihood"], res["epochs_run"], res["fit_s"])
            if seed == args.seeds[0] and m == max(args.n_lattice):
                best_model = model
            with atomic_path(args.out / "results.json") as tmp:
                tmp.write_text(json.dumps({"config": config, "runs": runs, "aggregate": aggregate(runs)},
                                          indent=2))
    agg = aggregate(runs)
    print(f"held-out log p(x), nats per digit (test n={len(X_test)}; {N_EVAL_SHIFTS} shifts x {N_EVAL})")
    print(f"{'n_lattice':>10}{'seeds':>7}{'test log p':>12}{'s.e.(seeds)':>13}{'max s.e.(shifts)':>18}"
          f"{'converged':>11}{'train log p':>13}{'epochs':>8}{'fit s':>8}")
    for a in agg:
        print(f"{a['n_lattice']:>10}{a['n_seeds']:>7}{a['test_log_likelihood']:>12.3f}"
              f"{a['stderr_over_seeds']:>13.3f}{a['max_shift_stderr']:>18.1e}{100 * a['min_converged']:>10.1f}%"
              f"{a['train_log_likelihood']:>13.3f}{a['epochs_run']:>8.0f}{a['fit_s']:>8.0f}")
    if not args.no_figures:
        protocol = (f"B={args.batch_size}, lr={args.lr:g}, " + (
            f"early stopping ({args.validation:.0%} validation, patience {args.patience}, "
            f"<= {args.epochs} epochs)" if args.validation else f"{args.epochs} epochs"))
        if args.hidden:
            protocol += f", MLP {tuple(args.hidden)}"
        plot_lattice(runs, agg, args.figures / "method_digits_lattice.png", protocol=protocol)
        plot_map(best_model, X_test, y_test, args.figures / "method_digits_map.png")
        best_model.save(args.out / f"digits_m{best_model.n_lattice_}_seed{args.seeds[0]}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
