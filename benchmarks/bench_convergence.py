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

Usage::

    python benchmarks/bench_convergence.py --parts floor order
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
    print("| model (same default decoder, 60 epochs, batch 256) | evaluate(n_lattice=\"auto\"), 2 shifts | "
          "m = 10,946, 2 shifts | converged at 10,946 | fit s |")
    print("|---|---|---|---|---|")
    for name, cls in (("QLVM", QLVM), ("IWAE (k=16)", IWAE), ("VAE", VAE)):
        t0 = time.perf_counter()
        m = cls(**kw).fit(tr)
        fit_s = time.perf_counter() - t0
        ev = m.evaluate(te, n_lattice="auto", n_shifts=2)
        ll, diag = m.score_samples(te, n_lattice=10946, n_shifts=2, return_diagnostics=True)
        per[name] = ll
        print(f"| {name} | {ev['log_likelihood']:.2f} ± {ev['stderr']:.2f} at m = {ev['n_lattice']:,} "
              f"({'tol met' if ev['tol_met'] else 'tol NOT met'}, {100 * ev['converged_fraction']:.1f} % converged) | "
              f"{ll.mean():.2f} | {100 * diag['converged'].mean():.1f} % | {fit_s:.0f} |", flush=True)
    names = list(per)
    for hi, lo in zip(names, names[1:]):
        diff = per[hi] - per[lo]
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        print(f"\n{hi} − {lo}: {diff.mean():.2f} nats/item, paired SE {se:.3f} ({diff.mean() / se:.1f} SE)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["floor", "order"], choices=["floor", "order"])
    args = p.parse_args(argv)
    if "floor" in args.parts:
        part_floor()
    if "order" in args.parts:
        print()
        part_order()


if __name__ == "__main__":
    main()
