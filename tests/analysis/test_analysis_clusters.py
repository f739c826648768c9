import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from vocalatent import ParameterError
from vocalatent.analysis.clusters import find_clusters, grid_basins
from vocalatent.analysis.torus import torus_distance, wrap

# one cluster on each seam and one on the corner where both seams meet
CENTRES = np.array([[0.0, 0.0], [0.99, 0.5], [0.5, 0.01], [0.3, 0.3], [0.7, 0.72]])


def _wrapped_clusters(rng, sizes=(300, 250, 200, 150, 100), sd=(0.03, 0.035, 0.03, 0.025, 0.03)):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    z = wrap(CENTRES[labels] + rng.normal(0, 1, (labels.size, 2)) * np.array(sd)[labels, None])
    return z, labels


def test_recovers_wrapped_clusters_including_seams(rng):
    z, truth = _wrapped_clusters(rng)
    res = find_clusters(z, resolution=64)
    assert res.n_clusters == 5
    assert adjusted_rand_score(truth, res.labels) >= 0.95
    # each true centre has a found mode nearby (modes are found across the seams)
    dist = torus_distance(CENTRES[:, None, :], res.modes[None, :, :])
    assert np.all(dist.min(axis=1) < 0.02)
    # labels are ordered by size: cluster 0 is the biggest
    assert np.argmax(np.bincount(res.labels)) == 0
    assert res.grid_labels.shape == (64, 64)


def test_with_uniform_background_noise(rng):
    z, truth = _wrapped_clusters(rng)
    noisy = np.r_[z, rng.random((300, 2))]
    res = find_clusters(noisy, resolution=64, noise_density=0.02)
    assert res.n_clusters == 5
    kept = res.labels[: truth.size]
    assert adjusted_rand_score(truth, kept) >= 0.95
    # most background points fall below the noise level
    assert np.mean(res.labels[truth.size:] == -1) > 0.5


def test_uniform_data_is_one_cluster(rng):
    res = find_clusters(rng.random((1500, 2)), resolution=48)
    assert res.n_clusters == 1
    assert np.all(res.labels == 0)


def test_one_dimensional_ring(rng):
    truth = np.repeat([0, 1, 2], 200)
    z = wrap(np.array([0.98, 0.3, 0.62])[truth] + rng.normal(0, 0.03, truth.size))
    res = find_clusters(z)
    assert res.n_clusters == 3
    assert adjusted_rand_score(truth, res.labels) >= 0.95


def test_posterior_weighted_assignment(rng):
    z, truth = _wrapped_clusters(rng)
    lattice = rng.random((2000, 2))
    # an item whose posterior is split 70/30 between the modes of clusters 3 and 4: its
    # circular mean lies between them, but most of its mass is in cluster 3
    near3 = torus_distance(lattice, CENTRES[3]) < 0.03
    near4 = torus_distance(lattice, CENTRES[4]) < 0.03
    post = np.zeros((z.shape[0], lattice.shape[0]))
    post[np.arange(z.shape[0]), torus_distance(z[:, None, :], lattice[None]).argmin(1)] = 1.0
    post[0] = 0.0
    post[0, near3] = 0.7 / near3.sum()
    post[0, near4] = 0.3 / near4.sum()
    z = z.copy()
    z[0] = [0.62, 0.64]  # its circular mean, nearer cluster 4
    plain = find_clusters(z, resolution=64)
    weighted = find_clusters(z, resolution=64, posterior=post, lattice_z=lattice)
    c3 = weighted.labels[truth == 3][1:]
    assert np.all(c3 == np.bincount(c3).argmax())
    assert weighted.labels[0] == np.bincount(c3).argmax()
    assert plain.labels[0] != weighted.labels[0]
    with pytest.raises(ParameterError, match="lattice_z"):
        find_clusters(z, posterior=post)


def test_grid_basins_on_known_grid():
    f = np.zeros((8, 8))
    f[1, 1], f[5, 6] = 2.0, 3.0
    f += 1e-3 * np.cos(np.arange(8))[:, None]  # break ties on the plateau
    basin, peaks = grid_basins(f)
    assert set(np.unravel_index(peaks, f.shape)[0]) >= {1, 5}
    assert basin[0, 0] == np.ravel_multi_index((1, 1), f.shape)
    assert basin[6, 7] == np.ravel_multi_index((5, 6), f.shape)


def test_bad_parameters(rng):
    with pytest.raises(ParameterError, match="min_persistence"):
        find_clusters(rng.random((50, 2)), min_persistence=1.5)


# ---------------------------------------------------------------------------- significance rule
def _blobs(rng, centres, counts, sd):
    z = np.concatenate([rng.normal(c, sd, size=(n, 2)) for c, n in zip(centres, counts)])
    return np.mod(z, 1.0), np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("excess_mass", [False, True])
@pytest.mark.parametrize("gap_sd", [8.0, 15.0])
def test_a_rare_type_at_one_fiftieth_survives(gap_sd, excess_mass):
    rng = np.random.default_rng(11)
    sd = 0.02
    # two common types and a rare one (1/50 of each), near (8 sd) and far (15 sd) from one
    # (touching, 5-6 sd apart, a 20-item type is merged: docs/analysis.md)
    z, truth = _blobs(rng, [[0.3, 0.3], [0.7, 0.7], [0.3 + gap_sd * sd, 0.3]], [1000, 1000, 20], sd)
    new = find_clusters(z, resolution=128, excess_mass=excess_mass)
    assert new.n_clusters == 3
    assert adjusted_rand_score(truth, new.labels) > 0.97
    rare = new.labels[truth == 2]
    assert np.mean(rare == np.bincount(rare).argmax()) >= 0.9
    assert np.sum(new.labels == np.bincount(rare).argmax()) < 40
    # the old rule (2x the cross-validated bandwidth, dip 0.5, height 0.1) loses it
    from vocalatent.analysis.density import select_bandwidth

    old = find_clusters(z, method="persistence", bandwidth=2 * select_bandwidth(z), resolution=128,
                        min_persistence=0.5, min_relative_height=0.1)
    assert old.n_clusters == 2


def test_noise_makes_no_clusters_at_large_n():
    rng = np.random.default_rng(4)
    one, _ = _blobs(rng, [[0.5, 0.5]], [5000], 0.05)
    assert find_clusters(one, resolution=128).n_clusters == 1
    assert find_clusters(rng.random((3000, 2)), resolution=64).n_clusters == 1
    # a few scattered outliers do not become clusters (fewer than min_size items alone)
    z = np.concatenate([one[:2000], rng.random((6, 2))])
    assert find_clusters(z, resolution=128).n_clusters == 1


def test_a_shallow_dip_needs_many_items_to_count():
    rng = np.random.default_rng(5)
    # two blobs 2.8 sd apart: a shallow dip (about a fifth) in the true density. With 300 items it is within the
    # noise; with 3000 it is not
    for n, k in ((300, 1), (3000, 2)):
        z, _ = _blobs(rng, [[0.45, 0.5], [0.45 + 2.8 * 0.02, 0.5]], [n, n], 0.02)
        assert find_clusters(z, resolution=128).n_clusters == k


def test_excess_mass_keeps_broad_types_apart_on_a_fitted_map():
    # a fitted map of four song types, each spread over a broad plateau (tests/fixtures/maps)
    from pathlib import Path

    fixture = np.load(Path(__file__).parents[1] / "fixtures" / "maps" / "song_types_plateaus.npz")
    z, truth = fixture["z"], fixture["labels"]
    for res in (48, 128):
        peak = find_clusters(z, resolution=res, excess_mass=False)
        assert peak.n_clusters == 3  # the peak test joins two types: their peak is one small bump
        assert adjusted_rand_score(truth, peak.labels) < 0.8
        mass = find_clusters(z, resolution=res, excess_mass=True)
        assert mass.n_clusters == 4
        assert adjusted_rand_score(truth, mass.labels) == pytest.approx(1.0)


def _disc(rng, centre, radius, n):
    a, r = rng.random(n) * 2 * np.pi, radius * np.sqrt(rng.random(n))
    return np.c_[centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)]


def test_excess_mass_finds_no_clusters_on_one_plateau_or_noise():
    # no false splits: uniform discs (broad plateaus) and uniform noise stay one cluster
    for seed in range(10):
        rng = np.random.default_rng(seed)
        assert find_clusters(wrap(_disc(rng, (0.5, 0.5), 0.2, 150)), resolution=64,
                             excess_mass=True).n_clusters == 1
        assert find_clusters(wrap(_disc(rng, (0.5, 0.5), 0.3, 600)), resolution=128,
                             excess_mass=True).n_clusters == 1
    rng = np.random.default_rng(4)
    assert find_clusters(rng.random((3000, 2)), resolution=64, excess_mass=True).n_clusters == 1
    one, _ = _blobs(rng, [[0.5, 0.5]], [5000], 0.05)
    assert find_clusters(one, resolution=128, excess_mass=True).n_clusters == 1


def test_excess_mass_separates_plateaus_more_often():
    # two plateaus of 50 items with 3 stray items in the gap between them: the mass test
    # keeps them apart at least as often as the peak test, and strictly more often over seeds
    kept = {False: 0, True: 0}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        z = wrap(np.r_[_disc(rng, (0.3, 0.5), 0.12, 50), _disc(rng, (0.62, 0.5), 0.12, 50),
                       rng.random((3, 2)) * [0.1, 0.3] + [0.41, 0.35]])
        k = {m: find_clusters(z, resolution=64, excess_mass=m).n_clusters for m in kept}
        assert k[True] >= k[False]
        for m in kept:
            kept[m] += k[m] == 2
    assert kept[True] > kept[False]


def test_significance_parameters_are_checked():
    z = np.random.default_rng(0).random((50, 2))
    with pytest.raises(ParameterError, match="method"):
        find_clusters(z, method="magic")
    with pytest.raises(ParameterError, match="min_size"):
        find_clusters(z, min_size=0)
