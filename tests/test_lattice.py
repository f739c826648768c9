import math

import numpy as np
import pytest

from vocalatent import ParameterError
from vocalatent import lattice as L


def test_rank1_points_exact_and_in_unit_cube():
    pts = L.rank1_lattice(987, (1, 610))
    assert pts.shape == (987, 2)
    assert pts.min() >= 0 and pts.max() < 1
    k = np.arange(987)
    np.testing.assert_array_equal(np.round(pts[:, 1] * 987), (k * 610) % 987)
    # a lattice: every point is distinct
    assert len({tuple(p) for p in np.round(pts * 987).astype(int)}) == 987


def test_one_dimensional_lattice_has_no_duplicated_endpoint():
    pts = L.lattice(16, 1)
    np.testing.assert_allclose(pts[:, 0], np.arange(16) / 16)
    assert 1.0 not in pts


def test_fibonacci_generator_and_rejection():
    assert L.fibonacci_generator(610) == (1, 377)
    assert L.fibonacci_generator(10946) == (1, 6765)
    with pytest.raises(ParameterError, match="Fibonacci"):
        L.fibonacci_generator(1000)
    assert L.default_generator(987, 2) == (1, 610)


def _p2_bruteforce(n, g):
    # P_2 straight from its Fourier definition, truncated: sum over nonzero h in the dual
    # lattice of prod_j max(1, |h_j|)^-2 (float64, |h| <= H).
    H = 600
    h = np.arange(-H, H + 1)
    w = 1.0 / np.maximum(1, np.abs(h)) ** 2
    d = len(g)
    grids = np.meshgrid(*([h] * d), indexing="ij")
    dot = sum(gr * gj for gr, gj in zip(grids, g)) % n
    weight = np.ones_like(dot, dtype=float)
    for gr in grids:
        weight = weight * w[gr + H]
    mask = (dot == 0)
    mask[(H,) * d] = False
    return weight[mask].sum()


def test_p_alpha_matches_fourier_definition():
    # closed form (Bernoulli polynomial) against the dual-lattice sum, 2-D
    for n, g in [(55, (1, 34)), (89, (1, 55)), (101, (1, 40))]:
        assert L.p_alpha(n, g) == pytest.approx(_p2_bruteforce(n, g), rel=3e-2)  # the truncated sum converges like 1/H


@pytest.mark.parametrize("n", [1021, 2039])
def test_korobov_table_is_p2_optimal(n):
    a = L.KOROBOV_3D[n]
    table = L.p_alpha(n, L.korobov_generator(n, a, 3))
    best = L.p_alpha(n, L.search_generator(n, 3, method="korobov"))
    assert table == pytest.approx(best, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("n", [4093, 8191])
def test_korobov_table_is_p2_optimal_large(n):
    a = L.KOROBOV_3D[n]
    table = L.p_alpha(n, L.korobov_generator(n, a, 3))
    best = L.p_alpha(n, L.search_generator(n, 3, method="korobov"))
    assert table == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("n, authors_a", [(1021, 76), (2039, 1487), (4093, 1516)])
def test_authors_korobov_parameters_rank_worse(n, authors_a):
    ours = L.p_alpha(n, L.korobov_generator(n, L.KOROBOV_3D[n], 3))
    theirs = L.p_alpha(n, L.korobov_generator(n, authors_a, 3))
    assert ours < theirs


def test_fibonacci_beats_random_generators_on_p2():
    rng = np.random.default_rng(0)
    fib = L.p_alpha(987, (1, 610))
    others = [L.p_alpha(987, (1, int(g))) for g in rng.integers(2, 986, 20)]
    assert fib <= min(others)


def test_cbc_search_finds_good_generator():
    g = L.search_generator(500, 2, method="cbc")
    assert g[0] == 1 and len(g) == 2
    exhaustive = L.search_generator(500, 2, method="korobov")
    assert L.p_alpha(500, g) == pytest.approx(L.p_alpha(500, exhaustive), rel=1e-9)


def test_shift_stays_in_torus_and_is_seeded():
    pts = L.lattice(610, 2)
    s1 = L.random_shift(2, np.random.default_rng(3))
    s2 = L.random_shift(2, np.random.default_rng(3))
    np.testing.assert_array_equal(s1, s2)
    shifted = L.shift_points(pts, s1)
    assert shifted.min() >= 0 and shifted.max() < 1


def test_to_gaussian_clips_and_matches_ppf():
    from scipy.stats import norm
    import torch

    u = np.array([0.0, 0.25, 0.5, 0.999999])
    z = L.to_gaussian(u)
    np.testing.assert_allclose(z, norm.ppf(np.clip(u, 1e-4, 1 - 1e-4)))
    zt = L.to_gaussian(torch.tensor(u))
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6)


def test_lattice_integrates_smooth_periodic_function_fast():
    # f(z) = prod_j (1 + 0.5 cos 2 pi z_j) integrates to 1; lattice error << MC error
    f = lambda z: np.prod(1 + 0.5 * np.cos(2 * np.pi * z) + 0.3 * np.sin(4 * np.pi * z), axis=1)
    rng = np.random.default_rng(0)
    pts = L.shift_points(L.lattice(987, 2), L.random_shift(2, rng))
    lat_err = abs(f(pts).mean() - 1)
    mc_err = np.mean([abs(f(rng.random((987, 2))).mean() - 1) for _ in range(20)])
    assert lat_err < 1e-10 < mc_err
