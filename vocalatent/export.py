"""Labels back to the lab's tools: a run's segments with their cluster labels, per recording,
in the annotation formats people edit (Audacity label tracks, Raven selection tables,
crowsetta's generic-seq CSV, plain CSV).

The files are named and laid out so that the job reads them back: ``OUT/annotations/<format>/``
mirrors the recordings' folders, and each file has a name
:func:`vocalatent.audio.annotations.annotation_candidates` looks for (``song.wav.txt``,
``song.Table.1.selections.txt``, ``song.wav.csv``). Correct the labels in Audacity or Raven,
then run the job again with ``[audio] annotations = "OUT/annotations/audacity"``: the corrected
labels become the items' ``label`` and the map can be coloured by them.

>>> from vocalatent.export import export_run
>>> export_run("recordings_vocalatent", format="audacity")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ._utils import DataError, ParameterError, atomic_path, check_option

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FORMATS", "LABEL_SOURCES", "ExportResult", "annotation_name", "export_annotations",
           "export_run", "segment_labels"]

#: Formats of ``vocalatent export``.
EXPORT_FORMATS = ("audacity", "raven", "generic-seq", "csv")
#: What the label text of each segment is made of (see :func:`segment_labels`).
LABEL_SOURCES = ("cluster", "label", "label-or-cluster")
#: File with every recording's rows in one generic-seq table (the form vak and crowsetta use).
GENERIC_SEQ_ALL = "all_recordings.generic-seq.csv"


@dataclass
class ExportResult:
    """What :func:`export_annotations` wrote: ``files`` (one per recording, plus the combined
    generic-seq table), ``n_segments``, ``directory`` (give it to ``[audio] annotations``)."""

    directory: Path
    files: list = field(default_factory=list)
    n_segments: int = 0


def annotation_name(source: str, format: str) -> str:
    """The file name of a recording's annotation in ``format`` (read back by the job).

    ``song.wav`` -> ``song.wav.txt`` (Audacity), ``song.Table.1.selections.txt`` (Raven),
    ``song.wav.csv`` (generic-seq, CSV).
    """
    check_option("format", format, EXPORT_FORMATS)
    p = Path(source)
    if format == "audacity":
        return f"{p.name}.txt"
    if format == "raven":
        return f"{p.stem}.Table.1.selections.txt"
    return f"{p.name}.csv"


def segment_labels(ds: xr.Dataset, *, label_from: str = "cluster") -> np.ndarray:
    """The label text written for each item.

    Parameters
    ----------
    ds : xarray.Dataset
        An embedding with ``cluster`` (item) and/or ``label`` (item).
    label_from : {"cluster", "label", "label-or-cluster"}
        ``"cluster"``: ``c<k>`` for cluster k, ``none`` for items in no cluster;
        ``"label"``: the existing labels; ``"label-or-cluster"``: the existing label where
        there is one, else the cluster.

    Returns
    -------
    np.ndarray [shape=(n_items,), dtype=str]
    """
    check_option("label_from", label_from, LABEL_SOURCES)
    n = ds.sizes["item"]
    existing = (np.asarray(ds["label"].values).astype(str) if "label" in ds.variables
                else np.full(n, "", dtype=object))
    if label_from == "label":
        return existing.astype(str)
    if "cluster" not in ds:
        raise ParameterError("the Dataset has no 'cluster' variable to label by; run the analysis "
                             "(vocalatent analyze OUT) or use label_from='label'")
    cl = np.asarray(ds["cluster"].values, dtype=int)
    text = np.where(cl >= 0, np.char.add("c", cl.astype(str)), "none").astype(object)
    if label_from == "label-or-cluster":
        text = np.where(np.char.str_len(existing.astype(str)) > 0, existing, text)
    return text.astype(str)


def export_annotations(ds: xr.Dataset, directory, *, format: str = "audacity",
                       label_from: str = "cluster", root=None) -> ExportResult:
    """Write each recording's segments with their labels as annotation files.

    Parameters
    ----------
    ds : xarray.Dataset
        An embedding of recordings: ``source``, ``onset_s``, ``offset_s`` on ``item``
        (``cluster``, ``label``, ``channel`` when present).
    directory : path-like
        Output folder; sub-folders mirror the ``source`` paths.
    format : {"audacity", "raven", "generic-seq", "csv"}
        ``audacity``: label track (``start<TAB>end<TAB>label``); ``raven``: selection table
        (``Annotation`` column); ``generic-seq``: crowsetta's generic-seq CSV (one per recording
        plus :data:`GENERIC_SEQ_ALL` with them all); ``csv``: ``onset_s, offset_s, label,
        map_cluster, original_label``.
    label_from : {"cluster", "label", "label-or-cluster"}
        See :func:`segment_labels`.
    root : path-like, optional
        Folder of the recordings (the generic-seq ``notated_path`` is the audio path under it;
        default: the Dataset's ``input`` attribute).

    Returns
    -------
    ExportResult
    """
    from .audio.annotations import write_segments

    check_option("format", format, EXPORT_FORMATS)
    missing = [c for c in ("source", "onset_s", "offset_s") if c not in ds.variables]
    if missing:
        raise DataError(f"the embedding has no {', '.join(missing)} coordinate(s): only runs on "
                        "recordings can be exported as annotations")
    directory = Path(directory)
    labels = segment_labels(ds, label_from=label_from)
    n = ds.sizes["item"]
    table = pd.DataFrame({
        "source": np.asarray(ds["source"].values).astype(str),
        "onset_s": np.asarray(ds["onset_s"].values, dtype=float),
        "offset_s": np.asarray(ds["offset_s"].values, dtype=float),
        "label": labels,
        "map_cluster": (np.asarray(ds["cluster"].values, dtype=int) if "cluster" in ds
                        else np.full(n, -1)),
        "original_label": (np.asarray(ds["label"].values).astype(str) if "label" in ds.variables
                           else np.full(n, "")),
    })
    if "channel" in ds.variables:
        table["channel"] = np.asarray(ds["channel"].values, dtype=int)
    root = root if root is not None else ds.attrs.get("input")
    base = Path(root) if root else None
    if base is not None and base.is_file():
        base = base.parent
    band = _band(ds)
    result = ExportResult(directory=directory)
    combined = []
    for k, (source, seg) in enumerate(table.groupby("source", sort=True)):
        seg = seg.sort_values("onset_s", kind="stable")
        if "channel" in seg.columns and seg["channel"].nunique() > 1 and format == "audacity":
            logger.warning("%s: %d channels' segments go into one Audacity label track", source,
                           seg["channel"].nunique())
        path = directory / Path(source).parent / annotation_name(source, format)
        if format == "audacity":
            write_segments(seg, path, format="audacity")
        elif format == "raven":
            write_segments(seg, path, format="raven", **band)
        elif format == "csv":
            write_segments(seg[["onset_s", "offset_s", "label", "map_cluster", "original_label"]],
                           path, format="csv")
        else:
            gs = _generic_seq(seg, source=source, base=base, annot_path=path, sequence=k)
            _write_csv(gs, path)
            combined.append(gs)
        result.files.append(path)
        result.n_segments += len(seg)
    if format == "generic-seq" and combined:
        path = directory / GENERIC_SEQ_ALL
        _write_csv(pd.concat(combined, ignore_index=True), path)
        result.files.append(path)
    logger.info("wrote %d segments of %d recording(s) as %s into %s", result.n_segments,
                table["source"].nunique(), format, directory)
    return result


def _band(ds: xr.Dataset) -> dict:
    """The spectrogram band of the run (Raven's selection boxes), when the Dataset records it."""
    import json

    try:
        spec = json.loads(ds.attrs.get("config", "{}")).get("spectrogram", {})
        return {"low_freq_hz": float(spec["f_min"]), "high_freq_hz": float(spec["f_max"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


def _generic_seq(seg: pd.DataFrame, *, source: str, base, annot_path: Path, sequence: int) -> pd.DataFrame:
    notated = (base / source).as_posix() if base is not None else source
    return pd.DataFrame({
        "label": seg["label"].to_numpy(),
        "onset_s": seg["onset_s"].to_numpy(),
        "offset_s": seg["offset_s"].to_numpy(),
        "notated_path": notated,
        "annot_path": annot_path.as_posix(),
        "sequence": sequence,
        "annotation": sequence,
    })


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    return path


def export_run(out, *, format: str = "audacity", directory=None, label_from: str = "cluster") -> ExportResult:
    """Export the segments of a run's ``OUT/embedding.nc`` (see :func:`export_annotations`);
    default folder ``OUT/annotations/<format>``."""
    from .embedding import read_embedding

    out = Path(out)
    ds = read_embedding(out / "embedding.nc")
    directory = Path(directory) if directory is not None else out / "annotations" / format
    return export_annotations(ds, directory, format=format, label_from=label_from)
