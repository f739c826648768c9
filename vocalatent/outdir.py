"""The output-folder guard every command that writes a run folder goes through.

:func:`output_folder` is a context manager that, before anything is written:

1. creates the folder, or fails with one line naming it when it cannot be written
   (read-only file system, no permission);
2. takes the folder's write lock (:func:`vocalatent.locks.output_lock`): a second writer is
   refused with the holder's PID and host;
3. removes the temporary files a killed run left behind (``.NAME.vltmp.XXXXXXXX*`` of
   :func:`vocalatent._utils.atomic_path`, and ``.NAME.XXXXXXXX.tmp`` of earlier versions);
4. checks that the folder holds this run or nothing: a folder holding another run (another
   input, another kind of run, another model) is refused unless ``force``, and with ``force``
   that run's files are removed first, so that old and new outputs never mix;
5. writes ``run.json`` (what made the folder), with the identity the next run compares.

``analyze`` and ``plot`` rework an existing run: they take the lock and clean temporary files,
but keep the run's identity (``identity=None``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from ._utils import DataError, ParameterError, atomic_path
from ._version import __version__
from .locks import LOCK_NAME, output_lock

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_FILES", "RUN_FILE", "clear_run_files", "clear_temp_files", "output_folder",
           "read_run"]

#: What made the folder (input, kind of run, model, version, seed).
RUN_FILE = "run.json"

#: Every file a run may write in its folder (``figures/`` besides); ``--force`` removes these.
OUTPUT_FILES = ("run.json", "config.toml", "inputs.json", "segments.csv", "errors.csv",
                "segment_report.json", "syllables.h5", "model.pt", "embedding.nc", "genes.csv",
                "units.csv", "adata.h5ad", "map.html", "agreement.json")

_TEMP = re.compile(r"^\..+\.vltmp\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$"       # atomic_path
                   r"|^\..+\.[a-z0-9_]{8}\.tmp$")                         # earlier versions


def _unwritable(out: Path, exc: OSError) -> DataError:
    why = exc.strerror or type(exc).__name__
    return DataError(f"cannot write the output folder ({why}); choose another one with "
                     "-o/--out", path=out)


def read_run(out) -> dict | None:
    """The folder's ``run.json`` (None when there is none; ``{}`` when it is unreadable)."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s); taking the folder as holding an unknown run", path, exc)
        return {}


def clear_temp_files(out) -> int:
    """Remove the temporary files left by killed runs in ``out`` and ``out/figures``;
    returns how many. Call only while holding the folder's lock."""
    n = 0
    for folder in (Path(out), Path(out) / "figures"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_file() and _TEMP.match(p.name) and not p.name.startswith(LOCK_NAME):
                p.unlink(missing_ok=True)
                n += 1
    return n


def clear_run_files(out) -> list[str]:
    """Remove a run's outputs (:data:`OUTPUT_FILES` and ``figures/*.png``) from ``out``;
    other files are left alone. Returns the names removed."""
    out = Path(out)
    removed = []
    for name in OUTPUT_FILES:
        p = out / name
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed.append(name)
    figs = out / "figures"
    if figs.is_dir():
        for p in sorted(figs.iterdir()):
            if p.is_file() and p.suffix.lower() in (".png", ".html", ".svg", ".pdf"):
                p.unlink()
                removed.append(f"figures/{p.name}")
        if not any(figs.iterdir()):
            shutil.rmtree(figs, ignore_errors=True)
    return removed


def _same_run(old: Mapping, identity: Mapping) -> bool:
    old_id = {"kind": old.get("kind", "fit"), "input": old.get("input"), "model": old.get("model")}
    return all(old_id.get(k) == v for k, v in identity.items())


def _describe(info: Mapping) -> str:
    kind = info.get("command") or info.get("kind") or "a run"
    return f"{kind} of {info.get('input', 'unknown input')}"


def _own_files(out: Path) -> bool:
    """True when ``out`` holds anything but the lock's files."""
    return any(not p.name.startswith(LOCK_NAME) for p in out.iterdir())


@contextmanager
def output_folder(out, *, command: str, identity: Mapping | None = None, force: bool = False,
                  record: Mapping | None = None) -> Iterator[Path]:
    """Hold ``out`` for one command that writes it (see the module docstring).

    Parameters
    ----------
    out : path-like
        The output folder (created when missing).
    command : str
        The command, for messages and ``run.json`` (``"embed"``, ``"train"``, ...).
    identity : mapping, optional
        What makes this run this run (``kind``, ``input``, and ``model`` for a projection);
        None: rework the run already there (no check, ``run.json`` kept).
    force : bool
        Replace a folder holding another run (or other files) after removing that run's files.
    record : mapping, optional
        More fields for ``run.json`` (domain, seed, ...).

    Yields
    ------
    pathlib.Path
        The folder.

    Raises
    ------
    DataError
        The folder cannot be created or written.
    OutputLockedError
        Another process writes the folder.
    ParameterError
        The folder holds another run (or unrelated files) and ``force`` is not set.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{LOCK_NAME}.probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _unwritable(out, exc) from None
    try:
        lock = output_lock(out, what=f"vocalatent {command}")
        lock.__enter__()
    except PermissionError as exc:
        raise _unwritable(out, exc) from None
    try:
        n = clear_temp_files(out)
        if n:
            logger.warning("%s: removed %d temporary file(s) left by an interrupted run", out, n)
        if identity is not None:
            old = read_run(out)
            if (old is not None and not _same_run(old, identity)) or (old is None and _own_files(out)):
                what = (f"the results of another run ({_describe(old)})" if old else
                        "an unreadable run.json" if old == {} else
                        "files but is not a vocalatent output folder")
                if not force:
                    raise ParameterError(f"{out} holds {what}; choose another (or an empty) output "
                                         "folder, or pass --force to replace that run")
                removed = clear_run_files(out)
                logger.warning("%s held %s; --force: removed %d of its file(s)", out, what,
                               len(removed))
            info = {**dict(old or {}), **dict(record or {}), **dict(identity),
                    "command": command, "vocalatent_version": __version__}
            with atomic_path(out / RUN_FILE) as tmp:
                tmp.write_text(json.dumps(info, indent=1, default=str))
        yield out
    finally:
        lock.__exit__(None, None, None)
