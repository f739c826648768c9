"""vocalatent.tl.qlvm: the scanpy-style call on an in-memory AnnData."""

from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from vocalatent._utils import DataError, ParameterError
from vocalatent.analysis.torus import torus_distance
from vocalatent.data.simulate import simulate_cell_types
from vocalatent.tl import annotate, qlvm, torus_coordinates

anndata = pytest.importorskip("anndata")

FAST = dict(max_epochs=25, lr=3e-3, batch_size=128, decoder_options={"hidden": (64, 64)},
            verbose=False)


def knn_accuracy(z, labels, k=5):
    d = torus_distance(z[:, None, :], z[None, :, :])
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    votes = labels[nn]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float(np.mean(pred == labels))


@pytest.fixture(scope="module")
def sim():
    return simulate_cell_types(400, 200, 4, n_markers=15, marker_fold_change=6.0,
                               library_size_median=1500, random_state=0)


def _adata(sim):
    cm = sim.matrix
    obs = pd.DataFrame({"cell_type": pd.Categorical(sim.cell_type.astype(str))},
                       index=pd.Index(cm.cell_names.astype(str)))
    var = pd.DataFrame(index=pd.Index(cm.gene_names.astype(str)))
    counts = sparse.csr_matrix(cm.X, dtype=np.float32)
    ad = anndata.AnnData(X=counts.copy(), obs=obs, var=var)
    ad.layers["counts"] = counts
    # what a scanpy user has done before: normalised X, a PCA, some uns
    lib = np.asarray(counts.sum(axis=1)).ravel()
    ad.X = sparse.csr_matrix(counts.multiply(1e4 / lib[:, None]).log1p(), dtype=np.float32)
    ad.obsm["X_pca"] = np.random.default_rng(0).normal(size=(ad.n_obs, 5))
    ad.uns["log1p"] = {"base": None}
    return ad


@pytest.fixture(scope="module")
def fitted(sim):
    ad = _adata(sim)
    # one cell with no counts at all: it cannot be modelled and must come back as NaN
    counts = ad.layers["counts"].tolil()
    counts[7, :] = 0
    ad.layers["counts"] = counts.tocsr()
    model = qlvm(ad, layer="counts", n_top_genes=0, random_state=0, **FAST)
    return ad, model


def test_qlvm_annotates_in_place_and_keeps_everything(fitted, sim):
    ad, model = fitted
    n = ad.n_obs
    # the user's own things survive
    assert set(ad.obsm) >= {"X_pca", "X_qlvm", "X_qlvm_torus"}
    assert "counts" in ad.layers and ad.uns["log1p"] == {"base": None}
    assert "cell_type" in ad.obs
    emb = ad.obsm["X_qlvm"]
    assert emb.shape == (n, 2) and ad.obsm["X_qlvm_torus"].shape == (n, 4)
    assert np.isnan(emb[7]).all() and np.isnan(ad.obs["qlvm_log_likelihood"].iloc[7])
    ok = np.ones(n, bool)
    ok[7] = False
    assert np.all((emb[ok] >= 0) & (emb[ok] < 1))
    np.testing.assert_allclose(ad.obsm["X_qlvm_torus"][ok], torus_coordinates(emb[ok]))
    # clusters as scanpy stores them: string categories with one colour each
    cl = ad.obs["qlvm_cluster"]
    assert isinstance(cl.dtype, pd.CategoricalDtype)
    assert all(isinstance(c, str) for c in cl.cat.categories)
    assert pd.isna(cl.iloc[7])
    assert len(ad.uns["qlvm_cluster_colors"]) == len(cl.cat.categories)
    assert ad.uns["qlvm"]["params"]["latent_dim"] == 2
    assert ad.uns["qlvm"]["n_cells_modelled"] == n - 1
    assert len(ad.uns["qlvm"]["genes"]) == ad.n_vars
    assert np.isfinite(ad.uns["qlvm"]["heldout_log_likelihood"])
    # the map separates the true types (chance ~0.25)
    assert knn_accuracy(emb[ok], sim.cell_type[ok]) >= 0.9


def test_fitted_model_applies_by_gene_name(fitted, sim):
    ad, model = fitted
    other = _adata(sim)
    perm = np.random.default_rng(1).permutation(other.n_vars)
    other = other[:, perm].copy()        # same genes, another order
    qlvm(other, layer="counts", model=model, clusters=False, key_added="mapped")
    ok = np.ones(ad.n_obs, bool)
    ok[7] = False
    # the same cells land in the same place (same model, same lattice seed)
    d = torus_distance(other.obsm["X_mapped"][ok], ad.obsm["X_qlvm"][ok])
    assert np.max(d) < 1e-5
    missing = other[:, 3:].copy()
    with pytest.raises(DataError, match="not in this AnnData's var_names"):
        qlvm(missing, layer="counts", model=model)


def test_round_trip_through_h5ad(fitted, tmp_path):
    ad, _ = fitted
    path = tmp_path / "annotated.h5ad"
    ad.write_h5ad(path)
    back = anndata.read_h5ad(path)
    np.testing.assert_array_equal(back.obsm["X_qlvm"], ad.obsm["X_qlvm"])
    assert list(back.obs["qlvm_cluster"].cat.categories) == list(ad.obs["qlvm_cluster"].cat.categories)
    assert list(back.uns["qlvm_cluster_colors"]) == list(ad.uns["qlvm_cluster_colors"])


def test_bad_input_errors(sim):
    ad = _adata(sim)
    with pytest.raises(DataError, match="layer 'nope' not found"):
        qlvm(ad, layer="nope")
    with pytest.raises(DataError, match="non-integer"):
        qlvm(ad)                            # X is log-normalised: not counts
    with pytest.raises(ParameterError, match="unknown QLVM parameter"):
        qlvm(ad, layer="counts", max_epoch=3)
    with pytest.raises(ParameterError, match="anndata.AnnData"):
        qlvm(np.zeros((3, 3)))


def test_torus_coordinates_respect_the_seam():
    z = np.array([[0.01, 0.5], [0.99, 0.5], [0.5, 0.5]])
    t = torus_coordinates(z)
    near = np.linalg.norm(t[0] - t[1])
    far = np.linalg.norm(t[0] - t[2])
    assert near < 0.2 < far            # 0.01 and 0.99 are neighbours on the circle
    # chord length is a monotone function of the torus distance, per dimension
    a = np.linspace(0, 1, 50, endpoint=False)[:, None]
    chord = np.abs(2 * np.sin(np.pi * torus_distance(a, np.zeros_like(a))))
    np.testing.assert_allclose(np.linalg.norm(torus_coordinates(a) - torus_coordinates(np.zeros_like(a)),
                                              axis=1), chord, atol=1e-12)


def test_annotate_checks_rows(sim):
    import xarray as xr

    ad = _adata(sim)
    ds = xr.Dataset({"embedding": (("item", "latent"), np.zeros((3, 2))),
                     "log_likelihood": ("item", np.zeros(3)),
                     "spread": (("item", "latent"), np.zeros((3, 2)))})
    with pytest.raises(ParameterError, match="rows has 2 entries"):
        annotate(ad, ds, rows=[0, 1])
    with pytest.raises(ParameterError, match="rows must lie in"):
        annotate(ad, ds, rows=[0, 1, ad.n_obs])


def _real_subset():
    paths = glob.glob(os.path.join(os.path.expanduser(os.environ.get(
        "VOCALATENT_DATA", "~/.cache/vocalatent/data")), "scanpy_10x_subset", "*.zarr"))
    if not paths:
        from vocalatent.data.manifests import fetch

        try:
            folder = fetch("scanpy_10x_subset")
        except Exception as exc:  # no registry access on this machine
            pytest.skip(f"scanpy_10x_subset could not be fetched: {exc}")
        paths = glob.glob(os.path.join(str(folder), "*.zarr"))
    return anndata.read_zarr(paths[0])


@pytest.mark.slow
def test_real_anndata_with_scanpy(tmp_path):
    """The real 10x subset from the manifests, checked with scanpy's own functions."""
    ad = _real_subset()[:800].copy()
    ad.layers["counts"] = ad.X.copy()
    ad.obsm["X_user"] = np.ones((ad.n_obs, 2))
    qlvm(ad, layer="counts", n_top_genes=500, random_state=0, **{**FAST, "max_epochs": 6})
    assert ad.obsm["X_qlvm"].shape == (ad.n_obs, 2) and "X_user" in ad.obsm
    sc = pytest.importorskip("scanpy")
    sc.pp.neighbors(ad, use_rep="X_qlvm_torus", n_neighbors=10)
    assert ad.obsp["connectivities"].shape == (ad.n_obs, ad.n_obs)
    import matplotlib

    matplotlib.use("Agg")
    fig = sc.pl.embedding(ad, basis="qlvm", color="qlvm_cluster", show=False, return_fig=True)
    fig.savefig(tmp_path / "qlvm.png")
    assert (tmp_path / "qlvm.png").stat().st_size > 5000


def test_embed_h5ad_annotates_a_copy_of_the_users_anndata(sim, tmp_path):
    """`vocalatent embed x.h5ad` writes the user's own AnnData back with the map: every cell
    (filtered ones NaN), the user's obsm/layers/uns kept, counts in layers["counts"]."""
    from vocalatent import embed

    cm = sim.matrix
    X = sparse.csr_matrix(cm.X, dtype=np.float32).tolil()
    X[5, :] = 0                                   # min_counts = 1 filters this cell out
    ad = anndata.AnnData(X=X.tocsr(), obs=pd.DataFrame({"batch": ["a", "b"] * (cm.n_cells // 2)},
                                                        index=cm.cell_names.astype(str)),
                         var=pd.DataFrame(index=cm.gene_names.astype(str)))
    ad.obsm["X_user"] = np.arange(ad.n_obs * 2, dtype=float).reshape(-1, 2)
    ad.uns["lab"] = {"who": "me"}
    path = tmp_path / "cells.h5ad"
    ad.write_h5ad(path)
    embed(path, tmp_path / "out", verbose=False, figures=False,
          overrides={"model": {"max_epochs": 3, "n_lattice": 144},
                     "single_cell": {"n_top_genes": 50},
                     "analysis": {"jacobian": False, "geodesic": False}})
    back = anndata.read_h5ad(tmp_path / "out" / "adata.h5ad")
    assert back.n_obs == ad.n_obs and back.n_vars == ad.n_vars
    np.testing.assert_array_equal(back.obsm["X_user"], ad.obsm["X_user"])
    assert back.uns["lab"]["who"] == "me" and list(back.obs["batch"]) == list(ad.obs["batch"])
    assert "counts" in back.layers
    np.testing.assert_array_equal(back.layers["counts"].toarray(), ad.X.toarray())
    assert np.isnan(back.obsm["X_qlvm"][5]).all() and np.isfinite(back.obsm["X_qlvm"][0]).all()
    assert back.obsm["X_qlvm_torus"].shape == (ad.n_obs, 4)
    assert all(isinstance(c, str) for c in back.obs["qlvm_cluster"].cat.categories)
    assert back.var["qlvm_modelled"].sum() == 50
    assert "heldout_log_likelihood" in back.uns["qlvm"]
