"""Scoring a segmentation against annotations: precision, recall and F1 of onsets and offsets.

A predicted onset is a hit when it lies within ``tol_s`` of an annotated onset that no other
predicted onset has claimed (one-to-one; the matching is the largest possible, found by one
pass over both sorted lists); offsets are matched the same way, independently. Per file and
overall (counts pooled over files, so a file with many syllables weighs more).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import DataError, check_positive, logger
from .annotations import annotations_for
from .io import find_audio
from .segment import SegmentParams, segment_file

__all__ = ["AnnotatedFile", "annotated_files", "boundary_scores", "evaluate_segmentation",
           "match_times"]


def match_times(truth, found, *, tol_s: float) -> int:
    """Largest number of one-to-one pairs (truth, found) closer than ``tol_s`` (s).

    Parameters
    ----------
    truth, found : array-like of float
    tol_s : float

    Returns
    -------
    int
    """
    t = np.sort(np.asarray(truth, dtype=np.float64))
    f = np.sort(np.asarray(found, dtype=np.float64))
    i = j = hits = 0
    while i < t.size and j < f.size:
        d = f[j] - t[i]
        if abs(d) <= tol_s + 1e-12:
            hits += 1
            i += 1
            j += 1
        elif d < 0:
            j += 1
        else:
            i += 1
    return hits


def _prf(hits: int, n_true: int, n_found: int) -> tuple[float, float, float]:
    p = hits / n_found if n_found else (1.0 if n_true == 0 else 0.0)
    r = hits / n_true if n_true else (1.0 if n_found == 0 else 0.0)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def boundary_scores(truth: pd.DataFrame, found: pd.DataFrame, *, tol_s: float = 0.010) -> dict:
    """Onset and offset precision, recall and F1 of one recording's segments.

    Parameters
    ----------
    truth, found : pandas.DataFrame
        With ``onset_s`` and ``offset_s`` (s).
    tol_s : float, default=0.010

    Returns
    -------
    dict
        ``n_true``, ``n_found``, ``onset_hits``, ``offset_hits``, ``onset_precision``,
        ``onset_recall``, ``onset_f1``, and the same for ``offset``.
    """
    check_positive("tol_s", tol_s)
    out = {"n_true": int(len(truth)), "n_found": int(len(found))}
    for edge in ("onset", "offset"):
        hits = match_times(truth[f"{edge}_s"], found[f"{edge}_s"], tol_s=tol_s)
        p, r, f = _prf(hits, len(truth), len(found))
        out.update({f"{edge}_hits": hits, f"{edge}_precision": p, f"{edge}_recall": r,
                    f"{edge}_f1": f})
    return out


def pooled_scores(rows: list[dict]) -> dict:
    """Overall scores from per-file :func:`boundary_scores` rows (counts pooled)."""
    n_true = sum(r["n_true"] for r in rows)
    n_found = sum(r["n_found"] for r in rows)
    out = {"n_true": n_true, "n_found": n_found}
    for edge in ("onset", "offset"):
        hits = sum(r[f"{edge}_hits"] for r in rows)
        p, r, f = _prf(hits, n_true, n_found)
        out.update({f"{edge}_hits": hits, f"{edge}_precision": p, f"{edge}_recall": r,
                    f"{edge}_f1": f})
    return out


@dataclass(frozen=True)
class AnnotatedFile:
    """A recording and its annotated segments.

    Attributes
    ----------
    path : pathlib.Path
    source : str
        Path relative to the root (POSIX).
    truth : pandas.DataFrame
        ``onset_s``, ``offset_s``, ``label``.
    annotation : pathlib.Path
        The annotation file it came from.
    """

    path: Path
    source: str
    truth: pd.DataFrame
    annotation: Path


def annotated_files(root: str | os.PathLike, *, annotations: str | os.PathLike = "auto"
                    ) -> list[AnnotatedFile]:
    """The recordings under ``root`` that have annotations, with them.

    Parameters
    ----------
    root : path-like
        Directory searched recursively for audio, or one audio file.
    annotations : "auto", directory or file, default="auto"
        Where the annotations are: beside each recording (``"auto"``), in a mirrored
        directory, or one file for many recordings (a crowsetta generic-seq CSV, a Koumura
        ``Annotation.xml``); see :func:`vocalatent.audio.annotations.annotations_for`.

    Returns
    -------
    list of AnnotatedFile

    Raises
    ------
    DataError
        When no recording under ``root`` has an annotation.
    """
    root = Path(root)
    files = find_audio(root)
    base = root.parent if root.is_file() else root
    out = []
    for f in files:
        source = f.relative_to(base).as_posix()
        found = annotations_for(f, annotations=annotations, root=base)
        if found is None:
            continue
        truth, ann_path = found
        out.append(AnnotatedFile(path=f, source=source, truth=truth, annotation=ann_path))
    if not out:
        raise DataError(f"none of the {len(files)} recording(s) has an annotation file "
                        "(beside it, in the annotation directory, or in a multi-file "
                        "annotation); nothing to evaluate or tune on", path=root)
    logger.info("%d of %d recording(s) under %s have annotations", len(out), len(files), root)
    return out


def evaluate_segmentation(root: str | os.PathLike | list[AnnotatedFile],
                          params: SegmentParams | None = None, *, tol_s: float = 0.010,
                          annotations: str | os.PathLike = "auto", channel: int = 0,
                          chunk_s: float = 60.0) -> pd.DataFrame:
    """Segment each annotated recording and score it against its annotation.

    Parameters
    ----------
    root : path-like or list of AnnotatedFile
    params : SegmentParams, optional
    tol_s : float, default=0.010
        Tolerance (s) within which a predicted boundary matches an annotated one.
    annotations : "auto", directory or file, default="auto"
    channel : int, default=0
    chunk_s : float, default=60

    Returns
    -------
    pandas.DataFrame
        One row per file (``source``, ``annotation`` and the columns of
        :func:`boundary_scores`) and a last row ``source = "ALL"`` with the pooled scores;
        ``tol_s`` in every row.
    """
    params = SegmentParams() if params is None else params
    check_positive("tol_s", tol_s)
    items = root if isinstance(root, list) else annotated_files(root, annotations=annotations)
    rows = []
    for it in items:
        found = segment_file(it.path, params, channel=channel, chunk_s=chunk_s)
        rows.append({"source": it.source, "annotation": it.annotation.name,
                     **boundary_scores(it.truth, found, tol_s=tol_s)})
    total = {"source": "ALL", "annotation": "", **pooled_scores(rows)}
    table = pd.DataFrame(rows + [total])
    table["tol_s"] = tol_s
    return table
