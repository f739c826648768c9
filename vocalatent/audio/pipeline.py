"""File-level orchestration: segment many recordings and build a syllable store, in parallel.

Work is per file (per file and channel) and runs in worker processes
(:class:`concurrent.futures.ProcessPoolExecutor`) with a progress bar. A file that fails —
unreadable, corrupt, silent, too short, sample rate too low, ... — is recorded in an errors
table (``source``, ``error``) and skipped; every other file is processed. Paths in every table
are relative to the input root (POSIX style), so a store or CSV can move with its data.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from .._utils import (DataError, ParameterError, VocalatentError, check_positive,
                      check_random_state, logger, progress)
from ..data.store import SyllableStore
from .annotations import annotations_for
from .io import audio_info, dangling_links, find_audio, load_audio
from .segment import SegmentParams, SegmentReport, segment_file
from .spectrogram import SpectrogramParams, level_ranges, resolve_level_params, syllable_spectrograms

__all__ = ["REMOVAL_REASONS", "build_store", "empty_segments", "report_frame", "report_lines",
           "report_summary",
           "segment_paths", "segments_digest", "spectrogram_task", "spectrogram_tasks"]

SEGMENT_COLUMNS = ["source", "channel", "onset_s", "offset_s", "duration_s", "sample_rate",
                   "label", "peak", "segmented_by"]
_MAX_SPAN_S = 60.0  # a spectrogram task reads at most about this much audio


def _n_workers(n_jobs: int | None) -> int:
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0:
        raise ParameterError(f"n_jobs must be a positive integer or -1 (all cores); got {n_jobs!r}")
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + int(n_jobs))
    return int(n_jobs)


def _ordered_map(func: Callable, tasks: list, n_jobs: int, desc: str) -> Iterator:
    """Yield ``func(task)`` in task order; at most ``2 * n_jobs`` tasks in flight."""
    bar = progress(total=len(tasks), desc=desc, unit="task")
    try:
        if n_jobs == 1 or len(tasks) <= 1:
            for t in tasks:
                yield func(t)
                bar.update(1)
            return
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(tasks))) as pool:
            pending: deque = deque()
            it = iter(tasks)
            for t in it:
                pending.append(pool.submit(func, t))
                if len(pending) >= 2 * n_jobs:
                    break
            while pending:
                fut = pending.popleft()
                yield fut.result()
                bar.update(1)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(func, nxt))
    finally:
        bar.close()


def _error_text(exc: BaseException, path) -> str:
    if isinstance(exc, VocalatentError):
        return str(exc)
    logger.warning("%s: unexpected %s", path, type(exc).__name__, exc_info=exc)
    return f"{path}: {type(exc).__name__}: {exc}"


def _resolve_root(path_or_root) -> tuple[Path, list[Path]]:
    p = Path(path_or_root)
    files = find_audio(p)
    base = p.parent if p.is_file() else p
    return base, files


def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


REMOVAL_REASONS = ("split_dip", "edge_trim", "no_peak", "too_short", "too_long")


def _report_row(source: str, channel: int, report: SegmentReport) -> dict:
    row = {"source": source, "channel": channel, "n_segments": report.n_segments,
           "above_s": report.above_s, "in_segments_s": report.in_segments_s}
    for r in REMOVAL_REASONS:
        got = report.removed.get(r, {"n": 0, "s": 0.0})
        row[f"{r}_n"], row[f"{r}_s"] = int(got["n"]), float(got["s"])
    row["n_split_for_max_dur"] = report.n_split_for_max_dur
    return row


def _segment_task(task: dict) -> tuple[list[dict], list[dict], list[dict]]:
    path, source = Path(task["path"]), task["source"]
    params = SegmentParams.from_dict(task["params"])
    try:
        info = audio_info(path)
        channels = range(info.n_channels) if task["channel"] == "all" else [task["channel"]]
        ann = annotations_for(path, annotations=task["annotations"], root=task["root"])
        rows: list[dict] = []
        reports: list[dict] = []
        for ch in channels:
            if ann is not None:
                df = ann[0].copy()
                df["duration_s"] = df["offset_s"] - df["onset_s"]
                df["peak"] = np.nan
                df["segmented_by"] = ann[1].name
                if ch >= info.n_channels or ch < -info.n_channels:
                    raise DataError(f"channel {ch} does not exist: the file has "
                                    f"{info.n_channels} channel(s)", path=path)
            else:
                df, rep = segment_file(path, params, channel=ch, chunk_s=task["chunk_s"],
                                       return_report=True)
                reports.append(_report_row(source, int(ch) % info.n_channels, rep))
                df["label"] = ""
                df["segmented_by"] = "amplitude"
            df["source"] = source
            df["channel"] = int(ch) % info.n_channels
            df["sample_rate"] = info.sample_rate
            extra = [c for c in df.columns if c not in SEGMENT_COLUMNS]
            rows.extend(df[SEGMENT_COLUMNS + extra].to_dict("records"))
        return rows, [], reports
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        return [], [{"source": source, "error": _error_text(exc, path)}], []


def sample_rate_hint(files, *, f_max: float, factor: float = 4.0) -> str:
    """Advice for when nothing was found in recordings sampled far above the band looked at.

    Parameters
    ----------
    files : iterable of path-like
        The recordings (unreadable ones are passed over).
    f_max : float
        Upper edge (Hz) of the band segmentation looked in.
    factor : float, default=4.0
        A sample rate above ``factor * f_max`` counts as far above the band.

    Returns
    -------
    str
        ``""`` when no recording is sampled above ``factor * f_max``; else one sentence naming
        the highest sample rate and the ultrasonic pipelines.
    """
    rates = []
    for f in files:
        try:
            rates.append(audio_info(f).sample_rate)
        except Exception:  # noqa: BLE001 - an unreadable file is already reported as failed
            continue
    if not rates or max(rates) <= factor * f_max:
        return ""
    return (f"the recordings are sampled at up to {max(rates) / 1000:g} kHz, far above the "
            f"band this pipeline looks in (up to {f_max / 1000:g} kHz): for ultrasonic calls "
            "use --pipeline bat or --pipeline mouse_usv (see `vocalatent pipelines`)")


def empty_segments() -> pd.DataFrame:
    """An empty segment table with the columns and dtypes :func:`segment_paths` returns."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        SEGMENT_COLUMNS, [str, "int64", float, float, float, "int64", str, float, str])})


def _errors_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["source", "error"])


def segment_paths(path_or_root: str | os.PathLike, *,
                  params: SegmentParams | Mapping[str, Any] | None = None,
                  annotations: str | os.PathLike = "auto", channel: int | str = 0,
                  n_jobs: int = 1, chunk_s: float = 60.0, return_report: bool = False):
    """Segment every audio file under a directory (or one file).

    Parameters
    ----------
    path_or_root : path-like
        A directory (searched recursively for audio files) or one audio file.
    params : SegmentParams or mapping, optional
        Segmentation parameters (default ``SegmentParams()``).
    annotations : "auto", "ignore" or path-like, default="auto"
        ``"auto"``: a file's annotation beside it (``song.wav.csv``, ``song.TextGrid``,
        ``song.wav.not.mat``, ``song.txt``, ... see
        :func:`vocalatent.audio.annotations.annotation_candidates`, or a Koumura
        ``Annotation.xml`` in its folder or the one above) replaces automatic
        segmentation; ``"ignore"``: always segment; a directory: look for annotations there
        (mirroring sub-directories) instead of beside the audio; a file: one annotation for
        many recordings (crowsetta generic-seq CSV, Koumura XML), see
        :func:`vocalatent.audio.annotations.annotations_for`.
    channel : int or "all", default=0
        Channel to segment; ``"all"`` makes each channel its own source.
    n_jobs : int, default=1
        Worker processes (-1: all cores).
    chunk_s : float, default=60
        Seconds of audio held in memory at a time per worker.
    return_report : bool, default=False
        Also return the filter report (below).

    Returns
    -------
    segments : pandas.DataFrame
        One row per segment: ``source`` (path relative to the root), ``channel``, ``onset_s``,
        ``offset_s``, ``duration_s``, ``sample_rate``, ``label`` ("" when segmented
        automatically), ``peak`` (normalized amplitude, NaN for imported segments),
        ``segmented_by`` ("amplitude" or the annotation file's name), plus any extra columns
        an annotation CSV had. Sorted by source, channel, onset.
    errors : pandas.DataFrame
        ``source``, ``error`` for each file that failed (its message names the file and the
        problem).
    report : pandas.DataFrame
        Only with ``return_report=True``: one row per automatically segmented file and
        channel — ``n_segments``, ``above_s`` (seconds above the boundary threshold),
        ``in_segments_s``, and ``<reason>_n`` / ``<reason>_s`` for each reason a filter
        removes frames (``split_dip``, ``no_peak``, ``too_short``, ``too_long``: longer than
        ``max_dur_s`` with no dip left to split at), ``n_split_for_max_dur``. Whatever the
        flag, segments removed as too long are logged as a warning naming the files.
    """
    if params is None:
        params = SegmentParams()
    elif isinstance(params, Mapping):
        params = SegmentParams.from_dict(params)
    if not (channel == "all" or (isinstance(channel, (int, np.integer)) and not isinstance(channel, bool))):
        raise ParameterError(f"channel must be an integer or 'all'; got {channel!r}")
    if str(annotations) not in ("auto", "ignore") and not Path(annotations).exists():
        raise ParameterError(f"annotations must be 'auto', 'ignore', a directory or a "
                             f"multi-file annotation (generic-seq CSV, Annotation.xml); got "
                             f"{str(annotations)!r}, which does not exist")
    check_positive("chunk_s", chunk_s)
    base, files = _resolve_root(path_or_root)
    if not files:
        logger.warning("no audio files found under %s", path_or_root)
    tasks = [{"path": str(f), "source": _rel(f, base), "params": params.to_dict(),
              "channel": channel if channel == "all" else int(channel),
              "annotations": str(annotations), "chunk_s": float(chunk_s),
              "root": str(base)} for f in files]
    rows: list[dict] = []
    errors: list[dict] = []
    reports: list[dict] = []
    for r, e, rep in _ordered_map(_segment_task, tasks, _n_workers(n_jobs), "segmenting"):
        rows.extend(r)
        errors.extend(e)
        reports.extend(rep)
    segments = pd.DataFrame(rows) if rows else empty_segments()
    if rows:
        segments = segments.sort_values(["source", "channel", "onset_s"], kind="stable")
        segments = segments.reset_index(drop=True)
    for e in errors:
        logger.warning("skipped: %s", e["error"])
    n_ok = len(files) - len(errors)
    for link in dangling_links(base) if Path(path_or_root).is_dir() else []:
        errors.append({"source": _rel(link, base),
                       "error": f"{link}: dangling symbolic link (its target "
                                f"{os.readlink(link)} does not exist)"})
    logger.info("%d segments from %d file(s); %d file(s) failed", len(segments),
                n_ok, len(errors))
    report = report_frame(reports)
    for line in report_lines(report, params):
        logger.warning(line)
    if return_report:
        return segments, _errors_frame(errors), report
    return segments, _errors_frame(errors)


def report_frame(rows: list[dict]) -> pd.DataFrame:
    """The filter report table of :func:`segment_paths` from its rows (empty: right columns)."""
    cols = ["source", "channel", "n_segments", "above_s", "in_segments_s"] + \
        [f"{r}_{k}" for r in REMOVAL_REASONS for k in ("n", "s")] + ["n_split_for_max_dur"]
    return pd.DataFrame(rows, columns=cols)


def report_summary(report: pd.DataFrame, *, max_files: int = 50) -> dict:
    """Totals of a :func:`segment_paths` report (JSON-ready; kept in a store's ``info``).

    Returns
    -------
    dict
        ``n_files``, ``n_segments``, ``above_s``, ``in_segments_s``, ``removed``
        (``reason -> {"n", "s"}``), ``n_split_for_max_dur`` and ``too_long_files`` (at most
        ``max_files`` names of files with segments that could not be split).
    """
    out = {"n_files": int(report["source"].nunique()) if len(report) else 0,
           "n_segments": int(report["n_segments"].sum()),
           "above_s": float(report["above_s"].sum()),
           "in_segments_s": float(report["in_segments_s"].sum()),
           "removed": {r: {"n": int(report[f"{r}_n"].sum()), "s": float(report[f"{r}_s"].sum())}
                       for r in REMOVAL_REASONS if report[f"{r}_n"].sum() > 0},
           "n_split_for_max_dur": int(report["n_split_for_max_dur"].sum())}
    out["too_long_files"] = report.loc[report["too_long_n"] > 0, "source"].astype(str) \
        .unique()[:max_files].tolist()
    return out


def report_lines(report: pd.DataFrame, params: SegmentParams) -> list[str]:
    """One-line warnings for what the filters removed that a user must hear about.

    Segments longer than ``max_dur_s`` that could not be split (how many, seconds, which
    files) always give a line; the other removals give one summary line when they take more
    than 5 % of the time above threshold.
    """
    lines = []
    if not len(report):
        return lines
    long = report[report["too_long_n"] > 0]
    if len(long):
        names = ", ".join(long["source"].astype(str).unique()[:10])
        more = "" if long["source"].nunique() <= 10 else f" and {long['source'].nunique() - 10} more"
        lines.append(
            f"{int(long['too_long_n'].sum())} segment(s) longer than max_dur_s="
            f"{params.max_dur_s:g} s had no dip to split at and were left out "
            f"({long['too_long_s'].sum():.2f} s of audio above threshold) in {names}{more}; "
            "raise max_dur_s or lower split_db to keep them")
    above = float(report["above_s"].sum())
    other = {r: float(report[f"{r}_s"].sum()) for r in ("no_peak", "too_short")}
    if above > 0 and sum(other.values()) > 0.05 * above:
        lines.append("of %.2f s above threshold, %s were left out (see the report)" % (
            above, ", ".join(f"{v:.2f} s {k.replace('_', ' ')}" for k, v in other.items() if v)))
    return lines


# --------------------------------------------------------------------------- spectrograms
def spectrogram_task(task: dict):
    """Spectrograms of one task of :func:`spectrogram_tasks` (run in a worker process).

    Returns
    -------
    (index, spectrograms or None, error row or None)
    """
    path, source = Path(task["path"]), task["source"]
    params = SpectrogramParams.from_dict(task["params"])
    on, off = np.asarray(task["onsets"]), np.asarray(task["offsets"])
    try:
        info = audio_info(path)
        nperseg = params.nperseg or max(8, int(round(params.window_s * info.sample_rate)))
        pad = nperseg / info.sample_rate + (params.window_dur_s / 2 if params.time_mode == "window" else 0)
        t0 = max(0.0, float(on.min()) - pad)
        t1 = min(info.duration_s, float(off.max()) + pad)
        if t1 <= t0:
            raise DataError(f"segments at {on.min():.3f}-{off.max():.3f} s lie outside the "
                            f"recording ({info.duration_s:.3f} s)", path=path)
        y, sr = load_audio(path, channel=task["channel"], offset_s=t0, duration_s=t1 - t0)
        if sr < 2 * params.f_max:
            raise DataError(f"sample rate {sr} Hz is below 2*f_max = {2 * params.f_max:g} Hz",
                            path=path)
        x = syllable_spectrograms(y, sr, on, off, params, y_start_s=t0,
                                  return_db=task.get("return_db", False))
        return task["index"], x, None
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        return task["index"], None, {"source": source, "error": _error_text(exc, path)}


def spectrogram_tasks(segments: pd.DataFrame, base: Path, params: dict, batch: int,
                       return_db: bool = False) -> list[dict]:
    """Cut a segment table into picklable spectrogram tasks: per file and channel, at most
    ``batch`` syllables and about a minute of audio each."""
    tasks = []
    for (source, channel), grp in segments.groupby(["source", "channel"], sort=False):
        idx = grp.index.to_numpy()
        on, off = grp["onset_s"].to_numpy(), grp["offset_s"].to_numpy()
        order = np.argsort(on, kind="stable")
        start = 0
        for i in range(1, len(order) + 1):
            if i == len(order) or i - start >= batch or on[order[i]] - on[order[start]] > _MAX_SPAN_S:
                sel = order[start:i]
                tasks.append({"path": str(base / source), "source": source, "channel": int(channel),
                              "index": idx[sel].tolist(), "onsets": on[sel].tolist(),
                              "offsets": off[sel].tolist(), "params": params,
                              "return_db": return_db})
                start = i
    return tasks


def segments_digest(segments: pd.DataFrame) -> str:
    """sha256 of a segment table's source, channel, onset, offset and label columns (times
    rounded to 1 µs): the identity of a store's segments."""
    h = hashlib.sha256()
    for col in ("source", "channel", "onset_s", "offset_s", "label"):
        vals = segments[col].to_numpy() if col in segments.columns else np.array([])
        if vals.dtype.kind == "f":
            vals = np.round(vals, 6)
        h.update("\x1f".join(map(str, vals.tolist())).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def build_store(root: str | os.PathLike, out_path: str | os.PathLike, *,
                segment_params: SegmentParams | Mapping | None = None,
                spectrogram_params: SpectrogramParams | Mapping | None = None,
                segments: pd.DataFrame | None = None, annotations: str | os.PathLike = "auto",
                channel: int | str = 0, n_jobs: int = 1, chunk_s: float = 60.0,
                dtype: str = "float32", batch_syllables: int = 256, calib_syllables: int = 500,
                random_state=0, reuse: bool = True) -> tuple[SyllableStore, pd.DataFrame]:
    """Segment (unless ``segments`` are given), make syllable spectrograms and write a store.

    Parameters
    ----------
    root : path-like
        Directory of recordings (or one file); ``source`` paths are relative to it.
    out_path : path-like
        The HDF5 store to write (atomically).
    segment_params, spectrogram_params : params or mapping, optional
        Defaults: ``SegmentParams()``, ``SpectrogramParams()``. Without a fixed clipping
        range, it is calibrated from about ``calib_syllables`` syllables drawn at random
        (``random_state``), the same number from every file (at least 4), shared or per
        recording by the ``level`` parameter (:func:`~vocalatent.audio.spectrogram.level_ranges`),
        and recorded in ``store.info["spectrogram_resolved"]`` (per-recording ranges also in
        ``store.info["level_ranges"]``).
    segments : pandas.DataFrame, optional
        Use these segments (``source``, ``onset_s``, ``offset_s``, optionally ``channel``,
        ``label``, ``sample_rate``, metadata) instead of segmenting.
    annotations, channel, n_jobs, chunk_s
        As in :func:`segment_paths`.
    dtype : {"float32", "float16", "uint8"}, default="float32"
    batch_syllables : int, default=256
        Syllables per worker task (bounds memory: 64 KB each at 128 x 128 float32).
    calib_syllables : int, default=500
    random_state : None, int or Generator, default=0
    reuse : bool, default=True
        When ``out_path`` exists and was made from the same segments with the same
        parameters by this version, return it instead of rebuilding; a store that differs is
        reported as stale and rebuilt, never reused.

    Returns
    -------
    store : SyllableStore
        Read-only, opened on ``out_path``; one item per segment of every file that did not
        fail. When it segmented the recordings itself, ``store.info["segment_report"]`` holds
        what the filters removed (:func:`report_summary`); segments that could not be split
        to ``max_dur_s`` are also a logged warning naming the files.
    errors : pandas.DataFrame
        ``source``, ``error`` of the files that failed (segmenting or spectrograms).
    """
    if segment_params is None or isinstance(segment_params, Mapping):
        segment_params = SegmentParams.from_dict(segment_params or {})
    if spectrogram_params is None or isinstance(spectrogram_params, Mapping):
        spectrogram_params = SpectrogramParams.from_dict(spectrogram_params or {})
    check_positive("batch_syllables", batch_syllables, integer=True)
    check_positive("calib_syllables", calib_syllables, integer=True)
    n_workers = _n_workers(n_jobs)
    base, _ = _resolve_root(root)
    out_path = Path(out_path)
    error_rows: list[dict] = []
    seg_summary = None
    if segments is None:
        segments, errs, report = segment_paths(root, params=segment_params,
                                               annotations=annotations, channel=channel,
                                               n_jobs=n_workers, chunk_s=chunk_s,
                                               return_report=True)
        error_rows.extend(errs.to_dict("records"))
        seg_summary = report_summary(report)
    else:
        segments = _complete_segments(segments, base)
    segments = segments.reset_index(drop=True)
    identity = {"spectrogram": spectrogram_params.to_dict(),
                "segments_sha256": segments_digest(segments), "n_segments": int(len(segments))}
    if out_path.exists():
        try:
            old = SyllableStore(out_path)
            reason = old.stale_reason(identity)
            if reuse and reason is None:
                logger.info("%s is up to date (%d items); reusing it", out_path, len(old))
                return old, _errors_frame(error_rows)
            old.close()
            logger.info("%s is stale (%s); rebuilding", out_path,
                        reason or "reuse=False")
        except DataError as exc:
            logger.info("%s is not a usable store (%s); rebuilding", out_path, exc)
    resolved = spectrogram_params
    ranges: dict = {}
    if not resolved.fixed_range and len(segments):
        # each file's own sample: the level choice (shared / per recording) needs every file
        rng = check_random_state(random_state)
        groups = list(segments.groupby("source", sort=True).indices.values())
        per_file = max(4, calib_syllables // max(len(groups), 1))
        pick = np.sort(np.concatenate([
            g if g.size <= per_file else rng.choice(g, size=per_file, replace=False) for g in groups]))
        tasks = spectrogram_tasks(segments.iloc[pick], base, resolved.to_dict(),
                                   batch_syllables, return_db=True)
        by_source: dict = {}
        for t, (_, x, e) in zip(tasks, _ordered_map(spectrogram_task, tasks, n_workers, "calibrating")):
            if x is not None:
                by_source.setdefault(t["source"], []).append(x)
        if by_source:
            ranges, chosen = level_ranges(by_source, resolved)
            resolved = resolve_level_params(resolved, ranges, chosen)
            lo, hi = next(iter(ranges.values()))
            if chosen == "recording":
                peaks = [v[1] for v in ranges.values()]
                logger.info("spectrogram clipping range per recording: %.1f dB below each file's "
                            "peak (peaks %.1f to %.1f dBFS over %d files)", hi - lo, min(peaks),
                            max(peaks), len(ranges))
            else:
                logger.info("spectrogram clipping range calibrated: %.1f to %.1f dBFS", lo, hi)
    info = {"segment": segment_params.to_dict(), "spectrogram_resolved": resolved.to_dict(),
            "root": str(base.resolve()), "annotations": str(annotations)}
    if seg_summary is not None:
        info["segment_report"] = seg_summary
    if not resolved.fixed_range and ranges:
        info["level_ranges"] = {k: [float(a), float(b)] for k, (a, b) in ranges.items()}
    params_of = {}
    for source in segments["source"].unique():
        if resolved.fixed_range or source not in ranges:
            params_of[source] = resolved.to_dict()
        else:
            params_of[source] = {**resolved.to_dict(), "spec_min_db": ranges[source][0],
                                 "spec_max_db": ranges[source][1]}
    tasks = [t for source, grp in segments.groupby("source", sort=False)
             for t in spectrogram_tasks(grp, base, params_of[source], batch_syllables)]
    failed: set[str] = set()
    with SyllableStore.create(out_path, params=identity, dtype=dtype, info=info,
                              shape=(resolved.n_freq, resolved.n_time)) as store:
        for index, x, err in _ordered_map(spectrogram_task, tasks, n_workers, "spectrograms"):
            if err is not None:
                if err["source"] not in failed:
                    error_rows.append(err)
                    failed.add(err["source"])
                    logger.warning("skipped: %s", err["error"])
                continue
            store.append(x, segments.iloc[index])
    logger.info("wrote %s: %d syllables", out_path, len(store))
    return SyllableStore(out_path), _errors_frame(error_rows)


def _complete_segments(segments: pd.DataFrame, base: Path) -> pd.DataFrame:
    missing = [c for c in ("source", "onset_s", "offset_s") if c not in segments.columns]
    if missing:
        raise ParameterError(f"segments lack column(s) {missing}; they have {list(segments.columns)}")
    seg = segments.copy()
    if "channel" not in seg.columns:
        seg["channel"] = 0
    if "label" not in seg.columns:
        seg["label"] = ""
    if "duration_s" not in seg.columns:
        seg["duration_s"] = seg["offset_s"] - seg["onset_s"]
    if "sample_rate" not in seg.columns:
        rates = {}
        for s in seg["source"].unique():
            try:
                rates[s] = audio_info(base / s).sample_rate
            except DataError:
                rates[s] = 0  # the spectrogram task reports this file's error
        seg["sample_rate"] = seg["source"].map(rates).astype("int64")
    return seg.sort_values(["source", "channel", "onset_s"], kind="stable")

