"""Writing AnnData ``.h5ad`` files (with the ``anndata`` package, or a built-in h5py writer
of the AnnData on-disk format when it is not installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from .._utils import ParameterError, atomic_path, check_option

__all__ = ["write_h5ad"]


def _h5_str(group, name, values):
    import h5py

    ds = group.create_dataset(name, data=np.asarray(values, dtype=object).astype(str).astype(object),
                              dtype=h5py.string_dtype("utf-8"))
    ds.attrs["encoding-type"] = "string-array"
    ds.attrs["encoding-version"] = "0.2.0"
    return ds


def _h5_array(group, name, values):
    ds = group.create_dataset(name, data=np.asarray(values))
    ds.attrs["encoding-type"] = "array"
    ds.attrs["encoding-version"] = "0.2.0"
    return ds


def _h5_dataframe(group, name, frame: pd.DataFrame, index):
    import h5py

    g = group.create_group(name)
    g.attrs["encoding-type"] = "dataframe"
    g.attrs["encoding-version"] = "0.2.0"
    g.attrs["_index"] = "_index"
    _h5_str(g, "_index", index)
    cols = []
    for col in frame.columns:
        s = frame[col]
        key = str(col)
        if key == "_index":
            continue
        if isinstance(s.dtype, pd.CategoricalDtype):
            cg = g.create_group(key)
            cg.attrs["encoding-type"] = "categorical"
            cg.attrs["encoding-version"] = "0.2.0"
            cg.attrs["ordered"] = bool(s.cat.ordered)
            _h5_array(cg, "codes", s.cat.codes.to_numpy().astype(np.int32))
            cats = s.cat.categories.to_numpy()
            if cats.dtype.kind in "iuf":
                _h5_array(cg, "categories", cats)
            else:
                _h5_str(cg, "categories", cats)
        elif pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
            _h5_array(g, key, s.to_numpy(dtype=bool))
        elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_extension_array_dtype(s.dtype):
            _h5_array(g, key, s.to_numpy())
        elif pd.api.types.is_numeric_dtype(s.dtype):
            _h5_array(g, key, s.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            _h5_str(g, key, s.astype("string").fillna("").to_numpy(dtype=object))
        cols.append(key)
    g.attrs.create("column-order", np.asarray(cols, dtype=object), dtype=h5py.string_dtype("utf-8"))
    return g


def _h5_dict(group, name, mapping: Mapping):
    import h5py

    g = group.create_group(name)
    g.attrs["encoding-type"] = "dict"
    g.attrs["encoding-version"] = "0.1.0"
    for k, v in mapping.items():
        k = str(k)
        if isinstance(v, Mapping):
            _h5_dict(g, k, v)
        elif isinstance(v, str):
            ds = g.create_dataset(k, data=v, dtype=h5py.string_dtype("utf-8"))
            ds.attrs["encoding-type"] = "string"
            ds.attrs["encoding-version"] = "0.2.0"
        elif isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_)):
            ds = g.create_dataset(k, data=np.asarray(v))
            ds.attrs["encoding-type"] = "numeric-scalar"
            ds.attrs["encoding-version"] = "0.2.0"
        else:
            arr = np.asarray(v)
            if arr.dtype.kind in "OUS":
                _h5_str(g, k, arr)
            else:
                _h5_array(g, k, arr)
    return g


def _jsonable_uns(uns: Mapping) -> dict:
    out = {}
    for k, v in uns.items():
        if isinstance(v, Mapping):
            out[str(k)] = _jsonable_uns(v)
        elif v is None:
            continue
        elif isinstance(v, (str, bool, int, float, np.integer, np.floating, np.bool_)):
            out[str(k)] = v
        elif isinstance(v, (list, tuple, np.ndarray)):
            out[str(k)] = np.asarray(v)
        else:
            out[str(k)] = json.dumps(v, default=str)
    return out


def write_h5ad(path, X, *, obs: pd.DataFrame, var: pd.DataFrame, obsm: Mapping | None = None,
               uns: Mapping | None = None, backend: str = "auto") -> Path:
    """Write an AnnData ``.h5ad`` file (atomically) that anndata and scanpy read.

    Parameters
    ----------
    path : path-like
    X : scipy.sparse matrix or np.ndarray [shape=(n_cells, n_genes)]
        Written as CSR (float32).
    obs : pandas.DataFrame [shape=(n_cells, ...)]
        Cell metadata; its index gives the cell names.
    var : pandas.DataFrame [shape=(n_genes, ...)]
        Gene metadata; its index gives the gene names.
    obsm : mapping of str -> np.ndarray [shape=(n_cells, k)], optional
        E.g. ``{"X_qlvm": embedding}``.
    uns : mapping, optional
        Nested dicts of strings, numbers and arrays (other values are stored as JSON strings;
        None values are left out).
    backend : {"auto", "anndata", "h5py"}
        ``"auto"``: the ``anndata`` package when installed, else a built-in h5py writer of the
        AnnData on-disk format (X as a ``csr_matrix`` group, obs/var as ``dataframe`` groups
        with ``_index``, obsm and uns as ``dict`` groups).

    Returns
    -------
    pathlib.Path
    """
    from scipy import sparse

    check_option("backend", backend, ("auto", "anndata", "h5py"))
    path = Path(path)
    X = sparse.csr_matrix(X, dtype=np.float32)
    obsm = {str(k): np.asarray(v) for k, v in dict(obsm or {}).items()}
    for k, v in obsm.items():
        if v.shape[0] != X.shape[0]:
            raise ParameterError(f"obsm[{k!r}] has {v.shape[0]} rows; X has {X.shape[0]} cells")
    if len(obs) != X.shape[0] or len(var) != X.shape[1]:
        raise ParameterError(f"obs ({len(obs)} rows) and var ({len(var)} rows) do not match X {X.shape}")
    uns = _jsonable_uns(dict(uns or {}))
    if backend == "auto":
        try:
            import anndata  # noqa: F401
            backend = "anndata"
        except ImportError:
            backend = "h5py"
    obs = obs.copy()
    var = var.copy()
    for frame in (obs, var):
        # object dtype, not pandas' string arrays (anndata < 0.11 cannot read those)
        frame.index = pd.Index(np.asarray(frame.index, dtype=str).astype(object), dtype=object)
        for col in frame.columns:
            if pd.api.types.is_string_dtype(frame[col].dtype) and not isinstance(
                    frame[col].dtype, pd.CategoricalDtype):
                frame[col] = pd.Series(frame[col].astype(str).to_numpy(dtype=object),
                                       index=frame.index, dtype=object)
    with atomic_path(path, suffix=".h5ad") as tmp:
        if backend == "anndata":
            import anndata

            adata = anndata.AnnData(X=X, obs=obs, var=var, obsm=obsm, uns=uns)
            adata.write_h5ad(tmp)
        else:
            import h5py

            with h5py.File(tmp, "w") as f:
                f.attrs["encoding-type"] = "anndata"
                f.attrs["encoding-version"] = "0.1.0"
                g = f.create_group("X")
                g.attrs["encoding-type"] = "csr_matrix"
                g.attrs["encoding-version"] = "0.1.0"
                g.attrs["shape"] = np.asarray(X.shape, dtype=np.int64)
                g.create_dataset("data", data=X.data, compression="gzip")
                g.create_dataset("indices", data=X.indices.astype(np.int32), compression="gzip")
                g.create_dataset("indptr", data=X.indptr.astype(np.int64))
                _h5_dataframe(f, "obs", obs, obs.index.to_numpy())
                _h5_dataframe(f, "var", var, var.index.to_numpy())
                for name in ("obsm", "varm", "obsp", "varp", "layers"):
                    _h5_dict(f, name, obsm if name == "obsm" else {})
                _h5_dict(f, "uns", uns)
    return path
