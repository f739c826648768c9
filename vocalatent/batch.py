"""Batch runs over experiment sessions on Dask: preprocess, train one map, embed everything.

:func:`run_batch` takes a session manifest (:mod:`vocalatent.sessions`) and an output folder
and runs five stages; the embarrassingly parallel ones run as Dask tasks (a local cluster of
processes by default, an existing scheduler, or a SLURM/PBS cluster through dask-jobqueue):

1. **segment** (one task per audio file) → ``OUT/sessions/<id>/segments.csv``;
2. **calibrate** the spectrogram clipping range once for the whole batch, from a seeded sample
   of every reference recording's syllables (skipped when the range is given). With
   ``[spectrogram] level = "auto"`` (default) the recordings' own peaks decide, as in a single
   run (:func:`vocalatent.audio.spectrogram.level_ranges`): when they spread over more than
   ``level_auto_db`` the batch takes per-recording ranges of one common width ``W`` (each file,
   in every session, clipped ``W`` dB below its own peak), else one shared range — so one map
   holds all sessions, recorded at whatever gain;
3. **spectrograms** (one task per session) → ``OUT/sessions/<id>/syllables.h5`` and
   ``errors.csv``;
4. **train** one QLVM on the driver on all sessions (or the reference subset), reading the
   session stores lazily through :class:`ConcatSpectrograms` → ``OUT/model/model.pt`` (skipped
   when a trained model is given: new sessions are then *projected* into its map);
5. **embed** (one task per session; each worker loads the model file once and streams the
   session's store through the model in memory-bounded blocks) →
   ``OUT/sessions/<id>/embedding.nc``, then the combined ``OUT/embedding.nc`` whose ``item``
   coordinates carry the session id and metadata.

Reliability. Every output is written to a temporary file and renamed. Each stage of each
session ends by writing a small JSON completion marker whose ``key`` digests everything the
output depends on (package version, parameters, the session's file list with sizes and
modification times, the upstream stage's key, the model's sha256); a rerun skips a stage whose
marker matches and redoes anything else, so a run killed at any point and restarted ends with
the same outputs as an uninterrupted one (seeds are fixed, outputs are assembled in manifest
order). A file or session that fails is reported in ``OUT/errors.csv`` (``session``, ``file``,
``error``) and does not stop the others. Only one run may write to an OUT folder at a time
(:func:`vocalatent.locks.output_lock`: ``OUT/.vocalatent.lock``, no fcntl, safe on shared file
systems; the refusal names the holder's pid and host).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ._utils import (DataError, ParameterError, VocalatentError, atomic_path, check_option,
                     check_positive, check_random_state, file_sha256, item_indices, json_key, logger,
                     progress)
from ._version import __version__
from .locks import OutputLockedError, output_lock
from .sessions import SessionManifest, check_reference, load_sessions

__all__ = ["BatchLockedError", "BatchResult", "BatchRun", "ConcatSpectrograms", "ItemRange",
           "EMBED_BLOCK_ITEMS", "SessionState", "calibrate_stage", "combine_stage", "embed_stage", "item_chunks",
           "plan_batch", "run_batch", "segment_stage", "store_stage", "train_stage"]

CLUSTERS = ("local", "slurm", "pbs")
ERROR_COLUMNS = ["session", "file", "error"]
_SEGMENT_STR = ("source", "label", "segmented_by")


#: Raised when another run holds the output folder (kept under its former name).
BatchLockedError = OutputLockedError


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _write_json(obj: Any, path: Path) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _marker_ok(path: Path, key: str, *outputs: Path) -> bool:
    """True when the completion marker at ``path`` has ``key`` and every output exists."""
    m = _read_json(path)
    return bool(m) and m.get("key") == key and all(p.is_file() for p in outputs)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False)


def _read_segments(path: Path) -> pd.DataFrame:
    """Read a segments.csv written by this module back with the dtypes it was written with."""
    df = pd.read_csv(path, keep_default_na=False, dtype={c: str for c in _SEGMENT_STR})
    for col in df.columns:
        if col in _SEGMENT_STR:
            continue
        if df[col].dtype == object:
            num = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
            if num.notna().sum() == (df[col] != "").sum():
                df[col] = num
    return df


def _read_errors(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame(columns=ERROR_COLUMNS)
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, VocalatentError):
        return str(exc)
    name = type(exc).__name__
    if name == "KilledWorker":
        return ("the worker process running this task died (crashed or ran out of memory) "
                f"every time it was tried: {exc}")
    return f"{name}: {exc}"


# --------------------------------------------------------------------------------------------
# lazy concatenation of session stores
# --------------------------------------------------------------------------------------------
class ConcatSpectrograms:
    """Array-like concatenation of several stores' spectrograms along the item axis.

    Indexing reads only the requested items, store by store (h5py reads need increasing
    indices); the result is float32 with shape ``(len(idx), F, T)`` in the requested order.

    Parameters
    ----------
    arrays : sequence of array-likes [shape=(N_k, F, T)]
        E.g. ``[store.spectrograms for store in stores]``; all with the same (F, T).
    """

    def __init__(self, arrays: Sequence):
        arrays = [a for a in arrays if len(a)]
        if not arrays:
            raise DataError("nothing to concatenate: every store is empty")
        shapes = {tuple(a.shape[1:]) for a in arrays}
        if len(shapes) != 1:
            raise DataError(f"stores hold spectrograms of different shapes {sorted(shapes)}")
        self._arrays = arrays
        self._offsets = np.cumsum([0] + [len(a) for a in arrays])
        self._item_shape = shapes.pop()

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self._offsets[-1]),) + tuple(self._item_shape)

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return 1 + len(self._item_shape)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, idx):
        n = len(self)
        if isinstance(idx, (int, np.integer)):
            if not -n <= idx < n:
                raise IndexError(f"index {idx} is out of range for {n} items")
            i = int(idx) % n
            k = int(np.searchsorted(self._offsets, i, side="right") - 1)
            return np.asarray(self._arrays[k][i - self._offsets[k]], dtype=np.float32)
        if isinstance(idx, slice):
            idx = np.arange(n)[idx]
        flat, shape = item_indices(idx, n)
        out = np.empty((flat.size,) + tuple(self._item_shape), dtype=np.float32)
        which = np.searchsorted(self._offsets, flat, side="right") - 1
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            out[sel] = self._arrays[k][flat[sel] - self._offsets[k]]
        return out.reshape(shape + tuple(self._item_shape))

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


# --------------------------------------------------------------------------------------------
# Dask tasks (module-level functions of plain arguments, so that workers can import them)
# --------------------------------------------------------------------------------------------
def _segment_file_task(task: dict) -> tuple[list[dict], list[dict]]:
    """Segment one file; sources made relative to the session's base folder."""
    from .audio.pipeline import segment_paths

    path, source = Path(task["path"]), task["source"]
    try:
        seg, err = segment_paths(path, params=task["segment"], annotations=task["annotations"],
                                 channel=task["channel"], n_jobs=1, chunk_s=task["chunk_s"])
    except VocalatentError as exc:
        return [], [{"file": source, "error": str(exc)}]
    seg["source"] = source
    return seg.to_dict("records"), [{"file": source, "error": e} for e in err["error"]]


def _levels_task(task: dict) -> tuple[np.ndarray, float]:
    """Band levels of frames ``[first, stop)`` of one long file (a time chunk of it)."""
    from .audio.segment import SegmentParams, band_levels

    return band_levels(task["path"], SegmentParams.from_dict(task["segment"]),
                       channel=task["channel"], frames=tuple(task["frames"]),
                       chunk_s=task["chunk_s"])


def _time_chunks(path: Path, seg_params, audio: Mapping, split_s: float | None
                 ) -> list[tuple[int, int]] | None:
    """Frame ranges of ~``split_s`` seconds when ``path`` is worth segmenting in time chunks:
    longer than ``split_s``, one channel, no annotation file (those are read, not segmented);
    None otherwise (or when its header cannot be read: the ordinary task reports that)."""
    from .audio.annotations import annotations_for
    from .audio.io import audio_info
    from .audio.segment import frame_count

    if split_s is None or audio["channel"] == "all":
        return None
    try:
        # no header read for files too small to be that long (1 kB/s is below any audio format
        # at >= 8 kHz, compressed or not): a manifest of many short files costs one stat each
        if path.stat().st_size < split_s * 1000:
            return None
        info = audio_info(path)
        if info.duration_s <= split_s or annotations_for(
                path, annotations=audio["annotations"], root=path.parent) is not None:
            return None
        n = frame_count(path, seg_params)
    except (VocalatentError, OSError):
        return None
    _, hop = seg_params.frame_geometry(info.sample_rate)
    per = max(1, int(round(split_s * info.sample_rate / hop)))
    return [(a, min(n, a + per)) for a in range(0, n, per)]


def _finish_time_chunks(path: Path, source: str, parts: list, seg_params, channel: int
                        ) -> tuple[list[dict], list[dict]]:
    """A long file's segment rows from its time chunks' band levels (as segment_paths gives)."""
    from .audio.io import audio_info
    from .audio.pipeline import SEGMENT_COLUMNS
    from .audio.segment import segments_from_levels

    try:
        info = audio_info(path)
        levels = np.concatenate([lv for lv, _ in parts])
        df = segments_from_levels(levels, max(pk for _, pk in parts), seg_params,
                                  sr=info.sample_rate, path=info.path)
    except VocalatentError as exc:
        return [], [{"file": source, "error": str(exc)}]
    df["label"] = ""
    df["segmented_by"] = "amplitude"
    df["source"] = source
    df["channel"] = int(channel) % info.n_channels
    df["sample_rate"] = info.sample_rate
    extra = [c for c in df.columns if c not in SEGMENT_COLUMNS]
    df = df[SEGMENT_COLUMNS + extra].sort_values("onset_s", kind="stable")
    return df.to_dict("records"), []


def _calibration_task(task: dict) -> list[tuple[str, np.ndarray]]:
    """Unclipped dB spectrograms of a few segments of one session, with the file each came
    from (for the level choice and the clipping range)."""
    from .audio.pipeline import spectrogram_task, spectrogram_tasks

    seg = pd.DataFrame(task["segments"])
    seg.index = np.arange(len(seg))
    tasks = spectrogram_tasks(seg, Path(task["base"]), task["spectrogram"], 256, return_db=True)
    out = []
    for t in tasks:
        _, x, err = spectrogram_task(t)
        if x is not None:
            out.append((t["source"], x))
    return out


def _store_task(task: dict) -> dict:
    """Build one session's syllable store from its segments; marker written last."""
    from .audio.pipeline import build_store

    sdir = Path(task["dir"])
    seg = _read_segments(sdir / "segments.csv")
    store, errs = build_store(task["base"], sdir / "syllables.h5", segment_params=task["segment"],
                              spectrogram_params=task["spectrogram"], segments=seg, n_jobs=1,
                              dtype=task["dtype"], reuse=True)
    n = len(store)
    store.close()
    seg_err = _read_errors(sdir / "segment_errors.csv")
    errors = pd.concat([seg_err[["file", "error"]],
                        errs.rename(columns={"source": "file"})[["file", "error"]]],
                       ignore_index=True)
    errors.insert(0, "session", task["session"])
    _write_csv(errors, sdir / "errors.csv")
    _write_json({"key": task["key"], "n_items": n, "n_failed_files": int(errors["file"].nunique())},
                sdir / "store.json")
    return {"n_items": n}


_MODEL_CACHE: dict[tuple[str, str, str], Any] = {}


def _worker_model(path: str, sha: str, device: str, memory_mb: float | None):
    """The model at ``path``, loaded once per worker process (keyed on its sha256)."""
    from .model import QLVM

    key = (path, sha, str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        model = QLVM.load(path, device=device)
        model.verbose = False
        _MODEL_CACHE[key] = model
    model = _MODEL_CACHE[key]
    if memory_mb is not None:
        model.memory_budget_mb = float(memory_mb)
    return model


class ItemRange:
    """Items ``start .. stop-1`` of a lazy array-like (e.g. a store's spectrograms), lazily.

    Indexing takes positions relative to ``start`` and reads only those rows.

    Parameters
    ----------
    array : array-like [shape=(N, ...)]
    start, stop : int
        ``0 <= start < stop <= N``.
    """

    def __init__(self, array, start: int, stop: int):
        n = len(array)
        if not 0 <= start < stop <= n:
            raise ParameterError(f"item range [{start}, {stop}) is not inside [0, {n})")
        self._array, self._start, self._stop = array, int(start), int(stop)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._stop - self._start,) + tuple(self._array.shape[1:])

    @property
    def dtype(self):
        return np.dtype(np.float32)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, idx):
        n = len(self)
        if isinstance(idx, (int, np.integer)):
            if not -n <= idx < n:
                raise IndexError(f"index {idx} is out of range for {n} items")
            return np.asarray(self._array[self._start + int(idx) % n], dtype=np.float32)
        if isinstance(idx, slice):
            idx = np.arange(n)[idx]
        flat, shape = item_indices(idx, n)
        out = np.asarray(self._array[flat + self._start], dtype=np.float32)
        return out.reshape(shape + tuple(self._array.shape[1:]))

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class _StoreRange:
    """The ``segments`` and ``spectrograms`` of items ``start .. stop-1`` of a store."""

    def __init__(self, store, start: int, stop: int):
        self.spectrograms = ItemRange(store.spectrograms, start, stop)
        self.segments = store.segments.iloc[start:stop].reset_index(drop=True)


#: Items per transform call in a batch embedding: the unit of its arithmetic. Item chunks are
#: whole numbers of blocks, so the values do not depend on how a session is split.
EMBED_BLOCK_ITEMS = 4096
_AGG = ("aggregate_posterior", "lattice_z", "block_sums")


def _embed_blocks(model, store, start: int, stop: int, metadata: dict, block: int):
    """Embed items ``[start, stop)`` block by block (blocks aligned on multiples of ``block``).

    Returns the per-item Dataset (blocks concatenated), the blocks' aggregate-posterior sums
    ``n_b * w_b`` (float64, shape (n_blocks, m)) and the first block's Dataset (for the
    lattice points and attributes)."""
    import xarray as xr

    from .workflow import project

    parts, sums = [], []
    for a in range(start, stop, block):
        b = min(stop, a + block)
        ds = project(model, _StoreRange(store, a, b), metadata=metadata)
        sums.append(ds["aggregate_posterior"].values.astype(np.float64) * (b - a))
        parts.append(ds)
    per_item = [p.drop_vars(["aggregate_posterior", "lattice_z"]) for p in parts]
    items = per_item[0] if len(per_item) == 1 else xr.concat(
        per_item, dim="item", data_vars="minimal", coords="minimal", compat="equals",
        join="exact", combine_attrs="override")
    return items, np.stack(sums), parts[0]


def _assemble(items, block_sums: np.ndarray, first):
    """A session's embedding from its per-item Dataset and its blocks' aggregate sums.

    The aggregate posterior is ``sum_b n_b w_b / N`` summed in block order (one block: its own
    ``w``), so a session split into chunks of whole blocks gives the one-task values."""
    n = int(items.sizes["item"])
    if len(block_sums) == 1:
        agg = first["aggregate_posterior"].values.astype(np.float64)
    else:
        total = np.zeros(block_sums.shape[1], dtype=np.float64)
        for row in block_sums:
            total += row
        agg = total / n
    ds = items.assign_coords(item=np.arange(n))
    ds = ds.assign(aggregate_posterior=("lattice_point", agg), lattice_z=first["lattice_z"])
    ds["aggregate_posterior"].attrs.update(first["aggregate_posterior"].attrs)
    for name in ds.variables:
        ds[name].encoding = {}
    return ds


def _embed_task(task: dict) -> dict:
    """Embed items ``[start, stop)`` of one session's store (``block`` items per transform).

    The whole session (``start == 0`` and ``stop`` = its size) is written to ``embedding.nc``
    and its marker; a chunk to ``embedding_parts/<start>-<stop>.nc`` (with its blocks'
    aggregate sums) and its own marker, so that a restarted run redoes only the chunks that
    were not finished.
    """
    from .data.store import SyllableStore
    from .embedding import write_embedding

    sdir = Path(task["dir"])
    model = _worker_model(task["model"], task["model_sha256"], task["device"], task["memory_mb"])
    store = SyllableStore(sdir / "syllables.h5")
    try:
        start, stop = int(task["start"]), int(task["stop"])
        whole = start == 0 and stop == len(store)
        items, sums, first = _embed_blocks(model, store, start, stop, task["metadata"],
                                           int(task["block"]))
    finally:
        store.close()
    n = int(items.sizes["item"])
    if whole:
        write_embedding(_assemble(items, sums, first), sdir / "embedding.nc")
        _write_json({"key": task["key"], "n_items": n}, sdir / "embedding.json")
    else:
        part = items.assign(block_sums=(("block", "lattice_point"), sums),
                            aggregate_posterior=first["aggregate_posterior"],
                            lattice_z=first["lattice_z"])
        path = _part_path(sdir, start, stop)
        write_embedding(part, path)
        _write_json({"key": task["key"], "n_items": n}, path.with_suffix(".json"))
    return {"n_items": n}


def _part_path(sdir: Path, start: int, stop: int) -> Path:
    return sdir / "embedding_parts" / f"{start:09d}-{stop:09d}.nc"


def _merge_parts(sdir: Path, ranges: list[tuple[int, int]], key: str) -> int:
    """Concatenate a session's embedded chunks (item order) into its embedding.nc."""
    import xarray as xr

    from .embedding import read_embedding, write_embedding

    parts = [read_embedding(_part_path(sdir, a, b)) for a, b in ranges]
    sums = np.concatenate([p["block_sums"].values for p in parts])
    items = xr.concat([p.drop_vars(list(_AGG)) for p in parts], dim="item",
                      data_vars="minimal", coords="minimal", compat="equals", join="exact",
                      combine_attrs="override")
    ds = _assemble(items, sums, parts[0])
    write_embedding(ds, sdir / "embedding.nc")
    n = int(ds.sizes["item"])
    _write_json({"key": key, "n_items": n, "parts": [list(r) for r in ranges]},
                sdir / "embedding.json")
    return n


# --------------------------------------------------------------------------------------------
# Dask clients
# --------------------------------------------------------------------------------------------
@contextmanager
def _dask_client(scheduler, cluster: str, workers: int | None,
                 cluster_options: Mapping[str, Any] | None) -> Iterator[Any]:
    from distributed import Client

    if scheduler is not None:
        if isinstance(scheduler, Client):
            yield scheduler
            return
        if not isinstance(scheduler, str):
            raise ParameterError(f"scheduler must be an address such as 'tcp://host:8786' or a "
                                 f"distributed.Client; got {scheduler!r}")
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ParameterError(f"cannot connect to the Dask scheduler at {scheduler!r} ({exc})") from None
        try:
            yield client
        finally:
            client.close()
        return
    opts = dict(cluster_options or {})
    if cluster == "local":
        from distributed import LocalCluster

        opts.setdefault("n_workers", workers or max(1, os.cpu_count() or 1))
        opts.setdefault("threads_per_worker", 1)
        opts.setdefault("processes", True)
        opts.setdefault("dashboard_address", None)
        # progress bars of many worker processes would interleave on the driver's terminal
        opts.setdefault("env", {"VOCALATENT_NO_PROGRESS": "1"})
        cl = LocalCluster(**opts)
    else:
        from .jobqueue import jobqueue_cluster

        with jobqueue_cluster(cluster, workers or 1, opts) as client:
            yield client
        return
    client = Client(cl)
    try:
        yield client
    finally:
        client.close()
        cl.close()


def _is_killed(exc: BaseException) -> bool:
    return type(exc).__name__ == "KilledWorker"


def _run_tasks(client, tasks: dict, desc: str) -> dict:
    """Run ``tasks`` ({name: (function, argument, key)}) on the cluster.

    Returns {name: (result, None)} or {name: (None, error text)}. A task whose worker died
    (Dask re-schedules it up to ``distributed.scheduler.allowed-failures`` times, then raises
    KilledWorker) may only have shared a worker with the task that crashed it; such tasks are
    run again one at a time, so that only a task that crashes its worker on its own is
    reported.
    """
    from distributed import as_completed

    if not tasks:
        return {}
    futures = {name: client.submit(fn, arg, key=key, pure=False, retries=0)
               for name, (fn, arg, key) in tasks.items()}
    names = {f.key: name for name, f in futures.items()}
    out: dict = {}
    killed: list = []
    bar = progress(total=len(futures), desc=desc, unit="task")
    try:
        for fut in as_completed(list(futures.values())):
            name = names[fut.key]
            try:
                out[name] = (fut.result(), None)
            except Exception as exc:  # noqa: BLE001 - a failed task is reported, others go on
                if _is_killed(exc) and len(tasks) > 1:
                    killed.append(name)
                else:
                    logger.warning("%s: %s failed: %s", name, desc, _error_text(exc))
                    out[name] = (None, _error_text(exc))
            fut.release()
            bar.update(1)
    finally:
        bar.close()
    for name in [n for n in tasks if n in killed]:  # in submission order
        fn, arg, key = tasks[name]
        logger.warning("%s: its worker died; running it again on its own", name)
        fut = client.submit(fn, arg, key=f"{key}-alone", pure=False, retries=0)
        try:
            out[name] = (fut.result(), None)
        except Exception as exc:  # noqa: BLE001
            text = _error_text(exc) + (" (also when run on its own)" if _is_killed(exc) else "")
            logger.warning("%s: %s failed: %s", name, desc, text)
            out[name] = (None, text)
        fut.release()
    return out


# --------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    out : pathlib.Path
        The output folder.
    sessions : pandas.DataFrame
        One row per session in manifest order: ``session``, ``status`` ("done" or "failed"),
        ``n_files``, ``n_failed_files``, ``n_items`` (syllables embedded), ``reference``
        (whether it trained the model).
    errors : pandas.DataFrame
        ``session``, ``file`` ("" for session-level failures), ``error``; also in
        ``OUT/errors.csv``.
    model_path : pathlib.Path or None
        The model the sessions were embedded with.
    embedding_path : pathlib.Path or None
        ``OUT/embedding.nc`` (None when nothing could be embedded).
    timings : dict
        Wall-clock seconds of each stage (``segment``, ``calibrate``, ``spectrograms``,
        ``train``, ``embed``, ``shutdown`` of the cluster, ``combine``) in this run; skipped
        work costs almost nothing.
    """

    out: Path
    sessions: pd.DataFrame
    errors: pd.DataFrame
    model_path: Path | None
    embedding_path: Path | None
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no file, session or stage failed."""
        return len(self.errors) == 0


# --------------------------------------------------------------------------------------------
# the run's state
# --------------------------------------------------------------------------------------------
def _audio_settings(cfg: Mapping) -> dict:
    audio = cfg.get("audio", {})
    channel = audio.get("channel", 0)
    return {"annotations": str(audio.get("annotations", "auto")),
            "channel": "all" if channel == "all" else int(channel),
            "chunk_s": float(audio.get("chunk_s", 60.0))}


def _model_spectrogram(model_path: Path) -> dict | None:
    """The spectrogram parameters a model was trained with: from its own metadata, else from
    ``preprocessing.json`` beside it; None when neither records them."""
    from .model import QLVM

    meta = getattr(QLVM.load(model_path, device="cpu"), "metadata_", None) or {}
    if meta.get("spectrogram_resolved"):
        return meta["spectrogram_resolved"]
    pre = _read_json(model_path.parent / "preprocessing.json") or {}
    return pre.get("spectrogram_resolved") or pre.get("spectrogram")


@dataclass
class SessionState:
    """One session's progress through the stages of a batch run.

    Attributes
    ----------
    session : Session
        The manifest entry.
    dir : pathlib.Path
        ``OUT/sessions/<id>``.
    metadata : dict
        ``session`` and the manifest's metadata columns: the item coordinates it adds.
    status : {"done", "failed"}
        "failed" once any stage failed for the whole session.
    n_items : int
        Syllables in its store (after the spectrogram stage).
    n_failed_files : int
        Files that could not be segmented or read.
    segment_key, store_key, embed_key : str
        The completion-marker keys of its stages ("" until computed).
    """

    session: Any
    dir: Path
    metadata: dict
    status: str = "done"
    n_items: int = 0
    n_failed_files: int = 0
    segment_key: str = ""
    store_key: str = ""
    embed_key: str = ""

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def usable(self) -> bool:
        """Not failed and has syllables."""
        return self.status != "failed" and self.n_items > 0


@dataclass
class BatchRun:
    """Everything a batch run's stages read and update: one object, passed from stage to stage.

    Made by :func:`plan_batch` (which validates every argument and touches no file); each
    stage function (:func:`segment_stage`, :func:`calibrate_stage`, :func:`store_stage`,
    :func:`train_stage`, :func:`embed_stage`, :func:`combine_stage`) reads what the stages
    before it wrote to ``out`` (through their completion markers), so a stage can be run —
    and resumed — on its own, e.g. ``embed_stage(run)`` after a crash during embedding.
    The Dask stages need ``run.client``.

    Attributes
    ----------
    manifest : SessionManifest
    out : pathlib.Path
    sessions : dict of str to SessionState
        In manifest order.
    reference : list of str
        The sessions that calibrate and train.
    cfg : dict
        The resolved configuration.
    seg_params, spec_params
        Segment and spectrogram parameters (``spec_params`` resolved by the calibration).
    model_path : pathlib.Path or None
        The model to embed with (given, or trained by :func:`train_stage`).
    errors : list of dict
        Stage- and session-level errors (``session``, ``file``, ``error``).
    timings : dict
        Seconds per stage.
    client : distributed.Client or None
    """

    manifest: SessionManifest
    out: Path
    sessions: dict
    reference: list
    cfg: dict
    seg_params: Any
    spec_params: Any
    audio: dict
    dtype: str = "float32"
    device: str = "auto"
    seed: int = 0
    calib_syllables: int = 500
    embed_memory_mb: float | None = None
    embed_chunk_items: int = 20480
    embed_block_items: int = EMBED_BLOCK_ITEMS
    split_file_s: float | None = 1800.0
    train_in_memory_mb: float = 2048.0
    model_path: Path | None = None
    given_model: bool = False
    errors: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    client: Any = None

    def fail(self, sid: str, error: str) -> None:
        """Mark a session failed (``sid`` "" for a run-level error) and record the error."""
        if sid:
            self.sessions[sid].status = "failed"
        self.errors.append({"session": sid, "file": "", "error": error})

    def _key(self, name: str, sid: str, i: int | str = "") -> str:
        return f"vl-{name}-{sid}-{i}-{self.token}" if i != "" else f"vl-{name}-{sid}-{self.token}"


def plan_batch(manifest: str | os.PathLike | SessionManifest, out: str | os.PathLike, *,
               pipeline: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
               overrides: Mapping[str, Any] | None = None,
               reference_sessions: Sequence[str] | None = None,
               model: str | os.PathLike | None = None, device: str = "auto",
               seed: int | None = None, dtype: str = "float32", calib_syllables: int = 500,
               embed_memory_mb: float | None = None, embed_chunk_items: int = 20480,
               embed_block_items: int = EMBED_BLOCK_ITEMS,
               split_file_s: float | None = 1800.0,
               train_in_memory_mb: float = 2048.0) -> BatchRun:
    """Validate a batch run's arguments and build its :class:`BatchRun` (no file is written).

    Parameters are those of :func:`run_batch`.
    """
    from .audio.segment import SegmentParams
    from .audio.spectrogram import SpectrogramParams
    from .workflow import resolve

    check_option("dtype", dtype, ["float32", "float16", "uint8"])
    check_positive("calib_syllables", calib_syllables, integer=True)
    check_positive("train_in_memory_mb", train_in_memory_mb, allow_zero=True)
    check_positive("embed_chunk_items", embed_chunk_items, integer=True)
    check_positive("embed_block_items", embed_block_items, integer=True)
    if split_file_s is not None:
        check_positive("split_file_s", split_file_s)
    if embed_memory_mb is not None:
        check_positive("embed_memory_mb", embed_memory_mb)
    seed = 0 if seed is None else int(seed)
    check_random_state(seed)
    sessions = manifest if isinstance(manifest, SessionManifest) else load_sessions(manifest)
    reference = check_reference(sessions, reference_sessions)
    cfg = resolve(pipeline=pipeline, config=config, overrides=overrides)
    seg_params = SegmentParams.from_dict(cfg.get("segment", {}))
    spec_params = SpectrogramParams.from_dict(cfg.get("spectrogram", {}))
    model_path = None if model is None else Path(model).resolve()
    if model_path is not None:
        if not model_path.is_file():
            raise DataError("no such model file", path=model_path)
        pre = _model_spectrogram(model_path)
        if pre is not None:
            spec_params = SpectrogramParams.from_dict(pre)
        elif not spec_params.calibrated:
            raise ParameterError(
                f"{model_path} has no preprocessing.json beside it, so the spectrogram scale it "
                "was trained with is unknown: set spec_min_db and spec_max_db in [spectrogram] "
                "of the configuration to the values used for training")
    out = Path(out).resolve()
    meta = sessions.metadata()
    states = {}
    for s in sessions:
        md = {"session": s.id, **{c: (v.item() if hasattr(v, "item") else v)
                                  for c, v in meta.loc[s.id].items()}}
        states[s.id] = SessionState(session=s, dir=out / "sessions" / s.id, metadata=md)
    return BatchRun(manifest=sessions, out=out, sessions=states, reference=reference, cfg=cfg,
                    seg_params=seg_params, spec_params=spec_params, audio=_audio_settings(cfg),
                    dtype=dtype, device=device, seed=seed, calib_syllables=calib_syllables,
                    embed_memory_mb=embed_memory_mb, embed_chunk_items=int(embed_chunk_items),
                    embed_block_items=int(embed_block_items),
                    split_file_s=None if split_file_s is None else float(split_file_s),
                    train_in_memory_mb=train_in_memory_mb, model_path=model_path,
                    given_model=model_path is not None)


# --------------------------------------------------------------------------------------------
# the stages
# --------------------------------------------------------------------------------------------
def segment_stage(run: BatchRun) -> None:
    """Segment every file of every session whose ``segments.json`` marker is stale (one Dask
    task per file; a file longer than ``run.split_file_s`` seconds is split into time chunks
    whose band levels are computed by separate tasks and finished on the driver — the same
    segments, bit for bit, as one task); writes ``segments.csv``, ``segment_errors.csv`` and
    the marker."""
    from .audio.pipeline import empty_segments

    tasks: dict = {}
    split: dict = {}
    for st in run.sessions.values():
        s = st.session
        st.dir.mkdir(parents=True, exist_ok=True)
        st.segment_key = json_key({"version": __version__, "segment": run.seg_params.to_dict(),
                                   "audio": run.audio, "base": str(s.base),
                                   "files": s.file_state()})
        if _marker_ok(st.dir / "segments.json", st.segment_key, st.dir / "segments.csv"):
            continue
        (st.dir / "store.json").unlink(missing_ok=True)
        for i, (f, src) in enumerate(zip(s.files, s.sources())):
            chunks = _time_chunks(Path(f), run.seg_params, run.audio, run.split_file_s)
            if chunks and len(chunks) > 1:
                split[(s.id, i)] = len(chunks)
                for k, frames in enumerate(chunks):
                    tasks[(s.id, i, k)] = (
                        _levels_task, {"path": str(f), "segment": run.seg_params.to_dict(),
                                       "channel": run.audio["channel"], "frames": list(frames),
                                       "chunk_s": run.audio["chunk_s"]},
                        run._key("levels", s.id, f"{i}-{k}"))
                continue
            tasks[(s.id, i)] = (
                _segment_file_task,
                {"path": str(f), "source": src, "segment": run.seg_params.to_dict(), **run.audio},
                run._key("segment", s.id, i))
    results = _run_tasks(run.client, tasks, "segmenting")
    for (sid, i), n_chunks in split.items():
        s = run.sessions[sid].session
        parts = [results.pop((sid, i, k)) for k in range(n_chunks)]
        bad = next((err for _, err in parts if err is not None), None)
        if bad is not None:
            results[(sid, i)] = (None, bad)
        else:
            results[(sid, i)] = (_finish_time_chunks(Path(s.files[i]), s.sources()[i],
                                                     [res for res, _ in parts], run.seg_params,
                                                     run.audio["channel"]), None)
    for st in run.sessions.values():
        s = st.session
        if not any((s.id, i) in results for i in range(len(s.files))):
            continue
        rows, errs = [], []
        for i, src in enumerate(s.sources()):
            res, err = results[(s.id, i)]
            if err is not None:
                errs.append({"file": src, "error": err})
            else:
                rows.extend(res[0])
                errs.extend(res[1])
        if rows:
            segs = pd.DataFrame(rows).sort_values(["source", "channel", "onset_s"], kind="stable")
        else:
            segs = empty_segments()
        _write_csv(segs, st.dir / "segments.csv")
        _write_csv(pd.DataFrame(errs, columns=["file", "error"]), st.dir / "segment_errors.csv")
        _write_json({"key": st.segment_key, "n_segments": len(segs)}, st.dir / "segments.json")


def _segments(run: BatchRun, sid: str) -> pd.DataFrame | None:
    """A session's segments when its segment stage is complete, else None."""
    st = run.sessions[sid]
    if not st.segment_key or not _marker_ok(st.dir / "segments.json", st.segment_key,
                                            st.dir / "segments.csv"):
        return None
    return _read_segments(st.dir / "segments.csv")


def _ensure_segment_keys(run: BatchRun) -> None:
    for st in run.sessions.values():
        if not st.segment_key:
            s = st.session
            st.segment_key = json_key({"version": __version__,
                                       "segment": run.seg_params.to_dict(), "audio": run.audio,
                                       "base": str(s.base), "files": s.file_state()})


def calibrate_stage(run: BatchRun) -> None:
    """Calibrate the spectrogram clipping range once, from a seeded sample of the reference
    sessions' syllables: ``calib_syllables`` spread over their files, at least 4 from each file
    (the level choice needs every file's own peak and floor). ``level_ranges`` then chooses a
    shared range or per-recording ranges of one width ``W`` (``[spectrogram] level``); with
    per-recording ranges ``run.spec_params`` carries ``level="recording"`` and ``W``, and the
    spectrogram stage clips each file of every session ``W`` dB below its own peak. Skipped when
    the range is fixed (a given model or the configuration) or ``calibration.json`` matches.
    Sets ``run.spec_params``."""
    from .audio.spectrogram import SpectrogramParams, level_ranges, resolve_level_params

    if run.spec_params.calibrated:
        return
    _ensure_segment_keys(run)
    spec = run.spec_params
    key = json_key({"segments": [run.sessions[r].segment_key for r in run.reference],
                    "seed": run.seed, "n": run.calib_syllables, "spectrogram": spec.to_dict(),
                    "sampling": "per-file"})
    m = _read_json(run.out / "calibration.json")
    if m and m.get("key") == key:
        run.spec_params = SpectrogramParams.from_dict(m["spectrogram"])
        return
    segments = {r: _segments(run, r) for r in run.reference}
    missing = [r for r, seg in segments.items() if seg is None]
    if missing:
        raise DataError(f"cannot calibrate: the segments of {', '.join(missing)} are not there "
                        "(run the segment stage first)", path=run.out)
    counts = np.array([len(segments[r]) for r in run.reference])
    total = int(counts.sum())
    if total == 0:
        raise DataError("no syllables were found in the reference sessions "
                        f"({', '.join(run.reference)}), so the spectrogram range cannot be "
                        "calibrated")
    rng = np.random.default_rng(run.seed)
    groups = {r: list(segments[r].groupby("source", sort=True).indices.values())
              for r in run.reference if len(segments[r])}
    per_file = max(4, run.calib_syllables // max(sum(len(g) for g in groups.values()), 1))
    tasks = {}
    for sid in run.reference:
        if sid not in groups:
            continue
        local = np.sort(np.concatenate([
            g if g.size <= per_file else rng.choice(g, size=per_file, replace=False)
            for g in groups[sid]]))
        tasks[sid] = (_calibration_task,
                      {"segments": segments[sid].iloc[local].to_dict("records"),
                       "base": str(run.sessions[sid].session.base),
                       "spectrogram": spec.to_dict()},
                      run._key("calibrate", sid))
    results = _run_tasks(run.client, tasks, "calibrating")
    by_file: dict = {}
    for sid in run.reference:
        if sid in results and results[sid][0] is not None:
            for source, x in results[sid][0]:
                by_file.setdefault(f"{sid}/{source}", []).append(x)
    if not by_file:
        raise DataError("no calibration syllable could be read from the reference sessions; "
                        "see the warnings above")
    ranges, chosen = level_ranges(by_file, spec)
    run.spec_params = resolve_level_params(spec, ranges, chosen)
    peaks = [hi for _, hi in ranges.values()]
    if chosen == "recording":
        logger.info("spectrogram levels: the %d reference recordings' peaks spread over %.1f dB "
                    "(%.1f to %.1f dBFS); each file is clipped %.1f dB below its own peak",
                    len(ranges), max(peaks) - min(peaks), min(peaks), max(peaks),
                    run.spec_params.level_width_db)
    _write_json({"key": key, "spectrogram": run.spec_params.to_dict(), "level": chosen,
                 "reference_ranges": {k: list(v) for k, v in ranges.items()}},
                run.out / "calibration.json")


def store_stage(run: BatchRun) -> None:
    """Build every session's syllable store whose ``store.json`` marker is stale (one Dask
    task per session); sets each session's ``n_items`` / ``status``."""
    _ensure_segment_keys(run)
    tasks = {}
    for st in run.sessions.values():
        st.store_key = json_key({"segments": st.segment_key, "dtype": run.dtype,
                                 "spectrogram": run.spec_params.to_dict()})
        if _marker_ok(st.dir / "store.json", st.store_key, st.dir / "syllables.h5",
                      st.dir / "errors.csv"):
            continue
        if _segments(run, st.id) is None:
            run.fail(st.id, "spectrograms: the session's segments are not there (its segment "
                     "stage did not finish)")
            continue
        (st.dir / "embedding.json").unlink(missing_ok=True)
        tasks[st.id] = (
            _store_task, {"session": st.id, "dir": str(st.dir), "base": str(st.session.base),
                          "segment": run.seg_params.to_dict(),
                          "spectrogram": run.spec_params.to_dict(), "dtype": run.dtype,
                          "key": st.store_key},
            run._key("store", st.id))
    for sid, (res, err) in _run_tasks(run.client, tasks, "spectrograms").items():
        if err is not None:
            run.fail(sid, err)
    for st in run.sessions.values():
        m = _read_json(st.dir / "store.json")
        if st.status != "failed" and m and m.get("key") == st.store_key:
            st.n_items = int(m["n_items"])
            st.n_failed_files = int(m["n_failed_files"])
            if st.n_items == 0 and st.n_failed_files == len(st.session.files):
                st.status = "failed"
        else:
            st.status = "failed"


def train_stage(run: BatchRun) -> None:
    """Train the map on the driver on the usable reference sessions (or reuse a complete earlier
    training; nothing to do with a given model). Sets ``run.model_path`` (None on failure).

    The reference stores are read through :class:`ConcatSpectrograms`; when they fit in
    ``train_in_memory_mb`` they are read into memory once (random minibatches from
    gzip-compressed HDF5 chunks are slow), otherwise training reads them lazily.
    """
    from .data.store import SyllableStore
    from .workflow import train

    if run.given_model:
        return
    run.model_path = None
    usable = [r for r in run.reference if run.sessions[r].usable]
    if not usable:
        run.fail("", f"training: no reference session has syllables ({', '.join(run.reference)})")
        return
    mdir = run.out / "model"
    key = json_key({"stores": [run.sessions[r].store_key for r in usable],
                    "model": run.cfg.get("model", {}), "seed": run.seed, "version": __version__})
    if _marker_ok(mdir / "model.json", key, mdir / "model.pt", mdir / "preprocessing.json"):
        logger.info("reusing the trained model %s", mdir / "model.pt")
        run.model_path = mdir / "model.pt"
        return
    (mdir / "model.json").unlink(missing_ok=True)
    spec = run.spec_params.to_dict()
    preprocessing = {"segment": run.seg_params.to_dict(), "spectrogram": spec,
                     "spectrogram_resolved": spec, "reference_sessions": usable}
    stores = [SyllableStore(run.sessions[r].dir / "syllables.h5") for r in usable]
    try:
        X = ConcatSpectrograms([st.spectrograms for st in stores])
        if X.shape[0] * int(np.prod(X.shape[1:])) * 4 <= run.train_in_memory_mb * 2**20:
            X = np.asarray(X)
        logger.info("training on %d syllables from %d session(s)", len(X), len(stores))
        try:
            train(X, run.cfg, out_dir=mdir, device=run.device, seed=run.seed, data_key=key,
                  metadata=preprocessing)
        except VocalatentError as exc:
            run.fail("", f"training: {exc}")
            return
    finally:
        for st in stores:
            st.close()
    _write_json(preprocessing, mdir / "preprocessing.json")
    _write_json({"key": key, "reference_sessions": usable}, mdir / "model.json")
    run.model_path = mdir / "model.pt"


def item_chunks(n_items: int, chunk_items: int, *, block: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges covering ``n_items`` in order: chunks of whole blocks of
    ``block`` items (at most ``max(block, chunk_items)`` items), nearly equal in size.

    Parameters
    ----------
    n_items, chunk_items : int
    block : int, default=1
        Every chunk but the last is a multiple of it (the embedding's transform blocks).
    """
    check_positive("chunk_items", chunk_items, integer=True)
    check_positive("block", block, integer=True)
    if n_items <= 0:
        return []
    n_blocks = -(-n_items // block)
    per = max(1, chunk_items // block)
    k = -(-n_blocks // per)
    edges = np.minimum(np.linspace(0, n_blocks, k + 1).round().astype(int) * block, n_items)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def embed_stage(run: BatchRun) -> list[str]:
    """Embed every usable session whose ``embedding.json`` marker is stale.

    A session of up to ``embed_chunk_items`` items is one Dask task; a larger one is split
    into item chunks (whole ``embed_block_items`` blocks) run as separate tasks across the
    workers (each worker loads the model once), whose parts are merged — in item order — into
    the session's ``embedding.nc``, value for value what one task writes. Every
    part has its own marker, so a restarted run redoes only unfinished parts. Returns the ids
    of the sessions embedded (now or earlier).
    """
    if run.model_path is None:
        return []
    sha = file_sha256(run.model_path)
    tasks, chunked = {}, {}
    for st in run.sessions.values():
        if not st.usable:
            continue
        st.embed_key = json_key({"store": st.store_key, "model": sha, "metadata": st.metadata,
                                 "block": run.embed_block_items})
        if _marker_ok(st.dir / "embedding.json", st.embed_key, st.dir / "embedding.nc"):
            continue
        base = {"dir": str(st.dir), "model": str(run.model_path), "model_sha256": sha,
                "device": run.device, "memory_mb": run.embed_memory_mb,
                "metadata": st.metadata, "block": run.embed_block_items}
        ranges = item_chunks(st.n_items, run.embed_chunk_items, block=run.embed_block_items)
        if len(ranges) == 1:
            tasks[(st.id, 0)] = (_embed_task, {**base, "start": 0, "stop": st.n_items,
                                               "key": st.embed_key},
                                 run._key("embed", st.id))
            continue
        chunked[st.id] = ranges
        for a, b in ranges:
            key = json_key({"session": st.embed_key, "range": [a, b]})
            path = _part_path(st.dir, a, b)
            if _marker_ok(path.with_suffix(".json"), key, path):
                continue
            tasks[(st.id, a)] = (_embed_task, {**base, "start": a, "stop": b, "key": key},
                                 run._key("embed", st.id, a))
    for (sid, _), (res, err) in _run_tasks(run.client, tasks, "embedding").items():
        if err is not None and run.sessions[sid].status != "failed":
            run.fail(sid, err)
    for sid, ranges in chunked.items():
        st = run.sessions[sid]
        if st.status == "failed":
            continue
        _merge_parts(st.dir, ranges, st.embed_key)
        import shutil

        shutil.rmtree(st.dir / "embedding_parts", ignore_errors=True)
    return [st.id for st in run.sessions.values() if st.embed_key and st.status != "failed"]


def combine_stage(run: BatchRun, embedded: Sequence[str]) -> BatchResult:
    """Concatenate the embedded sessions (manifest order) into ``OUT/embedding.nc``; write
    ``OUT/sessions.csv`` and ``OUT/errors.csv``; return the :class:`BatchResult`."""
    embedded = [sid for sid in run.sessions if sid in set(embedded)]
    embedding_path = None
    if embedded:
        embedding_path = _combine(run.out, [run.sessions[sid].dir / "embedding.nc"
                                            for sid in embedded],
                                  reference=run.reference, model_path=run.model_path)
    else:
        (run.out / "embedding.nc").unlink(missing_ok=True)
    errors = _gather_errors(run)
    table = pd.DataFrame([{"session": st.id, "status": st.status,
                           "n_files": len(st.session.files),
                           "n_failed_files": int(errors.loc[(errors["session"] == st.id) &
                                                            (errors["file"] != ""), "file"].nunique()),
                           "n_items": int(st.n_items) if st.id in embedded else 0,
                           "reference": st.id in run.reference}
                          for st in run.sessions.values()])
    _write_csv(errors, run.out / "errors.csv")
    _write_csv(table, run.out / "sessions.csv")
    return BatchResult(out=run.out, sessions=table, errors=errors, model_path=run.model_path,
                       embedding_path=embedding_path, timings=run.timings)


def _timed(run: BatchRun, stage: str, fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(run, *args)
    finally:
        run.timings[stage] = time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def run_batch(manifest: str | os.PathLike | SessionManifest, out: str | os.PathLike, *,
              pipeline: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
              overrides: Mapping[str, Any] | None = None, scheduler=None, cluster: str = "local",
              workers: int | None = None, cluster_options: Mapping[str, Any] | None = None,
              reference_sessions: Sequence[str] | None = None,
              model: str | os.PathLike | None = None, device: str = "auto",
              seed: int | None = None, dtype: str = "float32", calib_syllables: int = 500,
              embed_memory_mb: float | None = None, embed_chunk_items: int = 20480,
              embed_block_items: int = EMBED_BLOCK_ITEMS,
              split_file_s: float | None = 1800.0,
              train_in_memory_mb: float = 2048.0) -> BatchResult:
    """Preprocess every session on Dask, train one QLVM (or use ``model``), embed every syllable.

    The run is :func:`plan_batch`, then the stages :func:`segment_stage`,
    :func:`calibrate_stage`, :func:`store_stage`, :func:`train_stage`, :func:`embed_stage`
    and :func:`combine_stage` over one :class:`BatchRun`, under the output folder's lock.

    Parameters
    ----------
    manifest : path-like or SessionManifest
        A session manifest (CSV or TOML; see :mod:`vocalatent.sessions`).
    out : path-like
        Output folder (created). Layout: ``sessions/<id>/{segments.csv, syllables.h5,
        errors.csv, embedding.nc}``, ``model/{model.pt, preprocessing.json}``,
        ``embedding.nc``, ``sessions.csv``, ``errors.csv``.
    pipeline, config : str or path-like, optional
        Pipeline preset (name or TOML) and a user TOML file, as in
        :func:`vocalatent.config.resolve_config`; the ``[audio]``, ``[segment]``,
        ``[spectrogram]`` and ``[model]`` tables are used.
    overrides : mapping, optional
        Nested tables overriding the configuration (e.g. ``{"model": {"max_epochs": 3}}``).
    scheduler : str or distributed.Client, optional
        Address of a running Dask scheduler (``"tcp://host:8786"``) or a connected client; the
        cluster is then the caller's and is left running.
    cluster : {"local", "slurm", "pbs"}, default="local"
        Without ``scheduler``: a :class:`distributed.LocalCluster` of worker processes
        (one thread each), or dask-jobqueue ``SLURMCluster``/``PBSCluster`` worker jobs
        (optional dependency, :mod:`vocalatent.jobqueue`) configured by ``cluster_options``
        and Dask's jobqueue configuration.
    workers : int, optional
        Local worker processes (default: one per CPU core), or jobs to submit for
        SLURM/PBS (default 1).
    cluster_options : mapping, optional
        For SLURM/PBS the keys of :data:`vocalatent.jobqueue.CLUSTER_KEYS` (``queue``,
        ``account``, ``cores``, ``memory``, ``walltime``, ``job_extra_directives``,
        ``start_timeout``, ...; checked); for the local cluster, keyword arguments of
        LocalCluster (e.g. ``{"memory_limit": "4GB"}``).
    reference_sessions : sequence of str, optional
        Train on these sessions only (and calibrate the spectrogram range on them); every
        session is embedded. Default: all sessions.
    model : path-like, optional
        A trained model (``model.pt``): no training; sessions are projected into its map with
        the spectrogram parameters it was trained with (``preprocessing.json`` beside it, or a
        fixed ``spec_min_db``/``spec_max_db`` in the configuration).
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Device for training (on the driver) and for embedding (on each worker).
    seed : int, optional
        Seeds calibration sampling and training. None means 0, so that a rerun reproduces
        (and can resume) the same run.
    dtype : {"float32", "float16", "uint8"}, default="float32"
        On-disk type of the session stores.
    calib_syllables : int, default=500
        Syllables drawn (over the reference sessions) to calibrate the clipping range.
    embed_memory_mb : float, optional
        Working-memory bound of one embedding task (the model's ``memory_budget_mb``,
        default 512 MB); the task's output is ~100 bytes per item on top.
    embed_chunk_items : int, default=20480
        A session with more items is embedded as several tasks (chunks) of about this many
        items — a whole number of ``embed_block_items`` blocks — spread over the workers.
    embed_block_items : int, default=4096
        Items per transform call: every session is embedded block by block, and its
        aggregate posterior summed block by block in item order, so a session split into
        chunks gives exactly (value for value) the values of one task.
    split_file_s : float or None, default=1800
        A recording longer than this (seconds; one channel, no annotation file) is segmented
        in time chunks of about this length by separate tasks, finished on the driver: the
        same segments, bit for bit, as one task. None: one task per file always.
    train_in_memory_mb : float, default=2048
        Reference spectrograms up to this size are read into memory for training; larger
        sets are read lazily from the session stores.

    Returns
    -------
    BatchResult
        Per-session status and the errors; ``result.ok`` is False when anything failed.

    Raises
    ------
    OutputLockedError
        Another run is writing to ``out`` (also known as ``BatchLockedError``).
    ClusterStartError
        SLURM refuses the worker jobs, or none started within ``start_timeout``.
    DataError, ParameterError
        Invalid manifest, configuration, cluster options or model.
    """
    check_option("cluster", cluster, CLUSTERS)
    if workers is not None:
        check_positive("workers", workers, integer=True)
    if scheduler is not None and cluster != "local":
        raise ParameterError(f"give either scheduler (an address) or cluster={cluster!r}, not both")
    if cluster in ("slurm", "pbs") and cluster_options:
        from .jobqueue import check_cluster_options

        cluster_options = check_cluster_options(cluster_options)
    run = plan_batch(manifest, out, pipeline=pipeline, config=config, overrides=overrides,
                     reference_sessions=reference_sessions, model=model, device=device,
                     seed=seed, dtype=dtype, calib_syllables=calib_syllables,
                     embed_memory_mb=embed_memory_mb, embed_chunk_items=embed_chunk_items,
                     embed_block_items=embed_block_items, split_file_s=split_file_s,
                     train_in_memory_mb=train_in_memory_mb)
    with output_lock(run.out, what="vocalatent batch"):
        t0 = time.perf_counter()
        with _dask_client(scheduler, cluster, workers, cluster_options) as client:
            run.client = client
            run.timings["cluster_start"] = time.perf_counter() - t0
            _timed(run, "segment", segment_stage)
            _timed(run, "calibrate", calibrate_stage)
            if run.spec_params.fixed_range:
                logger.info("spectrogram range %.1f to %.1f dBFS", run.spec_params.spec_min_db,
                            run.spec_params.spec_max_db)
            else:  # a model trained with per-recording ranges: each file gets its own
                logger.info("spectrogram range per recording, %.1f dB below each file's peak",
                            run.spec_params.level_width_db)
            _timed(run, "spectrograms", store_stage)
            _timed(run, "train", train_stage)
            embedded = _timed(run, "embed", embed_stage)
            t0 = time.perf_counter()
        run.client = None
        run.timings["shutdown"] = time.perf_counter() - t0
        result = _timed(run, "combine", combine_stage, embedded)
    if len(result.errors):
        logger.warning("%d error(s); see %s", len(result.errors), run.out / "errors.csv")
    logger.info("stage times (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in run.timings.items()))
    return result


def _combine(out: Path, paths: list[Path], *, reference, model_path) -> Path:
    """Concatenate the per-session embeddings (manifest order) into OUT/embedding.nc."""
    import xarray as xr

    from .embedding import read_embedding, write_embedding

    parts = [read_embedding(p) for p in paths]
    ds = xr.concat(parts, dim="item", data_vars="all", coords="different", compat="equals",
                   join="outer", combine_attrs="override")
    ds = ds.assign_coords(item=np.arange(ds.sizes["item"]))
    for name in ds.variables:
        # the encoding read from the first file (e.g. dtype <U6 for a string coordinate)
        # would otherwise truncate longer strings of later sessions on writing
        ds[name].encoding = {}
    ds.attrs["batch_sessions"] = json.dumps([str(p.parent.name) for p in paths])
    ds.attrs["batch_reference_sessions"] = json.dumps(list(reference))
    ds.attrs["batch_model"] = str(model_path)
    return write_embedding(ds, out / "embedding.nc")


def _gather_errors(run: BatchRun) -> pd.DataFrame:
    rows = []
    for st in run.sessions.values():
        e = _read_errors(st.dir / "errors.csv")
        if not len(e) and not (st.dir / "store.json").is_file():
            e = _read_errors(st.dir / "segment_errors.csv")
            if len(e):
                e.insert(0, "session", st.id)
        rows.extend(e[ERROR_COLUMNS].to_dict("records") if len(e) else [])
        rows.extend(r for r in run.errors if r["session"] == st.id)
    rows.extend(r for r in run.errors if r["session"] == "")
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)
