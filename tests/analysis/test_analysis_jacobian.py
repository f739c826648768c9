import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from vocalatent import ParameterError
from vocalatent.analysis._demo import SyntheticSyllableDecoder, synthetic_embedding_dataset
from vocalatent.analysis.clusters import find_clusters, nearest_node
from vocalatent.analysis.jacobian import boundaries, boundary_strength, jacobian_norm_grid
from vocalatent.analysis.torus import grid_centres, grid_points

from .decoders import TwoRegionDecoder


class Fourier64:
    """A random smooth periodic decoder in float64: W [cos 2pi k.z, sin 2pi k.z]."""

    def __init__(self, d, D=5, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.k = torch.randint(-2, 3, (7, d), generator=g).double()
        self.w = torch.randn(14, D, generator=g, dtype=torch.float64)

    def __call__(self, z):
        phase = 2 * np.pi * z @ self.k.T
        return torch.cat([torch.cos(phase), torch.sin(phase)], 1) @ self.w


@pytest.mark.parametrize("d,res", [(1, 16), (2, 8), (3, 4)])
def test_jacobian_norm_matches_finite_differences(d, res):
    f = Fourier64(d)
    jac = jacobian_norm_grid(f, latent_dim=d, resolution=res, dtype=torch.float64, chunk_size=7)
    pts = torch.as_tensor(grid_points(res, d), dtype=torch.float64)
    eps = 1e-6
    cols = []
    for k in range(d):
        e = torch.zeros(d, dtype=torch.float64)
        e[k] = eps
        cols.append((f(pts + e) - f(pts - e)) / (2 * eps))
    fd = torch.sqrt(sum((c ** 2).sum(1) for c in cols)).numpy().reshape((res,) * d)
    np.testing.assert_allclose(jac, fd, rtol=1e-7)
    assert jac.shape == (res,) * d


def test_chunking_does_not_change_the_result():
    f = Fourier64(2)
    a = jacobian_norm_grid(f, latent_dim=2, resolution=12, dtype=torch.float64, chunk_size=5)
    b = jacobian_norm_grid(f, latent_dim=2, resolution=12, dtype=torch.float64, chunk_size=1000)
    np.testing.assert_array_equal(a, b)


def test_boundaries_follow_the_known_bands():
    dec = TwoRegionDecoder()
    res = 32
    jac = jacobian_norm_grid(dec, latent_dim=2, resolution=res)
    modes = np.array([[0.0, 0.5], [0.5, 0.5]])
    b = boundaries(jac, modes=modes)
    z1 = grid_centres(res)
    dist_to_band = np.minimum(np.abs(z1 - 0.25), np.abs(z1 - 0.75))
    masked_cols = np.nonzero(b.ridge_mask)[0]
    assert np.all(dist_to_band[masked_cols] < 0.05)
    # every row (every z2) crosses both bands
    for j in range(res):
        cols = np.nonzero(b.ridge_mask[:, j])[0]
        assert np.any(np.abs(z1[cols] - 0.25) < 0.05) and np.any(np.abs(z1[cols] - 0.75) < 0.05)
    assert np.all(b.regions[np.abs(z1 - 0.5) < 0.2] == 1)
    assert np.all(b.regions[np.minimum(z1, 1 - z1) < 0.2] == 0)
    table = b.strength
    assert list(table[["cluster_a", "cluster_b"]].iloc[0]) == [0, 1]
    assert table["strength"].iloc[0] > 1.0  # the band is > 10x steeper than the regions
    assert bool(table["adjacent"].iloc[0])
    assert table["straight_max_log10_jacobian"].iloc[0] == pytest.approx(np.log10(jac.max()), abs=0.2)


def test_boundaries_separate_synthetic_syllable_types():
    dec = SyntheticSyllableDecoder(2, output_shape=(12, 12))
    ds = synthetic_embedding_dataset(dec, n_per_type=150, random_state=3)
    z, truth = ds["embedding"].values, ds["true_type"].values
    res = 32
    clusters = find_clusters(z, resolution=res)
    assert adjusted_rand_score(truth, clusters.labels) >= 0.9
    jac = jacobian_norm_grid(dec, latent_dim=2, resolution=res)
    b = boundaries(jac, modes=clusters.modes, density_grid=clusters.kde.density)
    region_of_item = b.regions[nearest_node(z, res)]
    assert adjusted_rand_score(truth, region_of_item) >= 0.95
    table = boundary_strength(jac, modes=clusters.modes, density_grid=clusters.kde.density)
    assert len(table) == 6
    assert (table["strength"] > 0.3).all()
    assert (table["pass_density_ratio"].dropna() < 0.05).all()  # the borders are nearly empty


def test_bad_inputs():
    with pytest.raises(ParameterError, match="same resolution"):
        boundaries(np.ones((8, 9)), modes=[[0.1, 0.1]])
    with pytest.raises(ParameterError, match="density_grid"):
        boundaries(np.ones((8, 8)), modes=[[0.1, 0.1]], density_grid=np.ones((4, 4)))
    with pytest.raises(ParameterError, match="latent dimension"):
        boundaries(np.ones((8, 8)), modes=[[0.1, 0.1, 0.1]])


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    f = Fourier64(2)
    cpu = jacobian_norm_grid(f, latent_dim=2, resolution=16, dtype=torch.float64)
    f.k, f.w = f.k.cuda(), f.w.cuda()
    gpu = jacobian_norm_grid(f, latent_dim=2, resolution=16, dtype=torch.float64, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-10)
    dec = SyntheticSyllableDecoder(2, output_shape=(32, 32))
    a = jacobian_norm_grid(dec, latent_dim=2, resolution=32)
    b = jacobian_norm_grid(dec, latent_dim=2, resolution=32, device="cuda", chunk_size=4096)
    np.testing.assert_allclose(b, a, rtol=1e-3)


def test_cores_keep_boundaries_off_a_mode_on_a_jacobian_bump():
    from vocalatent.analysis.jacobian import boundaries, cluster_cores

    r = 64
    g = (np.arange(r) + 0.5) / r
    x, y = np.meshgrid(g, g, indexing="ij")
    # a low ridge at x = 0.5 (and the seam) separates two halves; mode 0 sits on a bump that
    # is higher than the ridge, so a flood from the mode's node alone is overtaken
    jac = 1 + 2 * np.exp(-((x - 0.5) ** 2) / 0.002) + 2 * np.exp(-(np.minimum(x, 1 - x) ** 2) / 0.002)
    jac = jac + 4 * np.exp(-((x - 0.25) ** 2 + (y - 0.5) ** 2) / 0.0005)
    modes = np.array([[0.25, 0.5], [0.75, 0.5]])
    basins = np.where((x > 0.02) & (x < 0.5), 0, 1)
    dens = np.exp(-((x - 0.25) ** 2 + (y - 0.5) ** 2) / 0.02) + np.exp(-((x - 0.75) ** 2 + (y - 0.5) ** 2) / 0.02)
    plain = boundaries(jac, modes=modes)
    cored = boundaries(jac, modes=modes, cores=cluster_cores(basins, dens))
    mode_node = (int(0.25 * r), int(0.5 * r))
    # from the mode's node alone, the other region floods around the bump: a border at the mode
    assert plain.ridge_mask[mode_node[0] - 3:mode_node[0] + 4, mode_node[1] - 3:mode_node[1] + 4].any()
    # seeded with the cluster's core, the border stays on the ridges
    assert not cored.ridge_mask[mode_node[0] - 3:mode_node[0] + 4, mode_node[1] - 3:mode_node[1] + 4].any()
    assert cored.ridge_mask[int(0.5 * r)].all() or cored.ridge_mask[int(0.5 * r) - 1].all()
