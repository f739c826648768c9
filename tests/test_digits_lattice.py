"""On the real scikit-learn digits, a larger training lattice gives a better held-out log p(x).

A reduced version of benchmarks/bench_digits_lattice.py (docs/bench_engine.md has the full
sweep 55 -> 233 -> 987 -> 2584): two 2-D QLVMs that differ only in n_lattice (55 vs 987),
same seed, epochs, batch size and learning rate, scored on held-out digits with a much larger
lattice (2 shifts x 4181 points) than either was trained with.

Calibration (H200, 3 seeds, docs/bench_engine.md): after 40 epochs the gap was 0.27, 0.14 and
0.28 nats (seeds 0, 1, 2), after 20 epochs 0.10-0.26; both models score about -17.2 to -17.5,
well above the -21 nats of a model that ignores its latent. The full sweep shows the gain
saturating beyond n_lattice = 233 on these 1,437 training digits.
"""

from __future__ import annotations

import numpy as np
import pytest

from vocalatent.model import QLVM

EPOCHS = 40
MARGIN_NATS = 0.1


def split_digits(X, *, n_test=360, seed=0):
    """Binarize at 0.5 and split with a fixed permutation: (X_train, X_test)."""
    Xb = (np.asarray(X) > 0.5).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(Xb))
    return Xb[perm[n_test:]], Xb[perm[:n_test]]


def held_out_log_likelihood(X_train, X_test, n_lattice, *, epochs=EPOCHS, seed=0, device="cpu"):
    """Fit a Bernoulli 2-D QLVM with ``n_lattice`` points; mean held-out log p(x) in nats."""
    model = QLVM(2, likelihood="bernoulli", n_lattice=n_lattice, batch_size=128, max_epochs=epochs,
                 lr=3e-3, random_state=seed, device=device, verbose=False).fit(X_train)
    return model.evaluate(X_test, n_lattice=4181, n_shifts=2, random_state=100)["log_likelihood"]


@pytest.mark.slow
@pytest.mark.network
def test_held_out_log_likelihood_improves_with_lattice_size(real_data):
    from vocalatent.data.images import load_digits

    X, _ = load_digits(data_dir=real_data("digits"))
    assert X.shape == (1797, 64)
    X_train, X_test = split_digits(X)
    small = held_out_log_likelihood(X_train, X_test, 55)
    large = held_out_log_likelihood(X_train, X_test, 987)
    # A model that ignored its latent (the collapsed solution) scores about -21 nats here.
    assert small > -20.5 and large > -20.5
    assert large > small + MARGIN_NATS, (small, large)
