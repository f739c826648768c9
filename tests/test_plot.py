import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vocalatent import ParameterError, plot  # noqa: E402
from vocalatent.analysis._demo import SyntheticSyllableDecoder  # noqa: E402
from vocalatent.analysis.density import periodic_kde  # noqa: E402
from vocalatent.analysis.geodesic import geodesic  # noqa: E402
from vocalatent.analysis.torus import wrap  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _check_png(path, min_std=0.03):
    """A valid PNG that is not blank: magic bytes, size, and pixel variation."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 200
    assert img[..., :3].std() > min_std
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind
    return img


@pytest.fixture(scope="module")
def decoder2():
    return SyntheticSyllableDecoder(2, output_shape=(12, 12))


def _points(rng, n, d=2):
    centres = np.array([[0.02, 0.3, 0.2], [0.45, 0.2, 0.7], [0.3, 0.7, 0.45]])[:, :d]
    lab = rng.integers(0, 3, n)
    return wrap(centres[lab] + rng.normal(0, 0.04, (n, d))), lab


def test_latent_map_2d(tmp_path, decoder2):
    ax = plot.plot_latent_map(decoder2, decoder2.output_shape, n_tiles=5)
    assert ax.get_xlabel().startswith("z1") and ax.get_ylabel().startswith("z2")
    im = ax.images[0]
    assert im.origin == "lower" and im.get_cmap().name.startswith("magma")
    assert im.get_array().shape == (5 * 12 + 4 * 1, 5 * 12 + 4 * 1)
    _check_png(plot.save_figure(ax.figure, tmp_path / "map.png"))


@pytest.mark.parametrize("d", [1, 3])
def test_latent_map_1d_and_3d(tmp_path, d):
    dec = SyntheticSyllableDecoder(d, output_shape=(8, 8))
    out = plot.plot_latent_map(dec, dec.output_shape, n_tiles=4, n_slices=2)
    _check_png(plot.save_figure(out, tmp_path / f"map{d}.png"))


def test_latent_map_wrong_shape(decoder2):
    with pytest.raises(ParameterError, match="output_shape"):
        plot.plot_latent_map(decoder2, (10, 10), n_tiles=2)


def test_embedding_categorical_and_continuous(tmp_path, rng):
    z, lab = _points(rng, 3000)
    names = np.array(["A", "B", "C"])[lab]
    ax = plot.plot_embedding(z, color=names, color_label="label")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [f"{c} (n={np.sum(names == c)})" for c in "ABC"]
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    _check_png(plot.save_figure(ax, tmp_path / "emb_cat.png"))
    clusters = np.where(lab == 2, -1, lab)
    ax = plot.plot_embedding(z, color=clusters, color_label="cluster")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[-1].startswith("none")  # -1 drawn grey as "none", listed last
    ax = plot.plot_embedding(z, color=rng.random(3000), color_label="spread")
    assert len(ax.figure.axes) == 2  # a colorbar
    assert ax.figure.axes[1].get_ylabel() == "spread"
    _check_png(plot.save_figure(ax, tmp_path / "emb_cont.png"))


def test_embedding_1d_ring_and_3d(tmp_path, rng):
    z1, lab = _points(rng, 500, d=1)
    dens = periodic_kde(z1).density
    ax = plot.plot_ring(z1[:, 0], color=lab, color_label="cluster", density=dens)
    _check_png(plot.save_figure(ax, tmp_path / "ring.png"))
    z3, lab = _points(rng, 500, d=3)
    fig = plot.plot_embedding(z3, color=lab, color_label="cluster")
    assert len([a for a in fig.axes if a.collections]) == 3
    _check_png(plot.save_figure(fig, tmp_path / "emb3.png"))


def test_density_jacobian_and_slices(tmp_path, rng, decoder2):
    z, _ = _points(rng, 800)
    dens = periodic_kde(z, resolution=32).density
    modes = np.array([[0.02, 0.3], [0.45, 0.2]])
    ax = plot.plot_density(dens, modes=modes)
    assert ax.images[0].get_array().shape == (32, 32)
    # the image is the transpose: row = z2, column = z1
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), dens.T)
    _check_png(plot.save_figure(ax, tmp_path / "density.png"))
    from vocalatent.analysis.jacobian import boundaries, jacobian_norm_grid

    jac = jacobian_norm_grid(decoder2, latent_dim=2, resolution=24)
    b = boundaries(jac, modes=modes)
    ax = plot.plot_jacobian(jac, boundaries=b.ridge_mask, modes=modes)
    assert "log10" in ax.figure.axes[1].get_ylabel()
    _check_png(plot.save_figure(ax, tmp_path / "jac.png"))
    fig = plot.plot_3d_slices(rng.random((8, 8, 8)), n_slices=3, label="value")
    _check_png(plot.save_figure(fig, tmp_path / "slices.png"))
    ax = plot.plot_density(periodic_kde(z[:, :1]).density, points=z[:, :1])
    _check_png(plot.save_figure(ax, tmp_path / "density1.png"))


def test_geodesic_figure(tmp_path, decoder2):
    g = geodesic(decoder2, [0.3, 0.7], [0.75, 0.65], resolution=16, n_frames=6)
    fig = plot.plot_geodesic(g, output_shape=decoder2.output_shape, jacobian=np.ones((16, 16)))
    assert len(fig.axes) >= 2
    _check_png(plot.save_figure(fig, tmp_path / "geo.png"))


def test_training_curves(tmp_path):
    hist = {"epoch": [1, 2, 3, 4], "train_log_likelihood": [-900, -700, -650, -640],
            "val_log_likelihood": [-950, -720, -690, -695]}
    ax = plot.plot_training_curves(hist)
    assert ax.get_ylabel() == "log-likelihood (nats per item)"
    assert any("epoch 3" in t.get_text() for t in ax.texts)  # the best validation epoch
    _check_png(plot.save_figure(ax, tmp_path / "curves.png"))
    with pytest.raises(ParameterError, match="train_log_likelihood"):
        plot.plot_training_curves(pd.DataFrame({"epoch": [1]}))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_posterior(tmp_path, rng, d):
    lattice = rng.random((1000, d))
    w = np.exp(-((lattice - 0.5) ** 2).sum(1) / 0.01)
    ax = plot.plot_posterior(w, lattice)
    _check_png(plot.save_figure(ax, tmp_path / f"post{d}.png"), min_std=0.02)
    with pytest.raises(ParameterError, match="weights"):
        plot.plot_posterior(w[:10], lattice)


def test_save_figure_is_atomic(tmp_path):
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")

    class Broken:
        figure = None

        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    broken = Broken()
    broken.figure = broken
    with pytest.raises(RuntimeError):
        plot.save_figure(broken, target, close=False)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_saved_figure_has_normal_permissions(tmp_path):
    import os

    fig, _ = plt.subplots()
    path = plot.save_figure(fig, tmp_path / "perm.png")
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
