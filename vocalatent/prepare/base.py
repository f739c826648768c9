"""The prepared input every domain hands to the job, and the content hash of input files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._utils import ParameterError, check_option, file_sha256, json_key, logger

__all__ = ["COUNT_LIKELIHOODS", "DOMAINS", "ERROR_COLUMNS", "Prepared", "files_digest",
           "input_files"]

DOMAINS = ("vocal", "single_cell", "neural")

#: Likelihoods that need non-negative integer counts.
COUNT_LIKELIHOODS = ("poisson", "poisson_offset", "multinomial", "negbin", "bernoulli")

#: Columns of the table of inputs that failed.
ERROR_COLUMNS = ["source", "error"]


@dataclass(frozen=True)
class Prepared:
    """A domain's input made ready for the QLVM: what :func:`vocalatent.workflow.run` takes.

    Attributes
    ----------
    X : array-like [shape=(n_items, ...)]
        The items: a NumPy array (cells x selected genes, time bins x units) or a lazily read
        :class:`~vocalatent.data.rows.LazyRows` (the syllable spectrograms of a store,
        ``(n_items, F, T)``).
    coords : pandas.DataFrame [shape=(n_items, ...)]
        Per-item metadata, become ``item`` coordinates of the embedding (the segment table of
        syllables; ``cell`` and the obs columns; ``time_s``).
    data_key : str
        Key of the items: the content of every input file, the preprocessing settings and the
        package version (the job retrains and re-embeds only when it changes).
    domain : {"vocal", "single_cell", "neural"}
    features : np.ndarray [shape=(n_features,), dtype=object] or None
        Gene or unit names in the column order of ``X``; None for image items.
    source : pathlib.Path or None
        The input file or folder.
    errors : pandas.DataFrame [columns: source, error]
        Input files that failed (and were left out); empty when none did.
    n_inputs : int
        Input files read (failed ones included).
    model_metadata : dict
        What the model file records about the preprocessing (for ``project``: the resolved
        spectrogram settings, the features), JSON-serialisable.
    extra : dict
        Domain details: ``store`` (the :class:`~vocalatent.data.store.SyllableStore`) for
        syllables; ``matrix`` (the filtered :class:`CountMatrix`, all genes), ``params`` and
        ``hvg_rank`` for cells; ``counts`` (:class:`NeuralCounts`), ``bin_s`` and ``params``
        for neurons.
    """

    X: Any
    coords: pd.DataFrame
    data_key: str
    domain: str
    features: np.ndarray | None = None
    source: Path | None = None
    errors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ERROR_COLUMNS))
    n_inputs: int = 1
    model_metadata: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_option("domain", self.domain, DOMAINS)
        shape = tuple(self.X.shape)
        if len(shape) < 2 or len(self.coords) != shape[0]:
            raise ParameterError(f"items {shape} and coords ({len(self.coords)} rows) do not match")
        if self.features is not None and (len(shape) != 2 or len(self.features) != shape[1]):
            raise ParameterError(f"items {shape} and features ({len(self.features)}) do not match")

    @property
    def n_items(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_failed(self) -> int:
        """Input files that failed."""
        return int(len(self.errors))


def input_files(path: Path, *, exclude: Path | None = None) -> list[Path]:
    """Every regular file under ``path`` (or ``path`` itself), sorted; files under ``exclude``
    (an output folder inside the input) are left out."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    exclude = None if exclude is None else Path(exclude).resolve()
    files, dangling = [], []
    for p in sorted(path.rglob("*")):
        if not p.is_file():
            if p.is_symlink() and not p.exists():
                dangling.append(p)
            continue
        if exclude is not None and p.resolve().is_relative_to(exclude):
            continue
        files.append(p)
    if dangling:
        names = ", ".join(p.relative_to(path).as_posix() for p in dangling[:5])
        more = f" and {len(dangling) - 5} more" if len(dangling) > 5 else ""
        logger.warning("%s: %d dangling symbolic link(s) not read (their targets do not exist): "
                       "%s%s", path, len(dangling), names, more)
    return files


def files_digest(files, *, root: Path | None = None, length: int | None = 16) -> str:
    """Key of the content of ``files``: each file's name (relative to ``root``) and sha256."""
    entries = []
    for p in files:
        p = Path(p)
        name = p.relative_to(root).as_posix() if root is not None and p.is_relative_to(root) else p.name
        entries.append([name, file_sha256(p)])
    return json_key(entries, length=length)
