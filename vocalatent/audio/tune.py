"""Tuning segmentation parameters from a few annotated recordings.

The band-level trace of each recording is computed once (the FFT is the expensive part);
every candidate setting then only re-smooths it, re-estimates the local floor and cuts it,
a few milliseconds per file. The search is coordinate ascent over a grid: starting from the
given parameters (snapped to the grid), each parameter in turn is set to its best grid value
with the others held, until a whole sweep changes nothing (``converged``) or the time budget
is spent. The score is the mean of onset F1 and offset F1 at ``tol_s``, pooled over files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .._utils import ParameterError, atomic_path, check_positive, logger, progress
from .io import audio_info
from .evaluate import AnnotatedFile, annotated_files, boundary_scores, pooled_scores
from .segment import SegmentParams, normalize_levels, segment_file, segments_from_trace

__all__ = ["DEFAULT_GRIDS", "TuneResult", "tune_segmentation", "write_pipeline_toml"]

#: Grid searched per mode unless ``grid=`` says otherwise (values of SegmentParams fields).
DEFAULT_GRIDS: dict[str, dict[str, list]] = {
    "prominence": {
        "split_db": [3.0, 4.5, 6.0, 8.0, 10.0, 13.0, 16.0],
        "boundary_db": [2.0, 3.5, 5.0, 7.0, 10.0, 14.0],
        "peak_db": [6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0],
        "smoothing_s": [0.001, 0.002, 0.004, 0.007],
        "min_dur_s": [0.005, 0.01, 0.02, 0.03],
        "floor_window_s": [1.0, 2.0, 4.0],
        "edge_db": [None, 30.0, 20.0, 15.0, 10.0],
    },
    "ava": {
        "th1": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
        "th2": [0.1, 0.2, 0.3, 0.4, 0.45, 0.5],
        "th3": [0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7],
        "smoothing_s": [0.001, 0.002, 0.004, 0.007],
        "min_dur_s": [0.005, 0.01, 0.02, 0.03],
    },
}
# fields that change the band-level trace itself (not tunable without recomputing FFTs)
_TRACE_FIELDS = ("f_min", "f_max", "window_s", "hop_s", "nperseg", "noverlap", "weighting",
                 "softmax_temperature_db")


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune_segmentation` found.

    Attributes
    ----------
    params : SegmentParams
        The best setting found.
    start_params : SegmentParams
        The setting the search started from.
    before, after : pandas.DataFrame
        Per-file and pooled (``source = "ALL"``) scores of the start and the best setting
        (columns of :func:`vocalatent.audio.evaluate.boundary_scores`).
    history : pandas.DataFrame
        Every setting evaluated: its grid values and ``score``, ``onset_f1``, ``offset_f1``.
    converged : bool
        True when a whole sweep over the parameters improved nothing; False when the time
        budget or ``max_sweeps`` stopped the search first.
    n_evaluations : int
    seconds : float
    tol_s : float
    """

    params: SegmentParams
    start_params: SegmentParams
    before: pd.DataFrame
    after: pd.DataFrame
    history: pd.DataFrame
    converged: bool
    n_evaluations: int
    seconds: float
    tol_s: float

    @property
    def score_before(self) -> float:
        """Mean of pooled onset and offset F1 of the start setting."""
        row = self.before.iloc[-1]
        return float((row["onset_f1"] + row["offset_f1"]) / 2)

    @property
    def score_after(self) -> float:
        """Mean of pooled onset and offset F1 of the best setting."""
        row = self.after.iloc[-1]
        return float((row["onset_f1"] + row["offset_f1"]) / 2)


def _snap(value, grid: Sequence):
    if value is None or None in grid:
        return value if value in grid else grid[0]
    arr = np.asarray(grid, dtype=float)
    return grid[int(np.argmin(np.abs(arr - float(value))))]


class _Scorer:
    def __init__(self, items: list[AnnotatedFile], base: SegmentParams, tol_s: float,
                 channel: int):
        self.items, self.tol_s = items, tol_s
        self.traces, self.geometry = [], []
        for it in progress(items, desc="band levels", unit="file"):
            _, tr = segment_file(it.path, base, channel=channel, return_trace=True)
            sr = audio_info(it.path).sample_rate
            self.traces.append(tr)
            self.geometry.append((sr,) + base.frame_geometry(sr))
        self.cache: dict = {}

    def rows(self, params: SegmentParams) -> list[dict]:
        out = []
        for it, tr, (sr, nperseg, hop) in zip(self.items, self.traces, self.geometry):
            t2 = normalize_levels(tr.level_db, params, hop=hop, nperseg=nperseg, sr=sr)
            found = segments_from_trace(t2, params)
            out.append({"source": it.source, "annotation": it.annotation.name,
                        **boundary_scores(it.truth, found, tol_s=self.tol_s)})
        return out

    def score(self, params: SegmentParams) -> tuple[float, float, float]:
        key = tuple(sorted(params.to_dict().items(), key=lambda kv: kv[0]).__repr__())
        if key not in self.cache:
            tot = pooled_scores(self.rows(params))
            self.cache[key] = ((tot["onset_f1"] + tot["offset_f1"]) / 2, tot["onset_f1"],
                               tot["offset_f1"])
        return self.cache[key]

    def table(self, params: SegmentParams) -> pd.DataFrame:
        rows = self.rows(params)
        t = pd.DataFrame(rows + [{"source": "ALL", "annotation": "", **pooled_scores(rows)}])
        t["tol_s"] = self.tol_s
        return t


def _valid(params: SegmentParams, changes: Mapping) -> SegmentParams | None:
    try:
        return dataclasses.replace(params, **changes)
    except ParameterError:
        return None


def tune_segmentation(root: str | os.PathLike | list[AnnotatedFile],
                      params: SegmentParams | Mapping | None = None, *, tol_s: float = 0.010,
                      grid: Mapping[str, Sequence] | None = None,
                      annotations: str | os.PathLike = "auto", channel: int = 0,
                      max_time_s: float = 60.0, max_sweeps: int = 4) -> TuneResult:
    """Search segmentation parameters that best reproduce the annotations of a few recordings.

    Parameters
    ----------
    root : path-like or list of AnnotatedFile
        Recordings with annotation files (any format the package reads; see
        :func:`vocalatent.audio.evaluate.annotated_files`).
    params : SegmentParams or mapping, optional
        Where the search starts, and the values of everything not searched (band, window,
        hop, ``mode``, ``max_dur_s``...). Default ``SegmentParams()``.
    tol_s : float, default=0.010
        Boundary tolerance (s) of the F1 scores.
    grid : mapping of field name -> list of values, optional
        The values tried per parameter; default :data:`DEFAULT_GRIDS` for ``params.mode``.
        Fields that change the band-level trace itself (band, window, hop, weighting) cannot
        be searched here.
    annotations : "auto", directory or file, default="auto"
    channel : int, default=0
    max_time_s : float, default=60
        Time budget (s) of the search (the traces are computed before it starts).
    max_sweeps : int, default=4
        At most this many passes over the parameters.

    Returns
    -------
    TuneResult
    """
    if params is None or isinstance(params, Mapping):
        params = SegmentParams.from_dict(params or {})
    check_positive("tol_s", tol_s)
    check_positive("max_time_s", max_time_s)
    check_positive("max_sweeps", max_sweeps, integer=True)
    grid = dict(DEFAULT_GRIDS[params.mode] if grid is None else grid)
    names = {f.name for f in dataclasses.fields(SegmentParams)}
    for k, values in grid.items():
        if k not in names:
            raise ParameterError(f"grid names {k!r}, which is not a SegmentParams field")
        if k in _TRACE_FIELDS:
            raise ParameterError(f"grid cannot search {k!r}: it changes the band-level trace; "
                                 "set it in params and tune the rest")
        if not values:
            raise ParameterError(f"grid[{k!r}] is empty")
    items = root if isinstance(root, list) else annotated_files(root, annotations=annotations)
    t_start = time.perf_counter()
    scorer = _Scorer(items, params, tol_s, channel)
    start = params
    snapped = _valid(params, {k: _snap(getattr(params, k), v) for k, v in grid.items()})
    best = snapped if snapped is not None else params
    best_score = max(scorer.score(params), scorer.score(best))
    if scorer.score(params) >= scorer.score(best):
        best = params
    history = []
    t0 = time.perf_counter()
    converged = False
    n_total = max_sweeps * sum(len(v) for v in grid.values())
    bar = progress(total=n_total, desc="tuning", unit="setting")
    try:
        for _ in range(max_sweeps):
            improved = False
            for k, values in grid.items():
                for v in values:
                    bar.update(1)
                    cand = _valid(best, {k: v})
                    if cand is None:
                        continue
                    sc = scorer.score(cand)
                    history.append({**{g: getattr(cand, g) for g in grid}, "score": sc[0],
                                    "onset_f1": sc[1], "offset_f1": sc[2]})
                    if sc[0] > best_score[0] + 1e-12:
                        best, best_score, improved = cand, sc, True
                if time.perf_counter() - t0 > max_time_s:
                    break
            if time.perf_counter() - t0 > max_time_s:
                logger.warning("tuning stopped at its time budget (%.0f s) before converging",
                               max_time_s)
                break
            if not improved:
                converged = True
                break
    finally:
        bar.close()
    return TuneResult(params=best, start_params=start, before=scorer.table(start),
                      after=scorer.table(best), history=pd.DataFrame(history),
                      converged=converged, n_evaluations=len(scorer.cache),
                      seconds=time.perf_counter() - t_start, tol_s=tol_s)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def write_pipeline_toml(path: str | os.PathLike, params: SegmentParams, *,
                        extends: str | None = None, name: str | None = None,
                        source: str = "", description: str = "") -> Path:
    """Write ``params`` as a pipeline TOML usable with ``--pipeline path`` (atomically).

    Parameters
    ----------
    path : path-like
    params : SegmentParams
        Written as the full ``[segment]`` table (None values are left out: TOML has no null,
        and a left-out key takes the extended pipeline's value).
    extends : str, optional
        The preset the other tables (audio, spectrogram, model) come from.
    name, source, description : str

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    lines = ["[pipeline]", f"name = {_toml_value(name or path.stem)}"]
    if extends:
        lines.append(f"extends = {_toml_value(extends)}")
    lines += ['domain = "vocal"', f"description = {_toml_value(description)}",
              f"source = {_toml_value(source)}", "", "[segment]"]
    for k, v in params.to_dict().items():
        if v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    text = "\n".join(lines) + "\n"
    with atomic_path(path, suffix=".toml") as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path
