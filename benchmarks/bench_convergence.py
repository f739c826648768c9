"""Does the held-out log p(x) converge at the defaults?  The tables of docs/method.md §7.

Part ``floor``: the issue-11 setting — scikit-learn digits scaled to [0, 1], 1,500 train / 297
test (permutation seed 1), ``QLVM(latent_dim=2, n_lattice=610, max_epochs=30, random_state=0)``,
Gaussian likelihood — with the default (data-derived) variance floor and the alternatives, each
scored at m = 2,584 and 10,946 (4 shifts) with the per-item diagnostics, and by
``evaluate(n_lattice="auto")``.

Part ``order``: the paper's comparison at defaults — 2-D QLVM, IWAE and VAE with the same
default decoder, 60 epochs, batch 256 (permutation seed 3, as /work/shared/checks/F1-beats-vae),
scored by the adaptive lattice (2 shifts) and at m = 10,946, with the paired standard error of
the per-item differences.

Part ``readme``: the README job's model (``OUT/model.pt`` and ``OUT/syllables.h5`` of a
finished ``vocalatent embed data/bengalese_finch -o OUT --pipeline bengalese_finch``): its
held-out items (the workflow's split) scored by ``evaluate`` at the lattice size the job's
held-out figure used and at the Fibonacci size nearest 4x that, both with the local
refinement, with the per-item difference between the two; then the embedding of every item
(``workflow.project``) timed with and without the refinement of its per-item log p(x).

Usage::

    python benchmarks/bench_convergence.py --parts floor order
    python benchmarks/bench_convergence.py --parts readme --readme-out OUT
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def digits(seed: int):
    from sklearn.datasets import load_digits

    X = (load_digits().data / 16.0).astype(np.float32)
    idx = np.random.default_rng(seed).permutation(len(X))
    return X[idx[:1500]], X[idx[1500:]]


def row_floor(label, opts, tr, te):
    from vocalatent import QLVM

    t0 = time.perf_counter()
    m = QLVM(latent_dim=2, n_lattice=610, max_epochs=30, random_state=0, device="cpu", verbose=False,
             likelihood_options=opts).fit(tr)
    fit_s = time.perf_counter() - t0
    a, da = m.score_samples(te, n_lattice=2584, n_shifts=4, return_diagnostics=True)
    b, db = m.score_samples(te, n_lattice=10946, n_shifts=4, return_diagnostics=True)
    ev = m.evaluate(te, n_lattice="auto", n_shifts=4)
    s = m.module_.likelihood.sigmas().detach().numpy()
    return (f"| {label} | {m.module_.likelihood.min_sigma:.4f} | {s.min():.4f} | {a.mean():.3f} "
            f"({100 * da['converged'].mean():.0f} %, ESS {np.median(da['ess']):.1f}) | {b.mean():.3f} "
            f"({100 * db['converged'].mean():.0f} %, ESS {np.median(db['ess']):.1f}) | {b.mean() - a.mean():+.3f} | "
            f"{ev['log_likelihood']:.3f} at m = {ev['n_lattice']:,} ({'tol met' if ev['tol_met'] else 'tol NOT met'}, "
            f"{100 * ev['converged_fraction']:.0f} % converged) | {m.training_ess_:.1f} | {fit_s:.0f} |")


def part_floor():
    tr, te = digits(1)
    print("| Gaussian likelihood | floor σ_min | smallest σ | m = 2,584 (converged, median ESS) | "
          "m = 10,946 (converged, median ESS) | change | evaluate(n_lattice=\"auto\") | "
          "training-lattice median ESS | fit s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, opts in (("default (`min_sigma=\"auto\"`: data-derived floor)", None),
                        ("old default (`min_sigma=1e-3`)", {"min_sigma": 1e-3}),
                        ("`min_sigma=0.05`", {"min_sigma": 0.05}),
                        ("`variance=\"fixed\", sigma=0.1`", {"variance": "fixed", "sigma": 0.1})):
        print(row_floor(label, opts, tr, te), flush=True)


def part_order():
    from vocalatent import QLVM
    from vocalatent.baselines import IWAE, VAE

    tr, te = digits(3)
    kw = dict(latent_dim=2, max_epochs=60, random_state=0, device="cpu", verbose=False)
    per = {}
    print("| model (same default decoder, 60 epochs, batch 256) | evaluate(n_lattice=\"auto\"), 2 shifts, refined | "
          "m = 10,946, lattice alone (converged) | m = 10,946, refined (converged) | fit s |")
    print("|---|---|---|---|---|")
    for name, cls in (("QLVM", QLVM), ("IWAE (k=16)", IWAE), ("VAE", VAE)):
        t0 = time.perf_counter()
        m = cls(**kw).fit(tr)
        fit_s = time.perf_counter() - t0
        ev = m.evaluate(te, n_lattice="auto", n_shifts=2)
        # per item as tests/test_convergence.py::test_paper_ordering_at_defaults: the adaptive
        # lattice's size, refined
        per[name] = m.score_samples(te, n_lattice=ev["n_lattice"], n_shifts=2, refine=True)
        plain, dp = m.score_samples(te, n_lattice=10946, n_shifts=2, return_diagnostics=True)
        ref, dr = m.score_samples(te, n_lattice=10946, n_shifts=2, return_diagnostics=True, refine=True)
        print(f"| {name} | {ev['log_likelihood']:.2f} ± {ev['stderr']:.2f} at m = {ev['n_lattice']:,} "
              f"({'tol met' if ev['tol_met'] else 'tol NOT met'}, {100 * ev['converged_fraction']:.1f} % converged, "
              f"{ev.get('refined_items', 0)} refined) | {plain.mean():.2f} ({100 * dp['converged'].mean():.1f} %) | "
              f"{ref.mean():.2f} ({100 * dr['converged'].mean():.1f} %) | {fit_s:.0f} |", flush=True)
    names = list(per)
    for hi, lo in zip(names, names[1:]):
        diff = per[hi] - per[lo]
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        print(f"\n{hi} − {lo}: {diff.mean():.2f} nats/item, paired SE {se:.3f} ({diff.mean() / se:.1f} SE)")


def part_readme(out):
    from pathlib import Path

    from vocalatent import lattice, workflow
    from vocalatent.data.store import SyllableStore
    from vocalatent.nn.estimate import convergence_summary

    out = Path(out)
    model = workflow.load_model(out / "model.pt", device="cpu")
    store = SyllableStore(out / "syllables.h5")
    X = store.spectrograms
    n = int(X.shape[0])
    cfg = model.metadata_.get("config", {})
    frac = float(cfg.get("model", {}).get("validation", workflow.MODEL_DEFAULTS["validation"]))
    _, val_idx = workflow.split_indices(n, frac, int(cfg.get("seed", 0) or 0))
    X_val = np.asarray(X[np.sort(val_idx)], dtype=np.float32)
    held = model.metadata_.get("heldout") or {}
    m1 = int(held.get("n_lattice") or model.eval_lattice_size())
    fib = [f for f in lattice.FIBONACCI if f >= 1000]
    m4 = min(fib, key=lambda f: abs(f - 4 * m1))
    print(f"README job {out}: {n} syllables, {len(X_val)} held out, D = {model.n_features_}, "
          f"the job's held-out figure: {held.get('heldout_summary') or convergence_summary(held)}")
    rows, per = [], {}
    for m in (m1, m4):
        t0 = time.perf_counter()
        ll, diag = model.score_samples(X_val, n_lattice=m, n_shifts=2, refine=True, return_diagnostics=True)
        sec = time.perf_counter() - t0
        per[m] = ll
        rows.append(f"| {m:,} | {ll.mean():,.3f} | {100 * diag['converged'].mean():.1f} % | "
                    f"{int(diag.get('refined', np.zeros(1, bool)).sum())} | "
                    f"{np.nanmax(np.abs(diag.get('refine_delta', np.full(1, np.nan)))):.4f} | {sec:.0f} |")
    print("| m | held-out log p(x), nats/item | converged | refined items | "
          "max per-item difference of the last two local sizes | s |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    d = per[m4] - per[m1]
    print(f"\nm = {m4:,} minus m = {m1:,}: mean {d.mean():+.4f} nats/item, max |per item| {np.abs(d).max():.4f} "
          f"({'within' if np.abs(d).max() < 0.1 else 'NOT within'} 0.1 nats per item)")
    for refine in (False, True):
        model_copy = workflow.load_model(out / "model.pt", device="cpu")
        t0 = time.perf_counter()
        ds = model_copy.transform_dataset(X, refine=refine)
        sec = time.perf_counter() - t0
        print(f"embedding of all {n} items, refine={refine}: {sec:.0f} s, converged "
              f"{100 * ds.attrs['converged_fraction']:.1f} %, refined {ds.attrs.get('refined_items', 0)}, "
              f"mean log p(x) {float(ds['log_likelihood'].mean()):,.3f}")
    store.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["floor", "order"], choices=["floor", "order", "readme"])
    p.add_argument("--readme-out", default="out/bengalese_finch",
                   help="output folder of the README job (part readme)")
    args = p.parse_args(argv)
    if "readme" in args.parts:
        part_readme(args.readme_out)
    if "floor" in args.parts:
        part_floor()
    if "order" in args.parts:
        print()
        part_order()


if __name__ == "__main__":
    main()
