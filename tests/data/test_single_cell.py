"""Count-matrix loaders (every format written here), integer checks, HVG, size factors."""

from __future__ import annotations

import gzip
import importlib.util

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import io as spio
from scipy import sparse

from vocalatent._utils import DataError, ParameterError
from vocalatent.data.simulate import simulate_cell_types
from vocalatent.data.single_cell import (
    CountMatrix,
    check_counts,
    filter_cells_genes,
    gene_variability,
    read_10x_h5,
    read_counts,
    read_csv,
    read_h5ad,
    read_mtx_dir,
    read_zarr,
    select_highly_variable_genes,
    size_factors,
)

CELLS = np.array(["AAACCTGAGATAGGAG-1", "AAACCTGAGCGGCTTC-1", "AAACCTGAGGAATCGC-1",
                  "AAACCTGCAAGCCGCT-1"], dtype=object)
GENES = np.array(["Xkr4", "Gm1992", "Sox17", "Mrpl15", "Lypla1"], dtype=object)


@pytest.fixture
def counts(rng):
    X = rng.poisson(1.5, size=(len(CELLS), len(GENES))).astype(np.int64)
    X[0, 0] = 7
    X[:, 1] = 0          # an all-zero gene
    return X


# --------------------------------------------------------------------------------------------
# writers following the formats' specifications
# --------------------------------------------------------------------------------------------

def _write_str(group, name, values):
    group.create_dataset(name, data=np.asarray(values, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))


def _write_df(group, name, index, columns: dict):
    g = group.create_group(name)
    g.attrs["encoding-type"] = "dataframe"
    g.attrs["encoding-version"] = "0.2.0"
    g.attrs["_index"] = "_index"
    g.attrs["column-order"] = np.asarray(list(columns), dtype=object) if columns else np.empty(0, "f8")
    _write_str(g, "_index", index)
    for col, values in columns.items():
        if isinstance(values, pd.Categorical):
            c = g.create_group(col)
            c.attrs["encoding-type"] = "categorical"
            c.attrs["encoding-version"] = "0.2.0"
            c.attrs["ordered"] = False
            c.create_dataset("codes", data=values.codes.astype(np.int8))
            _write_str(c, "categories", np.asarray(values.categories, dtype=object))
        else:
            ds = g.create_dataset(col, data=np.asarray(values))
            ds.attrs["encoding-type"] = "array"
            ds.attrs["encoding-version"] = "0.2.0"


def _write_matrix(group, name, X, fmt):
    if fmt == "dense":
        ds = group.create_dataset(name, data=X)
        ds.attrs["encoding-type"] = "array"
        ds.attrs["encoding-version"] = "0.2.0"
        return
    M = sparse.csr_matrix(X) if fmt == "csr" else sparse.csc_matrix(X)
    g = group.create_group(name)
    g.attrs["encoding-type"] = f"{fmt}_matrix"
    g.attrs["encoding-version"] = "0.1.0"
    g.attrs["shape"] = np.asarray(X.shape)
    g.create_dataset("data", data=M.data)
    g.create_dataset("indices", data=M.indices)
    g.create_dataset("indptr", data=M.indptr)


def write_h5ad(path, X, *, fmt="csr", layers=None, raw=None, obs_columns=None):
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        _write_matrix(f, "X", X, fmt)
        _write_df(f, "obs", CELLS, obs_columns or {})
        _write_df(f, "var", GENES, {"n_cells": np.arange(len(GENES))})
        if layers:
            lg = f.create_group("layers")
            for k, v in layers.items():
                _write_matrix(lg, k, v, fmt)
        if raw is not None:
            Xr, raw_genes = raw
            rg = f.create_group("raw")
            _write_matrix(rg, "X", Xr, fmt)
            _write_df(rg, "var", raw_genes, {})


def write_10x_h5(path, X, *, barcodes=CELLS, genes=GENES, ftypes=None):
    M = sparse.csc_matrix(np.asarray(X).T)     # features x barcodes, compressed by barcode
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=M.data.astype(np.int32))
        g.create_dataset("indices", data=M.indices.astype(np.int64))
        g.create_dataset("indptr", data=M.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.asarray(M.shape, dtype=np.int32))
        g.create_dataset("barcodes", data=np.asarray(barcodes, dtype="S"))
        ft = g.create_group("features")
        ft.create_dataset("id", data=np.asarray([f"ENSG{i:05d}" for i in range(len(genes))], "S"))
        ft.create_dataset("name", data=np.asarray(genes, dtype="S"))
        ftypes = ftypes if ftypes is not None else ["Gene Expression"] * len(genes)
        ft.create_dataset("feature_type", data=np.asarray(ftypes, dtype="S"))


def write_mtx_dir(folder, X, *, gz=True, genes_file="features.tsv"):
    folder.mkdir()
    opener = gzip.open if gz else open
    sfx = ".gz" if gz else ""
    with opener(folder / f"matrix.mtx{sfx}", "wb") as fh:
        spio.mmwrite(fh, sparse.coo_matrix(np.asarray(X).T), field="integer")
    with opener(folder / f"barcodes.tsv{sfx}", "wt") as fh:
        fh.write("".join(f"{c}\n" for c in CELLS))
    with opener(folder / f"{genes_file}{sfx}", "wt") as fh:
        fh.write("".join(f"ENSG{i:05d}\t{g}\tGene Expression\n" for i, g in enumerate(GENES)))


# --------------------------------------------------------------------------------------------
# h5ad
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_read_h5ad_round_trip(tmp_path, counts, fmt):
    cat = pd.Categorical(["T", "B", "T", "NK"])
    p = tmp_path / f"x_{fmt}.h5ad"
    write_h5ad(p, counts.astype(np.float32), fmt=fmt,
               obs_columns={"cell_type": cat, "n_counts": counts.sum(1).astype(np.float64)})
    cm = read_h5ad(p)
    assert cm.shape == counts.shape
    np.testing.assert_array_equal(cm.dense(), counts)
    assert list(cm.cell_names) == list(CELLS)
    assert list(cm.gene_names) == list(GENES)
    assert list(cm.obs["cell_type"]) == ["T", "B", "T", "NK"]
    np.testing.assert_array_equal(cm.obs["n_counts"].to_numpy(), counts.sum(1))
    np.testing.assert_array_equal(cm.var["n_cells"].to_numpy(), np.arange(len(GENES)))
    assert cm.is_integer and cm.source == p
    assert sparse.issparse(cm.X) == (fmt != "dense")


def test_read_h5ad_layers_and_raw(tmp_path, counts):
    lognorm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)
    raw_genes = np.array(list(GENES) + ["Extra1", "Extra2"], dtype=object)
    raw_X = np.hstack([counts, np.ones((len(CELLS), 2), dtype=np.int64) * 3])
    p = tmp_path / "norm.h5ad"
    write_h5ad(p, lognorm, layers={"counts": counts.astype(np.float32)}, raw=(raw_X, raw_genes))
    with pytest.raises(DataError, match=r"norm\.h5ad.*log-normalized.*non-integer"):
        read_h5ad(p)
    cm = read_h5ad(p, layer="counts")
    np.testing.assert_array_equal(cm.dense(), counts)
    raw = read_h5ad(p, layer="raw")
    assert raw.shape == (4, 7) and list(raw.gene_names[-2:]) == ["Extra1", "Extra2"]
    np.testing.assert_array_equal(raw.dense(), raw_X)
    kept = read_h5ad(p, allow_non_integer=True)
    np.testing.assert_allclose(kept.dense(), lognorm, rtol=1e-6)
    assert not kept.is_integer
    with pytest.raises(DataError, match="layer 'spliced' not found.*counts"):
        read_h5ad(p, layer="spliced")


def test_read_h5ad_legacy_compound_obs(tmp_path, counts):
    p = tmp_path / "legacy.h5ad"
    with h5py.File(p, "w") as f:
        f.create_dataset("X", data=counts.astype(np.float32))
        f.create_dataset("obs", data=np.array([(c.encode(), i) for i, c in enumerate(CELLS)],
                                              dtype=[("index", "S18"), ("batch", "i4")]))
        f.create_dataset("var", data=np.array([(g.encode(),) for g in GENES],
                                              dtype=[("index", "S13")]))
    cm = read_h5ad(p)
    assert list(cm.cell_names) == list(CELLS) and list(cm.obs["batch"]) == [0, 1, 2, 3]
    np.testing.assert_array_equal(cm.dense(), counts)


def test_read_h5ad_errors(tmp_path, counts):
    p = tmp_path / "neg.h5ad"
    bad = counts.astype(np.float32)
    bad[1, 2] = -2
    write_h5ad(p, bad, fmt="dense")
    with pytest.raises(DataError, match=r"neg\.h5ad: X has 1 negative values \(min -2\)"):
        read_h5ad(p)
    p2 = tmp_path / "mismatch.h5ad"
    with h5py.File(p2, "w") as f:
        f.create_dataset("X", data=np.ones((3, 5), np.float32))
        _write_df(f, "obs", CELLS, {})
        _write_df(f, "var", GENES, {})
    with pytest.raises(DataError, match=r"X has shape \(3, 5\) but obs has 4 cells"):
        read_h5ad(p2, backend="h5py")
    pytest.importorskip("anndata")
    with pytest.raises(DataError, match=r"mismatch\.h5ad: not a readable AnnData h5ad file: .*obs"):
        read_h5ad(p2, backend="anndata")
    p3 = tmp_path / "empty.h5ad"
    with h5py.File(p3, "w") as f:
        f.create_dataset("X", data=np.ones((0, 0), np.float32))
        _write_df(f, "obs", [], {})
        _write_df(f, "var", [], {})
    with pytest.raises(DataError, match="empty"):
        read_h5ad(p3)
    with pytest.raises(DataError, match="no such file"):
        read_h5ad(tmp_path / "missing.h5ad")


# --------------------------------------------------------------------------------------------
# 10x HDF5, Matrix Market, CSV
# --------------------------------------------------------------------------------------------

def test_read_10x_h5(tmp_path, counts):
    p = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(p, counts)
    cm = read_10x_h5(p)
    np.testing.assert_array_equal(cm.dense(), counts)
    assert list(cm.cell_names) == list(CELLS) and list(cm.gene_names) == list(GENES)
    assert cm.var["gene_id"].iloc[2] == "ENSG00002"
    by_id = read_10x_h5(p, gene_names="id")
    assert by_id.gene_names[0] == "ENSG00000"
    # antibody-capture features are dropped by default
    p2 = tmp_path / "with_adt.h5"
    write_10x_h5(p2, counts, ftypes=["Gene Expression"] * 4 + ["Antibody Capture"])
    assert read_10x_h5(p2).n_genes == 4
    assert read_10x_h5(p2, gene_expression_only=False).n_genes == 5
    # barcodes / shape mismatch
    p3 = tmp_path / "bad.h5"
    write_10x_h5(p3, counts, barcodes=CELLS[:3])
    with pytest.raises(DataError, match=r"bad\.h5: 3 barcodes but shape says 4"):
        read_10x_h5(p3)


@pytest.mark.parametrize("gz,genes_file", [(True, "features.tsv"), (False, "genes.tsv")])
def test_read_mtx_dir(tmp_path, counts, gz, genes_file):
    folder = tmp_path / "filtered_feature_bc_matrix"
    write_mtx_dir(folder, counts, gz=gz, genes_file=genes_file)
    cm = read_mtx_dir(folder)
    np.testing.assert_array_equal(cm.dense(), counts)
    assert list(cm.cell_names) == list(CELLS) and list(cm.gene_names) == list(GENES)
    assert read_counts(folder).shape == counts.shape


def test_read_mtx_dir_mismatch_and_missing(tmp_path, counts):
    folder = tmp_path / "m"
    write_mtx_dir(folder, counts)
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as fh:
        fh.write("A-1\nB-1\n")
    with pytest.raises(DataError, match=r"matrix\.mtx\.gz.*5 features .* and 2 barcodes"):
        read_mtx_dir(folder)
    (folder / "barcodes.tsv.gz").unlink()
    with pytest.raises(DataError, match=r"lacks barcodes\.tsv"):
        read_mtx_dir(folder)


def test_read_csv_orientation(tmp_path, counts):
    df = pd.DataFrame(counts, index=CELLS, columns=GENES)
    p = tmp_path / "table.csv"
    df.to_csv(p)
    cm = read_csv(p)                          # rows look like barcodes -> cells x genes
    np.testing.assert_array_equal(cm.dense(), counts)
    p2 = tmp_path / "table.tsv"
    df.T.to_csv(p2, sep="\t")                 # columns look like barcodes -> transposed
    cm2 = read_csv(p2)
    np.testing.assert_array_equal(cm2.dense(), counts)
    assert list(cm2.cell_names) == list(CELLS)
    # named cells (no barcodes): the file name decides, or transpose= explicitly
    named = pd.DataFrame(counts.T, index=GENES, columns=[f"Cell_{i}" for i in range(4)])
    p3 = tmp_path / "sample_gene_by_cell.csv.gz"
    named.to_csv(p3)
    assert read_csv(p3).shape == (4, 5)
    p4 = tmp_path / "plain.csv"
    named.to_csv(p4)
    assert read_csv(p4, transpose=True).shape == (4, 5)
    assert read_counts(p4, transpose=False).shape == (5, 4)


def test_read_csv_near_integers_rounded_and_errors(tmp_path, counts):
    noisy = counts + np.where(counts > 0, -1e-13, 0.0)   # e.g. 0.999999999999999
    p = tmp_path / "cell_by_gene.csv"
    pd.DataFrame(noisy, index=CELLS, columns=GENES).to_csv(p, float_format="%.15f")
    cm = read_csv(p)
    assert cm.is_integer
    np.testing.assert_array_equal(cm.dense(), counts)
    p2 = tmp_path / "cpm_cell_by_gene.csv"
    pd.DataFrame(counts * 123.4567, index=CELLS, columns=GENES).to_csv(p2)
    with pytest.raises(DataError, match=r"cpm_cell_by_gene\.csv: X values look normalized"):
        read_csv(p2)
    p3 = tmp_path / "text_cell_by_gene.csv"
    pd.DataFrame({"a": ["x", "y"], "b": [1, 2]}, index=["c1", "c2"]).to_csv(p3)
    with pytest.raises(DataError, match="non-numeric columns"):
        read_csv(p3)
    with pytest.raises(ParameterError, match="transpose"):
        read_csv(p, transpose="yes")


def test_read_counts_dispatch_errors(tmp_path):
    p = tmp_path / "x.loom"
    p.write_text("")
    with pytest.raises(DataError, match=r"x\.loom: unknown count-matrix format"):
        read_counts(p)
    with pytest.raises(DataError, match="neither an AnnData zarr store"):
        read_counts(tmp_path)


def test_check_counts_messages():
    X = np.array([[0.0, 1.5], [2.0, np.nan]])
    with pytest.raises(DataError, match="1 NaN or infinite"):
        check_counts(X)
    Xs = sparse.csr_matrix(np.array([[0.0, 8.3], [2.1, 0.0]]))
    with pytest.raises(DataError, match=r"look log-normalized \(max 8\.3, non-integer"):
        check_counts(Xs, path="f.h5ad")
    out, is_int = check_counts(Xs, allow_non_integer=True)
    assert not is_int and out.dtype == np.float32
    big, _ = check_counts(np.array([[2.0**25, 1.0]]))
    assert big.dtype == np.float64 and big[0, 0] == 2.0**25


# --------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------

def test_size_factors_and_filter(counts):
    cm = CountMatrix(sparse.csr_matrix(counts.astype(np.float32)), CELLS, GENES)
    sf = size_factors(cm)
    lib = counts.sum(1)
    np.testing.assert_allclose(sf, lib / np.median(lib))
    assert np.median(sf) == pytest.approx(1.0)
    filtered = filter_cells_genes(cm, min_counts=1, min_cells=1)
    assert "Gm1992" not in set(filtered.gene_names)          # the all-zero gene is dropped
    assert filtered.n_genes == 4 and filtered.n_cells == 4
    zero = counts.copy()
    zero[2] = 0
    with pytest.raises(DataError, match="1 cells have zero total counts"):
        size_factors(zero)
    cz = CountMatrix(zero.astype(np.float32), CELLS, GENES)
    assert filter_cells_genes(cz, min_counts=1).n_cells == 3
    assert filter_cells_genes(cz, min_genes=3, min_cells=0).n_cells <= 3


def _planted(rng, n_cells=600, n_genes=400, n_planted=20):
    lib = rng.lognormal(np.log(2000), 0.4, n_cells)
    p = rng.lognormal(0, 1.0, n_genes)
    p /= p.sum()
    mu = lib[:, None] * p[None, :]
    planted = rng.choice(n_genes, n_planted, replace=False)
    # overdispersed genes: gamma-Poisson with inverse dispersion 0.5 (variance mu + 2 mu^2)
    factor = np.ones((n_cells, n_genes))
    factor[:, planted] = rng.gamma(0.5, 2.0, size=(n_cells, n_planted))
    X = rng.poisson(mu * factor)
    return X, planted


@pytest.mark.parametrize("method", ["poisson_deviance", "seurat_v3_like"])
def test_hvg_picks_planted_overdispersed_genes(rng, method):
    X, planted = _planted(rng)
    genes = np.array([f"g{k}" for k in range(X.shape[1])], dtype=object)
    cells = np.array([f"c{i}" for i in range(X.shape[0])], dtype=object)
    cm = CountMatrix(sparse.csr_matrix(X.astype(np.float32)), cells, genes)
    hv = select_highly_variable_genes(cm, n_top=20, method=method)
    found = set(hv.gene_names) & set(genes[planted])
    assert len(found) >= 18, f"{method}: only {len(found)} of 20 planted genes selected"
    assert (hv.var["hvg_rank"] < 20).all()
    assert list(hv.gene_names) == sorted(hv.gene_names, key=lambda g: int(g[1:]))  # order kept
    # dense input gives the same scores
    np.testing.assert_allclose(gene_variability(X, method=method),
                               gene_variability(cm, method=method), rtol=1e-6)


def test_poisson_deviance_matches_dense_formula(rng):
    X = rng.poisson(2.0, size=(30, 8)).astype(float)
    n = X.sum(1, keepdims=True)
    p = X.sum(0, keepdims=True) / X.sum()
    mu = n * p
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(X > 0, X * np.log(X / mu), 0.0)
    ref = 2 * (term - (X - mu)).sum(0)
    np.testing.assert_allclose(gene_variability(X), ref, rtol=1e-10, atol=1e-9)


def test_hvg_on_simulated_markers():
    sim = simulate_cell_types(600, 500, 4, n_markers=10, random_state=3)
    hv = select_highly_variable_genes(sim.matrix, n_top=40)
    markers = set(sim.matrix.gene_names[sim.markers.ravel()])
    assert len(set(hv.gene_names) & markers) >= 36


def test_hvg_parameter_errors(counts):
    cm = CountMatrix(counts.astype(np.float32), CELLS, GENES)
    with pytest.raises(ParameterError, match="method must be one of.*'mean_var'"):
        select_highly_variable_genes(cm, method="mean_var")
    with pytest.raises(ParameterError, match="n_top"):
        select_highly_variable_genes(cm, n_top=0)
    assert select_highly_variable_genes(cm, n_top=100).n_genes == 5


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------

@pytest.mark.network
def test_celltypist_sample(real_data):
    folder = real_data("celltypist_sample")
    path = next(folder.rglob("sample_cell_by_gene.csv"))
    cm = read_counts(path)
    assert cm.shape == (559, 32786)
    assert cm.is_integer
    X = cm.X
    assert np.all(X.data == np.rint(X.data)) and X.data.min() > 0
    assert cm.gene_names[0] == "MIR1302-10" and cm.cell_names[0] == "Cell_1"
    assert {"CD3E", "MS4A1", "LYZ", "NKG7"} <= set(cm.gene_names)
    sf = size_factors(cm)
    assert sf.shape == (559,) and np.median(sf) == pytest.approx(1.0) and sf.min() > 0
    hv = select_highly_variable_genes(filter_cells_genes(cm, min_cells=3), n_top=500)
    assert hv.n_genes == 500
    # immune marker genes vary between the cell populations of this sample
    assert len({"LYZ", "CD74", "HLA-DRA", "S100A9", "NKG7", "GNLY"} & set(hv.gene_names)) >= 3
    hv2 = select_highly_variable_genes(cm, n_top=500, method="seurat_v3_like")
    assert hv2.n_genes == 500


@pytest.mark.network
def test_scanpy_10x_subset_zarr(real_data):
    folder = real_data("scanpy_10x_subset")
    store = next(folder.rglob("10x-10k-subset.zarr"))
    if importlib.util.find_spec("zarr") is None:
        with pytest.raises(ImportError, match="pip install zarr"):
            read_zarr(store)
        pytest.skip("zarr is not installed (optional): the store's blosc chunks need it")
    cm = read_counts(store)
    assert cm.shape == (10_000, 1_000) and cm.is_integer
    assert cm.gene_names[0] == "Xkr4" and cm.cell_names[0] == "AAACCTGAGATAGGAG-1"
    assert cm.var["gene_ids"].iloc[0] == "ENSMUSG00000051951"
    # one cell has no count among these 1,000 genes: size factors refuse it, filtering removes it
    with pytest.raises(DataError, match="1 cells have zero total counts"):
        size_factors(cm)
    kept = filter_cells_genes(cm, min_counts=1, min_cells=1)
    assert kept.n_cells == 9_999
    sf = size_factors(kept)
    assert np.median(sf) == pytest.approx(1.0) and sf.min() > 0
