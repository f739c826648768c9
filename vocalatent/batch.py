"""Batch runs over experiment sessions on Dask: preprocess, train one map, embed everything.

:func:`run_batch` takes a session manifest (:mod:`vocalatent.sessions`) and an output folder
and runs five stages; the embarrassingly parallel ones run as Dask tasks (a local cluster of
processes by default, an existing scheduler, or a SLURM/PBS cluster through dask-jobqueue):

1. **segment** (one task per audio file) → ``OUT/sessions/<id>/segments.csv``;
2. **calibrate** the spectrogram clipping range once for the whole batch (a fixed sample of
   syllables drawn over the reference sessions; skipped when the range is given) → every
   session's spectrograms share one scale, so one map can hold them all;
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

__all__ = ["BatchLockedError", "BatchResult", "ConcatSpectrograms", "run_batch"]

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


def _calibration_task(task: dict) -> list[np.ndarray]:
    """Unclipped dB spectrograms of a few segments of one session (for the shared range)."""
    from .audio.pipeline import spectrogram_task, spectrogram_tasks

    seg = pd.DataFrame(task["segments"])
    seg.index = np.arange(len(seg))
    tasks = spectrogram_tasks(seg, Path(task["base"]), task["spectrogram"], 256, return_db=True)
    out = []
    for t in tasks:
        _, x, err = spectrogram_task(t)
        if x is not None:
            out.append(x)
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


def _embed_task(task: dict) -> dict:
    """Project one session's store into the map; write its embedding.nc, then the marker."""
    from .data.store import SyllableStore
    from .embedding import write_embedding
    from .workflow import project

    sdir = Path(task["dir"])
    model = _worker_model(task["model"], task["model_sha256"], task["device"], task["memory_mb"])
    store = SyllableStore(sdir / "syllables.h5")
    try:
        ds = project(model, store, metadata=task["metadata"])
    finally:
        store.close()
    write_embedding(ds, sdir / "embedding.nc")
    _write_json({"key": task["key"], "n_items": int(ds.sizes["item"])}, sdir / "embedding.json")
    return {"n_items": int(ds.sizes["item"])}


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
        try:
            import dask_jobqueue
        except ImportError:
            raise ParameterError(f"cluster={cluster!r} needs the dask-jobqueue package "
                                 "(pip install dask-jobqueue); see docs/batch.md") from None
        cls = dask_jobqueue.SLURMCluster if cluster == "slurm" else dask_jobqueue.PBSCluster
        cl = cls(**opts)
        cl.scale(jobs=workers or 1)
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
# the run
# --------------------------------------------------------------------------------------------
def _audio_settings(cfg: Mapping) -> dict:
    audio = cfg.get("audio", {})
    channel = audio.get("channel", 0)
    return {"annotations": str(audio.get("annotations", "auto")),
            "channel": "all" if channel == "all" else int(channel),
            "chunk_s": float(audio.get("chunk_s", 60.0))}


def _lap(timings: dict, stage: str, since: float) -> float:
    now = time.perf_counter()
    timings[stage] = now - since
    return now


def _model_spectrogram(model_path: Path) -> dict | None:
    """The spectrogram parameters a model was trained with: from its own metadata, else from
    ``preprocessing.json`` beside it; None when neither records them."""
    from .model import QLVM

    meta = getattr(QLVM.load(model_path, device="cpu"), "metadata_", None) or {}
    if meta.get("spectrogram_resolved"):
        return meta["spectrogram_resolved"]
    pre = _read_json(model_path.parent / "preprocessing.json") or {}
    return pre.get("spectrogram_resolved") or pre.get("spectrogram")


def run_batch(manifest: str | os.PathLike | SessionManifest, out: str | os.PathLike, *,
              pipeline: str | os.PathLike | None = None, config: str | os.PathLike | None = None,
              overrides: Mapping[str, Any] | None = None, scheduler=None, cluster: str = "local",
              workers: int | None = None, cluster_options: Mapping[str, Any] | None = None,
              reference_sessions: Sequence[str] | None = None,
              model: str | os.PathLike | None = None, device: str = "auto",
              seed: int | None = None, dtype: str = "float32", calib_syllables: int = 500,
              embed_memory_mb: float | None = None,
              train_in_memory_mb: float = 2048.0) -> BatchResult:
    """Preprocess every session on Dask, train one QLVM (or use ``model``), embed every syllable.

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
        (one thread each), or a dask-jobqueue ``SLURMCluster``/``PBSCluster`` (optional
        dependency) configured by ``cluster_options`` and Dask's jobqueue configuration.
    workers : int, optional
        Local worker processes (default: one per CPU core), or jobs to submit for
        SLURM/PBS (default 1).
    cluster_options : mapping, optional
        Keyword arguments for the cluster class (e.g. ``{"cores": 8, "memory": "32GB",
        "walltime": "02:00:00", "account": "lab"}`` for SLURM, or ``{"memory_limit": "4GB"}``
        for the local cluster).
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
    train_in_memory_mb : float, default=2048
        Reference spectrograms up to this size are read into memory for training; larger
        sets are read lazily from the session stores.

    Returns
    -------
    BatchResult
        Per-session status and the errors; ``result.ok`` is False when anything failed.

    Raises
    ------
    BatchLockedError
        Another run is writing to ``out``.
    DataError, ParameterError
        Invalid manifest, configuration or model.
    """
    from .audio.segment import SegmentParams
    from .audio.spectrogram import SpectrogramParams, calibrate_spectrogram_params
    from .workflow import resolve

    check_option("cluster", cluster, CLUSTERS)
    check_option("dtype", dtype, ["float32", "float16", "uint8"])
    check_positive("calib_syllables", calib_syllables, integer=True)
    check_positive("train_in_memory_mb", train_in_memory_mb, allow_zero=True)
    if embed_memory_mb is not None:
        check_positive("embed_memory_mb", embed_memory_mb)
    if workers is not None:
        check_positive("workers", workers, integer=True)
    if scheduler is not None and cluster != "local":
        raise ParameterError(f"give either scheduler (an address) or cluster={cluster!r}, not both")
    seed = 0 if seed is None else int(seed)
    check_random_state(seed)
    sessions = manifest if isinstance(manifest, SessionManifest) else load_sessions(manifest)
    reference = check_reference(sessions, reference_sessions)
    cfg = resolve(pipeline=pipeline, config=config, overrides=overrides)
    seg_params = SegmentParams.from_dict(cfg.get("segment", {}))
    spec_params = SpectrogramParams.from_dict(cfg.get("spectrogram", {}))
    audio = _audio_settings(cfg)
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

    with output_lock(out, what="vocalatent batch"):
        state = {s.id: {"status": "done", "n_items": 0, "errors": []} for s in sessions}
        sdirs = {s.id: out / "sessions" / s.id for s in sessions}
        for d in sdirs.values():
            d.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        run_errors: list[dict] = []
        timings: dict[str, float] = {}
        with _dask_client(scheduler, cluster, workers, cluster_options) as client:
            # ---------------------------------------------------------------- 1. segment
            clock = time.perf_counter()
            seg_keys = {}
            tasks: dict = {}
            for s in sessions:
                seg_keys[s.id] = json_key({"version": __version__, "segment": seg_params.to_dict(),
                                          "audio": audio, "base": str(s.base),
                                          "files": s.file_state()})
                if _marker_ok(sdirs[s.id] / "segments.json", seg_keys[s.id],
                              sdirs[s.id] / "segments.csv"):
                    continue
                (sdirs[s.id] / "store.json").unlink(missing_ok=True)
                for i, (f, src) in enumerate(zip(s.files, s.sources())):
                    tasks[(s.id, i)] = (
                        _segment_file_task,
                        {"path": str(f), "source": src, "segment": seg_params.to_dict(), **audio},
                        f"vl-segment-{s.id}-{i}-{token}")
            results = _run_tasks(client, tasks, "segmenting")
            for s in sessions:
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
                segs = pd.DataFrame(rows)
                if rows:
                    segs = segs.sort_values(["source", "channel", "onset_s"], kind="stable")
                else:
                    from .audio.pipeline import empty_segments
                    segs = empty_segments()
                _write_csv(segs, sdirs[s.id] / "segments.csv")
                _write_csv(pd.DataFrame(errs, columns=["file", "error"]),
                           sdirs[s.id] / "segment_errors.csv")
                _write_json({"key": seg_keys[s.id], "n_segments": len(segs)},
                            sdirs[s.id] / "segments.json")
            segments = {s.id: _read_segments(sdirs[s.id] / "segments.csv") for s in sessions}

            clock = _lap(timings, "segment", clock)
            # ---------------------------------------------------------------- 2. calibrate
            if not spec_params.calibrated:
                spec_params = _calibrate(client, sessions, reference, segments, seg_keys,
                                         spec_params, calib_syllables, seed, out, token,
                                         calibrate_spectrogram_params)
            logger.info("spectrogram range %.1f to %.1f dBFS", spec_params.spec_min_db,
                        spec_params.spec_max_db)

            clock = _lap(timings, "calibrate", clock)
            # ---------------------------------------------------------------- 3. stores
            store_keys, tasks = {}, {}
            for s in sessions:
                store_keys[s.id] = json_key({"segments": seg_keys[s.id], "dtype": dtype,
                                            "spectrogram": spec_params.to_dict()})
                if _marker_ok(sdirs[s.id] / "store.json", store_keys[s.id],
                              sdirs[s.id] / "syllables.h5", sdirs[s.id] / "errors.csv"):
                    continue
                (sdirs[s.id] / "embedding.json").unlink(missing_ok=True)
                tasks[s.id] = (
                    _store_task, {"session": s.id, "dir": str(sdirs[s.id]), "base": str(s.base),
                                  "segment": seg_params.to_dict(),
                                  "spectrogram": spec_params.to_dict(), "dtype": dtype,
                                  "key": store_keys[s.id]},
                    f"vl-store-{s.id}-{token}")
            for sid, (res, err) in _run_tasks(client, tasks, "spectrograms").items():
                if err is not None:
                    state[sid]["status"] = "failed"
                    run_errors.append({"session": sid, "file": "", "error": err})
            for s in sessions:
                m = _read_json(sdirs[s.id] / "store.json")
                if state[s.id]["status"] != "failed" and m and m.get("key") == store_keys[s.id]:
                    state[s.id]["n_items"] = int(m["n_items"])
                    state[s.id]["n_failed_files"] = int(m["n_failed_files"])
                    if m["n_items"] == 0 and m["n_failed_files"] == len(s.files):
                        state[s.id]["status"] = "failed"
                else:
                    state[s.id]["status"] = "failed"

            clock = _lap(timings, "spectrograms", clock)
            # ---------------------------------------------------------------- 4. train
            if model_path is None:
                model_path = _train(sessions, reference, state, store_keys, sdirs, cfg, out,
                                    spec_params, seg_params, device, seed, train_in_memory_mb,
                                    run_errors)

            clock = _lap(timings, "train", clock)
            # ---------------------------------------------------------------- 5. embed
            embedded: list[str] = []
            if model_path is not None:
                sha = file_sha256(model_path)
                tasks = {}
                emb_keys = {}
                for s in sessions:
                    if state[s.id]["status"] == "failed" or state[s.id]["n_items"] == 0:
                        continue
                    md = {"session": s.id, **{c: (v.item() if hasattr(v, "item") else v)
                                              for c, v in meta.loc[s.id].items()}}
                    emb_keys[s.id] = json_key({"store": store_keys[s.id], "model": sha,
                                              "metadata": md})
                    if _marker_ok(sdirs[s.id] / "embedding.json", emb_keys[s.id],
                                  sdirs[s.id] / "embedding.nc"):
                        continue
                    tasks[s.id] = (
                        _embed_task, {"dir": str(sdirs[s.id]), "model": str(model_path),
                                      "model_sha256": sha, "device": device,
                                      "memory_mb": embed_memory_mb, "metadata": md,
                                      "key": emb_keys[s.id]},
                        f"vl-embed-{s.id}-{token}")
                for sid, (res, err) in _run_tasks(client, tasks, "embedding").items():
                    if err is not None:
                        state[sid]["status"] = "failed"
                        run_errors.append({"session": sid, "file": "", "error": err})
                embedded = [s.id for s in sessions if s.id in emb_keys
                            and state[s.id]["status"] != "failed"]

            clock = _lap(timings, "embed", clock)
        clock = _lap(timings, "shutdown", clock)
        # -------------------------------------------------------------------- 6. combine
        embedding_path = None
        if embedded:
            embedding_path = _combine(out, [sdirs[sid] / "embedding.nc" for sid in embedded],
                                      reference=reference, model_path=model_path)
        else:
            (out / "embedding.nc").unlink(missing_ok=True)
        errors = _gather_errors(sessions, sdirs, state, run_errors)
        table = pd.DataFrame([{"session": s.id, "status": state[s.id]["status"],
                               "n_files": len(s.files),
                               "n_failed_files": int(errors.loc[(errors["session"] == s.id) &
                                                                (errors["file"] != ""), "file"].nunique()),
                               "n_items": int(state[s.id]["n_items"]) if s.id in embedded else 0,
                               "reference": s.id in reference} for s in sessions])
        _write_csv(errors, out / "errors.csv")
        _write_csv(table, out / "sessions.csv")
        _lap(timings, "combine", clock)
    if len(errors):
        logger.warning("%d error(s); see %s", len(errors), out / "errors.csv")
    logger.info("stage times (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return BatchResult(out=out, sessions=table, errors=errors, model_path=model_path,
                       embedding_path=embedding_path, timings=timings)


def _calibrate(client, sessions, reference, segments, seg_keys, spec_params, calib_syllables,
               seed, out, token, calibrate):
    """Calibrate the clipping range once from syllables drawn over the reference sessions."""
    key = json_key({"segments": [seg_keys[r] for r in reference], "seed": seed,
                   "n": calib_syllables, "spectrogram": spec_params.to_dict()})
    m = _read_json(out / "calibration.json")
    if m and m.get("key") == key:
        from .audio.spectrogram import SpectrogramParams

        return SpectrogramParams.from_dict(m["spectrogram"])
    counts = np.array([len(segments[r]) for r in reference])
    total = int(counts.sum())
    if total == 0:
        raise DataError("no syllables were found in the reference sessions "
                        f"({', '.join(reference)}), so the spectrogram range cannot be calibrated")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, size=min(calib_syllables, total), replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    tasks = {}
    for k, sid in enumerate(reference):
        local = pick[(pick >= offsets[k]) & (pick < offsets[k + 1])] - offsets[k]
        if len(local) == 0:
            continue
        tasks[sid] = (_calibration_task,
                      {"segments": segments[sid].iloc[local].to_dict("records"),
                       "base": str(sessions[sid].base), "spectrogram": spec_params.to_dict()},
                      f"vl-calibrate-{sid}-{token}")
    results = _run_tasks(client, tasks, "calibrating")
    dbs = [x for sid in reference if sid in results and results[sid][0] is not None
           for x in results[sid][0]]
    if not dbs:
        raise DataError("no calibration syllable could be read from the reference sessions; "
                        "see the warnings above")
    resolved = calibrate(dbs, spec_params)
    _write_json({"key": key, "spectrogram": resolved.to_dict()}, out / "calibration.json")
    return resolved


def _train(sessions, reference, state, store_keys, sdirs, cfg, out, spec_params, seg_params,
           device, seed, in_memory_mb, run_errors) -> Path | None:
    """Train the map on the driver (or reuse a complete earlier training); returns model.pt.

    The reference stores are read through :class:`ConcatSpectrograms`; when they fit in
    ``in_memory_mb`` they are read into memory once (random minibatches from gzip-compressed
    HDF5 chunks are slow), otherwise training reads them lazily.
    """
    from .data.store import SyllableStore
    from .workflow import train

    usable = [r for r in reference if state[r]["status"] != "failed" and state[r]["n_items"] > 0]
    if not usable:
        run_errors.append({"session": "", "file": "", "error": "training: no reference session "
                           f"has syllables ({', '.join(reference)})"})
        return None
    mdir = out / "model"
    key = json_key({"stores": [store_keys[r] for r in usable], "model": cfg.get("model", {}),
                   "seed": seed, "version": __version__})
    if _marker_ok(mdir / "model.json", key, mdir / "model.pt", mdir / "preprocessing.json"):
        logger.info("reusing the trained model %s", mdir / "model.pt")
        return mdir / "model.pt"
    (mdir / "model.json").unlink(missing_ok=True)
    preprocessing = {"segment": seg_params.to_dict(), "spectrogram": spec_params.to_dict(),
                     "spectrogram_resolved": spec_params.to_dict(), "reference_sessions": usable}
    stores = [SyllableStore(sdirs[r] / "syllables.h5") for r in usable]
    try:
        X = ConcatSpectrograms([st.spectrograms for st in stores])
        if X.shape[0] * int(np.prod(X.shape[1:])) * 4 <= in_memory_mb * 2**20:
            X = np.asarray(X)
        logger.info("training on %d syllables from %d session(s)", len(X), len(stores))
        try:
            train(X, cfg, out_dir=mdir, device=device, seed=seed, data_key=key,
                  metadata=preprocessing)
        except VocalatentError as exc:
            run_errors.append({"session": "", "file": "", "error": f"training: {exc}"})
            return None
    finally:
        for st in stores:
            st.close()
    _write_json(preprocessing, mdir / "preprocessing.json")
    _write_json({"key": key, "reference_sessions": usable}, mdir / "model.json")
    return mdir / "model.pt"


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


def _gather_errors(sessions, sdirs, state, run_errors) -> pd.DataFrame:
    rows = []
    for s in sessions:
        e = _read_errors(sdirs[s.id] / "errors.csv")
        if not len(e) and not (sdirs[s.id] / "store.json").is_file():
            e = _read_errors(sdirs[s.id] / "segment_errors.csv")
            if len(e):
                e.insert(0, "session", s.id)
        rows.extend(e[ERROR_COLUMNS].to_dict("records") if len(e) else [])
        rows.extend(r for r in run_errors if r["session"] == s.id)
    rows.extend(r for r in run_errors if r["session"] == "")
    return pd.DataFrame(rows, columns=ERROR_COLUMNS)
