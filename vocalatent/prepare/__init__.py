"""Inputs of every domain made ready for the QLVM: files → :class:`Prepared` items.

One :class:`Prepared` (lazily read items, per-item coordinates, a content key, feature names,
the inputs that failed) is what :func:`vocalatent.workflow.run` takes, whatever the domain:

- ``"vocal"``: recordings → segments (or annotations) → syllable spectrograms in a store
  (:mod:`vocalatent.prepare.vocal`);
- ``"single_cell"`` and ``"neural"``: count matrices and neural activity
  (:mod:`vocalatent.prepare.matrix`).

:func:`detect_domain` tells the domain of a path (:mod:`vocalatent.prepare.detect`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import pandas as pd

from .._utils import DataError, atomic_path, check_option
from .base import COUNT_LIKELIHOODS, DOMAINS, Prepared, files_digest, input_files
from .detect import detect_domain, pipeline_domain
from .matrix import NeuralParams, SingleCellParams
from .vocal import build_syllable_store, prepare_vocal, prepared_from_store, store_key

logger = logging.getLogger(__name__)

__all__ = ["COUNT_LIKELIHOODS", "DOMAINS", "NeuralParams", "Prepared", "SingleCellParams",
           "build_syllable_store", "detect_domain", "files_digest", "input_files", "pipeline_domain",
           "prepare", "prepare_vocal", "prepared_from_store", "store_key"]


def prepare(path, out_dir=None, cfg: Mapping | None = None, *, domain: str | None = None,
            features=None, n_jobs: int | None = None) -> Prepared:
    """Read and preprocess the input at ``path`` per ``cfg``, for any domain.

    Parameters
    ----------
    path : path-like
        The input file or folder.
    out_dir : path-like or None
        The run's output folder. Recordings need one (the syllable store is written there);
        for matrices, ``genes.csv`` / ``units.csv`` listing the modelled features is written
        there when given.
    cfg : mapping
        The resolved configuration (``[audio]``/``[segment]``/``[spectrogram]``,
        ``[single_cell]`` or ``[neural]``, and ``[model] likelihood``, whose support the data
        must match).
    domain : {"vocal", "single_cell", "neural"} or None
        Default: ``cfg["pipeline"]["domain"]`` when not vocal, else :func:`detect_domain`.
    features : sequence of str, optional
        Matrices only: the genes / units of a trained model, in its column order.
    n_jobs : int
        Recordings only: processes for segmentation and spectrograms.

    Returns
    -------
    Prepared

    Raises
    ------
    DataError
        Unreadable file, no syllables, non-integer / negative counts for a count likelihood,
        shapes that do not match, empty units, NaN time stamps (the message names the file).
    """
    from .matrix import prepare_neural, prepare_single_cell

    path = Path(path)
    cfg = dict(cfg or {})
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    if domain is None:
        domain = cfg.get("pipeline", {}).get("domain")
        if domain in (None, "vocal"):
            domain = detect_domain(path)
    check_option("domain", domain, DOMAINS)
    if domain == "vocal":
        if out_dir is None:
            raise DataError("recordings need an output folder for their syllable store", path=path)
        return prepare_vocal(path, out_dir, cfg, n_jobs=n_jobs)
    make = prepare_single_cell if domain == "single_cell" else prepare_neural
    prep = make(path, cfg, features=features)
    logger.info("%s: %d items x %d features (%s)", path, prep.X.shape[0], prep.X.shape[1], domain)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        name = "genes.csv" if domain == "single_cell" else "units.csv"
        with atomic_path(out_dir / name) as tmp:
            pd.DataFrame({"feature": prep.features.astype(str)}).to_csv(tmp, index=False)
    return prep
