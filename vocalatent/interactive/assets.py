"""Assets of the interactive map: spectrogram thumbnails as sprite sheets, audio clips as
audio sheets, both either inlined (base64) or written beside the page.

Thumbnails. Each spectrogram (F, T) with values in [0, 1] is block-averaged to
``thumb_size x thumb_size`` pixels, flipped so that high frequencies are at the top, and
placed in a sprite sheet of ``SHEET_COLS x SHEET_COLS`` thumbnails: an 8-bit palette PNG
(the colour map is the palette, so a pixel costs one byte before compression).

Audio. Each item's clip is the syllable with ``margin_s`` before and after, cut from the
recording itself (clipped to the file's ends). Clips are laid end to end, with
``GAP_S`` of silence between them, in 16-bit mono WAV "audio sheets" of at most
``SHEET_CLIP_S`` seconds; an item plays its sheet from ``start`` to ``end`` (a media
fragment ``#t=start,end`` plus a pause at ``end`` in the page). The rate the browser sees:

- recordings at a rate every browser plays (:data:`BROWSER_RATES`) are kept as they are
  (no resampling);
- other rates are resampled to 48 kHz (polyphase, :func:`scipy.signal.resample_poly`,
  which low-pass filters before decimating);
- ultrasonic material (the spectrogram band reaches above :data:`AUDIBLE_HZ`) is played
  *time-expanded*: ``slowdown`` times slower, so every frequency is divided by ``slowdown``
  and lands below :data:`AUDIBLE_HZ` -- the time-expansion mode of bat detectors. Unlike
  heterodyning it keeps the whole call (every harmonic, the sweep shape); the page says
  "played N x slower". Implemented as resampling to ``48 kHz x slowdown`` and labelling the
  result 48 kHz.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import DataError, ParameterError, atomic_path, check_positive

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIBLE_HZ",
    "AudioSheets",
    "BROWSER_RATES",
    "GAP_S",
    "SHEET_COLS",
    "SpriteSheets",
    "audio_sheets",
    "browser_rate",
    "encode_png",
    "sprite_sheets",
    "thumbnails",
]

#: Thumbnails per sprite-sheet row and column (a sheet holds SHEET_COLS**2 items).
SHEET_COLS = 32
#: Sample rates every current browser plays in an <audio> element without resampling trouble.
BROWSER_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
#: Rate other recordings are resampled to.
TARGET_RATE = 48000
#: Highest frequency treated as audible: spectrogram bands above it are time-expanded.
AUDIBLE_HZ = 20000.0
#: Silence between clips in an audio sheet (s).
GAP_S = 0.02
#: Longest audio sheet (s of played audio).
SHEET_CLIP_S = 120.0


# ----------------------------------------------------------------------------- thumbnails
def thumbnails(spectrograms, *, thumb_size: int = 64, batch: int = 512) -> np.ndarray:
    """Small uint8 images of spectrograms, high frequencies at the top.

    Parameters
    ----------
    spectrograms : array-like [shape=(n, F, T), values in [0, 1]]
        Row 0 of each image is the lowest frequency (the store's layout). Read in batches,
        so a lazily read store is fine.
    thumb_size : int
        Output side in pixels (block means when F, T are multiples of it, else linear
        interpolation).

    Returns
    -------
    np.ndarray [shape=(n, thumb_size, thumb_size), dtype=uint8]
        ``round(255 x value)``, row 0 = highest frequency.
    """
    check_positive("thumb_size", thumb_size, integer=True)
    n = int(spectrograms.shape[0])
    out = np.empty((n, thumb_size, thumb_size), dtype=np.uint8)
    for start in range(0, n, batch):
        x = np.asarray(spectrograms[start:start + batch], dtype=np.float32)
        if x.ndim != 3:
            raise ParameterError(f"spectrograms must have shape (n, F, T); got {x.shape}")
        out[start:start + len(x)] = _resize(x, thumb_size)
    return out


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    n, f, t = x.shape
    if f % size == 0 and t % size == 0:
        y = x.reshape(n, size, f // size, size, t // size).mean(axis=(2, 4))
    else:
        from scipy.ndimage import zoom

        y = zoom(x, (1, size / f, size / t), order=1)[:, :size, :size]
    y = np.clip(np.nan_to_num(y[:, ::-1, :]), 0.0, 1.0)
    return np.round(255.0 * y).astype(np.uint8)


def _palette(cmap: str) -> list[int]:
    import matplotlib

    rgb = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return rgb.ravel().tolist()


def encode_png(image: np.ndarray, *, cmap: str = "magma") -> bytes:
    """An 8-bit image [shape=(h, w), uint8] as a palette PNG coloured by ``cmap``."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L").convert("P")
    img.putpalette(_palette(cmap))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


@dataclass
class SpriteSheets:
    """Thumbnails laid out in sheets: item ``i`` is in sheet ``sheet[i]`` at cell ``cell[i]``.

    ``cell`` counts row-major within a sheet of ``cols x cols`` cells of ``size`` pixels.
    ``pngs`` holds the encoded sheets (bytes).
    """

    size: int
    cols: int
    sheet: np.ndarray
    cell: np.ndarray
    pngs: list = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Total encoded size (bytes)."""
        return sum(len(p) for p in self.pngs)


def sprite_sheets(thumbs: np.ndarray, *, cols: int = SHEET_COLS, cmap: str = "magma") -> SpriteSheets:
    """Pack thumbnails [shape=(n, s, s), uint8] into palette-PNG sprite sheets."""
    n, s, _ = thumbs.shape
    per = cols * cols
    pngs = []
    for start in range(0, max(n, 1), per):
        chunk = thumbs[start:start + per]
        rows = max(1, math.ceil(len(chunk) / cols))
        canvas = np.zeros((rows * s, (cols if len(chunk) > cols else max(len(chunk), 1)) * s), np.uint8)
        for k, th in enumerate(chunk):
            r, c = divmod(k, cols)
            canvas[r * s:(r + 1) * s, c * s:(c + 1) * s] = th
        pngs.append(encode_png(canvas, cmap=cmap))
    idx = np.arange(n)
    return SpriteSheets(size=s, cols=cols, sheet=idx // per, cell=idx % per, pngs=pngs)


# ----------------------------------------------------------------------------- audio
def browser_rate(sample_rate: float, *, f_max: float | None = None) -> tuple[int, int]:
    """The rate a clip is written at and its time-expansion factor.

    Parameters
    ----------
    sample_rate : float
        The recording's rate (Hz).
    f_max : float, optional
        Top of the frequency band of interest (the spectrogram's ``f_max``); above
        :data:`AUDIBLE_HZ` the clip is time-expanded.

    Returns
    -------
    rate : int
        The rate written in the WAV header (kept when in :data:`BROWSER_RATES`, else 48 kHz).
    slowdown : int
        1, or the time-expansion factor ``ceil(f_max / AUDIBLE_HZ)``: the samples are
        resampled to ``rate x slowdown`` and played at ``rate``.
    """
    check_positive("sample_rate", sample_rate)
    slowdown = 1
    if f_max is not None and f_max > AUDIBLE_HZ:
        slowdown = int(math.ceil(f_max / AUDIBLE_HZ))
    if slowdown == 1 and int(sample_rate) in BROWSER_RATES and float(sample_rate).is_integer():
        return int(sample_rate), 1
    return TARGET_RATE, slowdown


def _resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return y
    from scipy.signal import resample_poly

    frac = Fraction(int(sr_out), int(sr_in)).limit_denominator(2000)
    return resample_poly(y, frac.numerator, frac.denominator).astype(np.float32)


def _wav_bytes(y: np.ndarray, sr: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(y, -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclass
class AudioSheets:
    """Clips laid end to end: item ``i`` plays sheet ``sheet[i]`` from ``start[i]`` to
    ``end[i]`` seconds (``sheet[i] = -1``: no audio, see ``missing``)."""

    rate: int
    slowdown: int
    margin_s: float
    sheet: np.ndarray
    start: np.ndarray
    end: np.ndarray
    wavs: list = field(default_factory=list)
    missing: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Total encoded size (bytes)."""
        return sum(len(w) for w in self.wavs)


def audio_sheets(segments: pd.DataFrame, root, *, margin_s: float = 0.05, f_max: float | None = None,
                 max_sheet_s: float = SHEET_CLIP_S, channel_col: str = "channel") -> AudioSheets:
    """Cut every segment's clip from its recording and pack the clips into WAV sheets.

    Parameters
    ----------
    segments : pandas.DataFrame
        ``source`` (path relative to ``root``), ``onset_s``, ``offset_s``, optionally ``channel``.
    root : path-like
        Folder the sources are relative to (a file: its folder).
    margin_s : float
        Audio kept before the onset and after the offset (s).
    f_max : float, optional
        Top of the band of interest, for the time-expansion decision (:func:`browser_rate`).

    Returns
    -------
    AudioSheets
        Files that cannot be read are listed in ``missing`` (source -> reason) and their items
        get ``sheet = -1``; a warning says how many items have no audio.
    """
    from ..audio.io import audio_info, load_audio

    check_positive("margin_s", margin_s, allow_zero=True)
    for col in ("source", "onset_s", "offset_s"):
        if col not in segments.columns:
            raise ParameterError(f"segments lack column {col!r}; they have {list(segments.columns)}")
    root = Path(root)
    base = root.parent if root.is_file() else root
    n = len(segments)
    sheet = np.full(n, -1, dtype=np.int32)
    start = np.zeros(n)
    end = np.zeros(n)
    missing: dict[str, str] = {}
    rates = []
    infos = {}
    for src in pd.unique(segments["source"]):
        try:
            infos[src] = audio_info(base / str(src))
            rates.append(infos[src].sample_rate)
        except DataError as exc:
            missing[str(src)] = str(exc)
    rate, slowdown = browser_rate(max(rates) if rates else TARGET_RATE, f_max=f_max)
    if len(set(rates)) > 1 and slowdown == 1:
        rate = TARGET_RATE  # mixed rates: one sheet rate for all
    gap = np.zeros(int(round(GAP_S * rate)), dtype=np.float32)
    wavs: list[bytes] = []
    parts: list[np.ndarray] = []
    t = 0.0

    def flush():
        nonlocal parts, t
        if parts:
            wavs.append(_wav_bytes(np.concatenate(parts), rate))
        parts, t = [], 0.0

    src_col = segments["source"].astype(str).to_numpy()
    on_col = segments["onset_s"].to_numpy(float)
    off_col = segments["offset_s"].to_numpy(float)
    ch_col = segments[channel_col].to_numpy() if channel_col in segments.columns else np.zeros(n, int)
    cache: dict = {}
    for i in range(n):
        info = infos.get(src_col[i])
        if info is None:
            continue
        a = max(0.0, on_col[i] - margin_s)
        b = min(info.duration_s, off_col[i] + margin_s)
        if b <= a:
            missing.setdefault(src_col[i], f"segment {i} lies outside the file")
            continue
        key = (src_col[i], int(ch_col[i]))
        try:
            if info.duration_s <= 600:
                if key not in cache:
                    cache.clear()  # one file in memory at a time (segments are sorted by source)
                    cache[key] = load_audio(info.path, channel=int(ch_col[i]))[0]
                y_all = cache[key]
                y = y_all[int(a * info.sample_rate):int(math.ceil(b * info.sample_rate))]
            else:
                y = load_audio(info.path, channel=int(ch_col[i]), offset_s=a, duration_s=b - a)[0]
        except DataError as exc:
            missing[src_col[i]] = str(exc)
            continue
        y = _resample(np.asarray(y, np.float32), info.sample_rate, rate * slowdown)
        dur = len(y) / rate
        if parts and t + dur > max_sheet_s:
            flush()
        sheet[i] = len(wavs)
        start[i] = t
        end[i] = t + dur
        parts.extend([y, gap])
        t += dur + len(gap) / rate
    flush()
    n_missing = int((sheet < 0).sum())
    if n_missing:
        logger.warning("%d of %d items have no audio on the map (%d file(s) unreadable: %s)",
                       n_missing, n, len(missing), "; ".join(list(missing.values())[:3]))
    return AudioSheets(rate=rate, slowdown=slowdown, margin_s=float(margin_s), sheet=sheet,
                       start=start, end=end, wavs=wavs, missing=missing)


def data_uri(payload: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for inlining an asset in the page."""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def write_asset(path: Path, payload: bytes) -> Path:
    """Write one asset file atomically."""
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_bytes(payload)
    return path
