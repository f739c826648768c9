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
