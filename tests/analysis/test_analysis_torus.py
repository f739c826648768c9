import itertools

import numpy as np
import pytest

from vocalatent import ParameterError
from vocalatent.analysis.torus import (
    align_to_reference,
    circular_correlation,
    circular_mean,
    grid_points,
    resultant_length,
    torus_distance,
    wrap,
    wrapped_diff,
)


def test_wrap_and_wrapped_diff_known_values():
    assert wrap(np.array([-1e-17]))[0] == 0.0
    np.testing.assert_allclose(wrap([1.25, -0.25, 3.0]), [0.25, 0.75, 0.0])
    np.testing.assert_allclose(wrapped_diff([0.05, 0.95, 0.3], [0.95, 0.05, 0.1]), [0.1, -0.1, 0.2])
    d = wrapped_diff(np.random.default_rng(0).random(1000) * 5, 0.0)
    assert d.min() >= -0.5 and d.max() < 0.5
    assert torus_distance([0.02, 0.98], [0.98, 0.02]) == pytest.approx(np.hypot(0.04, 0.04))


def test_circular_mean_across_the_seam_and_weighted():
    assert circular_mean(np.array([0.95, 0.05])) == pytest.approx(0.0, abs=1e-12)
    assert circular_mean(np.array([0.9, 0.0]), weights=[1, 3]) == pytest.approx(
        np.arctan2(0.75 * 0 + 0.25 * np.sin(2 * np.pi * 0.9), 0.75 + 0.25 * np.cos(2 * np.pi * 0.9))
        / (2 * np.pi) % 1)
    assert resultant_length(np.array([0.0, 0.5])) == pytest.approx(0.0, abs=1e-12)
    assert resultant_length(np.array([0.3, 0.3, 0.3])) == pytest.approx(1.0)


def _fisher_lee_bruteforce(a, b):
    ta, tb = 2 * np.pi * a, 2 * np.pi * b
    i, j = np.triu_indices(a.size, 1)
    sa, sb = np.sin(ta[i] - ta[j]), np.sin(tb[i] - tb[j])
    return np.sum(sa * sb) / np.sqrt(np.sum(sa ** 2) * np.sum(sb ** 2))


def test_fisher_lee_matches_pairwise_definition(rng):
    a = rng.random((60, 2))
    b = wrap(a + rng.normal(0, 0.15, a.shape))
    per_axis = circular_correlation(a, b, per_axis=True)
    ref = [abs(_fisher_lee_bruteforce(a[:, k], b[:, k])) for k in range(2)]
    np.testing.assert_allclose(per_axis, ref, rtol=1e-10)


@pytest.mark.parametrize("perm,signs", [((1, 0), (1, -1)), ((0, 1), (-1, -1)), ((1, 0), (1, 1))])
def test_correlation_and_alignment_recover_a_torus_symmetry(rng, perm, signs):
    a = rng.random((500, 2))
    shift = np.array([0.37, 0.81])
    # b is a transformed a: b[:, perm[k]] = signs[k] * (a[:, k] - shift[k]) (+ noise)
    b = np.empty_like(a)
    for k in range(2):
        b[:, perm[k]] = signs[k] * (a[:, k] - shift[k])
    b = wrap(b + rng.normal(0, 0.005, b.shape))
    assert circular_correlation(a, b) > 0.99
    aligned, al = align_to_reference(a, b)
    assert al.perm == perm and al.signs == signs
    assert np.max(torus_distance(aligned, a)) < 0.05
    # the shift is estimated exactly enough that the residual has circular mean ~0
    assert np.abs(wrapped_diff(circular_mean(wrapped_diff(aligned, a)), 0)).max() < 1e-3


def test_correlation_of_unrelated_and_half_recovered_embeddings(rng):
    a = rng.random((2000, 2))
    assert circular_correlation(a, rng.random((2000, 2))) < 0.1
    half = np.c_[wrap(-a[:, 1] + 0.2), rng.random(2000)]
    per_axis = circular_correlation(a, half, per_axis=True)
    assert sorted(np.round(per_axis, 1).tolist()) == [0.0, 1.0]
    assert circular_correlation(a, half) == pytest.approx(per_axis.mean())


def test_correlation_3d_all_permutations(rng):
    a = rng.random((300, 3))
    for perm in itertools.permutations(range(3)):
        b = wrap(a[:, list(perm)] * -1 + 0.1)
        assert circular_correlation(a, b) == pytest.approx(1.0, abs=1e-9)


def test_bad_inputs_raise():
    with pytest.raises(ParameterError, match="same shape"):
        circular_correlation(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ParameterError, match="at least 3"):
        circular_correlation(np.zeros((2, 1)), np.zeros((2, 1)))
    with pytest.raises(ParameterError, match="non-finite"):
        circular_correlation(np.full((5, 1), np.nan), np.zeros((5, 1)))


def test_grid_points_order():
    g = grid_points(4, 2)
    assert g.shape == (16, 2)
    np.testing.assert_allclose(g[np.ravel_multi_index((1, 3), (4, 4))], [0.375, 0.875])
