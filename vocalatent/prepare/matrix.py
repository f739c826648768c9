"""Count matrices (single cells) and neural activity made ready for the QLVM.

- **single cells** (``[pipeline] domain = "single_cell"``): :func:`~vocalatent.data.single_cell.read_counts`
  → cell/gene filter → highly variable genes → counts (cells x genes) with the
  multinomial likelihood (the GEMM kernel; ``negbin`` as an option).
- **neural populations** (``domain = "neural"``): spike times (npz / HDF5 / text / NWB) binned
  at ``[neural] bin_s``, or an already binned units x time matrix → counts (time bins x units)
  with the Poisson likelihood; a ring (``latent_dim = 1``, the default, for head-direction-like
  data) or a torus (``--latent-dim 2``).

With ``features`` (the genes or units of a trained model, for ``vocalatent project``) the
columns are those features in that order: no gene selection, and features missing from the
input become zero columns (counted in a warning).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .._utils import READ_ERRORS, DataError, ParameterError, check_option, check_positive, is_number, json_key
from .._version import __version__
from ..config import table as config_table
from ..data.hdf5_probe import check_hdf5
from .base import COUNT_LIKELIHOODS, Prepared, files_digest, input_files
from .detect import TABLE_EXT

logger = logging.getLogger(__name__)

__all__ = ["NeuralParams", "SingleCellParams", "check_count_support", "prepare_neural",
           "prepare_single_cell"]


@dataclass(frozen=True)
class SingleCellParams:
    """The ``[single_cell]`` table: reading, filtering and gene selection of a count matrix.

    Parameters
    ----------
    layer : str
        ``""``: the matrix ``X``; ``"raw"``: ``raw/X``; another name: ``layers/<name>``
        (AnnData files only).
    allow_non_integer : bool
        Accept normalised / log values (then only ``likelihood = "gaussian"`` is allowed).
    transpose : bool or "auto"
        CSV/TSV orientation (see :func:`~vocalatent.data.single_cell.read_csv`).
    min_counts : int >= 0
        Drop cells with fewer total counts (before gene selection).
    min_genes : int >= 0
        Drop cells with fewer detected genes.
    min_cells : int >= 0
        Drop genes detected in fewer cells.
    n_top_genes : int >= 0
        Highly variable genes modelled (0: all genes).
    hvg_method : {"poisson_deviance", "seurat_v3_like"}
    marker_genes : tuple of str
        Genes shown in the marker figures (empty: the most variable genes).
    n_marker_panels : int > 0
        Genes per marker figure when ``marker_genes`` is empty.
    write_anndata : bool
        Write ``OUT/adata.h5ad``.
    """

    layer: str = ""
    allow_non_integer: bool = False
    transpose: Any = "auto"
    min_counts: int = 1
    min_genes: int = 0
    min_cells: int = 3
    n_top_genes: int = 2000
    hvg_method: str = "poisson_deviance"
    marker_genes: tuple = ()
    n_marker_panels: int = 8
    write_anndata: bool = True

    def __post_init__(self):
        from ..data.single_cell import HVG_METHODS

        for name in ("min_counts", "min_genes", "min_cells", "n_top_genes"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        check_positive("n_marker_panels", self.n_marker_panels, integer=True)
        check_option("hvg_method", self.hvg_method, HVG_METHODS)
        if self.transpose not in ("auto", True, False):
            raise ParameterError(f"transpose must be true, false or \"auto\"; got {self.transpose!r}")
        if not isinstance(self.layer, str):
            raise ParameterError(f"layer must be a string (\"\" for X); got {self.layer!r}")
        object.__setattr__(self, "marker_genes", tuple(str(g) for g in self.marker_genes))


@dataclass(frozen=True)
class NeuralParams:
    """The ``[neural]`` table: reading and binning neural activity.

    Parameters
    ----------
    format : {"auto", "spikes", "binned"}
        ``"auto"``: npz/HDF5 files holding a ``counts_key`` array (or a single 2-D array) are
        binned matrices, others hold spike times; NWB files are spike times; CSV files with
        numeric time stamps in the header are binned, one-number-per-line files spike times.
    bin_s : float > 0
        Bin width in seconds for spike times (default 50 ms).
    smooth_s : float >= 0
        Gaussian smoothing (sd, seconds) of binned spike times; 0 = none. Smoothed counts are
        not integers: only ``likelihood = "gaussian"`` accepts them.
    t_start, t_stop : float or None
        Binned window in seconds (default: first to last spike).
    time_unit : {"s", "ms", "us"}
        Unit of the stored times.
    allow_empty_units : bool
        Keep units with no spikes instead of raising.
    transpose : bool
        A binned matrix is stored time x units.
    nwb_backend : {"auto", "pynwb", "h5py"}
        ``"auto"``: pynwb when installed, else the plain h5py reader.
    counts_key, time_key, units_key, group : str
        Array / group names in npz and HDF5 files (``group`` ``""``: ``units`` or the root).
    n_tuning_units : int > 0
        Units drawn in the tuning-curve figure.
    """

    format: str = "auto"
    bin_s: float = 0.05
    smooth_s: float = 0.0
    t_start: float | None = None
    t_stop: float | None = None
    time_unit: str = "s"
    allow_empty_units: bool = False
    transpose: bool = False
    nwb_backend: str = "auto"
    counts_key: str = "counts"
    time_key: str = "time"
    units_key: str = "unit_names"
    group: str = ""
    n_tuning_units: int = 16

    def __post_init__(self):
        from ..data.neural import TIME_UNITS

        check_option("format", self.format, ("auto", "spikes", "binned"))
        check_positive("bin_s", self.bin_s)
        check_positive("smooth_s", self.smooth_s, allow_zero=True)
        check_option("time_unit", self.time_unit, tuple(TIME_UNITS))
        check_option("nwb_backend", self.nwb_backend, ("auto", "pynwb", "h5py"))
        check_positive("n_tuning_units", self.n_tuning_units, integer=True)
        for name in ("t_start", "t_stop"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ParameterError(f"{name} must be a finite number of seconds; got {v!r}")


def check_count_support(X: np.ndarray, likelihood: str, path: Path, *, what: str) -> None:
    """DataError when ``likelihood`` needs counts and ``X`` holds negative or fractional values."""
    if likelihood not in COUNT_LIKELIHOODS:
        return
    if X.min() < 0:
        raise DataError(f"{what} has negative values (min {X.min():g}); the {likelihood} likelihood "
                        "needs counts >= 0", path=path)
    frac = np.abs(X - np.rint(X)) > 1e-6
    if frac.any():
        raise DataError(f"{what} has {int(frac.sum())} non-integer values (e.g. "
                        f"{float(X[frac][0]):.4g}); the {likelihood} likelihood needs integer counts "
                        "(use raw counts, no smoothing, or likelihood = \"gaussian\")", path=path)


def _align_features(X: np.ndarray, names, features, path: Path, what: str) -> np.ndarray:
    """Columns of ``X`` (named ``names``) reordered to ``features``; missing ones are zero."""
    idx = {str(n): i for i, n in enumerate(names)}
    cols = np.array([idx.get(str(f), -1) for f in features], dtype=np.int64)
    missing = int((cols < 0).sum())
    if missing == len(cols):
        raise DataError(f"none of the model's {len(cols)} {what} is in the input; was the model "
                        "trained on this kind of data?", path=path)
    if missing:
        logger.warning("%s: %d of the model's %d %s are missing from the input; they are zero",
                       path, missing, len(cols), what)
    out = np.zeros((X.shape[0], len(cols)), dtype=np.float32)
    out[:, cols >= 0] = X[:, cols[cols >= 0]]
    return out


def prepare_single_cell(path: Path, cfg: Mapping, *, features=None) -> Prepared:
    """Read, filter and select the genes of a count matrix per ``cfg["single_cell"]``.

    Parameters
    ----------
    path : pathlib.Path
    cfg : mapping
        The resolved configuration (``[single_cell]``, ``[model] likelihood``).
    features : sequence of str, optional
        Genes of a trained model: the columns are these genes in this order (no gene filter
        or selection).

    Returns
    -------
    Prepared
    """
    from ..data.single_cell import (filter_cells_genes, read_counts,
                                   select_highly_variable_genes)

    p = config_table(cfg, "single_cell")
    likelihood = str(cfg.get("model", {}).get("likelihood", "multinomial"))
    kw: dict[str, Any] = {"allow_non_integer": p.allow_non_integer}
    base = path.name.lower().removesuffix(".gz")
    if p.layer:
        if not base.endswith((".h5ad", ".zarr")):
            raise ParameterError(f"[single_cell] layer = {p.layer!r} applies to AnnData files "
                                 f"(.h5ad / .zarr) only; {path} is not one")
        kw["layer"] = p.layer
    if base.endswith(TABLE_EXT):
        kw["transpose"] = p.transpose
    cm = read_counts(path, **kw)
    if not cm.is_integer and likelihood in COUNT_LIKELIHOODS:
        raise DataError(f"the matrix is not integer counts (allow_non_integer is set) but the "
                        f"{likelihood} likelihood needs counts; use likelihood = \"gaussian\"",
                        path=path)
    n_total = cm.n_genes
    cm = filter_cells_genes(cm, min_counts=p.min_counts, min_genes=p.min_genes,
                            min_cells=0 if features is not None else p.min_cells)
    if features is not None:
        X = _align_features(cm.dense(np.float32), cm.gene_names, features, path, "genes")
        return _single_cell_prepared(path, cm, X, np.asarray(features, dtype=object), None, p,
                                     n_total, likelihood)
    sel = cm if p.n_top_genes == 0 else select_highly_variable_genes(
        cm, n_top=p.n_top_genes, method=p.hvg_method)
    lib_sel = np.asarray(sel.X.sum(axis=1)).ravel()
    if likelihood in COUNT_LIKELIHOODS and np.any(lib_sel <= 0):
        keep = lib_sel > 0
        logger.info("%s: %d cell(s) have no counts in the %d selected genes; left out",
                    path, int((~keep).sum()), sel.n_genes)
        if not keep.any():
            raise DataError(f"no cell has counts in the {sel.n_genes} selected genes", path=path)
        sel = sel.subset(cells=keep)
        cm = cm.subset(cells=keep)
    X = sel.dense(np.float32)
    hvg_rank = sel.var["hvg_rank"].to_numpy() if "hvg_rank" in sel.var else None
    return _single_cell_prepared(path, cm, X, np.asarray(sel.gene_names, dtype=object), hvg_rank,
                                 p, n_total, likelihood)


def _single_cell_prepared(path, cm, X, features, hvg_rank, p, n_total, likelihood) -> Prepared:
    check_count_support(X, likelihood, path, what="the count matrix")
    coords = cm.obs.reset_index(drop=True).copy()
    coords.insert(0, "cell", np.asarray(cm.cell_names, dtype=str))
    coords["n_counts"] = np.asarray(cm.X.sum(axis=1), dtype=np.float64).ravel()
    coords["n_counts_selected"] = X.sum(axis=1, dtype=np.float64)
    extra = {"matrix": cm, "n_genes_total": int(n_total), "params": p, "hvg_rank": hvg_rank}
    key = json_key({"input": files_digest(input_files(path), root=path), "domain": "single_cell",
                    "params": dataclasses.asdict(p), "features": None if hvg_rank is not None else
                    [str(f) for f in features], "version": __version__})
    return Prepared(X, coords, key, "single_cell", features, source=path,
                    model_metadata={"features": [str(f) for f in features]}, extra=extra)


def _neural_format(path: Path, p: NeuralParams) -> str:
    if p.format != "auto":
        return p.format
    base = path.name.lower()
    if base.endswith(".nwb"):
        return "spikes"
    try:
        if base.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                if p.counts_key in keys:
                    return "binned"
                if len(keys) == 1 and z[keys[0]].ndim == 2:
                    return "binned"
            return "spikes"
        if base.endswith((".h5", ".hdf5")):
            import h5py

            check_hdf5(path)
            with h5py.File(path, "r") as f:
                return "binned" if p.counts_key in f and isinstance(f[p.counts_key], h5py.Dataset) else "spikes"
        first_fields = None
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.split("#", 1)[0].strip()
                if line:
                    first_fields = line.replace(",", " ").replace("\t", " ").split()
                    break
    except READ_ERRORS as exc:
        raise DataError(f"cannot read the file to tell spike times from binned counts: "
                        f"{type(exc).__name__}: {exc}", path=path) from exc
    if first_fields and all(is_number(f) for f in first_fields):
        return "spikes"
    return "binned"


def prepare_neural(path: Path, cfg: Mapping, *, features=None) -> Prepared:
    """Read (and bin) neural activity per ``cfg["neural"]``.

    Parameters
    ----------
    path : pathlib.Path
    cfg : mapping
        The resolved configuration (``[neural]``, ``[model] likelihood``).
    features : sequence of str, optional
        Units of a trained model: the columns are these units in this order.

    Returns
    -------
    Prepared
    """
    from ..data.neural import bin_spikes, read_binned, read_nwb_units, read_spike_times

    p = config_table(cfg, "neural")
    likelihood = str(cfg.get("model", {}).get("likelihood", "poisson"))
    fmt = _neural_format(path, p)
    if fmt == "binned":
        nc = read_binned(path, counts_key=p.counts_key, time_key=p.time_key, units_key=p.units_key,
                         transpose=p.transpose, time_unit=p.time_unit)
        if not p.allow_empty_units:
            empty = np.flatnonzero(nc.counts.sum(axis=1) == 0)
            if empty.size:
                raise DataError(f"{empty.size} unit(s) have no activity (e.g. "
                                f"{nc.unit_names[empty[0]]!r}); set [neural] allow_empty_units = "
                                "true to keep them", path=path)
    else:
        if path.name.lower().endswith(".nwb"):
            backend = p.nwb_backend
            if backend == "auto":
                try:
                    import pynwb  # noqa: F401
                    backend = "pynwb"
                except ImportError:
                    backend = "h5py"
            units = read_nwb_units(path, backend=backend)
            scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6}[p.time_unit]
            units = {k: v * scale for k, v in units.items()}
        else:
            units = read_spike_times(path, time_unit=p.time_unit, group=p.group or None)
        nc = bin_spikes(units, bin_s=p.bin_s, t_start=p.t_start, t_stop=p.t_stop,
                        smooth_s=p.smooth_s or None, allow_empty_units=p.allow_empty_units,
                        source=path)
    X = np.ascontiguousarray(nc.X, dtype=np.float32)
    names = np.asarray(nc.unit_names, dtype=object)
    if features is not None:
        X = _align_features(X, names, features, path, "units")
        names = np.asarray(features, dtype=object)
    if nc.smooth_s and likelihood in COUNT_LIKELIHOODS:
        raise ParameterError(f"[neural] smooth_s = {nc.smooth_s} makes non-integer counts, which the "
                             f"{likelihood} likelihood cannot model; set smooth_s = 0 or "
                             "[model] likelihood = \"gaussian\"")
    check_count_support(X, likelihood, path, what="the binned counts")
    coords = pd.DataFrame({"time_s": nc.time, "n_spikes": X.sum(axis=1, dtype=np.float64)})
    key = json_key({"input": files_digest(input_files(path), root=path), "domain": "neural",
                    "format": fmt, "params": dataclasses.asdict(p),
                    "features": None if features is None else [str(f) for f in names],
                    "version": __version__})
    return Prepared(X, coords, key, "neural", names, source=path,
                    model_metadata={"features": [str(f) for f in names]},
                    extra={"counts": nc, "bin_s": nc.bin_s, "format": fmt, "params": p})
