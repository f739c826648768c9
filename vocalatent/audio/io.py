"""Reading audio files: one convention for every sample format, bounded-memory chunks.

Besides what libsndfile reads, evsonganaly/EvTAF ``.cbin`` recordings (the format of most
public Bengalese finch song) are read, with the sample rate and channel count from the
``.rec`` file beside each one (``song.cbin`` -> ``song.rec``), in bounded memory.

Amplitude convention
--------------------
Every function here returns ``float32`` samples on the *full-scale* range [-1, 1]: an integer
PCM file of ``b`` bits is divided by ``2**(b-1)`` (int16 ``32767`` -> ``0.99997``), and a
floating-point file is returned as stored (its nominal full scale is already 1.0). The same
sound therefore gives the same numbers whether it was saved as int16, int24, int32 or float,
so that amplitude thresholds and clipping ranges given in dB relative to full scale (dBFS)
mean the same thing for every file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from .._utils import DataError, ParameterError, check_positive, logger

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioInfo",
    "audio_info",
    "find_audio",
    "iter_chunks",
    "load_audio",
]

# File extensions (lower case, with the dot) of the formats libsndfile reads, mapped to the
# soundfile format name that must be available. MAT4/MAT5/RAW are left out on purpose:
# ``.mat`` is an annotation extension (evsonganaly ``.not.mat``) and raw files have no header.
_EXTENSION_FORMATS = {
    ".wav": "WAV", ".wave": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG",
    ".opus": "OGG", ".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF", ".aifc": "AIFF",
    ".au": "AU", ".snd": "AU", ".caf": "CAF", ".w64": "W64", ".rf64": "RF64",
    ".voc": "VOC", ".sd2": "SD2", ".paf": "PAF", ".pvf": "PVF", ".nist": "NIST",
    ".sph": "NIST", ".avr": "AVR", ".htk": "HTK", ".sf": "IRCAM", ".wve": "WVE",
}
_AVAILABLE = set(sf.available_formats())
#: Extensions :func:`find_audio` and :func:`load_audio` accept (those this soundfile can read).
AUDIO_EXTENSIONS = frozenset([ext for ext, fmt in _EXTENSION_FORMATS.items() if fmt in _AVAILABLE]
                             + [".cbin"])
#: evsonganaly/EvTAF recordings: raw big-endian int16 (channels interleaved) with a ``.rec``
#: header file beside them giving the sample rate and channel count (read with ``evfuncs``).
_CBIN = ".cbin"


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an audio file says.

    Attributes
    ----------
    path : pathlib.Path
    sample_rate : int
        Samples per second per channel (Hz).
    n_samples : int
        Samples per channel that can actually be read.
    n_channels : int
    subtype : str
        Sample format, e.g. ``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``.
    format : str
        Container, e.g. ``"WAV"``, ``"FLAC"``.
    """

    path: Path
    sample_rate: int
    n_samples: int
    n_channels: int
    subtype: str
    format: str

    @property
    def duration_s(self) -> float:
        """Duration in seconds."""
        return self.n_samples / self.sample_rate


def find_audio(root: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """List the audio files under ``root`` (or ``[root]`` if it is a file), sorted.

    Parameters
    ----------
    root : path-like
        A directory or a single audio file.
    recursive : bool, default=True
        Search sub-directories too.

    Returns
    -------
    list of pathlib.Path
        Files whose extension (case-insensitive) is in :data:`AUDIO_EXTENSIONS`; hidden files
        (names starting with ``.``) are skipped.

    Raises
    ------
    DataError
        If ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError("no such file or directory", path=root)
    pattern = "**/*" if recursive else "*"
    found = [
        p for p in root.glob(pattern)
        if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")
    ]
    dangling = dangling_links(root, recursive=recursive)
    if dangling:
        names = ", ".join(p.relative_to(root).as_posix() for p in dangling[:5])
        more = f" and {len(dangling) - 5} more" if len(dangling) > 5 else ""
        logger.warning("%s: %d dangling symbolic link(s) to audio skipped (their targets do "
                       "not exist): %s%s", root, len(dangling), names, more)
    other = [p for p in dangling_links(root, recursive=recursive, audio=False) if p not in dangling]
    if other:
        names = ", ".join(p.relative_to(root).as_posix() for p in other[:5])
        more = f" and {len(other) - 5} more" if len(other) > 5 else ""
        logger.warning("%s: %d dangling symbolic link(s) to other files not read (their targets "
                       "do not exist): %s%s", root, len(other), names, more)
    return sorted(found)


def dangling_links(root: str | os.PathLike, *, recursive: bool = True,
                   audio: bool = True) -> list[Path]:
    """Symbolic links under ``root`` whose targets do not exist, sorted: links to audio
    (``audio=True``) or links of any name (``audio=False``).

    :func:`find_audio` leaves them out and logs one warning line naming them; the pipeline
    reports each link to audio as a failed file.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern)
                  if p.is_symlink() and not p.exists() and not p.name.startswith(".")
                  and (not audio or p.suffix.lower() in AUDIO_EXTENSIONS))


def _check_extension(path: Path) -> None:
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise DataError(
            f"wrong extension {path.suffix or '(none)'!r}: not an audio file this reader knows "
            f"(known: {', '.join(sorted(AUDIO_EXTENSIONS))})",
            path=path,
        )


def _wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF/WAVE header's ``data`` chunk declares, or None if not a plain RIFF WAV."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size)
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                    if size % 2:
                        fh.seek(1, 1)
                elif cid == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    fh.seek(size + (size % 2), 1)
    except OSError:
        return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read an audio file's header and check that the file is usable.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    AudioInfo

    Raises
    ------
    DataError
        Naming the file, when it does not exist or cannot be read, has an extension that is
        not an audio format, is corrupt (not decodable as the format its extension claims),
        is truncated (a WAV whose header declares more samples than the file holds) or is
        empty (no samples).
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file", path=path)
    _check_extension(path)
    if not os.access(path, os.R_OK):
        raise DataError("unreadable: permission denied", path=path)
    if path.suffix.lower() == _CBIN:
        return _cbin_info(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"corrupt or not a {path.suffix[1:].upper()} audio file ({exc})",
                        path=path) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise DataError("empty: the file holds no audio samples", path=path)
    if info.format == "WAV":
        declared = _wav_declared_frames(path)
        if declared is not None and declared > info.frames:
            raise DataError(
                f"truncated: the header declares {declared} samples per channel but the file "
                f"holds only {info.frames}",
                path=path,
            )
    return AudioInfo(path=path, sample_rate=int(info.samplerate), n_samples=int(info.frames),
                     n_channels=int(info.channels), subtype=str(info.subtype),
                     format=str(info.format))


def _cbin_info(path: Path) -> AudioInfo:
    import evfuncs

    rec = path.with_suffix(".rec")
    if not rec.is_file():
        raise DataError(f"no {rec.name} beside it: an evsonganaly .cbin recording needs its "
                        ".rec file for the sample rate and channel count", path=path)
    try:
        meta = evfuncs.readrecf(rec)
        sr = int(round(float(meta["sample_freq"])))
        n_ch = int(meta["num_channels"])
    except Exception as exc:  # evfuncs raises many types on malformed .rec files
        raise DataError(f"unreadable .rec header {rec.name} ({type(exc).__name__}: {exc})",
                        path=path) from None
    if sr <= 0 or n_ch <= 0:
        raise DataError(f"{rec.name} gives sample_freq={sr}, num_channels={n_ch}", path=path)
    size = path.stat().st_size
    if size % (2 * n_ch):
        raise DataError(f"truncated: {size} bytes is not a whole number of {n_ch}-channel "
                        "16-bit frames", path=path)
    if size == 0:
        raise DataError("empty: the file holds no audio samples", path=path)
    return AudioInfo(path=path, sample_rate=sr, n_samples=size // (2 * n_ch), n_channels=n_ch,
                     subtype="PCM_16", format="CBIN")


def _cbin_read(info: AudioInfo, ch: int, start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of channel ``ch`` of a .cbin file, float32 full scale."""
    mm = np.memmap(info.path, dtype=">i2", mode="r")
    n = info.n_channels
    y = np.asarray(mm[start * n + ch:stop * n:n], dtype=np.float32) / np.float32(32768.0)
    del mm
    return y


def _check_channel(info: AudioInfo, channel) -> int:
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
        raise ParameterError(f"channel must be an integer channel index; got {channel!r}")
    if not -info.n_channels <= channel < info.n_channels:
        raise DataError(
            f"channel {channel} does not exist: the file has {info.n_channels} channel(s)",
            path=info.path,
        )
    return int(channel) % info.n_channels


def _clean(y: np.ndarray, path: Path, where: str) -> tuple[np.ndarray, int]:
    """Replace non-finite samples by 0; return the array and how many were replaced."""
    bad = ~np.isfinite(y)
    n_bad = int(bad.sum())
    if n_bad:
        y = np.where(bad, np.float32(0.0), y)
    return y, n_bad


def load_audio(path: str | os.PathLike, *, channel: int = 0, offset_s: float = 0.0,
               duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Read one channel of an audio file (or a part of it) as float32 full-scale samples.

    Parameters
    ----------
    path : path-like
        Any file soundfile reads (wav, flac, ogg, aiff, ...), 8 kHz to 500 kHz or more.
    channel : int, default=0
        Channel index (negative counts from the end).
    offset_s : float, default=0
        Start reading this many seconds into the file.
    duration_s : float or None, default=None
        Read at most this many seconds (None: to the end).

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32, range about [-1, 1]]
        Samples on the full-scale convention of this module (integer PCM divided by
        ``2**(bits-1)``; float files as stored). Non-finite samples (NaN/inf in float files)
        are replaced by 0 with a warning.
    sr : int
        Sample rate in Hz.

    Raises
    ------
    DataError
        Naming the file: see :func:`audio_info`; also when the channel does not exist, the
        requested part is empty, or every sample is NaN.
    """
    info = audio_info(path)
    ch = _check_channel(info, channel)
    check_positive("offset_s", offset_s, allow_zero=True)
    start = int(round(offset_s * info.sample_rate))
    if duration_s is None:
        stop = info.n_samples
    else:
        check_positive("duration_s", duration_s)
        stop = min(info.n_samples, start + int(round(duration_s * info.sample_rate)))
    if start >= stop:
        raise DataError(f"nothing to read from offset_s={offset_s} (file lasts "
                        f"{info.duration_s:.3f} s)", path=info.path)
    if info.format == "CBIN":
        return _cbin_read(info, ch, start, stop), info.sample_rate
    try:
        data, sr = sf.read(str(info.path), start=start, stop=stop, dtype="float32",
                           always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DataError(f"corrupt: reading samples failed ({exc})", path=info.path) from None
    y = np.ascontiguousarray(data[:, ch])
    y, n_bad = _clean(y, info.path, "file")
    if n_bad == y.size:
        raise DataError("all samples are NaN or infinite", path=info.path)
    if n_bad:
        logger.warning("%s: %d non-finite samples replaced by 0", info.path, n_bad)
    return y, int(sr)


def iter_blocks(info: AudioInfo, *, step: int, overlap: int, channel: int = 0,
                start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_sample, y)`` blocks of ``step + overlap`` samples every ``step`` samples.

    Blocks start at ``start``, ``start + step``, ... while they start before ``stop`` (default:
    the end of the file); a block never reads past ``stop + overlap`` or the file's end, so the
    last one can be shorter. Memory holds one block at a time. This is the sample-exact form of
    :func:`iter_chunks`; non-finite samples are replaced by 0, and a DataError is raised at the
    end if every sample read was non-finite.
    """
    ch = _check_channel(info, channel)
    check_positive("step", step, integer=True)
    check_positive("overlap", overlap, integer=True, allow_zero=True)
    check_positive("start", start, integer=True, allow_zero=True)
    stop = info.n_samples if stop is None else min(int(stop), info.n_samples)
    end = min(info.n_samples, stop + overlap)
    n_finite = 0
    n_bad_total = 0
    if info.format == "CBIN":
        for first in range(start, stop, step):
            yield first, _cbin_read(info, ch, first, min(end, first + step + overlap))
        return
    try:
        with sf.SoundFile(str(info.path)) as fh:
            while start < stop:
                fh.seek(start)
                data = fh.read(min(step + overlap, end - start), dtype="float32",
                               always_2d=True)
                if data.shape[0] == 0:
                    break
                y = np.ascontiguousarray(data[:, ch])
                y, n_bad = _clean(y, info.path, "block")
                n_bad_total += n_bad
                n_finite += y.size - n_bad
                yield start, y
                start += step
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise DataError(f"corrupt: reading samples failed ({exc})", path=info.path) from None
    if n_finite == 0:
        raise DataError("all samples are NaN or infinite", path=info.path)
    if n_bad_total:
        logger.warning("%s: %d non-finite samples replaced by 0", info.path, n_bad_total)


def iter_chunks(path: str | os.PathLike, *, chunk_s: float = 60.0, overlap_s: float = 0.0,
                channel: int = 0) -> Iterator[tuple[float, np.ndarray, int]]:
    """Read a long file in chunks with bounded memory.

    Parameters
    ----------
    path : path-like
    chunk_s : float, default=60
        Chunks start every ``chunk_s`` seconds.
    overlap_s : float, default=0
        Each chunk extends ``overlap_s`` seconds past the next chunk's start, so that an event
        on a boundary is wholly inside at least one chunk.
    channel : int, default=0

    Yields
    ------
    start_s : float
        Time of the chunk's first sample in the file (s).
    y : np.ndarray [shape=(n,), dtype=float32, range about [-1, 1]]
        Samples (full-scale convention, see the module docstring).
    sr : int
        Sample rate (Hz).
    """
    check_positive("chunk_s", chunk_s)
    check_positive("overlap_s", overlap_s, allow_zero=True)
    info = audio_info(path)
    step = max(1, int(round(chunk_s * info.sample_rate)))
    overlap = int(round(overlap_s * info.sample_rate))
    for start, y in iter_blocks(info, step=step, overlap=overlap, channel=channel):
        yield start / info.sample_rate, y, info.sample_rate
