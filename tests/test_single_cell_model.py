"""QLVM maps of simulated cell types (known answers) and the negative binomial likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from vocalatent.analysis.torus import torus_distance
from vocalatent.data.simulate import simulate_cell_types
from vocalatent.model import QLVM
from vocalatent.nn.likelihoods import make_likelihood


def knn_accuracy(z, labels, k=5):
    """Leave-one-out k-nearest-neighbour accuracy of ``labels`` with torus distances."""
    n = len(z)
    dist = np.stack([torus_distance(z, np.broadcast_to(z[i], z.shape)) for i in range(n)])
    np.fill_diagonal(dist, np.inf)
    nn = np.argsort(dist, axis=1)[:, :k]
    votes = labels[nn]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float(np.mean(pred == labels))


def test_cell_types_separate_on_the_2d_map():
    """4 types, 400 cells: 5-NN accuracy of the true types in the QLVM map >= 0.9.

    (Chance is ~0.25; the measure is the leave-one-out 5-nearest-neighbour vote with
    wrap-around distances on the torus.)"""
    sim = simulate_cell_types(400, 200, 4, n_markers=15, marker_fold_change=6.0,
                              library_size_median=1500, random_state=0)
    X = sim.matrix.dense()
    model = QLVM(2, likelihood="multinomial", decoder="mlp", batch_size=128, max_epochs=25,
                 lr=3e-3, decoder_options={"hidden": (64, 64)}, random_state=0, verbose=False)
    model.fit(X)
    z = model.transform_dataset(X, n_shifts=1, n_lattice=987).embedding.values
    assert knn_accuracy(z, sim.cell_type) >= 0.9


def test_negbin_matches_scipy_and_learns_dispersion():
    rng = np.random.default_rng(0)
    like = make_likelihood("negbin", 6, theta=2.0)
    x = torch.tensor(rng.poisson(4.0, (5, 6)).astype(np.float32))
    params = torch.randn(3, 1, 6, generator=torch.Generator().manual_seed(0))
    ll = like.log_prob_matrix(x, params).detach().numpy().astype(np.float64)
    rho = torch.softmax(params[:, 0], 1).numpy().astype(np.float64)
    lib = x.sum(1).numpy().astype(np.float64)
    ref = np.array([[stats.nbinom.logpmf(x[i].numpy(), 2.0, 2.0 / (2.0 + lib[i] * rho[j])).sum()
                     for j in range(3)] for i in range(5)])
    np.testing.assert_allclose(ll, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(like.log_prob_pairs(x[:3], params).detach().numpy(), np.diag(ref[:3]),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(like.mean(params).sum(1).detach().numpy(), 1.0, rtol=1e-6)
    assert any(p is like.log_theta for p in like.parameters())
    with pytest.raises(Exception, match="non-negative"):
        like.check_data(np.array([[1.0, -1.0]]))
    with pytest.raises(Exception, match="integer"):
        like.check_data(np.array([[1.5, 1.0]]))


def test_negbin_fits_overdispersed_cells_better_than_multinomial():
    """On gamma-Poisson (theta=2) cells the NB model has a higher held-out log-likelihood."""
    sim = simulate_cell_types(300, 60, 3, n_markers=8, theta=2.0, library_size_median=800,
                              random_state=1)
    X = sim.matrix.dense()
    tr, te = X[:240], X[240:]
    scores = {}
    for like in ("multinomial", "negbin"):
        m = QLVM(2, likelihood=like, decoder="mlp", batch_size=120, max_epochs=15, lr=3e-3,
                 n_lattice=233, decoder_options={"hidden": (32, 32)}, random_state=0,
                 verbose=False).fit(tr)
        scores[like] = m.score(te, n_lattice=610, n_shifts=1)
    assert scores["negbin"] > scores["multinomial"] + 5.0
