import numpy as np
import pytest

from vocalatent import DataError, ParameterError
from vocalatent.analysis.density import (
    RegionMassNoise,
    aggregate_posterior,
    interpolate_grid,
    periodic_kde,
    select_bandwidth,
    wrapped_gaussian,
)
from vocalatent.analysis.torus import grid_points, wrap


def _bruteforce_kde(z, h, res, weights=None):
    """O(N G) float64 reference: sum_i v_i prod_k wrapped_gaussian(g_k - z_ik, h_k)."""
    n, d = z.shape
    v = np.full(n, 1.0 / n) if weights is None else weights / weights.sum()
    g = grid_points(res, d)
    k = np.ones((g.shape[0], n))
    for axis in range(d):
        k *= wrapped_gaussian(g[:, None, axis] - z[None, :, axis], h[axis])
    return (k @ v).reshape((res,) * d)


@pytest.mark.parametrize("d,res,h", [(1, 256, 0.03), (2, 64, 0.05), (3, 32, 0.12)])
def test_fft_kde_matches_bruteforce(rng, d, res, h):
    z = wrap(rng.normal(0.95, 0.1, (300, d)))  # straddles the seam
    kde = periodic_kde(z, bandwidth=h, resolution=res)
    ref = _bruteforce_kde(z, np.full(d, h), res)
    # only linear-binning error remains, O((grid spacing / h)^2)
    assert np.max(np.abs(kde.density - ref)) / ref.max() < 1e-2
    assert kde.density.mean() == pytest.approx(1.0, abs=1e-12)  # integrates to 1 (unit volume)


def test_region_mass_noise_matches_bruteforce_and_the_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.random(80) * 2 * np.pi
    r = 0.15 * np.sqrt(rng.random(80))
    z = wrap(np.r_[np.c_[0.5 + r * np.cos(a), 0.5 + r * np.sin(a)], rng.random((20, 2))])
    h, res = np.array([0.03, 0.03]), 64
    f = periodic_kde(z, bandwidth=h, resolution=res).density
    region = f > 0.3 * f.max()
    sd = RegionMassNoise(z, bandwidth=h, resolution=res)(region)
    # float64 reference without binning: g_i = share of item i's kernel in the region
    g_nodes = grid_points(res, 2)[region.ravel()]
    k = wrapped_gaussian(g_nodes[:, None, 0] - z[None, :, 0], h[0]) * wrapped_gaussian(
        g_nodes[:, None, 1] - z[None, :, 1], h[1])
    g = k.sum(0) / res ** 2
    ref = np.sqrt((np.mean(g ** 2) - np.mean(g) ** 2) / len(z))
    assert sd == pytest.approx(ref, rel=0.02)
    # and the bootstrap of the FFT density's mass in the region converges to it
    boot = [periodic_kde(z[rng.integers(0, len(z), len(z))], bandwidth=h, resolution=res).density[region].sum()
            / res ** 2 for _ in range(400)]
    assert sd == pytest.approx(np.std(boot), rel=0.12)
    with pytest.raises(ParameterError, match="grid's shape"):
        RegionMassNoise(z, bandwidth=h, resolution=res)(region[:10])


def test_points_on_grid_nodes_are_exact(rng):
    res = 32
    idx = rng.integers(0, res, (50, 2))
    z = (idx + 0.5) / res
    w = rng.random(50)
    kde = periodic_kde(z, bandwidth=[0.06, 0.1], resolution=res, weights=w)
    ref = _bruteforce_kde(z, np.array([0.06, 0.1]), res, weights=w)
    np.testing.assert_allclose(kde.density, ref, rtol=1e-9)


def test_weights_equal_duplicated_points(rng):
    z = rng.random((40, 2))
    w = rng.integers(1, 4, 40)
    a = periodic_kde(z, bandwidth=0.05, resolution=32, weights=w).density
    b = periodic_kde(np.repeat(z, w, axis=0), bandwidth=0.05, resolution=32).density
    np.testing.assert_allclose(a, b, rtol=1e-10)


def _true_density(res, centres, sigmas, mix):
    g = grid_points(res, 2)
    out = np.zeros(g.shape[0])
    for c, s, p in zip(centres, sigmas, mix):
        out += p * wrapped_gaussian(g[:, 0] - c[0], s) * wrapped_gaussian(g[:, 1] - c[1], s)
    return out.reshape(res, res)


def test_lcv_bandwidth_is_near_ise_optimal(rng):
    centres, sigmas, mix = [(0.1, 0.9), (0.6, 0.4)], [0.04, 0.08], [0.4, 0.6]
    n = 1500
    comp = rng.choice(2, n, p=mix)
    z = wrap(np.array(centres)[comp] + rng.normal(0, 1, (n, 2)) * np.array(sigmas)[comp, None])
    res = 128
    truth = _true_density(res, centres, sigmas, mix)

    def ise(h):
        return np.mean((periodic_kde(z, bandwidth=h, resolution=res).density - truth) ** 2)

    hs = np.geomspace(0.005, 0.1, 30)
    errors = np.array([ise(h) for h in hs])
    h_opt = hs[np.argmin(errors)]
    h_lcv = select_bandwidth(z)[0]
    assert h_opt / 2 < h_lcv < h_opt * 2
    assert ise(h_lcv) < 1.5 * errors.min()
    assert periodic_kde(z, resolution=res).bandwidth[0] == pytest.approx(h_lcv)


def test_scott_rule_on_one_wrapped_normal(rng):
    sigma, n = 0.05, 4000
    z = wrap(rng.normal(0.5, sigma, (n, 2)))
    h = select_bandwidth(z, method="scott")
    np.testing.assert_allclose(h, sigma * n ** (-1 / 6), rtol=0.1)


def test_interpolate_grid_is_exact_for_linear_in_cells():
    res = 16
    c = (np.arange(res) + 0.5) / res
    grid = np.cos(2 * np.pi * c)[:, None] * np.ones(res)[None, :]
    z = np.array([[c[3], 0.2], [0.999, 0.5]])
    out = interpolate_grid(grid, z)
    assert out[0] == pytest.approx(grid[3, 0])
    # between the last and the first node (wraps): linear mix of the two
    t = (0.999 - c[-1]) * res
    assert out[1] == pytest.approx((1 - t) * grid[-1, 0] + t * grid[0, 0])


def test_aggregate_posterior(rng):
    w = rng.random((30, 10))
    w /= w.sum(1, keepdims=True)
    agg = aggregate_posterior(w)
    np.testing.assert_allclose(agg, w.mean(0))
    assert agg.sum() == pytest.approx(1.0)
    with pytest.raises(DataError, match="item 0 sums to"):
        aggregate_posterior(w * np.r_[2.0, np.ones(29)][:, None])
    with pytest.raises(ParameterError, match="shape"):
        aggregate_posterior(np.ones(5))


def test_bad_parameters():
    z = np.random.default_rng(0).random((20, 2))
    with pytest.raises(ParameterError, match="bandwidth"):
        periodic_kde(z, bandwidth=[0.1, 0.1, 0.1])
    with pytest.raises(ParameterError, match="bandwidth"):
        periodic_kde(z, bandwidth=-1)
    with pytest.raises(ParameterError, match="weights"):
        periodic_kde(z, weights=np.ones(3))
    with pytest.raises(ParameterError, match="resolution"):
        periodic_kde(z, resolution=2)
    with pytest.raises(ParameterError, match="method"):
        select_bandwidth(z, method="silverman")
