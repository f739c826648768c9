"""Recordings made ready for the QLVM: segment (or read annotations), make syllable
spectrograms, write the syllable store, and key it on the content of every input file."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

import pandas as pd

from .._utils import DataError, atomic_path, file_sha256, json_key
from ..config import table as config_table
from .base import Prepared, input_files

logger = logging.getLogger(__name__)

__all__ = ["build_syllable_store", "prepare_vocal", "prepared_from_store", "recording_files",
           "store_key"]

#: The record of the input files a run's syllables.h5 was made from.
INPUTS_FILE = "inputs.json"


def recording_files(path, cfg: Mapping | None = None) -> list[Path]:
    """The files the syllables of ``path`` are made from: every audio file and every
    annotation file that could be read for it (per ``[audio] annotations``), sorted."""
    from ..audio.annotations import annotation_candidates
    from ..audio.io import find_audio

    path = Path(path)
    audio = find_audio(path)
    mode = str(dict((cfg or {}).get("audio", {})).get("annotations", "auto"))
    files = set(audio)
    if mode == "auto":
        for a in audio:
            files.update(c for c in annotation_candidates(a) if c.is_file())
    elif mode not in ("ignore", "none") and Path(mode).is_dir():
        files.update(input_files(Path(mode)))
    return sorted(files)


#: A file modified less than this long before its digest was recorded is hashed again next
#: time even when its size, times and inode match (a same-size edit within the file system's
#: timestamp resolution would otherwise go unseen; git's index treats such entries the same way).
RACY_NS = 2_000_000_000


def _identity(p: Path) -> list[int]:
    st = p.stat()
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


def _digests(files, root: Path, record: dict | None = None) -> tuple[dict[str, str], dict[str, list[int]], int]:
    """sha256 of every input file, reusing the digest in ``record`` (an earlier inputs.json) for
    a file whose size, modification time, change time and inode are those recorded with it.

    The change time (ctime) cannot be set back by the tools that edit files, so an edit that
    restores the modification time is still seen. Returns ``(digests, identities, n_reused)``.
    """
    record = record or {}
    old_files = record.get("files") if isinstance(record.get("files"), dict) else {}
    old_stat = record.get("stat") if isinstance(record.get("stat"), dict) else {}
    written = record.get("written_ns")     # when the identities were taken
    written = int(written) if isinstance(written, int) else 0
    digests, identities, reused = {}, {}, 0
    for p in files:
        name = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
        ident = _identity(p)
        identities[name] = ident
        if (name in old_files and old_stat.get(name) == ident
                and ident[1] < written - RACY_NS and ident[2] < written - RACY_NS):
            digests[name] = str(old_files[name])
            reused += 1
        else:
            digests[name] = file_sha256(p)
    return digests, identities, reused


def _read_inputs(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        dict(record["files"])
        return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable (%s); the syllable store will be rebuilt", path, exc)
        return None


def _changed(old: dict | None, new: dict) -> str | None:
    """None when the inputs are those recorded, else a short description of the change."""
    if old is None:
        return "no record of the input files it was made from"
    names = sorted(set(old) | set(new))
    diff = [n for n in names if old.get(n) != new.get(n)]
    if not diff:
        return None
    shown = ", ".join(diff[:3]) + (f" and {len(diff) - 3} more" if len(diff) > 3 else "")
    return f"{len(diff)} input file(s) changed, added or removed since it was made ({shown})"


def _unreadable(store_path: Path) -> str | None:
    """None when the store opens, else why not (a warning names the file)."""
    from ..data.store import SyllableStore

    try:
        SyllableStore(store_path).close()
        return None
    except (DataError, OSError, ValueError, KeyError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("%s is unreadable (%s); rebuilding it", store_path, text[:200])
        return "unreadable"


def store_key(store, inputs: str | None = None) -> str:
    """Key of a syllable store's items: its parameters (segments digest and spectrogram
    settings), its size, and the content key of the input files (``inputs``)."""
    return json_key({"params": store.params, "n": len(store), "inputs": inputs})


def build_syllable_store(path, out_dir, cfg: Mapping, *, n_jobs: int | None = None):
    """Segment the recordings under ``path`` (or read their annotations) and write the store.

    Writes ``out_dir/syllables.h5``, ``out_dir/segments.csv``, ``out_dir/errors.csv``,
    ``out_dir/segment_report.json`` (what segmentation's filters removed) and
    ``out_dir/inputs.json`` (the sha256 of every input file, with the size, times and inode it
    was taken at, so an unchanged file is not read again: see :func:`_digests`). An existing
    store is reused only when it was made with the same settings from input files of the same
    content.

    Returns
    -------
    store : SyllableStore
    errors : pandas.DataFrame [columns: source, error]
    inputs : str
        Content key of the input files.
    """
    from ..audio.pipeline import build_store

    path = Path(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = path.parent if path.is_file() else path
    record = out_dir / INPUTS_FILE
    old_record = _read_inputs(record)
    captured_ns = time.time_ns()        # before the files are looked at (see RACY_NS)
    digests, identities, n_reused = _digests(recording_files(path, cfg), root, old_record)
    if n_reused:
        logger.info("%d of %d input file(s) unchanged since %s (size, times, inode); not re-read",
                    n_reused, len(digests), record)
    inputs = json_key(digests)
    store_path = out_dir / "syllables.h5"
    reason = _changed(None if old_record is None else dict(old_record["files"]), digests)
    if reason is not None and store_path.exists():
        logger.warning("%s: %s; rebuilding it", store_path, reason)
    elif store_path.exists():
        reason = _unreadable(store_path)
    if reason is not None:
        record.unlink(missing_ok=True)   # a crash while rebuilding must not leave a stale record
    audio = config_table(cfg, "audio")
    store, errors = build_store(
        path, store_path,
        segment_params=cfg.get("segment", {}), spectrogram_params=cfg.get("spectrogram", {}),
        annotations=audio.annotations, channel=audio.channel,
        n_jobs=audio.jobs if n_jobs is None else n_jobs, chunk_s=float(audio.chunk_s),
        reuse=reason is None)
    with atomic_path(record) as tmp:
        tmp.write_text(json.dumps({"key": inputs, "files": digests, "stat": identities,
                                   "written_ns": captured_ns}, indent=1))
    with atomic_path(out_dir / "segments.csv") as tmp:
        store.segments.to_csv(tmp, index=False)
    with atomic_path(out_dir / "errors.csv") as tmp:
        errors.to_csv(tmp, index=False)
    if "segment_report" in store.info:  # what segmentation's filters removed (issue 12)
        with atomic_path(out_dir / "segment_report.json") as tmp:
            tmp.write_text(json.dumps(store.info["segment_report"], indent=1))
    if len(store) == 0:
        from ..audio.io import find_audio
        from ..audio.pipeline import sample_rate_hint
        from ..audio.segment import SegmentParams

        f_max = float(dict(cfg.get("segment", {})).get("f_max", SegmentParams().f_max))
        hint = sample_rate_hint(find_audio(path)[:50], f_max=f_max)
        raise DataError(f"no syllables were found in {path} "
                        f"({len(errors)} file(s) failed; see {out_dir / 'errors.csv'})"
                        + (f"; {hint}" if hint else ""))
    return store, errors, inputs


def prepared_from_store(store, *, errors: pd.DataFrame | None = None, inputs: str | None = None,
                        n_inputs: int | None = None, source: Path | None = None) -> Prepared:
    """The :class:`Prepared` items of a syllable store (its spectrograms, read lazily).

    Parameters
    ----------
    store : SyllableStore
    errors : pandas.DataFrame, optional
        The input files that failed.
    inputs : str, optional
        Content key of the input files; default: the sha256 of the store file itself.
    n_inputs : int, optional
        Input files read (default: the sources in the store plus the failed ones).
    source : pathlib.Path, optional
        The input folder or file (default: the store).
    """
    if inputs is None:
        inputs = file_sha256(store.path)[:16]
    segs = store.segments.reset_index(drop=True)
    errors = errors if errors is not None else pd.DataFrame(columns=["source", "error"])
    if n_inputs is None:
        n_inputs = int(segs["source"].nunique()) + len(errors) if "source" in segs else len(errors)
    return Prepared(
        store.spectrograms, segs, store_key(store, inputs), "vocal", None,
        source=Path(source) if source is not None else Path(store.path), errors=errors,
        n_inputs=int(n_inputs),
        model_metadata={"spectrogram_resolved": store.info.get("spectrogram_resolved"),
                        "segment": store.info.get("segment")},
        extra={"store": store})


def prepare_vocal(path, out_dir, cfg: Mapping, *, n_jobs: int | None = None) -> Prepared:
    """Recordings under ``path`` → the syllable store in ``out_dir`` → :class:`Prepared`.

    ``path`` may also be a syllable store (``.h5``) written by an earlier run, used as it is.
    """
    from ..audio.io import find_audio
    from ..data.store import SyllableStore

    path = Path(path)
    if path.is_file() and path.suffix.lower() in (".h5", ".hdf5"):
        return prepared_from_store(SyllableStore(path))
    store, errors, inputs = build_syllable_store(path, out_dir, cfg, n_jobs=n_jobs)
    logger.info("%d syllables from %s (%d file(s) failed)", len(store), path, len(errors))
    return prepared_from_store(store, errors=errors, inputs=inputs,
                               n_inputs=len(find_audio(path)), source=path)

