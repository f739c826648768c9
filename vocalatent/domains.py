"""Single-cell and neural inputs for the end-to-end job: detect the domain, prepare the
matrix, and run fit → embed → analyse → figures on it.

:func:`embed_matrix` mirrors :func:`vocalatent.workflow.embed` (which handles recordings) for
cell-by-gene count matrices and neuron-by-time activity:

- **single cells** (``[pipeline] domain = "single_cell"``): :func:`~vocalatent.data.single_cell.read_counts`
  → cell/gene filter → highly variable genes → counts (cells x genes) with the
  multinomial likelihood (the GEMM kernel; ``negbin`` as an option). Writes ``OUT/adata.h5ad``
  with ``obsm["X_qlvm"]`` and the model's summary in ``uns["qlvm"]``.
- **neural populations** (``domain = "neural"``): spike times (npz / HDF5 / text / NWB) binned
  at ``[neural] bin_s``, or an already binned units x time matrix → counts (time bins x units)
  with the Poisson likelihood; a ring (``latent_dim = 1``, the default, for head-direction-like
  data) or a torus (``--latent-dim 2``).

Domain detection (:func:`detect_domain`), in this order:

1. an explicit ``pipeline`` (or a config file's ``extends``) whose ``[pipeline] domain`` is not
   ``"vocal"`` wins;
2. folders: an AnnData ``.zarr`` store or a Matrix Market folder (``matrix.mtx[.gz]``) →
   single cell; anything else → vocal (a folder of recordings);
3. files by extension: ``.h5ad``, ``.zarr``, ``.mtx[.gz]``, ``.loom`` → single cell; ``.nwb``,
   ``.npz`` → neural; audio extensions → vocal; ``.h5``/``.hdf5``: a ``matrix`` group (10x
   CellRanger v3) or per-genome groups with ``barcodes`` (v2) → single cell, otherwise
   neural (a ``counts`` dataset or a group of per-unit spike-time datasets);
4. ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) by content: a first line of numbers only
   (no header: one spike time per line, or one unit per line, as the nitime example files) →
   neural spike times; a header whose fields after the first are all numbers (time stamps) →
   a neural binned matrix; a header of names (genes or cell barcodes) → single cell.

A CSV whose header is neither (e.g. units named in the header) is read as a count matrix;
pass ``--pipeline neural`` to read it as neural data.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from ._utils import (DataError, ParameterError, atomic_path, check_option, check_positive, is_number,
                     json_key)
from ._version import __version__

logger = logging.getLogger(__name__)

__all__ = [
    "DOMAINS",
    "NeuralParams",
    "Prepared",
    "SingleCellParams",
    "decoded_gene_figure",
    "detect_domain",
    "embed_matrix",
    "marker_figure",
    "prepare",
    "tuning_curve_figure",
    "write_h5ad",
]

DOMAINS = ("vocal", "single_cell", "neural")

#: Likelihoods that need non-negative integer counts.
COUNT_LIKELIHOODS = ("poisson", "poisson_offset", "multinomial", "negbin", "bernoulli")

_SINGLE_CELL_EXT = (".h5ad", ".zarr", ".mtx", ".loom")
_NEURAL_EXT = (".nwb", ".npz")
_TABLE_EXT = (".csv", ".tsv", ".txt")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
def _from_table(cls, table: Mapping | None, name: str):
    table = dict(table or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ParameterError(f"unknown key(s) in [{name}]: {', '.join(unknown)}; valid: {', '.join(valid)}")
    kwargs = {}
    for k, v in table.items():
        if isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


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
        from .data.single_cell import HVG_METHODS

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
        from .data.neural import TIME_UNITS

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


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
def _table_domain(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            first = ""
            for line in fh:
                line = line.split("#", 1)[0].strip()
                if line:
                    first = line
                    break
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the table to tell its kind: {exc}", path=path) from exc
    if not first:
        raise DataError("the file holds no data (empty, or only comments)", path=path)
    sep = "\t" if "\t" in first else ","
    fields = [f.strip().strip('"') for f in first.split(sep)]
    if len(fields) == 1 and " " in first:
        fields = first.split()
    if all(is_number(f) for f in fields):
        return "neural"                     # no header: spike times
    if len(fields) > 1 and all(is_number(f) for f in fields[1:]):
        return "neural"                     # header of time stamps: a binned units x time table
    return "single_cell"


def _h5_domain(path: Path) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f and isinstance(f["matrix"], h5py.Group):
                return "single_cell"
            if "X" in f and "obs" in f and "var" in f:
                return "single_cell"        # an AnnData file with an .h5 name
            for key in f.keys():
                node = f[key]
                if isinstance(node, h5py.Group) and "barcodes" in node and (
                        "genes" in node or "gene_names" in node):
                    return "single_cell"    # CellRanger v2, one group per genome
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file: {exc}", path=path) from exc
    return "neural"


def _pipeline_domain(pipeline, config) -> str | None:
    from .config import load_pipeline, resolve_config

    if pipeline is None and config is None:
        return None
    if pipeline is not None:
        return load_pipeline(pipeline)["pipeline"].get("domain", "vocal")
    cfg = resolve_config(config_file=config)
    user_extends = cfg.get("pipeline", {}).get("extends")
    return cfg["pipeline"].get("domain") if user_extends else None


def detect_domain(path, *, pipeline=None, config=None) -> str:
    """Tell which kind of data ``path`` holds: ``"vocal"``, ``"single_cell"`` or ``"neural"``.

    Parameters
    ----------
    path : path-like
        A file or folder (see the module docstring for the rules).
    pipeline : str or path-like, optional
        A preset or pipeline file; its ``[pipeline] domain``, when not ``"vocal"``, decides.
    config : path-like, optional
        A user TOML file; its ``extends`` preset's domain decides likewise.

    Returns
    -------
    str, one of :data:`DOMAINS`

    Raises
    ------
    DataError
        The path does not exist, or a table / HDF5 file cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    explicit = _pipeline_domain(pipeline, config)
    if explicit and explicit != "vocal":
        return explicit
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if path.is_dir():
        if (name.endswith(".zarr") or (path / ".zgroup").is_file() or (path / "zarr.json").is_file()
                or any((path / f).is_file() for f in ("matrix.mtx", "matrix.mtx.gz"))):
            return "single_cell"
        return "vocal"
    if base.endswith(_SINGLE_CELL_EXT):
        return "single_cell"
    if base.endswith(_NEURAL_EXT):
        return "neural"
    if base.endswith((".h5", ".hdf5")):
        return _h5_domain(path)
    if base.endswith(_TABLE_EXT):
        return _table_domain(path)
    return "vocal"


# --------------------------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prepared:
    """A domain's input made ready for the QLVM.

    Attributes
    ----------
    X : np.ndarray [shape=(n_items, n_features), float32, counts >= 0]
        Cells x selected genes, or time bins x units.
    coords : pandas.DataFrame [shape=(n_items, ...)]
        Per-item metadata, become ``item`` coordinates of the embedding (``cell`` and the obs
        columns; ``time_s``).
    data_key : str
        Fingerprint of the input's bytes, the domain table and the package version (the
        workflow retrains only when it changes).
    domain : str
        ``"single_cell"`` or ``"neural"``.
    features : np.ndarray [shape=(n_features,), dtype=object]
        Gene names or unit names, in the column order of ``X``.
    extra : dict
        Domain details: ``matrix`` (the filtered :class:`CountMatrix`, all genes) and
        ``n_genes_total`` for cells; ``counts`` (:class:`NeuralCounts`) and ``bin_s`` for
        neurons.
    """

    X: np.ndarray
    coords: pd.DataFrame
    data_key: str
    domain: str
    features: np.ndarray
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_option("domain", self.domain, ("single_cell", "neural"))
        if self.X.ndim != 2 or len(self.coords) != self.X.shape[0] or len(self.features) != self.X.shape[1]:
            raise ParameterError(f"X {self.X.shape}, coords ({len(self.coords)} rows) and features "
                                 f"({len(self.features)}) do not match")


def _file_digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 23), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _check_count_support(X: np.ndarray, likelihood: str, path: Path, *, what: str) -> None:
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


def _prepare_single_cell(path: Path, cfg: Mapping) -> Prepared:
    from .data.single_cell import (filter_cells_genes, read_counts,
                                   select_highly_variable_genes)

    p = _from_table(SingleCellParams, cfg.get("single_cell"), "single_cell")
    likelihood = str(cfg.get("model", {}).get("likelihood", "multinomial"))
    kw: dict[str, Any] = {"allow_non_integer": p.allow_non_integer}
    base = path.name.lower().removesuffix(".gz")
    if p.layer:
        if not base.endswith((".h5ad", ".zarr")):
            raise ParameterError(f"[single_cell] layer = {p.layer!r} applies to AnnData files "
                                 f"(.h5ad / .zarr) only; {path} is not one")
        kw["layer"] = p.layer
    if base.endswith(_TABLE_EXT):
        kw["transpose"] = p.transpose
    cm = read_counts(path, **kw)
    if not cm.is_integer and likelihood in COUNT_LIKELIHOODS:
        raise DataError(f"the matrix is not integer counts (allow_non_integer is set) but the "
                        f"{likelihood} likelihood needs counts; use likelihood = \"gaussian\"",
                        path=path)
    n_total = cm.n_genes
    cm = filter_cells_genes(cm, min_counts=p.min_counts, min_genes=p.min_genes,
                            min_cells=p.min_cells)
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
    _check_count_support(X, likelihood, path, what="the count matrix")
    coords = sel.obs.reset_index(drop=True).copy()
    coords.insert(0, "cell", np.asarray(sel.cell_names, dtype=str))
    coords["n_counts"] = np.asarray(cm.X.sum(axis=1), dtype=np.float64).ravel()
    coords["n_counts_selected"] = X.sum(axis=1, dtype=np.float64)
    extra = {"matrix": cm, "n_genes_total": int(n_total), "params": p,
             "hvg_rank": (sel.var["hvg_rank"].to_numpy() if "hvg_rank" in sel.var else None)}
    key = json_key({"input": _file_digest(path), "domain": "single_cell",
                "params": dataclasses.asdict(p), "version": __version__})
    return Prepared(X, coords, key, "single_cell", np.asarray(sel.gene_names, dtype=object), extra)


def _neural_format(path: Path, p: NeuralParams) -> str:
    if p.format != "auto":
        return p.format
    base = path.name.lower()
    if base.endswith(".nwb"):
        return "spikes"
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

        with h5py.File(path, "r") as f:
            return "binned" if p.counts_key in f and isinstance(f[p.counts_key], h5py.Dataset) else "spikes"
    first_fields = None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                first_fields = line.replace(",", " ").replace("\t", " ").split()
                break
    if first_fields and all(is_number(f) for f in first_fields):
        return "spikes"
    return "binned"


def _prepare_neural(path: Path, cfg: Mapping) -> Prepared:
    from .data.neural import bin_spikes, read_binned, read_nwb_units, read_spike_times

    p = _from_table(NeuralParams, cfg.get("neural"), "neural")
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
    if nc.smooth_s and likelihood in COUNT_LIKELIHOODS:
        raise ParameterError(f"[neural] smooth_s = {nc.smooth_s} makes non-integer counts, which the "
                             f"{likelihood} likelihood cannot model; set smooth_s = 0 or "
                             "[model] likelihood = \"gaussian\"")
    _check_count_support(X, likelihood, path, what="the binned counts")
    coords = pd.DataFrame({"time_s": nc.time, "n_spikes": X.sum(axis=1, dtype=np.float64)})
    key = json_key({"input": _file_digest(path), "domain": "neural", "format": fmt,
                "params": dataclasses.asdict(p), "version": __version__})
    return Prepared(X, coords, key, "neural", np.asarray(nc.unit_names, dtype=object),
                    {"counts": nc, "bin_s": nc.bin_s, "format": fmt, "params": p})


def prepare(path, out_dir=None, cfg: Mapping | None = None, *, domain: str | None = None) -> Prepared:
    """Read and preprocess a single-cell or neural input per ``cfg``.

    Parameters
    ----------
    path : path-like
        The input file or folder.
    out_dir : path-like or None
        The run's output folder (``genes.csv`` / ``units.csv`` listing the modelled features
        is written there when given).
    cfg : mapping
        The resolved configuration (``[single_cell]`` or ``[neural]``, and ``[model]
        likelihood``, whose support the data must match).
    domain : {"single_cell", "neural"} or None
        Default: ``cfg["pipeline"]["domain"]`` when not vocal, else :func:`detect_domain`.

    Returns
    -------
    Prepared

    Raises
    ------
    DataError
        Unreadable file, non-integer / negative counts for a count likelihood, shapes that do
        not match, empty units, NaN time stamps (the message names the file).
    """
    path = Path(path)
    cfg = dict(cfg or {})
    if domain is None:
        domain = cfg.get("pipeline", {}).get("domain")
        if domain in (None, "vocal"):
            domain = detect_domain(path)
    if domain == "vocal":
        raise ParameterError(f"{path} holds recordings (domain 'vocal'); use vocalatent.workflow.embed")
    check_option("domain", domain, ("single_cell", "neural"))
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    prep = _prepare_single_cell(path, cfg) if domain == "single_cell" else _prepare_neural(path, cfg)
    logger.info("%s: %d items x %d features (%s)", path, prep.X.shape[0], prep.X.shape[1], domain)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "genes.csv" if domain == "single_cell" else "units.csv"
        with atomic_path(out_dir / name) as tmp:
            pd.DataFrame({"feature": prep.features.astype(str)}).to_csv(tmp, index=False)
    return prep


# --------------------------------------------------------------------------------------------
# AnnData output
# --------------------------------------------------------------------------------------------
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


def _anndata_summary(ds: xr.Dataset, model, cfg: Mapping, prepared: Prepared) -> dict:
    held = (getattr(model, "metadata_", None) or {}).get("heldout") or {}
    return {
        "latent_dim": int(ds.sizes["latent"]),
        "likelihood": str(model.likelihood),
        "decoder": str(getattr(model, "decoder_kind_", model.decoder)),
        "n_genes_modelled": int(prepared.X.shape[1]),
        "n_epochs": int(getattr(model, "n_epochs_", 0)),
        "heldout_log_likelihood": float(held.get("log_likelihood", np.nan)),
        "heldout_stderr": float(held.get("stderr", np.nan)),
        "heldout_converged_fraction": float(held.get("converged_fraction", np.nan)),
        "heldout_n_lattice": int(held.get("n_lattice", 0)),
        "seed": int(ds.attrs.get("seed", 0)),
        "vocalatent_version": __version__,
        "lattice": str(ds.attrs.get("lattice", "")),
        "model": str(ds.attrs.get("model", "")),
        "config": json.dumps(cfg, default=str),
        "embedding": "obsm['X_qlvm']: posterior circular mean on the latent torus, in turns [0, 1)",
    }


def _write_anndata(path: Path, ds: xr.Dataset, model, cfg: Mapping, prepared: Prepared) -> Path:
    cm = prepared.extra["matrix"]
    obs = cm.obs.copy()
    obs.index = pd.Index(np.asarray(cm.cell_names, dtype=str))
    obs["qlvm_log_likelihood"] = ds["log_likelihood"].values
    obs["qlvm_spread"] = ds["spread"].values.mean(axis=1)
    if "cluster" in ds:
        obs["qlvm_cluster"] = pd.Categorical(ds["cluster"].values.astype(int))
    var = cm.var.copy()
    var.index = pd.Index(np.asarray(cm.gene_names, dtype=str))
    var["qlvm_modelled"] = np.isin(var.index.to_numpy(), prepared.features.astype(str))
    emb = ds["embedding"].values
    obsm = {"X_qlvm": emb}
    if emb.shape[1] == 1:   # scanpy draws 2-D bases: the ring as a circle
        ang = 2 * np.pi * emb[:, 0]
        obsm["X_qlvm_circle"] = np.c_[np.cos(ang), np.sin(ang)]
    return write_h5ad(path, cm.X, obs=obs, var=var, obsm=obsm,
                      uns={"qlvm": _anndata_summary(ds, model, cfg, prepared)})


# --------------------------------------------------------------------------------------------
# Domain figures
# --------------------------------------------------------------------------------------------
def _chosen_genes(prepared: Prepared, requested, n: int) -> tuple[list[str], list[str]]:
    """(genes to show observed, genes to show decoded); requested ones first, else top HVGs."""
    cm = prepared.extra["matrix"]
    all_genes = [str(g) for g in cm.gene_names]
    modelled = [str(g) for g in prepared.features]
    if requested:
        observed = [g for g in requested if g in set(all_genes)]
        missing = [g for g in requested if g not in set(all_genes)]
        if missing:
            logger.info("marker genes not in the matrix: %s", ", ".join(missing))
        decoded = [g for g in observed if g in set(modelled)]
        if observed:
            return observed, decoded
    rank = prepared.extra.get("hvg_rank")
    if rank is None:   # all genes modelled: rank by the variance of their proportions
        X = prepared.X
        rank = np.argsort(np.argsort(-(X / np.maximum(X.sum(1, keepdims=True), 1)).var(axis=0)))
    top = [modelled[i] for i in np.argsort(rank, kind="stable")[:n]]
    return top, top


def _normalised_expression(prepared: Prepared, genes) -> np.ndarray:
    """log1p(counts per 10k) of ``genes`` [shape=(n_cells, len(genes))]."""
    cm = prepared.extra["matrix"]
    idx = {str(g): i for i, g in enumerate(cm.gene_names)}
    cols = [idx[g] for g in genes]
    lib = np.asarray(cm.X.sum(axis=1), dtype=np.float64).ravel()
    sub = cm.X[:, cols]
    sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
    return np.log1p(sub / np.maximum(lib, 1)[:, None] * 1e4)


def _panel_grid(n: int, ncols: int = 4):
    import matplotlib.pyplot as plt

    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.1 * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()[:n]


def marker_figure(ds: xr.Dataset, prepared: Prepared, genes, *, title: str | None = None):
    """Embedding coloured by the observed expression of each gene, one panel per gene.

    Parameters
    ----------
    ds : xarray.Dataset
        The embedding (``embedding`` [item, latent]); items in the order of ``prepared``.
    prepared : Prepared
        A single-cell preparation (``extra["matrix"]`` holds all genes).
    genes : sequence of str
        Gene names present in the matrix.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Colour: log1p(counts per 10,000) of the cell; d = 1 as a ring, d >= 2 the z1-z2 plane.
    """
    from . import plot as vplot

    genes = list(genes)
    if not genes:
        raise ParameterError("no genes to draw")
    expr = _normalised_expression(prepared, genes)
    emb = ds["embedding"].values
    fig, axes = _panel_grid(len(genes))
    order = None
    for k, (g, ax) in enumerate(zip(genes, axes)):
        order = np.argsort(expr[:, k], kind="stable")          # expressing cells on top
        z = emb[order] if emb.shape[1] <= 2 else emb[order, :2]
        vplot.plot_embedding(z, color=expr[order, k], ax=ax, color_label="log1p CP10k",
                             cmap="magma_r", title=g)
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.suptitle(title or f"QLVM map of {emb.shape[0]} cells coloured by marker expression")
    return fig


def decoded_gene_figure(model, genes, features, *, resolution: int = 64, library_size: float = 1e4,
                        title: str | None = None):
    """Decoded expression of ``genes`` over the latent torus (what the model predicts where).

    Parameters
    ----------
    model : QLVM
        Fitted with a count likelihood whose mean is the proportion vector (multinomial,
        poisson_offset, negbin).
    genes : sequence of str
        Modelled gene names.
    features : np.ndarray [shape=(D,)]
        The model's feature names, in its column order.
    resolution : int > 0
        Grid cells per latent axis.
    library_size : float > 0
        Decoded proportions are shown as log1p(proportion x library_size).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .analysis.torus import grid_centres, grid_points

    genes = [g for g in genes if g in set(map(str, features))]
    if not genes:
        raise ParameterError("none of the genes is modelled (pick genes among the selected ones)")
    idx = {str(g): i for i, g in enumerate(features)}
    cols = [idx[g] for g in genes]
    d = int(model.latent_dim)
    fig, axes = _panel_grid(len(genes))
    if d == 1:
        z = grid_centres(resolution * 4)[:, None]
        mu = model.decode(z).reshape(len(z), -1)[:, cols]
        for k, (g, ax) in enumerate(zip(genes, axes)):
            ax.plot(z[:, 0], np.log1p(mu[:, k] * library_size), color="C3")
            ax.set_xlim(0, 1)
            ax.set_xlabel("z1 (turns)")
            ax.set_title(g)
        axes[0].set_ylabel(f"log1p(decoded x {library_size:g})")
    else:
        pts = grid_points(resolution, 2)
        if d > 2:
            pts = np.c_[pts, np.full((len(pts), d - 2), 0.5)]
        mu = model.decode(pts).reshape(len(pts), -1)[:, cols]
        for k, (g, ax) in enumerate(zip(genes, axes)):
            img = np.log1p(mu[:, k] * library_size).reshape(resolution, resolution)
            im = ax.imshow(img.T, origin="lower", extent=(0, 1, 0, 1), cmap="magma_r", aspect="equal")
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(g)
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
    fig.suptitle(title or ("Decoded expression over the latent " + ("ring" if d == 1 else "torus")
                           + f" (log1p of proportion x {library_size:g})"
                           + (" at z3 = 0.5" if d > 2 else "")))
    return fig


def tuning_curve_figure(model, features, *, bin_s: float | None, n_units: int = 16,
                        resolution: int = 128, title: str | None = None):
    """Decoded rate of each unit against the latent: the tuning curves the model learned.

    d = 1: a heat map of every unit's curve (rows sorted by preferred latent, each scaled to its
    maximum) beside the curves of ``n_units`` units in Hz; d >= 2: rate maps of ``n_units`` units
    over the z1-z2 torus (z3 = 0.5).

    Parameters
    ----------
    model : QLVM
        Fitted with the Poisson likelihood (decoded mean = expected count per bin).
    features : np.ndarray [shape=(n_units,)]
        Unit names.
    bin_s : float or None
        Bin width in seconds (rates in Hz); None: counts per bin.
    n_units : int > 0
    resolution : int > 0

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from .analysis.torus import grid_centres, grid_points

    check_positive("n_units", n_units, integer=True)
    d = int(model.latent_dim)
    scale = 1.0 / bin_s if bin_s else 1.0
    unit = "Hz" if bin_s else "counts / bin"
    names = [str(f) for f in features]
    D = len(names)
    show = np.linspace(0, D - 1, min(n_units, D)).round().astype(int)
    if d == 1:
        z = grid_centres(resolution)
        rate = model.decode(z[:, None]).reshape(resolution, -1) * scale    # [r, D]
        order = np.argsort(z[np.argmax(rate, axis=0)], kind="stable")
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
        norm = rate / np.maximum(rate.max(axis=0, keepdims=True), 1e-12)
        im = ax0.imshow(norm[:, order].T, aspect="auto", origin="lower", extent=(0, 1, 0, D),
                        cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax0).set_label("rate / unit's maximum")
        ax0.set_xlabel("z1 (turns; 0 and 1 meet)")
        ax0.set_ylabel("unit (sorted by preferred z1)")
        ax0.set_title(f"Decoded tuning of all {D} units")
        for k in show:
            ax1.plot(z, rate[:, k], lw=1.2, label=names[k])
        ax1.set_xlim(0, 1)
        ax1.set_xlabel("z1 (turns)")
        ax1.set_ylabel(f"decoded rate ({unit})")
        ax1.set_title(f"{len(show)} units")
        if len(show) <= 16:
            ax1.legend(fontsize="x-small", ncols=2, loc="upper right")
        fig.suptitle(title or "Tuning curves over the latent ring")
        return fig
    pts = grid_points(min(resolution, 64), 2)
    r = min(resolution, 64)
    if d > 2:
        pts = np.c_[pts, np.full((len(pts), d - 2), 0.5)]
    rate = model.decode(pts).reshape(len(pts), -1) * scale
    fig, axes = _panel_grid(len(show))
    for k, ax in zip(show, axes):
        im = ax.imshow(rate[:, k].reshape(r, r).T, origin="lower", extent=(0, 1, 0, 1),
                       cmap="viridis", aspect="equal")
        fig.colorbar(im, ax=ax, shrink=0.8).set_label(unit)
        ax.set_title(names[k])
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
    fig.suptitle(title or "Decoded rate maps over the latent torus (z1 across, z2 up)"
                 + (" at z3 = 0.5" if d > 2 else ""))
    return fig


def _latent_trace_figure(ds: xr.Dataset, *, max_points: int = 5000):
    import matplotlib.pyplot as plt

    t = ds["time_s"].values
    emb = ds["embedding"].values
    d = emb.shape[1]
    step = max(1, len(t) // max_points)
    fig, axes = plt.subplots(d, 1, figsize=(11, 2.2 * d + 0.6), squeeze=False, sharex=True,
                             layout="constrained")
    for k in range(d):
        ax = axes[k, 0]
        ax.plot(t[::step], emb[::step, k], ".", ms=2, color="C0")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"z{k + 1} (turns)")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Latent position of each time bin")
    return fig


def domain_figures(ds: xr.Dataset, model, prepared: Prepared, fig_dir, cfg: Mapping) -> list[Path]:
    """Write the domain's own figures into ``fig_dir`` (each failure is logged, not raised).

    Single cells: ``markers.png`` (observed expression on the map) and ``decoded_genes.png``;
    neural: ``tuning_curves.png`` and ``latent_trace.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot as vplot

    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def attempt(name, make):
        try:
            written.append(vplot.save_figure(make(), fig_dir / name))
        except (ParameterError, DataError, ValueError, RuntimeError) as exc:
            logger.warning("figure %s failed: %s: %s", name, type(exc).__name__, exc)
            plt.close("all")

    if prepared.domain == "single_cell":
        p = prepared.extra["params"]
        observed, decoded = _chosen_genes(prepared, p.marker_genes, p.n_marker_panels)
        if observed:
            attempt("markers.png", lambda: marker_figure(ds, prepared, observed))
        if decoded:
            attempt("decoded_genes.png", lambda: decoded_gene_figure(model, decoded, prepared.features))
    else:
        p = prepared.extra["params"]
        attempt("tuning_curves.png", lambda: tuning_curve_figure(
            model, prepared.features, bin_s=prepared.extra.get("bin_s"), n_units=p.n_tuning_units))
        if "time_s" in ds.coords:
            attempt("latent_trace.png", lambda: _latent_trace_figure(ds))
    return written


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------
_RESERVED = {"item", "latent", "embedding", "map_point", "spread", "posterior_entropy",
             "log_likelihood", "cluster", "density", "cluster_mode", "jacobian_norm", "boundary"}


def _safe_coords(coords: pd.DataFrame) -> pd.DataFrame:
    rename = {c: f"obs_{c}" for c in coords.columns if str(c) in _RESERVED or str(c).startswith("grid_")}
    return coords.rename(columns=rename) if rename else coords


def embed_matrix(path, out=None, *, pipeline=None, config=None, device="auto", seed: int | None = None,
                 overrides: Mapping | None = None, figures: bool | None = None, force: bool = False,
                 latent_dim: int | None = None, max_epochs: int | None = None,
                 verbose: bool = True) -> xr.Dataset:
    """Count matrix or neural activity → QLVM → embedding → analysis → figures.

    The single-cell / neural counterpart of :func:`vocalatent.workflow.embed`, with the same
    output folder layout and the same "reuse what is up to date" rules.

    Parameters
    ----------
    path : path-like
        A count matrix (``.h5ad``, 10x ``.h5``, Matrix Market folder, ``.zarr``, CSV/TSV) or
        neural data (spike times in ``.npz`` / HDF5 / text / ``.nwb``, or a binned matrix).
    out : path-like or None
        Output folder (default ``<path>_vocalatent`` beside the input). It receives
        ``config.toml``, ``run.json``, ``genes.csv`` / ``units.csv``, ``model.pt``,
        ``embedding.nc``, ``figures/*.png`` and, for cells, ``adata.h5ad``.
    pipeline, config
        Preset name/file and user TOML file. Default preset: the detected domain's
        (``single_cell`` or ``neural``).
    device : {"auto", "cpu", "cuda"}
    seed : int or None
        Seed of the split, initialisation, shuffling and lattice shifts (default 0).
    overrides : mapping, optional
        Nested settings (like command-line flags); None values never override.
    figures : bool or None
        Write figures (default: ``[analysis] figures``).
    force : bool
        Allow writing into a folder that holds another run's results.
    latent_dim, max_epochs : int or None
        Shortcuts for ``[model]`` settings.
    verbose : bool
        Progress bars.

    Returns
    -------
    xarray.Dataset
        The analysed embedding (also in ``out/embedding.nc``), with the items' metadata as
        coordinates (``cell`` and obs columns; ``time_s``).
    """
    from . import workflow as wf
    from .config import deep_merge
    from .embedding import heldout_attrs, write_embedding

    path = Path(path).resolve()
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    domain = detect_domain(path, pipeline=pipeline, config=config)
    if domain == "vocal":
        raise ParameterError(f"{path} looks like recordings (domain 'vocal'); use "
                             "vocalatent.workflow.embed, or pass pipeline='single_cell' / 'neural'")
    if pipeline is None and _pipeline_domain(None, config) is None:
        pipeline = domain
    flags: dict[str, Any] = {"model": {"latent_dim": latent_dim, "max_epochs": max_epochs}}
    if figures is not None:
        flags["analysis"] = {"figures": bool(figures)}
    cfg = wf.resolve(pipeline=pipeline, config=config, overrides=deep_merge(flags, dict(overrides or {})))
    if cfg.get("pipeline", {}).get("domain", "vocal") == "vocal":
        cfg["pipeline"]["domain"] = domain
    domain = cfg["pipeline"]["domain"]
    seed = 0 if seed is None else int(seed)
    out = Path(out) if out is not None else path.parent / f"{path.name}_vocalatent"
    wf._check_out(out, path, force)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps({"input": str(path), "domain": domain,
                                   "vocalatent_version": __version__, "seed": seed}))
    wf._write_config({**cfg, "run": {"seed": seed, "input": str(path)}}, out / "config.toml")

    prepared = prepare(path, out, cfg, domain=domain)
    model = wf.train(prepared.X, cfg, out_dir=out, device=device, seed=seed,
                     data_key=prepared.data_key, verbose=verbose,
                     metadata={"domain": domain, "features": [str(f) for f in prepared.features],
                               "input": str(path)})
    emb_path = out / "embedding.nc"
    stage_key = wf.embedding_key(model, prepared.data_key, cfg)
    ds = wf.cached_embedding(emb_path, stage_key)
    if ds is None:
        ds = model.transform_dataset(prepared.X, coords=_safe_coords(prepared.coords))
        heldout = (model.metadata_ or {}).get("heldout")
        if heldout:
            ds.attrs.update(heldout_attrs(heldout))
        ds = wf.analyze(ds, model, cfg)
        ds.attrs["config"] = json.dumps(cfg, default=str)
        ds.attrs["stage_key"] = stage_key
        ds.attrs["input"] = str(path)
        ds.attrs["domain"] = domain
        ds.attrs["features"] = json.dumps([str(f) for f in prepared.features])
        write_embedding(ds, emb_path)
    if domain == "single_cell" and prepared.extra["params"].write_anndata:
        _write_anndata(out / "adata.h5ad", ds, model, cfg, prepared)
    if cfg["analysis"].get("figures", True):
        wf.make_figures(ds, model, out / "figures", cfg, example_item=prepared.X[:1])
        domain_figures(ds, model, prepared, out / "figures", cfg)
        from .interactive import write_job_map  # OUT/map.html; a notice if Bokeh is missing

        write_job_map(out, ds=ds, model=model, features=prepared.X)
    return ds
