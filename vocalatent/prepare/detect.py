"""Which kind of data a path holds: recordings, a count matrix or neural activity.

Domain detection (:func:`detect_domain`), in this order:

1. an explicit ``pipeline`` (or a config file's ``extends``) whose ``[pipeline] domain`` is not
   ``"vocal"`` wins;
2. folders: an AnnData ``.zarr`` store or a Matrix Market folder (``matrix.mtx[.gz]``) →
   single cell; anything else → vocal (a folder of recordings);
3. files by extension: ``.h5ad``, ``.zarr``, ``.mtx[.gz]``, ``.loom`` → single cell; ``.nwb``,
   ``.npz`` → neural; audio extensions → vocal; ``.h5``/``.hdf5``: a ``matrix`` group (10x
   CellRanger v3) or per-genome groups with ``barcodes`` (v2) → single cell, otherwise
   neural (a ``counts`` dataset or a group of per-unit spike-time datasets); a vocalatent
   syllable store (``syllables.h5``) → vocal;
4. ``.csv``/``.tsv``/``.txt`` (optionally ``.gz``) by content: no header and one number per
   line (one unit's spike times, as the nitime example files), or several non-integer numbers
   per line (one unit per line) → neural spike times; no header and whole numbers only →
   ambiguous (a count matrix or integer spike times): an error that names
   ``--pipeline single_cell`` / ``--pipeline neural``; a header whose fields after the first
   are all numbers (time stamps) → a neural binned matrix; a header of names (genes or cell
   barcodes) → single cell.

A CSV whose header is neither (e.g. units named in the header) is read as a count matrix;
pass ``--pipeline neural`` to read it as neural data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from .._utils import READ_ERRORS, DataError, is_number
from ..data.hdf5_probe import check_hdf5
from .base import DOMAINS

__all__ = ["DOMAINS", "NEURAL_EXT", "SINGLE_CELL_EXT", "TABLE_EXT", "detect_domain", "pipeline_domain"]

SINGLE_CELL_EXT = (".h5ad", ".zarr", ".mtx", ".loom")
NEURAL_EXT = (".nwb", ".npz")
TABLE_EXT = (".csv", ".tsv", ".txt")


def _table_domain(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    lines: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                line = line.split("#", 1)[0].strip()
                if line:
                    lines.append(line)
                    if len(lines) >= 20:
                        break
    except READ_ERRORS as exc:
        raise DataError(f"cannot read the table to tell its kind: {exc}", path=path) from exc
    if not lines:
        raise DataError("the file holds no data (empty, or only comments)", path=path)
    first = lines[0]
    sep = "\t" if "\t" in first else ","
    fields = [f.strip().strip('"') for f in first.split(sep)]
    if len(fields) == 1 and " " in first:
        fields = first.split()
    if all(is_number(f) for f in fields):
        # no header. One number per line: one unit's spike times (the nitime files).
        # Several numbers per line: one unit per line with non-integer times, or, when every
        # value is a whole number, just as likely a header-less count matrix -> ask.
        rows = [ln.replace(",", " ").replace("\t", " ").split() for ln in lines]
        if all(len(r) == 1 for r in rows):
            return "neural"
        values = [float(v) for r in rows for v in r if is_number(v)]
        if values and all(v >= 0 and float(v).is_integer() for v in values):
            raise DataError("a table of whole numbers without a header could be a count matrix "
                            "(cells x genes) or spike times (one unit per line); say which with "
                            "--pipeline single_cell or --pipeline neural (or [pipeline] extends "
                            "in the config)", path=path)
        return "neural"
    if len(fields) > 1 and all(is_number(f) for f in fields[1:]):
        return "neural"                     # header of time stamps: a binned units x time table
    return "single_cell"


def _h5_domain(path: Path) -> str:
    import h5py

    check_hdf5(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") == "vocalatent-syllable-store":
                return "vocal"              # the syllables of an earlier run
            if "matrix" in f and isinstance(f["matrix"], h5py.Group):
                return "single_cell"
            if "X" in f and "obs" in f and "var" in f:
                return "single_cell"        # an AnnData file with an .h5 name
            for key in f.keys():
                node = f[key]
                if isinstance(node, h5py.Group) and "barcodes" in node and (
                        "genes" in node or "gene_names" in node):
                    return "single_cell"    # CellRanger v2, one group per genome
    except READ_ERRORS as exc:
        raise DataError(f"not a readable HDF5 file: {type(exc).__name__}: {exc}", path=path) from exc
    return "neural"


def pipeline_domain(pipeline, config) -> str | None:
    """The domain a preset (or a user file's ``extends``) names; None when neither says."""
    from ..config import load_pipeline, resolve_config

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
    str, one of :data:`~vocalatent.prepare.DOMAINS`

    Raises
    ------
    DataError
        The path does not exist, or a table / HDF5 file cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    explicit = pipeline_domain(pipeline, config)
    if explicit and explicit != "vocal":
        return explicit
    name = path.name.lower()
    base = name[:-3] if name.endswith(".gz") else name
    if path.is_dir():
        if (name.endswith(".zarr") or (path / ".zgroup").is_file() or (path / "zarr.json").is_file()
                or any((path / f).is_file() for f in ("matrix.mtx", "matrix.mtx.gz"))):
            return "single_cell"
        return "vocal"
    if base.endswith(SINGLE_CELL_EXT):
        return "single_cell"
    if base.endswith(NEURAL_EXT):
        return "neural"
    if base.endswith((".h5", ".hdf5")):
        return _h5_domain(path)
    if base.endswith(TABLE_EXT):
        return _table_domain(path)
    return "vocal"
