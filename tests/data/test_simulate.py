"""Ground-truth simulators: statistics, recoverable latents, seeds, parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from vocalatent._utils import ParameterError
from vocalatent.data.simulate import (
    _BASES,
    TuningParams,
    _grid_tuning,
    grid_cells,
    head_direction_cells,
    place_cells_linear_track,
    simulate_cell_types,
)


def _circ_dist(a, b):
    """Distance on the unit circle (turns)."""
    d = np.abs(a - b) % 1.0
    return np.minimum(d, 1 - d)


def test_head_direction_statistics_and_tuning():
    sim = head_direction_cells(40, 8000, bin_s=0.05, peak_rate_hz=20, baseline_hz=0.5, kappa=4,
                               random_state=7)
    assert sim.counts.shape == (8000, 40) and sim.counts.dtype == np.int64
    assert sim.latent.shape == (8000,) and sim.latent.min() >= 0 and sim.latent.max() < 1
    # every 30-degree sector of the ring is visited, and heading moves smoothly
    assert np.all(np.histogram(sim.latent, bins=12, range=(0, 1))[0] > 200)
    assert _circ_dist(sim.latent[1:], sim.latent[:-1]).max() < 0.08
    # realistic rates: mean well between baseline and peak, peak reached at preferred direction
    assert 0.5 < sim.counts.mean() / 0.05 < 10
    assert sim.rates_hz.max() == pytest.approx(20, rel=0.02)
    # preferred directions are evenly spaced and recoverable from the counts
    np.testing.assert_allclose(np.diff(np.sort(sim.preferred)), 1 / 40, atol=1e-12)
    ang = 2 * np.pi * sim.latent
    est = (np.angle((sim.counts * np.exp(1j * ang)[:, None]).sum(0)) / (2 * np.pi)) % 1
    assert _circ_dist(est, sim.preferred).max() < 10 / 360
    # the population vector decodes the heading: the latent is really in the counts
    dec = (np.angle(sim.counts @ np.exp(2j * np.pi * sim.preferred)) / (2 * np.pi)) % 1
    assert np.median(_circ_dist(dec, sim.latent)) < 15 / 360


def test_seeds_reproducible():
    a = head_direction_cells(10, 500, random_state=3)
    b = head_direction_cells(10, 500, random_state=3)
    c = head_direction_cells(10, 500, random_state=4)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.latent, b.latent)
    assert not np.array_equal(a.counts, c.counts)
    g1, g2 = grid_cells(8, 300, random_state=1), grid_cells(8, 300, random_state=1)
    np.testing.assert_array_equal(g1.counts, g2.counts)
    s1, s2 = simulate_cell_types(50, 100, 2, random_state=5), simulate_cell_types(50, 100, 2, random_state=5)
    np.testing.assert_array_equal(s1.matrix.X.toarray(), s2.matrix.X.toarray())


@pytest.mark.parametrize("lattice,angle", [("hexagonal", 60), ("square", 90)])
def test_grid_tuning_symmetry(rng, lattice, angle):
    """Fields in physical space have the lattice's rotational symmetry (hexagonal: 60 deg)."""
    A = _BASES[lattice]
    x = rng.uniform(-3, 3, size=(500, 2))
    th = np.radians(angle)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    g = _grid_tuning(np.linalg.solve(A, x.T).T, lattice)
    g_rot = _grid_tuning(np.linalg.solve(A, (R @ x.T)).T, lattice)
    np.testing.assert_allclose(g, g_rot, atol=1e-12)
    # periodic on the torus, maximal (1) at zero offset, within [0, 1]
    u = rng.uniform(0, 1, size=(200, 2))
    np.testing.assert_allclose(_grid_tuning(u, lattice), _grid_tuning(u + [1, -2], lattice), atol=1e-12)
    assert _grid_tuning(np.zeros(2), lattice) == pytest.approx(1.0)
    assert _grid_tuning(u, lattice).min() >= -1e-12 and _grid_tuning(u, lattice).max() <= 1 + 1e-12
    # a 45-degree rotation is not a symmetry of the hexagonal or square fields
    R45 = np.array([[np.cos(np.pi / 4), -np.sin(np.pi / 4)], [np.sin(np.pi / 4), np.cos(np.pi / 4)]])
    assert not np.allclose(g, _grid_tuning(np.linalg.solve(A, R45 @ x.T).T, lattice), atol=1e-3)


def test_grid_cells_torus_latent_recoverable():
    sim = grid_cells(64, 12_000, bin_s=0.1, random_state=11)
    assert sim.latent.shape == (12_000, 2) and sim.preferred.shape == (64, 2)
    assert sim.latent.min() >= 0 and sim.latent.max() < 1
    # the walk covers the whole torus
    hist = np.histogram2d(sim.latent[:, 0], sim.latent[:, 1], bins=6, range=[[0, 1], [0, 1]])[0]
    assert hist.min() > 100
    # phase is the position in lattice coordinates, mod 1
    A = _BASES["hexagonal"]
    pos = sim.extra["position_cm"]
    back = (A @ sim.latent.T).T * 50.0
    d = np.linalg.solve(A, ((pos - back) / 50.0).T).T
    np.testing.assert_allclose(d, np.rint(d), atol=1e-9)
    # maximum-likelihood decoding of the phase on a grid with the true tuning recovers it
    grid = np.stack(np.meshgrid(np.arange(40) / 40, np.arange(40) / 40, indexing="ij"), -1).reshape(-1, 2)
    u = grid[:, None, :] - sim.preferred[None, :, :]
    lam = (0.5 + 19.5 * np.exp(4 * (_grid_tuning(u, "hexagonal") - 1))) * 0.1       # [G, N]
    ll = sim.counts[:2000] @ np.log(lam).T - lam.sum(1)                                # [T, G]
    dec = grid[np.argmax(ll, axis=1)]
    err = np.sqrt((_circ_dist(dec, sim.latent[:2000]) ** 2).sum(1))
    assert np.median(err) < 0.08          # chance level is about 0.38


def test_place_cells():
    sim = place_cells_linear_track(30, 6000, bin_s=0.05, track_length_cm=200, field_width_cm=10,
                                   random_state=2)
    assert sim.latent.min() >= 0 and sim.latent.max() <= 1
    pos = sim.extra["position_cm"]
    np.testing.assert_allclose(pos / 200, sim.latent)
    # laps back and forth: the direction flips, and position changes by < speed * dt per bin
    direction = sim.extra["direction"]
    assert np.count_nonzero(np.diff(direction)) >= 4
    assert np.abs(np.diff(pos)).max() < 25 * 3 * 0.05
    # field centres recovered from counts (rate-weighted mean position)
    occ = np.histogram(pos, bins=100, range=(0, 200))[0]
    centres = []
    for n in range(30):
        spk = np.histogram(pos, bins=100, range=(0, 200), weights=sim.counts[:, n])[0]
        rate = spk / np.maximum(occ, 1)
        centres.append((np.argmax(rate) + 0.5) * 2.0)
    assert np.median(np.abs(np.asarray(centres) - sim.preferred * 200)) < 4.0


def test_cell_types_ground_truth():
    sim = simulate_cell_types(1500, 300, 3, n_markers=10, marker_fold_change=8,
                              library_size_median=2000, random_state=4)
    X = sim.matrix.X.toarray()
    np.testing.assert_array_equal(X.sum(1), sim.library_size)
    assert np.median(sim.library_size) == pytest.approx(2000, rel=0.1)
    np.testing.assert_allclose(sim.proportions.sum(1), 1.0)
    assert list(sim.matrix.obs["cell_type"].astype(int)) == list(sim.cell_type)
    norm = X / X.sum(1, keepdims=True)
    for t in range(3):
        own = norm[sim.cell_type == t][:, sim.markers[t]].mean(0)
        other = norm[sim.cell_type != t][:, sim.markers[t]].mean(0)
        ratio = own / other
        assert np.all(ratio > 4) and np.median(ratio) == pytest.approx(8 * 0.97, rel=0.25)
    assert (sim.matrix.var["marker_of"] >= 0).sum() == 30


def test_cell_types_theta_adds_overdispersion():
    kw = dict(n_cells=3000, n_genes=200, n_types=1, n_markers=5, library_size_sdlog=0.0,
              random_state=0)
    plain = simulate_cell_types(**kw).matrix.X.toarray()
    over = simulate_cell_types(**kw, theta=2.0).matrix.X.toarray()
    # one type, fixed library: multinomial variance <= mean; gamma noise adds mu^2 / theta
    fano_plain = np.median(plain.var(0) / plain.mean(0))
    fano_over = np.median(over.var(0) / over.mean(0))
    assert fano_plain < 1.05 and fano_over > 1.5


def test_parameter_errors():
    with pytest.raises(ParameterError, match="baseline_hz must be < peak_rate_hz"):
        head_direction_cells(5, 10, baseline_hz=30, peak_rate_hz=20)
    with pytest.raises(ParameterError, match="lattice must be one of"):
        grid_cells(5, 10, lattice="triangular")
    with pytest.raises(ParameterError, match="n_types \\* n_markers = 40 exceeds n_genes = 30"):
        simulate_cell_types(10, 30, 4, n_markers=10)
    with pytest.raises(ParameterError, match="n_neurons"):
        place_cells_linear_track(0, 10)
    with pytest.raises(ParameterError, match="bin_s"):
        TuningParams(bin_s=-0.1)
