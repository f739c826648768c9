"""Shared helpers: errors, parameter validation, logging, progress bars, devices, RNG.

Every module of vocalatent reports bad parameters through :class:`ParameterError` and bad
data through :class:`DataError`; both are ``ValueError`` subclasses so that callers that only
know the standard library still catch them.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

logger = logging.getLogger("vocalatent")
logger.addHandler(logging.NullHandler())

REPO_ROOT = Path(__file__).resolve().parents[1]


class VocalatentError(Exception):
    """Base class of vocalatent's own errors (the CLI turns these into one-line messages)."""


class ParameterError(VocalatentError, ValueError):
    """A parameter has a value that is not allowed. The message echoes the value."""


class DataError(VocalatentError, ValueError):
    """Input data (an array or a file) is unusable. The message names the file when there is one."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


#: What parsers of the libraries we read files with raise on a damaged or foreign file
#: (zip/gzip/zlib streams, truncated binary formats, text in another encoding; h5py
#: reports damaged HDF5 structures as RuntimeError). A reader
#: catches these around its parsing call and raises a DataError naming the file.
READ_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, EOFError, KeyError,
                                                IndexError, UnicodeDecodeError, zlib.error,
                                                zipfile.BadZipFile, struct.error, RuntimeError)


class NotFittedError(VocalatentError, AttributeError):
    """An estimator was used before ``fit``."""


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise a ParameterError listing them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ParameterError(
            f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}"
        )
    return value


def check_positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False):
    """Validate a positive (or non-negative) number; return it."""
    ok_type = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        kind = "an integer" if integer else "a number"
        raise ParameterError(f"{name} must be {kind}; got {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"{name} must be {bound}; got {value!r}")
    return value


def check_random_state(random_state: Any) -> np.random.Generator:
    """Turn ``None``, an int or a Generator into a NumPy Generator (never touches global RNG)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise ParameterError(f"random_state must be None, an int or a numpy Generator; got {random_state!r}")


def json_key(obj, *, length: int | None = 16) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys; other types by ``str``), as a cache key."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return digest if length is None else digest[:length]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_number(text: str) -> bool:
    """True when ``text`` parses as a float (for sniffing table headers and text formats)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def item_indices(idx, n: int) -> tuple[np.ndarray, tuple]:
    """Normalise an array-like index over ``n`` items (integers, possibly negative, or a
    boolean mask) to ``(flat non-negative int64 indices, shape of the index)``; IndexError
    on anything else or out of range. For the lazily read arrays' ``__getitem__``."""
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean index has shape {arr.shape}; expected ({n},)")
        arr = np.flatnonzero(arr)
    if arr.dtype.kind not in "iu":
        raise IndexError(f"indices must be integers, a slice or a boolean mask; got {arr.dtype}")
    flat = arr.ravel().astype(np.int64)
    if flat.size and (flat.min() < -n or flat.max() >= n):
        raise IndexError(f"indices out of range for {n} items")
    return (flat % n if n else flat), arr.shape


@contextmanager
def seeded_torch(seed: int):
    """Run torch's default parameter initialisers under ``seed``, then restore the caller's
    global RNG state (``torch.random.fork_rng``): seeding without side effects on the user."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.random.manual_seed(int(seed))
        yield


def resolve_device(device: Any = "auto"):
    """Resolve ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"``/``"mps"``/torch.device to a torch.device.

    ``"auto"`` means CUDA when available, else CPU. Asking for CUDA, or for ``"mps"`` (Apple
    GPUs, where torch offers it), without it is an error naming the device.
    """
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str) and (device in ("cpu", "mps") or device.startswith("cuda")):
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ParameterError(f"device={device!r} is not a device name; use 'cuda' or 'cuda:N'") from None
    else:
        raise ParameterError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r}")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            built = mps is not None and mps.is_built()
            raise ParameterError(
                f"device={device!r} was requested but MPS is not available on this machine "
                f"(torch.backends.mps.is_available() is False; this torch was "
                f"{'' if built else 'not '}built with MPS); use device='cpu' or 'auto'"
            )
        return dev
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(
            f"device={device!r} was requested but CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use device='cpu' or 'auto'"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ParameterError(
            f"device={device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
            f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return dev


def progress(iterable=None, *, desc: str | None = None, total: int | None = None,
             verbose: bool | None = None, **kwargs):
    """A tqdm progress bar that follows the package logger's level (hidden above INFO)."""
    from tqdm.auto import tqdm

    if verbose is None:
        disable = not logger.isEnabledFor(logging.INFO) and logger.getEffectiveLevel() != logging.NOTSET
        disable = disable or os.environ.get("VOCALATENT_NO_PROGRESS") == "1"
    else:
        disable = not verbose
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, **kwargs)


def set_log_level(level: int | str) -> None:
    """Set vocalatent's logging level and attach a stderr handler once."""
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.NullHandler)
               for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s vocalatent: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def temp_path(path: str | os.PathLike, *, suffix: str | None = None) -> Path:
    """Create an empty temporary file beside ``path`` (``.NAME.vltmp.XXXXXXXX`` + ``suffix``,
    default ``.tmp``) with the permissions of an ordinary new file (0666 minus the umask;
    ``mkstemp`` alone makes 0600). The name marks it as vocalatent's, so that the next run in
    the folder can remove what a killed run left (:func:`vocalatent.outdir.clear_temp_files`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.vltmp.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (see :func:`temp_path`); on success rename it
    onto ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp_path = temp_path(path, suffix=suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
