"""Read an HDF5 file's structure in a child process before the library touches it in ours.

libhdf5 trusts the file it reads. Most damage makes h5py raise, and every reader turns that
into a :class:`~vocalatent._utils.DataError`; but some damaged object headers and attribute
messages make libhdf5 loop forever (``f["X"].attrs["encoding-type"]`` on one randomly damaged
``.h5ad`` never returns) or abort the process. Neither can be caught in-process. So before a
user's HDF5 file (``.h5ad``, a 10x ``.h5``, NWB, spike tables) or a cached syllable store is
opened here, :func:`check_hdf5` walks its whole structure in a child Python: every group and
dataset header, every attribute value, the shape and dtype of every dataset (no data chunks).
A child that does not finish within the time limit is killed and the file is refused with one
line naming it; a child killed by a signal likewise. When the child sees an ordinary error it
reports nothing: the reader in this process meets the same error and words it in its own terms.

Each file is probed once per content: the result is remembered by (path, size, mtime, ctime,
inode), so a file read by the domain sniffer and then by its reader costs one probe.

The limit is ``VOCALATENT_HDF5_PROBE_TIMEOUT`` seconds (default 60; 0 turns the probe off).
What it does not cover: a damaged *data chunk* is read in-process; h5py and the compression
filters raise on those (the fuzz test in ``tests/test_fuzz_inputs.py`` holds that).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from .._utils import DataError, logger

__all__ = ["check_hdf5", "probe_timeout"]

_PROBE = r"""
import sys
import h5py

def visit(name, obj):
    dict(obj.attrs)
    if isinstance(obj, h5py.Dataset):
        obj.shape, obj.dtype

with h5py.File(sys.argv[1], "r") as f:
    dict(f.attrs)
    f.visititems(visit)
"""

_DEFAULT_TIMEOUT = 60.0
_seen: dict[tuple, None] = {}
_seen_lock = threading.Lock()


def probe_timeout() -> float:
    """The probe's time limit in seconds (``VOCALATENT_HDF5_PROBE_TIMEOUT``; 0 = no probe)."""
    raw = os.environ.get("VOCALATENT_HDF5_PROBE_TIMEOUT", "")
    try:
        value = float(raw) if raw.strip() else _DEFAULT_TIMEOUT
    except ValueError:
        logger.warning("VOCALATENT_HDF5_PROBE_TIMEOUT=%r is not a number; using %g s",
                       raw, _DEFAULT_TIMEOUT)
        value = _DEFAULT_TIMEOUT
    return max(0.0, value)


def _identity(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def check_hdf5(path: str | os.PathLike, *, timeout: float | None = None) -> None:
    """Refuse an HDF5 file whose structure makes libhdf5 hang or crash.

    Parameters
    ----------
    path
        The file. A missing file or a directory passes (the reader reports those).
    timeout
        Seconds the child may take; default :func:`probe_timeout`. ``0`` skips the probe.

    Raises
    ------
    DataError
        The child did not finish in time, or was killed by a signal (the file's structure is
        damaged in a way the HDF5 library cannot report).
    """
    path = Path(path)
    limit = probe_timeout() if timeout is None else float(timeout)
    if limit <= 0 or not path.is_file():
        return
    key = _identity(path)
    with _seen_lock:
        if key is not None and key in _seen:
            return
    cmd = [sys.executable, "-c", _PROBE, str(path)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HDF5_USE_FILE_LOCKING="FALSE")
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=limit, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise DataError(
            f"the HDF5 library did not finish reading the file's structure within {limit:g} s "
            "(a damaged header or attribute makes it loop); the file is damaged: write it "
            "again from its source, or raise VOCALATENT_HDF5_PROBE_TIMEOUT if it is only "
            "very large", path=path) from None
    except OSError as exc:                  # cannot start a child: do not block the read
        logger.debug("HDF5 probe of %s not run: %s", path, exc)
        return
    if proc.returncode < 0:
        raise DataError(
            f"the HDF5 library crashed reading the file's structure (signal {-proc.returncode}); "
            "the file is damaged: write it again from its source", path=path)
    # exit 0, or an ordinary Python error the in-process reader will meet and report itself
    if key is not None:
        with _seen_lock:
            _seen[key] = None
