"""Cell-by-gene count matrices: loaders, integer-count checks, gene selection, size factors.

Every loader returns a :class:`CountMatrix` whose ``X`` is oriented **cells x genes** (the
AnnData / scanpy convention), whatever the orientation on disk, with the cell and gene names
kept. Formats:

- AnnData ``.h5ad`` (:func:`read_h5ad`): read with plain h5py following the AnnData on-disk
  specification (dense ``X``, CSR or CSC ``X``, ``layers/<name>``, ``raw/X``), so the common
  case needs no ``anndata``; the legacy layout (obs/var as compound datasets) is read as well.
- AnnData ``.zarr`` stores (:func:`read_zarr`), the same layout in zarr; needs the optional
  ``zarr`` package.
- 10x Genomics HDF5 (:func:`read_10x_h5`): CellRanger v3 ``filtered_feature_bc_matrix.h5``
  (and the v2 per-genome layout).
- Matrix Market directories (:func:`read_mtx_dir`): ``matrix.mtx[.gz]`` (genes x cells) with
  ``barcodes.tsv[.gz]`` and ``features.tsv[.gz]`` or ``genes.tsv[.gz]``.
- CSV / TSV (:func:`read_csv`), either orientation.

:func:`read_counts` dispatches on the extension. Count likelihoods need counts: every loader
checks that the values are non-negative integers (values within 1e-6 of an integer, as written
by some tools, are rounded) and raises a :class:`~vocalatent._utils.DataError` naming the file
and what it found otherwise, unless ``allow_non_integer=True`` is passed explicitly.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import io as spio
from scipy import sparse

from .._utils import READ_ERRORS, DataError, ParameterError, check_option, check_positive, logger
from .hdf5_probe import check_hdf5
from .sparse import check_sparse, sparse_from_arrays

__all__ = [
    "CountMatrix",
    "HVG_METHODS",
    "check_counts",
    "anndata_available",
    "check_sparse",
    "from_anndata",
    "sparse_from_arrays",
    "filter_cells_genes",
    "gene_variability",
    "read_10x_h5",
    "read_counts",
    "read_csv",
    "read_h5ad",
    "read_mtx_dir",
    "read_zarr",
    "select_highly_variable_genes",
    "size_factors",
    "to_anndata",
]

#: Largest value a float32 holds exactly as an integer; larger counts are kept in float64.
_FLOAT32_EXACT = 2**24

#: Values this close to an integer count as integers (some tools write 0.999999999999999).
_INTEGER_ATOL = 1e-6

HVG_METHODS = ("poisson_deviance", "seurat_v3_like")


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CountMatrix:
    """A cells x genes count matrix with its names and metadata.

    Parameters
    ----------
    X : scipy.sparse.csr_matrix or np.ndarray [shape=(n_cells, n_genes)]
        Counts, float32 (exact for integers below 2**24; float64 beyond).
    cell_names : np.ndarray [shape=(n_cells,), dtype=object]
        Cell identifiers (barcodes), as strings.
    gene_names : np.ndarray [shape=(n_genes,), dtype=object]
        Gene identifiers (symbols when the file has them), as strings.
    obs : pd.DataFrame [shape=(n_cells, ...)]
        Cell metadata, indexed by ``cell_names``.
    var : pd.DataFrame [shape=(n_genes, ...)]
        Gene metadata, indexed by ``gene_names``.
    source : pathlib.Path or None
        The file or folder the matrix was read from.
    is_integer : bool
        Whether ``X`` holds non-negative integer counts (checked by the loaders).
    """

    X: Any
    cell_names: np.ndarray
    gene_names: np.ndarray
    obs: pd.DataFrame = field(default=None)
    var: pd.DataFrame = field(default=None)
    source: Path | None = None
    is_integer: bool = True

    def __post_init__(self):
        X = self.X
        if not (sparse.issparse(X) or isinstance(X, np.ndarray)):
            raise ParameterError(f"X must be a scipy.sparse matrix or a numpy array; got {type(X)!r}")
        if X.ndim != 2:
            raise ParameterError(f"X must be 2-D (cells x genes); got shape {X.shape}")
        if sparse.issparse(X) and not isinstance(X, sparse.csr_matrix):
            object.__setattr__(self, "X", sparse.csr_matrix(X))
        cells = np.asarray(self.cell_names, dtype=object)
        genes = np.asarray(self.gene_names, dtype=object)
        where = f" ({self.source})" if self.source else ""
        if cells.shape != (X.shape[0],):
            raise ParameterError(f"cell_names has {cells.size} entries but X has {X.shape[0]} "
                                 f"rows (cells){where}")
        if genes.shape != (X.shape[1],):
            raise ParameterError(f"gene_names has {genes.size} entries but X has {X.shape[1]} "
                                 f"columns (genes){where}")
        object.__setattr__(self, "cell_names", cells)
        object.__setattr__(self, "gene_names", genes)
        obs = pd.DataFrame(index=pd.Index(cells, name="cell")) if self.obs is None else self.obs
        var = pd.DataFrame(index=pd.Index(genes, name="gene")) if self.var is None else self.var
        if len(obs) != X.shape[0] or len(var) != X.shape[1]:
            raise ParameterError(f"obs has {len(obs)} rows and var {len(var)} rows but X has "
                                 f"shape {X.shape}{where}")
        object.__setattr__(self, "obs", obs)
        object.__setattr__(self, "var", var)
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))

    @property
    def shape(self) -> tuple[int, int]:
        """(n_cells, n_genes)."""
        return tuple(self.X.shape)

    @property
    def n_cells(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.X.shape[1])

    def subset(self, *, cells=None, genes=None) -> "CountMatrix":
        """Return a new CountMatrix restricted to ``cells`` and ``genes``.

        Parameters
        ----------
        cells, genes : array-like of bool or int, or None
            A boolean mask or integer indices (order kept); None keeps all.
        """
        ci = np.arange(self.n_cells) if cells is None else _as_index(cells, self.n_cells, "cells")
        gi = np.arange(self.n_genes) if genes is None else _as_index(genes, self.n_genes, "genes")
        X = self.X[ci][:, gi]
        return CountMatrix(X, self.cell_names[ci], self.gene_names[gi],
                           obs=self.obs.iloc[ci], var=self.var.iloc[gi], source=self.source,
                           is_integer=self.is_integer)

    def dense(self, dtype=np.float32) -> np.ndarray:
        """X as a dense array [shape=(n_cells, n_genes)]."""
        X = self.X.toarray() if sparse.issparse(self.X) else self.X
        return np.asarray(X, dtype=dtype)

    def __repr__(self) -> str:
        kind = "sparse" if sparse.issparse(self.X) else "dense"
        return (f"CountMatrix({self.n_cells} cells x {self.n_genes} genes, {kind}, "
                f"integer={self.is_integer}, source={str(self.source) if self.source else None!r})")


def _as_index(sel, n: int, what: str) -> np.ndarray:
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ParameterError(f"{what} mask has shape {sel.shape}; expected ({n},)")
        return np.flatnonzero(sel)
    if not np.issubdtype(sel.dtype, np.integer):
        raise ParameterError(f"{what} must be a boolean mask or integer indices; got dtype {sel.dtype}")
    return sel


# --------------------------------------------------------------------------------------------
# Integer-count check
# --------------------------------------------------------------------------------------------

def check_counts(X, *, path=None, allow_non_integer: bool = False, what: str = "X"):
    """Check that ``X`` holds non-negative integer counts; return it as float32 (or float64).

    Values within 1e-6 of an integer are rounded to it. NaN or infinite values are always an
    error; negative or non-integer values are an error unless ``allow_non_integer=True``.

    Parameters
    ----------
    X : np.ndarray or scipy.sparse matrix [shape=(n_cells, n_genes)]
    path : path-like or None
        The file the values came from (named in the error).
    allow_non_integer : bool
        Accept already normalized / log-transformed values (for a Gaussian likelihood only).
    what : str
        Name of the array in messages (e.g. ``"layers/counts"``).

    Returns
    -------
    X : same kind as the input, float32 (float64 if a count exceeds 2**24)
    is_integer : bool
    """
    values = X.data if sparse.issparse(X) else np.asarray(X)
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{what} has dtype {values.dtype}; expected numbers", path=path)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{what} is empty (shape {X.shape[0]} x {X.shape[1]})", path=path)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(f"{what} has {int(bad.sum())} NaN or infinite values", path=path)
    vmax = float(values.max()) if values.size else 0.0
    vmin = float(values.min()) if values.size else 0.0
    is_integer = True
    if values.dtype.kind == "f" and values.size:
        rounded = np.rint(values)
        off = np.abs(values - rounded)
        frac = off > _INTEGER_ATOL
        if frac.any():
            is_integer = False
            example = float(values[np.flatnonzero(frac)[0]])
            if not allow_non_integer:
                if vmax <= 30:
                    looks = "look log-normalized"
                else:
                    looks = "look normalized (e.g. CPM/TPM)"
                raise DataError(
                    f"{what} values {looks} (max {vmax:.4g}, non-integer, e.g. {example:.6g}, "
                    f"{int(frac.sum())} non-integer values); count likelihoods need raw integer "
                    "counts: read layers['counts'] or raw/X if the file has them, or pass "
                    "allow_non_integer=True to keep these values", path=path)
        else:
            n_round = int(np.count_nonzero(off > 0))
            if n_round:
                logger.info("%s: rounded %d values within %g of an integer",
                            path or what, n_round, _INTEGER_ATOL)
            values = rounded
    if vmin < 0:
        is_integer = False
        if not allow_non_integer:
            n_neg = int(np.count_nonzero(values < 0))
            raise DataError(f"{what} has {n_neg} negative values (min {vmin:.4g}); counts must be "
                            ">= 0 (scaled or centred data?); pass allow_non_integer=True to keep "
                            "them", path=path)
    dtype = np.float32 if max(abs(vmax), abs(vmin)) < _FLOAT32_EXACT else np.float64
    values = values.astype(dtype, copy=False)
    if sparse.issparse(X):
        X = X.copy() if X.dtype == dtype else X.astype(dtype)
        X.data = values
        return X, is_integer
    return values, is_integer


def _finish(X, cells, genes, *, obs=None, var=None, path, allow_non_integer, what="X"):
    """Orient-checked counts + names -> CountMatrix."""
    if sparse.issparse(X):
        X = sparse.csr_matrix(check_sparse(X, path=path, what=what))
        X.sum_duplicates()
        X.sort_indices()
    X, is_int = check_counts(X, path=path, allow_non_integer=allow_non_integer, what=what)
    cells = np.asarray([_to_str(c) for c in np.asarray(cells).ravel()], dtype=object)
    genes = np.asarray([_to_str(g) for g in np.asarray(genes).ravel()], dtype=object)
    if cells.size != X.shape[0]:
        raise DataError(f"{cells.size} cell names (barcodes) but {X.shape[0]} cells in {what}",
                        path=path)
    if genes.size != X.shape[1]:
        raise DataError(f"{genes.size} gene names (features) but {X.shape[1]} genes in {what}",
                        path=path)
    if obs is not None:
        obs = obs.copy()
        obs.index = pd.Index(cells, name="cell")
    if var is not None:
        var = var.copy()
        var.index = pd.Index(genes, name="gene")
    if len(set(genes)) < genes.size:
        logger.info("%s: %d duplicated gene names (kept as they are)", path,
                    genes.size - len(set(genes)))
    return CountMatrix(X, cells, genes, obs=obs, var=var, source=path, is_integer=is_int)


def _to_str(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


# --------------------------------------------------------------------------------------------
# AnnData on-disk layout (h5ad through h5py, or zarr)
# --------------------------------------------------------------------------------------------

def _read_array(node) -> np.ndarray:
    """Read an h5py Dataset or zarr Array fully, decoding byte strings to str objects."""
    dtype = getattr(node, "dtype", None)
    if dtype is not None and hasattr(node, "asstr") and dtype.kind in "OS" and dtype.names is None:
        import h5py

        if h5py.check_string_dtype(dtype) is not None:
            return np.asarray(node.asstr()[...], dtype=object)
    arr = np.asarray(node[...])
    if arr.dtype.kind in "SO" and arr.dtype.names is None:
        arr = np.asarray([_to_str(v) for v in arr.ravel()], dtype=object).reshape(arr.shape)
    return arr


def _attr(node, key, default=None):
    val = node.attrs.get(key, default)
    return _to_str(val) if isinstance(val, (bytes, np.bytes_)) else val


def _is_group(node) -> bool:
    return hasattr(node, "keys") and not hasattr(node, "dtype")


def _read_matrix_node(node, *, path, what):
    """Read an AnnData matrix element: dense array, or csr_matrix / csc_matrix group."""
    if not _is_group(node):
        return _read_array(node)
    enc = _attr(node, "encoding-type") or _attr(node, "h5sparse_format")
    shape = _attr(node, "shape") if "shape" in node.attrs else _attr(node, "h5sparse_shape")
    if enc in ("csr", "csc"):
        enc = enc + "_matrix"
    if enc not in ("csr_matrix", "csc_matrix") or shape is None:
        raise DataError(f"{what} is a group with encoding-type {enc!r}; the built-in reader knows "
                        "dense arrays and csr_matrix/csc_matrix groups (install the 'anndata' "
                        "extra, pip install vocalatent[anndata], to read other encodings)",
                        path=path)
    for key in ("data", "indices", "indptr"):
        if key not in node:
            raise DataError(f"{what} ({enc}) has no {key!r} array", path=path)
    data = np.asarray(node["data"][...])
    indices = np.asarray(node["indices"][...])
    indptr = np.asarray(node["indptr"][...])
    return sparse_from_arrays(data, indices, indptr, shape, fmt=enc[:3], path=path, what=what)


def _read_dataframe(node, *, path, what) -> tuple[np.ndarray, pd.DataFrame]:
    """Read an AnnData dataframe element -> (index as str objects, DataFrame of columns)."""
    if not _is_group(node):
        # legacy layout (anndata < 0.7): one compound dataset with an "index" field
        arr = np.asarray(node[...])
        if arr.dtype.names is None:
            raise DataError(f"{what} is neither a dataframe group nor a compound dataset", path=path)
        names = list(arr.dtype.names)
        index_key = "index" if "index" in names else names[0]
        cols = {}
        for n in names:
            col = arr[n]
            if col.dtype.kind in "SO":
                col = np.asarray([_to_str(v) for v in col], dtype=object)
            cols[n] = col
        index = cols.pop(index_key)
        return np.asarray(index, dtype=object), pd.DataFrame(cols)
    index_key = _attr(node, "_index", "_index")
    if index_key not in node:
        raise DataError(f"{what} has no index array {index_key!r}", path=path)
    index = np.asarray([_to_str(v) for v in _read_array(node[index_key]).ravel()], dtype=object)
    order = node.attrs.get("column-order", [])
    order = [_to_str(c) for c in np.atleast_1d(order)] if len(np.atleast_1d(order)) else []
    cols = {}
    for name in order:
        if name not in node:
            continue
        col = _read_column(node[name], n=index.size)
        if col is not None:
            cols[name] = col
        else:
            logger.debug("%s: skipped %s column %r (encoding not supported)", path, what, name)
    # legacy 0.7 layout: categories stored in __categories
    return index, pd.DataFrame(cols, index=pd.RangeIndex(index.size))


def _read_column(node, *, n: int):
    enc = _attr(node, "encoding-type")
    if _is_group(node):
        if enc == "categorical":
            codes = np.asarray(node["codes"][...])
            cats = _read_array(node["categories"])
            return pd.Categorical.from_codes(codes, categories=pd.Index(cats),
                                             ordered=bool(_attr(node, "ordered", False)))
        if enc in ("nullable-integer", "nullable-boolean"):
            values = np.asarray(node["values"][...])
            mask = np.asarray(node["mask"][...]).astype(bool)
            dtype = "Int64" if enc == "nullable-integer" else "boolean"
            return pd.array(np.where(mask, None, values).tolist(), dtype=dtype)
        return None
    arr = _read_array(node)
    return arr if arr.ndim == 1 and arr.size == n else None


def _read_anndata_group(root, *, path, layer, allow_non_integer, fmt):
    keys = set(root.keys())
    if "X" not in keys and layer is None:
        raise DataError(f"no X in this {fmt} file (top-level keys: {sorted(keys)})", path=path)
    if layer is None:
        node, what = root["X"], "X"
        cells, obs = _read_dataframe(root["obs"], path=path, what="obs")
        genes, var = _read_dataframe(root["var"], path=path, what="var")
    elif layer == "raw":
        if "raw" not in keys or "X" not in root["raw"]:
            raise DataError(f"layer='raw' but the file has no raw/X (top-level keys: "
                            f"{sorted(keys)})", path=path)
        node, what = root["raw"]["X"], "raw/X"
        cells, obs = _read_dataframe(root["obs"], path=path, what="obs")
        genes, var = _read_dataframe(root["raw"]["var"], path=path, what="raw/var")
    else:
        layers = list(root["layers"].keys()) if "layers" in keys else []
        if layer not in layers:
            raise DataError(f"layer {layer!r} not found; layers in the file: {layers}, "
                            "or layer=None for X, 'raw' for raw/X", path=path)
        node, what = root["layers"][layer], f"layers/{layer}"
        cells, obs = _read_dataframe(root["obs"], path=path, what="obs")
        genes, var = _read_dataframe(root["var"], path=path, what="var")
    X = _read_matrix_node(node, path=path, what=what)
    if X.ndim != 2:
        raise DataError(f"{what} has {X.ndim} dimensions; expected 2 (cells x genes)", path=path)
    if X.shape != (cells.size, genes.size):
        raise DataError(f"{what} has shape {X.shape} but obs has {cells.size} cells and var "
                        f"{genes.size} genes", path=path)
    if sparse.issparse(X):
        X = sparse.csr_matrix(X)
    return _finish(X, cells, genes, obs=obs, var=var, path=path,
                   allow_non_integer=allow_non_integer, what=what)


def read_h5ad(path, *, layer: str | None = None, allow_non_integer: bool = False,
              backend: Literal["auto", "h5py", "anndata"] = "auto") -> CountMatrix:
    """Read an AnnData ``.h5ad`` file.

    Parameters
    ----------
    path : path-like
        The ``.h5ad`` file.
    layer : str or None
        ``None`` reads ``X``; ``"raw"`` reads ``raw/X`` (with ``raw/var`` for the gene names);
        any other name reads ``layers/<name>`` (e.g. ``"counts"``, where many pipelines keep
        the raw counts after normalising ``X``).
    allow_non_integer : bool
        Accept non-integer or negative values (normalised / log data) instead of raising.
    backend : {"auto", "h5py", "anndata"}
        ``"anndata"`` reads with the ``anndata`` package (every encoding it knows);
        ``"h5py"`` reads the AnnData on-disk layout directly (dense, CSR and CSC matrices;
        string, numeric and categorical obs/var columns), for machines without anndata;
        ``"auto"`` uses anndata when it is installed and h5py otherwise. Either way the
        sparse structure is checked before it is used (:func:`check_sparse`).

    Returns
    -------
    CountMatrix
    """
    import h5py

    check_option("backend", backend, ("auto", "h5py", "anndata"))
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    check_hdf5(path)
    if backend == "anndata" or (backend == "auto" and anndata_available()):
        return _read_with_anndata(path, layer=layer, allow_non_integer=allow_non_integer)
    try:
        with h5py.File(path, "r") as f:
            return _read_anndata_group(f, path=path, layer=layer,
                                       allow_non_integer=allow_non_integer, fmt="h5ad")
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise DataError(f"not a readable HDF5 file: {type(exc).__name__}: {exc}", path=path) from exc


def read_zarr(path, *, layer: str | None = None, allow_non_integer: bool = False) -> CountMatrix:
    """Read an AnnData ``.zarr`` store (needs the optional ``zarr`` package).

    The store is read with the same rules as :func:`read_h5ad`: with ``anndata`` when it is
    installed, otherwise with the built-in reader (dense or CSR/CSC ``X``, ``layers``,
    ``raw``; modern dataframe groups or the legacy compound obs/var arrays).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError("no such zarr store (a folder)", path=path)
    if anndata_available():
        return _read_with_anndata(path, layer=layer, allow_non_integer=allow_non_integer, fmt="zarr")
    try:
        import zarr
    except ImportError as exc:
        raise ImportError(f"reading the zarr store {path} needs the optional 'zarr' package: "
                          "pip install zarr") from exc
    if not path.is_dir():
        raise DataError("no such zarr store (a folder)", path=path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise DataError(f"not a readable zarr group: {exc}", path=path) from exc
    return _read_anndata_group(root, path=path, layer=layer, allow_non_integer=allow_non_integer,
                               fmt="zarr")


def anndata_available() -> bool:
    """Whether the optional ``anndata`` package can be imported."""
    try:
        import anndata  # noqa: F401
    except ImportError:
        return False
    return True


def from_anndata(adata, *, layer: str | None = None, allow_non_integer: bool = False,
                 path=None) -> CountMatrix:
    """The counts of an ``anndata.AnnData`` (in memory or just read) as a :class:`CountMatrix`.

    Parameters
    ----------
    adata : anndata.AnnData
    layer : str or None
        ``None``: ``X``; ``"raw"``: ``raw.X`` with ``raw.var``; another name: ``layers[name]``.
    allow_non_integer : bool
        Accept non-integer or negative values instead of raising.
    path : path-like or None
        The file it came from (named in errors).

    Raises
    ------
    DataError
        A missing layer, a sparse matrix whose structure is inconsistent, or values that are
        not counts.
    """
    where = path if path is not None else "the AnnData object"
    if layer is None or layer == "":
        X, var, what = adata.X, adata.var, "X"
    elif layer == "raw":
        if adata.raw is None:
            raise DataError("layer='raw' but there is no raw", path=where)
        X, var, what = adata.raw.X, adata.raw.var, "raw/X"
    else:
        if layer not in adata.layers:
            raise DataError(f"layer {layer!r} not found; layers: {list(adata.layers)}, or "
                            "None for X, 'raw' for raw.X", path=where)
        X, var, what = adata.layers[layer], adata.var, f"layers/{layer}"
    if X is None:
        raise DataError(f"{what} is empty (None)", path=where)
    if hasattr(X, "to_memory"):      # a backed sparse dataset
        X = X.to_memory()
    X = check_sparse(X, path=where, what=what) if sparse.issparse(X) else np.asarray(X)
    if X.ndim != 2:
        raise DataError(f"{what} has {X.ndim} dimensions; expected 2 (cells x genes)", path=where)
    return _finish(X, adata.obs_names.to_numpy(), var.index.to_numpy(),
                   obs=adata.obs.reset_index(drop=True), var=var.reset_index(drop=True),
                   path=path, allow_non_integer=allow_non_integer, what=what)


def _read_with_anndata(path: Path, *, layer, allow_non_integer, fmt: str = "h5ad") -> CountMatrix:
    try:
        import anndata
    except ImportError as exc:
        raise ImportError("backend='anndata' needs the optional 'anndata' package: "
                          "pip install vocalatent[anndata]") from exc
    reader = anndata.read_zarr if fmt == "zarr" else anndata.read_h5ad
    try:
        ad = reader(path)
    except Exception as exc:  # anndata/h5py/zarr raise many types for damaged files
        raise DataError(f"not a readable AnnData {fmt} file: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}", path=path) from exc
    return from_anndata(ad, layer=layer, allow_non_integer=allow_non_integer, path=path)


def to_anndata(cm: CountMatrix):
    """Return an ``anndata.AnnData`` holding the counts and metadata (needs ``anndata``)."""
    try:
        import anndata
    except ImportError as exc:
        raise ImportError("to_anndata needs the optional 'anndata' package: "
                          "pip install vocalatent[anndata]") from exc
    obs = cm.obs.copy()
    obs.index = pd.Index(cm.cell_names.astype(str))
    var = cm.var.copy()
    var.index = pd.Index(cm.gene_names.astype(str))
    return anndata.AnnData(X=cm.X, obs=obs, var=var)


# --------------------------------------------------------------------------------------------
# 10x Genomics HDF5
# --------------------------------------------------------------------------------------------

def read_10x_h5(path, *, gene_expression_only: bool = True, gene_names: Literal["name", "id"] = "name",
                allow_non_integer: bool = False) -> CountMatrix:
    """Read a 10x Genomics CellRanger HDF5 matrix (``filtered_feature_bc_matrix.h5``).

    CellRanger v3+ files hold one group ``matrix`` with ``data``, ``indices``, ``indptr``
    and ``shape`` (features x barcodes, compressed by barcode), ``barcodes`` and
    ``features/{id,name,feature_type}``; the v2 layout has one such group per genome with
    ``genes`` / ``gene_names``. The result is cells x genes.

    Parameters
    ----------
    path : path-like
    gene_expression_only : bool
        Keep only features whose ``feature_type`` is "Gene Expression" (drops antibody
        capture, CRISPR guides, ...); v2 files have gene expression only.
    gene_names : {"name", "id"}
        Use gene symbols (``features/name``) or Ensembl ids (``features/id``) as gene names;
        the other is kept in ``var``.
    allow_non_integer : bool

    Returns
    -------
    CountMatrix
    """
    import h5py

    check_option("gene_names", gene_names, ("name", "id"))
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    check_hdf5(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file: {exc}", path=path) from exc
    try:
        with f:
            if "matrix" in f:
                g = f["matrix"]
                feats = g.get("features")
                if feats is None:
                    raise DataError("matrix/ has no features group (is this a CellRanger v3 file?)",
                                    path=path)
                ids = _read_array(feats["id"])
                names = _read_array(feats["name"]) if "name" in feats else ids
                ftype = (_read_array(feats["feature_type"]) if "feature_type" in feats
                         else np.full(ids.size, "Gene Expression", dtype=object))
                where = "matrix"
            else:
                groups = [k for k in f.keys() if _is_group(f[k]) and "barcodes" in f[k]]
                if len(groups) != 1:
                    raise DataError(f"no 'matrix' group and {len(groups)} per-genome groups "
                                    f"(keys: {sorted(f.keys())}); not a 10x HDF5 matrix", path=path)
                g, where = f[groups[0]], groups[0]
                ids = _read_array(g["genes"])
                names = _read_array(g["gene_names"]) if "gene_names" in g else ids
                ftype = np.full(ids.size, "Gene Expression", dtype=object)
            for key in ("data", "indices", "indptr", "shape", "barcodes"):
                if key not in g:
                    raise DataError(f"{where}/ has no {key!r}", path=path)
            n_feat, n_bc = (int(s) for s in g["shape"][...])
            barcodes = _read_array(g["barcodes"])
            if barcodes.size != n_bc:
                raise DataError(f"{barcodes.size} barcodes but shape says {n_bc}", path=path)
            if ids.size != n_feat:
                raise DataError(f"{ids.size} features but shape says {n_feat}", path=path)
            # stored compressed by barcode: CSR of (barcodes x features)
            X = sparse_from_arrays(g["data"][...], g["indices"][...], g["indptr"][...],
                                   (n_bc, n_feat), fmt="csr", path=path, what=f"{where}/")
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise DataError(f"not a readable 10x HDF5 matrix: {type(exc).__name__}: {exc}",
                        path=path) from exc
    var = pd.DataFrame({"gene_id": ids, "gene_symbol": names, "feature_type": ftype})
    if gene_expression_only:
        keep = np.asarray(ftype == "Gene Expression")
        if not keep.any():
            raise DataError("no feature has feature_type 'Gene Expression'", path=path)
        if not keep.all():
            logger.info("%s: kept %d gene-expression features of %d", path, keep.sum(), keep.size)
            X, var = X[:, keep], var[keep].reset_index(drop=True)
    genes = var["gene_symbol" if gene_names == "name" else "gene_id"].to_numpy()
    return _finish(X, barcodes, genes, var=var, path=path, allow_non_integer=allow_non_integer,
                   what=f"{where}/data")


# --------------------------------------------------------------------------------------------
# Matrix Market directory
# --------------------------------------------------------------------------------------------

def _find(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            p = folder / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _read_tsv_lines(path: Path) -> list[list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            return [line.rstrip("\n\r").split("\t") for line in fh if line.strip()]
    except READ_ERRORS as exc:
        raise DataError(f"not a readable tab-separated file: {type(exc).__name__}: {exc}",
                        path=path) from exc


def read_mtx_dir(path, *, gene_names: Literal["name", "id"] = "name",
                 allow_non_integer: bool = False) -> CountMatrix:
    """Read a Matrix Market folder (CellRanger ``filtered_feature_bc_matrix/`` layout).

    The folder holds ``matrix.mtx[.gz]`` (genes x cells, as CellRanger writes it),
    ``barcodes.tsv[.gz]`` and ``features.tsv[.gz]`` (id, name, type; v3) or ``genes.tsv``
    (id, name; v2). A matrix stored cells x genes is recognised by its shape and not
    transposed. The result is cells x genes.

    Parameters
    ----------
    path : path-like
        The folder (or the ``matrix.mtx[.gz]`` file inside it).
    gene_names : {"name", "id"}
        Which features column names the genes (symbols, or ids); both are kept in ``var``.
    allow_non_integer : bool
    """
    check_option("gene_names", gene_names, ("name", "id"))
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataError("no such Matrix Market folder", path=folder)
    mtx = _find(folder, ("matrix.mtx",))
    bc = _find(folder, ("barcodes.tsv",))
    ft = _find(folder, ("features.tsv", "genes.tsv"))
    missing = [n for n, p in (("matrix.mtx[.gz]", mtx), ("barcodes.tsv[.gz]", bc),
                              ("features.tsv[.gz] or genes.tsv[.gz]", ft)) if p is None]
    if missing:
        raise DataError(f"Matrix Market folder lacks {', '.join(missing)} "
                        f"(found: {sorted(p.name for p in folder.iterdir())})", path=folder)
    try:
        opener = gzip.open if mtx.suffix == ".gz" else open
        with opener(mtx, "rb") as fh:
            M = spio.mmread(fh)
    except READ_ERRORS as exc:
        raise DataError(f"not a readable Matrix Market file: {exc}", path=mtx) from exc
    M = sparse.csr_matrix(check_sparse(M, path=mtx, what=mtx.name)) if sparse.issparse(M) else np.asarray(M)
    barcodes = np.asarray([row[0] for row in _read_tsv_lines(bc)], dtype=object)
    rows = _read_tsv_lines(ft)
    ids = np.asarray([r[0] for r in rows], dtype=object)
    names = np.asarray([r[1] if len(r) > 1 else r[0] for r in rows], dtype=object)
    ftype = np.asarray([r[2] if len(r) > 2 else "Gene Expression" for r in rows], dtype=object)
    if M.shape == (ids.size, barcodes.size):
        X = M.T
    elif M.shape == (barcodes.size, ids.size):
        logger.info("%s: matrix is stored cells x genes; not transposed", mtx)
        X = M
    else:
        raise DataError(f"matrix has shape {M.shape[0]} x {M.shape[1]} but there are "
                        f"{ids.size} features ({ft.name}) and {barcodes.size} barcodes "
                        f"({bc.name})", path=mtx)
    X = sparse.csr_matrix(X) if sparse.issparse(X) else np.ascontiguousarray(X)
    var = pd.DataFrame({"gene_id": ids, "gene_symbol": names, "feature_type": ftype})
    genes = names if gene_names == "name" else ids
    return _finish(X, barcodes, genes, var=var, path=mtx, allow_non_integer=allow_non_integer,
                   what=mtx.name)


# --------------------------------------------------------------------------------------------
# CSV / TSV
# --------------------------------------------------------------------------------------------

_BARCODE = re.compile(r"^[ACGTN]{8,}(-\d+)?$")


def _looks_like_barcodes(labels) -> bool:
    labels = [str(v) for v in list(labels)[:50]]
    return bool(labels) and sum(bool(_BARCODE.match(v)) for v in labels) >= 0.8 * len(labels)


def _csv_orientation(path: Path, rows, cols) -> bool:
    """Return True when the file is genes x cells (must be transposed)."""
    name = path.name.lower().replace("-", "_")
    if re.search(r"cells?_(by|x)_genes?", name):
        return False
    if re.search(r"genes?_(by|x)_cells?", name):
        return True
    if _looks_like_barcodes(rows):
        return False
    if _looks_like_barcodes(cols):
        return True
    logger.warning("%s: could not tell the orientation from the file name or labels; reading it "
                   "as cells x genes (rows = cells); pass transpose=True if rows are genes", path)
    return False


def _read_table_fast(path: Path, sep: str):
    """Parse a plain numeric table with numpy's C reader; None when it is not that simple."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            header = fh.readline().rstrip("\n\r").split(sep)
            rows = [line.split(sep, 1)[0] for line in fh if line.strip()]
        if not rows or len(header) < 2 or any('"' in v for v in header[:3] + rows[:3]):
            return None
        with opener(path, "rt", encoding="utf-8") as fh:
            fh.readline()
            X = np.loadtxt(fh, delimiter=sep, usecols=range(1, len(header)), dtype=np.float64,
                           ndmin=2)
    except READ_ERRORS:
        return None
    if X.shape != (len(rows), len(header) - 1):
        return None
    return X, np.asarray(rows, dtype=object), np.asarray(header[1:], dtype=object)


def read_csv(path, *, transpose: bool | Literal["auto"] = "auto", sep: str | None = None,
             allow_non_integer: bool = False) -> CountMatrix:
    """Read a CSV/TSV count table (first column: row names; first row: column names).

    Parameters
    ----------
    path : path-like
        ``.csv``, ``.tsv`` or ``.txt``, optionally gzipped.
    transpose : bool or "auto"
        ``False``: rows are cells; ``True``: rows are genes (the table is transposed);
        ``"auto"``: decided from the file name (``cell_by_gene`` / ``genes_x_cells`` ...), then
        from which labels look like 10x barcodes, else rows are cells (with a warning).
    sep : str or None
        Field separator; by default "," for .csv and tab otherwise.
    allow_non_integer : bool
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    if transpose != "auto" and not isinstance(transpose, bool):
        raise ParameterError(f"transpose must be True, False or 'auto'; got {transpose!r}")
    if sep is None:
        base = path.name[:-3] if path.name.endswith(".gz") else path.name
        sep = "," if base.lower().endswith(".csv") else "\t"
    table = _read_table_fast(path, sep)
    if table is None:  # quoting, missing values, ...: let pandas parse it and explain problems
        try:
            df = pd.read_csv(path, sep=sep, index_col=0, engine="c")
        except (*READ_ERRORS, pd.errors.ParserError) as exc:
            raise DataError(f"not a readable table: {exc}", path=path) from exc
        if df.shape[0] == 0 or df.shape[1] == 0:
            raise DataError(f"the table is empty ({df.shape[0]} rows x {df.shape[1]} columns)",
                            path=path)
        nonnum = [c for c, dt in df.dtypes.items() if not pd.api.types.is_numeric_dtype(dt)]
        if nonnum:
            raise DataError(f"{len(nonnum)} non-numeric columns (e.g. {nonnum[0]!r}); expected a "
                            "table of counts with names in the first column and first row",
                            path=path)
        table = (df.to_numpy(), df.index.to_numpy(), df.columns.to_numpy())
    X, rows, cols = table
    if transpose == "auto":
        transpose = _csv_orientation(path, rows, cols)
    cells, genes = rows, cols
    if transpose:
        X, cells, genes = X.T, genes, cells
    X = sparse.csr_matrix(np.asarray(X, dtype=np.float64))
    return _finish(X, cells, genes, path=path, allow_non_integer=allow_non_integer)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

def read_counts(path, **kwargs) -> CountMatrix:
    """Read a count matrix, choosing the reader from the extension or folder contents.

    ``.h5ad`` -> :func:`read_h5ad`; ``.zarr`` folder -> :func:`read_zarr`; ``.h5`` ->
    :func:`read_10x_h5`; ``.mtx[.gz]`` or a folder with ``matrix.mtx[.gz]`` ->
    :func:`read_mtx_dir`; ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) -> :func:`read_csv`.
    Keyword arguments go to the chosen reader.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        if name.endswith(".zarr") or (path / ".zgroup").is_file() or (path / "zarr.json").is_file():
            return read_zarr(path, **kwargs)
        if _find(path, ("matrix.mtx",)) is not None:
            return read_mtx_dir(path, **kwargs)
        raise DataError("folder is neither an AnnData zarr store nor a Matrix Market folder "
                        "(matrix.mtx[.gz] + barcodes.tsv + features.tsv)", path=path)
    if not path.exists():
        raise DataError("no such file", path=path)
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".h5ad"):
        return read_h5ad(path, **kwargs)
    if base.endswith((".h5", ".hdf5")):
        return read_10x_h5(path, **kwargs)
    if base.endswith(".mtx"):
        return read_mtx_dir(path.parent, **kwargs)
    if base.endswith((".csv", ".tsv", ".txt")):
        return read_csv(path, **kwargs)
    raise DataError("unknown count-matrix format; expected .h5ad, .zarr, 10x .h5, a Matrix Market "
                    "folder (or .mtx), or .csv/.tsv/.txt (optionally .gz)", path=path)


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

def _matrix(cm_or_X):
    return cm_or_X.X if isinstance(cm_or_X, CountMatrix) else cm_or_X


def size_factors(X) -> np.ndarray:
    """Per-cell size factors: library size (total counts) divided by its median.

    Parameters
    ----------
    X : CountMatrix, scipy.sparse matrix or np.ndarray [shape=(n_cells, n_genes)]

    Returns
    -------
    np.ndarray [shape=(n_cells,), dtype=float64, > 0]
        Median 1; a cell with twice the median count depth gets 2.

    Raises
    ------
    DataError
        If a cell has no counts (remove it first with :func:`filter_cells_genes`).
    """
    M = _matrix(X)
    lib = np.asarray(M.sum(axis=1), dtype=np.float64).ravel()
    if lib.size == 0:
        raise DataError("no cells: cannot compute size factors")
    bad = np.flatnonzero(~(lib > 0))
    if bad.size:
        raise DataError(f"{bad.size} cells have zero total counts (first at row {bad[0]}); remove "
                        "them first, e.g. filter_cells_genes(cm, min_counts=1)",
                        path=getattr(X, "source", None))
    return lib / np.median(lib)


def filter_cells_genes(cm: CountMatrix, *, min_counts: int = 1, min_genes: int = 0,
                       min_cells: int = 1) -> CountMatrix:
    """Drop cells with too few counts or detected genes, then genes seen in too few cells.

    Parameters
    ----------
    cm : CountMatrix
    min_counts : int >= 0
        Keep cells whose total count is at least this.
    min_genes : int >= 0
        Keep cells with at least this many genes of non-zero count.
    min_cells : int >= 0
        Then keep genes with a non-zero count in at least this many of the kept cells.

    Returns
    -------
    CountMatrix
    """
    for name, v in (("min_counts", min_counts), ("min_genes", min_genes), ("min_cells", min_cells)):
        check_positive(name, v, integer=True, allow_zero=True)
    X = cm.X
    lib = np.asarray(X.sum(axis=1)).ravel()
    ngenes = np.asarray((X > 0).sum(axis=1)).ravel()
    keep_c = (lib >= min_counts) & (ngenes >= min_genes)
    if not keep_c.any():
        raise DataError(f"no cell passes min_counts={min_counts}, min_genes={min_genes} "
                        f"(largest library {lib.max():.0f})", path=cm.source)
    Xc = X[keep_c]
    ncells = np.asarray((Xc > 0).sum(axis=0)).ravel()
    keep_g = ncells >= min_cells
    if not keep_g.any():
        raise DataError(f"no gene is detected in min_cells={min_cells} cells", path=cm.source)
    logger.info("filter_cells_genes: kept %d/%d cells, %d/%d genes", keep_c.sum(), keep_c.size,
                keep_g.sum(), keep_g.size)
    return cm.subset(cells=keep_c, genes=keep_g)


def _poisson_deviance(X) -> np.ndarray:
    """Per-gene deviance of the constant-proportion model x_ik ~ Poisson(n_i p_k)."""
    X = sparse.csr_matrix(X, dtype=np.float64)
    n = np.asarray(X.sum(axis=1)).ravel()
    total = n.sum()
    p = np.asarray(X.sum(axis=0)).ravel() / total
    coo = X.tocoo()
    mu = n[coo.row] * p[coo.col]
    terms = coo.data * np.log(coo.data / mu)
    # sum over cells of (x - mu) is exactly 0 for the fitted p, so only nonzeros contribute
    return 2.0 * np.bincount(coo.col, weights=terms, minlength=X.shape[1])


def _local_linear_trend(x: np.ndarray, y: np.ndarray, *, span: float = 0.3,
                        n_knots: int = 100) -> np.ndarray:
    """Smooth y(x) by tricube-weighted local linear fits on knots, linearly interpolated."""
    order = np.argsort(x)
    xs, ys = x[order], y[order]
    n = xs.size
    k = max(int(np.ceil(span * n)), min(n, 10))
    knots = np.unique(np.quantile(xs, np.linspace(0, 1, min(n_knots, n))))
    fit = np.empty(knots.size)
    for i, x0 in enumerate(knots):
        d = np.abs(xs - x0)
        idx = np.argpartition(d, k - 1)[:k]
        h = d[idx].max() or 1.0
        w = (1 - (d[idx] / (h * 1.0001)) ** 3) ** 3
        xa, ya = xs[idx] - x0, ys[idx]
        sw, sx, sy = w.sum(), (w * xa).sum(), (w * ya).sum()
        sxx, sxy = (w * xa * xa).sum(), (w * xa * ya).sum()
        det = sw * sxx - sx * sx
        fit[i] = sy / sw if det <= 1e-12 * max(sw * sxx, 1e-300) else (sxx * sy - sx * sxy) / det
    return np.interp(x, knots, fit)


def _seurat_v3_like(X) -> np.ndarray:
    """Variance of counts standardised by a mean-variance trend (clipped at sqrt(n_cells))."""
    X = sparse.csc_matrix(X, dtype=np.float64)
    N = X.shape[0]
    mean = np.asarray(X.mean(axis=0)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    var = np.maximum(sq - mean**2, 0) * N / max(N - 1, 1)
    ok = (mean > 0) & (var > 0)
    score = np.zeros(X.shape[1])
    if not ok.any():
        return score
    trend = _local_linear_trend(np.log10(mean[ok]), np.log10(var[ok]))
    sd = np.full(X.shape[1], np.inf)
    sd[ok] = np.sqrt(10.0**trend)
    clip = np.sqrt(N)
    nnz = np.diff(X.indptr)
    col = np.repeat(np.arange(X.shape[1]), nnz)
    z = np.minimum((X.data - mean[col]) / sd[col], clip)
    z0 = np.minimum(-mean / sd, clip)                   # value of a zero entry
    s1 = np.bincount(col, weights=z, minlength=X.shape[1]) + (N - nnz) * z0
    s2 = np.bincount(col, weights=z * z, minlength=X.shape[1]) + (N - nnz) * z0 * z0
    score[ok] = ((s2 - s1**2 / N) / max(N - 1, 1))[ok]
    return score


def gene_variability(X, *, method: str = "poisson_deviance") -> np.ndarray:
    """Per-gene variability score used to rank highly variable genes (larger = more variable).

    Parameters
    ----------
    X : CountMatrix, scipy.sparse matrix or np.ndarray [shape=(n_cells, n_genes)], counts
    method : {"poisson_deviance", "seurat_v3_like"}
        ``"poisson_deviance"``: the deviance 2 sum_i x_ik log(x_ik / (n_i p_k)) of the null
        model in which every cell draws gene k in the same proportion p_k from its library
        size n_i (Poisson with an offset; the large-n form of the binomial deviance of Townes
        et al. 2019). Genes that vary between cells beyond sampling noise fit it badly. Needs
        only the non-zero entries.
        ``"seurat_v3_like"``: as Seurat v3 (Stuart et al. 2019): fit log10 variance against
        log10 mean with a local linear smoother (span 0.3; Seurat uses loess), standardise each
        count by the trend's standard deviation, clip at sqrt(n_cells), and take the variance
        of the standardised values (about 1 for a gene on the trend).

    Returns
    -------
    np.ndarray [shape=(n_genes,), dtype=float64, >= 0]
    """
    check_option("method", method, HVG_METHODS)
    M = _matrix(X)
    if M.shape[0] < 2:
        raise DataError(f"gene variability needs at least 2 cells; got {M.shape[0]}")
    if method == "poisson_deviance":
        return _poisson_deviance(M)
    return _seurat_v3_like(M)


def select_highly_variable_genes(cm: CountMatrix, *, n_top: int = 2000,
                                 method: str = "poisson_deviance") -> CountMatrix:
    """Keep the ``n_top`` most variable genes (see :func:`gene_variability` for the methods).

    Genes keep their original order; ``var`` gains the columns ``hvg_score`` and ``hvg_rank``
    (0 = most variable). With ``n_top >= n_genes`` every gene is kept.

    Parameters
    ----------
    cm : CountMatrix
    n_top : int > 0
    method : {"poisson_deviance", "seurat_v3_like"}

    Returns
    -------
    CountMatrix
    """
    check_positive("n_top", n_top, integer=True)
    score = gene_variability(cm, method=method)
    order = np.argsort(-score, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    keep = np.sort(order[: min(n_top, order.size)])
    out = cm.subset(genes=keep)
    var = out.var.copy()
    var["hvg_score"] = score[keep]
    var["hvg_rank"] = rank[keep]
    logger.info("select_highly_variable_genes(%s): kept %d of %d genes", method, keep.size,
                cm.n_genes)
    return CountMatrix(out.X, out.cell_names, out.gene_names, obs=out.obs, var=var,
                       source=out.source, is_integer=out.is_integer)
