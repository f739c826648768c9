"""One writer per output folder: a lock that works on shared file systems and without fcntl.

Every command that writes an output folder holds :func:`output_lock` on it for the duration of
the write. The lock is a :class:`filelock.SoftFileLock` (exclusive creation of
``OUT/.vocalatent.lock``; no ``fcntl``/``flock``, so it also holds on NFS, Lustre, GPFS or
SMB mounts where byte-range locks are missing or unreliable, and between the login node and
the compute nodes of a cluster). Beside it, the holder writes a side file
``OUT/.vocalatent.lock.json`` with its pid, host, start time and command line, which the
refusal names.

- A second writer — another process, on this host or any other host that sees the folder — is
  refused at once with :class:`OutputLockedError`, a one-line message naming the holder's pid
  and host (or, with ``timeout``, after waiting that long for the holder to finish).
- A lock left by a process that died on this host (SIGKILL, power cut of a job) is stale:
  filelock checks the recorded pid and its start time, so the lock is reclaimed, with a
  warning naming the dead holder.
- A lock from another host is never reclaimed (this host cannot tell whether that process is
  alive): the message says so and which file to remove if that run is known to be dead.

Example::

    from vocalatent.locks import output_lock

    with output_lock("OUT", what="vocalatent batch"):
        ...  # write OUT/...
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ._utils import VocalatentError, atomic_path, logger

__all__ = ["LOCK_NAME", "OutputLockedError", "lock_holder", "output_lock"]

#: The lock file's name inside the output folder; the side file adds ``.json``.
LOCK_NAME = ".vocalatent.lock"


class OutputLockedError(VocalatentError, RuntimeError):
    """Another process holds the output folder's lock.

    Attributes
    ----------
    holder : dict
        What the holder recorded (``pid``, ``host``, ``started``, ``command``); keys may be
        missing when the holder had not written its side file yet.
    """

    def __init__(self, message: str, *, holder: dict | None = None):
        self.holder = dict(holder or {})
        super().__init__(message)


def _side_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.json"


def lock_holder(folder: str | os.PathLike, *, name: str = LOCK_NAME) -> dict | None:
    """What the current (or last, if it died) holder of ``folder``'s lock recorded.

    Parameters
    ----------
    folder : path-like
        The output folder.
    name : str, default=".vocalatent.lock"
        The lock file's name in the folder.

    Returns
    -------
    dict or None
        ``pid``, ``host``, ``started`` (ISO time, UTC), ``command``; None when no lock file or
        no readable side file is there.
    """
    folder = Path(folder)
    if not (folder / name).exists():
        return None
    try:
        rec = json.loads(_side_path(folder, name).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict, soft_pid: int | None) -> str:
    pid = holder.get("pid", soft_pid)
    host = holder.get("host", "an unknown host")
    text = f"pid {pid if pid is not None else '?'} on host {host}"
    if holder.get("started"):
        text += f", since {holder['started']}"
    if holder.get("command"):
        text += f", running {holder['command']!r}"
    return text


@contextmanager
def output_lock(folder: str | os.PathLike, *, what: str = "vocalatent run",
                name: str = LOCK_NAME, timeout: float = 0.0) -> Iterator[Path]:
    """Hold ``folder``'s write lock for the duration of the ``with`` block.

    Parameters
    ----------
    folder : path-like
        The output folder (created when missing).
    what : str, default="vocalatent run"
        What holds the lock, for the messages (e.g. ``"vocalatent batch"``).
    name : str, default=".vocalatent.lock"
        The lock file's name in the folder.
    timeout : float, default=0
        Seconds to wait for another holder to finish; 0 refuses at once.

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    OutputLockedError
        Another live process (on this host or another) holds the lock: the one-line message
        names its pid and host.
    """
    import filelock

    if timeout < 0:
        raise ValueError(f"timeout must be >= 0; got {timeout!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    side = _side_path(folder, name)
    before = lock_holder(folder, name=name)
    lock = filelock.SoftFileLock(str(path), timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        holder = lock_holder(folder, name=name) or {}
        other_host = holder.get("host") not in (None, socket.gethostname())
        hint = (f"if that run is dead, remove {path} (a lock from another host is never "
                "reclaimed automatically)" if other_host else "wait for it to finish")
        raise OutputLockedError(f"{folder} is being written by another {what} "
                                f"({_describe(holder, lock.pid)}); {hint}",
                                holder=holder) from None
    try:
        if (before and before.get("host") == socket.gethostname()
                and isinstance(before.get("pid"), int) and before["pid"] != os.getpid()
                and not _pid_alive(before["pid"])):
            logger.warning("%s: took over a stale lock left by %s (no longer running)", path,
                           _describe(before, None))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
                  "what": what}
        with atomic_path(side, suffix=".json") as tmp:
            tmp.write_text(json.dumps(record, indent=1))
        yield path
    finally:
        try:
            side.unlink(missing_ok=True)
        finally:
            lock.release(force=True)
