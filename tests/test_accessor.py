import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

import vocalatent.accessor  # noqa: E402,F401  (registers ds.vl)
from vocalatent import ParameterError  # noqa: E402
from vocalatent.analysis._demo import SyntheticSyllableDecoder, synthetic_embedding_dataset  # noqa: E402
from vocalatent.embedding import read_embedding


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def decoder():
    return SyntheticSyllableDecoder(2, output_shape=(12, 12))


@pytest.fixture
def ds(decoder):
    return synthetic_embedding_dataset(decoder, n_per_type=120, random_state=7)


def test_density_adds_a_grid_variable_without_touching_the_input(ds):
    out = ds.vl.density(resolution=32)
    assert "density" not in ds
    assert out["density"].dims == ("grid_0", "grid_1")
    np.testing.assert_allclose(out["grid_0"].values, (np.arange(32) + 0.5) / 32)
    assert float(out["density"].mean()) == pytest.approx(1.0)
    assert out["density"].attrs["bandwidth"].shape == (2,)
    fixed = ds.vl.density(resolution=32, bandwidth=0.05)
    np.testing.assert_allclose(fixed["density"].attrs["bandwidth"], [0.05, 0.05])


def test_clusters_match_the_true_types(ds):
    out = ds.vl.clusters(resolution=48)
    assert out["cluster"].dims == ("item",)
    assert adjusted_rand_score(ds["true_type"].values, out["cluster"].values) >= 0.95
    assert out["cluster_mode"].dims == ("cluster_id", "latent")
    assert int(out["cluster_size"].sum()) == ds.sizes["item"]
    assert out["cluster_grid"].dims == ("grid_0", "grid_1")


def test_full_analysis_round_trips_through_netcdf(tmp_path, ds, decoder):
    out = ds.vl.clusters(resolution=24).vl.jacobian(decoder).vl.boundaries()
    assert out["jacobian_norm"].dims == ("grid_0", "grid_1")
    assert out["boundary"].dtype == bool
    table = out.vl.boundary_strength()
    assert len(table) == 6 and (table["strength"] > 0).all()
    path = tmp_path / "embedding.nc"
    out.to_netcdf(path, engine="h5netcdf")
    back = read_embedding(path).load()
    np.testing.assert_array_equal(back["cluster"].values, out["cluster"].values)
    np.testing.assert_allclose(back["jacobian_norm"].values, out["jacobian_norm"].values)
    assert back.vl.boundary_strength().equals(table)
    assert back.vl.plot_jacobian() is not None


def test_geodesic_between_clusters(ds, decoder):
    out = ds.vl.clusters(resolution=24)
    g = out.vl.geodesic_between_clusters(decoder, 0, 1, resolution=16, n_frames=4)
    modes = out["cluster_mode"].values
    np.testing.assert_allclose(g.path[0], modes[0], atol=1e-12)
    np.testing.assert_allclose(g.path[-1], modes[1], atol=1e-12)
    assert g.decoded.shape == (4, 144)
    with pytest.raises(ParameterError, match="cluster b"):
        out.vl.geodesic_between_clusters(decoder, 0, 9)


@pytest.mark.parametrize("color", ["cluster", "label", "source", "spread", "duration_s"])
def test_plot_embedding_colours(ds, color):
    ax = ds.vl.clusters(resolution=24).vl.plot_embedding(color=color)
    assert ax.collections


def test_plots_from_the_dataset(ds, decoder):
    out = ds.vl.clusters(resolution=24).vl.jacobian(decoder)
    assert out.vl.plot_density().images
    assert out.vl.plot_jacobian().images
    assert out.vl.plot_latent_map(decoder, n_tiles=3).images
    lattice = np.random.default_rng(0).random((500, 2))
    agg = np.full(500, 1 / 500)
    with_post = out.assign(aggregate_posterior=("lattice_point", agg),
                           lattice_z=(("lattice_point", "latent"), lattice))
    assert with_post.vl.plot_aggregate_posterior().collections


def test_one_dimensional_dataset():
    dec = SyntheticSyllableDecoder(1)
    ds = synthetic_embedding_dataset(dec, n_per_type=100, random_state=1).vl.clusters()
    assert ds["density"].dims == ("grid_0",)
    assert adjusted_rand_score(ds["true_type"].values, ds["cluster"].values) >= 0.95
    assert ds.vl.plot_embedding() is not None


def test_errors_name_the_problem(ds, decoder):
    with pytest.raises(ParameterError, match="'cluster'.*run ds.vl.clusters"):
        ds.vl.plot_embedding(color="cluster")
    with pytest.raises(ParameterError, match="no item variable or coordinate named 'colour_me'"):
        ds.vl.plot_embedding(color="colour_me")
    with pytest.raises(ParameterError, match="jacobian_norm"):
        ds.vl.boundary_strength()
    with pytest.raises(ParameterError, match=r"drop them first with ds.drop_dims\(\['grid_0', 'grid_1'\]\)"):
        ds.vl.density(resolution=16).vl.jacobian(decoder, resolution=24)
    with pytest.raises(ParameterError, match="3-D latent"):
        ds.vl.jacobian(SyntheticSyllableDecoder(3))
    with pytest.raises(ParameterError, match="mean_function"):
        ds.vl.jacobian(object())
    with pytest.raises(ParameterError, match="'embedding'"):
        xr.Dataset().vl.density()
