"""Domain detection, preparation, the AnnData writer, and bad input through the one job (embed)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from vocalatent.data.h5ad import write_h5ad
from vocalatent.prepare import detect_domain, prepare
from vocalatent.workflow import embed
from vocalatent._utils import DataError, ParameterError
from vocalatent.data.simulate import head_direction_cells, simulate_cell_types
from vocalatent.data.single_cell import read_h5ad


# ------------------------------------------------------------------------------ fixtures
def _write_counts_csv(path, counts, cells, genes):
    pd.DataFrame(counts, index=cells, columns=genes).to_csv(path)


@pytest.fixture(scope="module")
def cells():
    return simulate_cell_types(120, 60, 3, n_markers=5, random_state=0)


@pytest.fixture
def cell_csv(tmp_path, cells):
    cm = cells.matrix
    path = tmp_path / "cells_by_genes.csv"
    _write_counts_csv(path, cm.dense().astype(int), cm.cell_names, cm.gene_names)
    return path


@pytest.fixture
def hd_npz(tmp_path):
    sim = head_direction_cells(12, 300, bin_s=0.1, random_state=0)
    path = tmp_path / "hd.npz"
    np.savez(path, counts=sim.counts.T, time=sim.time)
    return path


# ------------------------------------------------------------------------------ detection
def test_detect_domain_by_extension_and_content(tmp_path, cell_csv, hd_npz):
    assert detect_domain(cell_csv) == "single_cell"
    assert detect_domain(hd_npz) == "neural"
    (tmp_path / "a.h5ad").write_bytes(b"")
    assert detect_domain(tmp_path / "a.h5ad") == "single_cell"
    with h5py.File(tmp_path / "tenx.h5", "w") as f:
        f.create_group("matrix")
    assert detect_domain(tmp_path / "tenx.h5") == "single_cell"
    with h5py.File(tmp_path / "spikes.h5", "w") as f:
        f.create_group("units")["u0"] = np.array([0.1, 0.2])
    assert detect_domain(tmp_path / "spikes.h5") == "neural"
    mtx = tmp_path / "mtx"
    mtx.mkdir()
    (mtx / "matrix.mtx").write_text("")
    assert detect_domain(mtx) == "single_cell"
    # text tables: spike times (numbers only), binned (numeric header), genes (name header)
    (tmp_path / "spk.txt").write_text("# unit\n0.1\n0.5\n")
    assert detect_domain(tmp_path / "spk.txt") == "neural"
    (tmp_path / "binned.csv").write_text("unit,0.05,0.15\nu0,1,2\n")
    assert detect_domain(tmp_path / "binned.csv") == "neural"
    (tmp_path / "song.wav").write_bytes(b"")
    assert detect_domain(tmp_path / "song.wav") == "vocal"
    assert detect_domain(tmp_path) == "vocal"          # a folder of recordings
    # no header, several numbers per line: non-integer times are one unit per line ...
    (tmp_path / "trains.txt").write_text("0.013 0.25 1.5\n0.2 0.71\n")
    assert detect_domain(tmp_path / "trains.txt") == "neural"
    # ... but whole numbers could just as well be a header-less count matrix: never a guess
    (tmp_path / "counts.csv").write_text("0,3,1,0\n2,0,0,5\n1,1,0,0\n")
    with pytest.raises(DataError, match=r"counts\.csv: .*--pipeline single_cell or --pipeline neural"):
        detect_domain(tmp_path / "counts.csv")
    assert detect_domain(tmp_path / "counts.csv", pipeline="single_cell") == "single_cell"
    assert detect_domain(tmp_path / "counts.csv", pipeline="neural") == "neural"
    # an explicit pipeline wins over the content
    assert detect_domain(tmp_path / "binned.csv", pipeline="single_cell") == "single_cell"
    with pytest.raises(DataError, match="no such file"):
        detect_domain(tmp_path / "missing.h5ad")


# ------------------------------------------------------------------------------ preparation
def _cfg(pipeline, **tables):
    from vocalatent.workflow import resolve

    return resolve(pipeline=pipeline, overrides=tables)


def test_prepare_single_cell_selects_genes_and_keys_on_content(tmp_path, cell_csv, cells):
    cfg = _cfg("single_cell", single_cell={"n_top_genes": 20, "min_cells": 1})
    prep = prepare(cell_csv, tmp_path / "out", cfg)
    assert prep.domain == "single_cell" and prep.X.shape == (120, 20) and prep.X.dtype == np.float32
    # the planted markers are the most variable genes: most of the 15 are among the 20 kept
    markers = set(cells.matrix.gene_names[cells.markers.ravel()])
    assert len(markers & set(prep.features)) >= 12
    assert list(prep.coords["cell"][:3]) == list(cells.matrix.cell_names[:3])
    np.testing.assert_allclose(prep.coords["n_counts"], cells.library_size)
    assert (tmp_path / "out" / "genes.csv").is_file()
    # same bytes and settings: same key; other settings or other bytes: another key
    assert prepare(cell_csv, None, cfg).data_key == prep.data_key
    cfg2 = _cfg("single_cell", single_cell={"n_top_genes": 25, "min_cells": 1})
    assert prepare(cell_csv, None, cfg2).data_key != prep.data_key
    text = cell_csv.read_text().replace(",0,", ",1,", 1)
    cell_csv.write_text(text)
    assert prepare(cell_csv, None, cfg).data_key != prep.data_key


def test_prepare_neural_bins_spike_times(tmp_path):
    spikes = {"a": np.array([0.01, 0.02, 0.26]), "b": np.array([0.11, 0.31])}
    np.savez(tmp_path / "spk.npz", **spikes)
    cfg = _cfg("neural", neural={"bin_s": 0.1})
    prep = prepare(tmp_path / "spk.npz", None, cfg)
    # window starts at the first spike (0.01 s): bins [0.01,0.11), [0.11,0.21), [0.21,0.31), [0.31,0.41)
    np.testing.assert_array_equal(prep.X, [[2, 0], [0, 1], [1, 0], [0, 1]])
    np.testing.assert_allclose(prep.coords["time_s"], [0.06, 0.16, 0.26, 0.36])
    assert list(prep.features) == ["a", "b"]


def test_neural_format_auto_reads_binned_npz(hd_npz):
    prep = prepare(hd_npz, None, _cfg("neural"))
    assert prep.extra["format"] == "binned" and prep.X.shape == (300, 12)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make, pipeline, message", [
    (lambda p: _write_counts_csv(p, np.array([[1, -2], [3, 4]]), ["c0", "c1"], ["g0", "g1"]),
     "single_cell", "negative"),
    (lambda p: _write_counts_csv(p, np.array([[1.5, 2.0], [3.0, 4.25]]), ["c0", "c1"], ["g0", "g1"]),
     "single_cell", "log-normalized"),
])
def test_bad_counts_name_the_file(tmp_path, make, pipeline, message):
    path = tmp_path / "bad_cells_by_genes.csv"
    make(path)
    with pytest.raises(DataError, match=message) as info:
        embed(path, tmp_path / "out", pipeline=pipeline, verbose=False)
    assert str(path) in str(info.value)


def test_bad_neural_inputs_name_the_file(tmp_path):
    cases = {
        "nan_times.npz": (dict(counts=np.ones((2, 3)), time=np.array([0.0, np.nan, 0.2])), "NaN"),
        "shape.npz": (dict(counts=np.ones((2, 3)), time=np.array([0.0, 0.1])), "2 time stamps for 3 bins"),
        "names.npz": (dict(counts=np.ones((2, 3)), unit_names=np.array(["a", "b", "c"])), "3 unit names"),
        "empty_unit.npz": (dict(counts=np.array([[1, 0, 2], [0, 0, 0]])), "no activity"),
        "negative.npz": (dict(counts=np.array([[1, -1, 2], [1, 0, 0]])), "negative"),
        "fraction.npz": (dict(counts=np.array([[1.5, 1, 2], [1, 0, 0]])), "non-integer"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / name
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=message) as info:
            embed(path, tmp_path / f"out_{name}", verbose=False)
        assert str(path) in str(info.value), name
    # spike times: NaN and a silent unit
    np.savez(tmp_path / "nan_spikes.npz", a=np.array([0.1, np.nan]), b=np.array([0.2]))
    with pytest.raises(DataError, match="NaN") as info:
        embed(tmp_path / "nan_spikes.npz", tmp_path / "o1", verbose=False)
    assert "nan_spikes.npz" in str(info.value)
    np.savez(tmp_path / "silent.npz", a=np.array([0.1, 0.3]), b=np.array([], dtype=float))
    with pytest.raises(DataError, match="no spikes"):
        embed(tmp_path / "silent.npz", tmp_path / "o2", verbose=False)


def test_smoothing_with_poisson_is_refused(tmp_path):
    np.savez(tmp_path / "spk.npz", a=np.array([0.1, 0.3, 0.5]), b=np.array([0.2, 0.4]))
    with pytest.raises(ParameterError, match="smooth_s"):
        embed(tmp_path / "spk.npz", tmp_path / "o", verbose=False,
                             overrides={"neural": {"smooth_s": 0.1}})


def test_unknown_domain_keys_and_audio_refused(tmp_path, cell_csv):
    with pytest.raises(ParameterError, match="unknown key.*n_top"):
        embed(cell_csv, tmp_path / "o", verbose=False,
                             overrides={"single_cell": {"n_top": 5}})
    # recordings go through the same job; preparing them needs a folder for their store
    (tmp_path / "song.wav").write_bytes(b"")
    assert detect_domain(tmp_path / "song.wav") == "vocal"
    with pytest.raises(DataError, match="output folder"):
        prepare(tmp_path / "song.wav", None, _cfg("default"))


# ------------------------------------------------------------------------------ AnnData
def test_write_h5ad_round_trip(tmp_path, cells):
    cm = cells.matrix
    obs = cm.obs.copy()
    obs["label"] = [f"t{t}" for t in cells.cell_type]
    var = cm.var.copy()
    var["modelled"] = np.arange(cm.n_genes) % 2 == 0
    emb = np.random.default_rng(0).random((cm.n_cells, 2))
    path = write_h5ad(tmp_path / "a.h5ad", cm.X, obs=obs, var=var, obsm={"X_qlvm": emb},
                              uns={"qlvm": {"latent_dim": 2, "config": json.dumps({"a": 1}),
                                            "note": None}}, backend="h5py")
    back = read_h5ad(path)
    assert (back.X != cm.X).nnz == 0
    assert list(back.cell_names) == list(cm.cell_names)
    assert list(back.gene_names) == list(cm.gene_names)
    assert list(back.obs["label"]) == list(obs["label"])
    np.testing.assert_array_equal(back.obs["cell_type"].astype(int), cells.cell_type)
    np.testing.assert_array_equal(back.var["modelled"], var["modelled"])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["obsm/X_qlvm"][...], emb)
        assert f["uns/qlvm/latent_dim"][()] == 2
        assert json.loads(f["uns/qlvm/config"].asstr()[()]) == {"a": 1}
        assert "note" not in f["uns/qlvm"]
    anndata = pytest.importorskip("anndata")
    ad = anndata.read_h5ad(path)
    np.testing.assert_array_equal(ad.obsm["X_qlvm"], emb)
    assert (sparse.csr_matrix(ad.X) != cm.X).nnz == 0
    assert int(ad.uns["qlvm"]["latent_dim"]) == 2
    assert list(ad.obs_names) == list(cm.cell_names)


def test_write_h5ad_rejects_mismatched_shapes(tmp_path, cells):
    cm = cells.matrix
    with pytest.raises(ParameterError, match="obsm"):
        write_h5ad(tmp_path / "a.h5ad", cm.X, obs=cm.obs, var=cm.var,
                           obsm={"X_qlvm": np.zeros((3, 2))}, backend="h5py")
    with pytest.raises(ParameterError, match="do not match"):
        write_h5ad(tmp_path / "a.h5ad", cm.X, obs=cm.obs.iloc[:5], var=cm.var, backend="h5py")
    assert not (tmp_path / "a.h5ad").exists()


# ------------------------------------------------------------------------------ real data
def _knn_separation(z, labels, k=5):
    from vocalatent.analysis.torus import torus_distance

    dist = np.stack([torus_distance(z, np.broadcast_to(z[i], z.shape)) for i in range(len(z))])
    np.fill_diagonal(dist, np.inf)
    votes = labels[np.argsort(dist, axis=1)[:, :k]]
    return float(np.mean((votes.mean(axis=1) > 0.5) == labels))


@pytest.mark.slow
def test_celltypist_sample_end_to_end(real_data, tmp_path):
    """559 immune cells: fit, embed, write AnnData; T cells (CD3D) and monocytes (LYZ-high,
    CD3D-free) are told apart by a 5-NN vote in the map (>= 0.85)."""
    path = real_data("celltypist_sample") / "sample_cell_by_gene.csv"
    ds = embed(path, tmp_path / "out", verbose=False, figures=False,
                              overrides={"model": {"max_epochs": 60},
                                         "single_cell": {"n_top_genes": 1000}})
    assert ds.sizes["item"] == 559 and str(ds["cell"].values[0])
    back = read_h5ad(tmp_path / "out" / "adata.h5ad")
    assert back.n_cells == 559
    with h5py.File(tmp_path / "out" / "adata.h5ad", "r") as f:
        np.testing.assert_allclose(f["obsm/X_qlvm"][...], ds["embedding"].values)
    genes = list(back.gene_names)
    X = back.X.tocsc()
    cd3d = X[:, genes.index("CD3D")].toarray().ravel()
    lyz = X[:, genes.index("LYZ")].toarray().ravel() / np.asarray(back.X.sum(1)).ravel()
    t_cell = cd3d >= 1
    mono = (cd3d == 0) & (lyz >= np.quantile(lyz, 0.75))
    keep = t_cell | mono
    assert t_cell.sum() > 40 and mono.sum() > 40
    assert _knn_separation(ds["embedding"].values[keep], t_cell[keep].astype(int)) >= 0.85


@pytest.mark.slow
def test_scanpy_10x_subset_zarr_loads_and_embeds(real_data, tmp_path):
    pytest.importorskip("zarr")
    path = real_data("scanpy_10x_subset") / "10x-10k-subset.zarr"
    assert detect_domain(path) == "single_cell"
    ds = embed(path, tmp_path / "out", verbose=False, figures=False,
                              overrides={"model": {"max_epochs": 3}})
    assert ds.sizes["item"] == 9999 and ds.sizes["latent"] == 2
    assert (tmp_path / "out" / "adata.h5ad").is_file()
