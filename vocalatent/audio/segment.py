"""Amplitude segmentation of vocalizations in a frequency band.

The recording is cut into short overlapping frames (``window_s`` long, every ``hop_s``); each
frame's power in the band [``f_min``, ``f_max``] gives a level trace in dB relative to full
scale (a full-scale sine in the band reads 0 dB). Two ways to cut it (``mode``):

``"prominence"`` (default; robust to noise inside the bout)
    The level trace is smoothed (``smoothing_s``) and compared with a *local noise floor*:
    the running minimum of the trace over a centred window of ``floor_window_s``, so inside a
    bout the floor follows the gaps between syllables
    (reverberation, cage noise) instead of the file's silence. A segment is a run of frames
    more than ``boundary_db`` above the local floor holding a frame more than ``peak_db``
    above it; runs are split at every dip whose depth below the *lower of its two neighbouring
    peaks* (its prominence) is at least ``split_db``. Every number is a difference of dB on
    the file's own trace, so the result does not depend on the recording's level (gain,
    bit depth, a float file above full scale) and a DC offset lies outside the band.
``"ava"``
    AVA-style hysteresis (Goffinet et al. 2021): the trace is mapped onto [0, 1] between
    ``amp_min_db`` and ``amp_max_db`` (fixed, or calibrated from percentiles of the file's own
    trace), smoothed, and cut with ``th1 < th2 < th3``: a syllable needs a frame above
    ``th3``; it extends while the trace stays above ``th1``; two syllables joined above
    ``th1`` are split at the lowest point of a dip below ``th2`` that separates two peaks
    above ``th3``. AVA's own names are accepted by :meth:`SegmentParams.from_dict`
    (``th_1``, ``th_2``, ``th_3``, ``min_dur``, ``max_dur``, ``smoothing_timescale``).

In both modes segments closer than ``min_gap_s`` are merged (in ``"prominence"`` only across
gaps shallower than ``split_db``, and never across a split dip); a segment longer than
``max_dur_s`` is split at its deepest dips (largest prominence first; at least a quarter of
``split_db`` deep) until its pieces fit, and one that has no dip left to split at is removed
*and reported*; segments shorter than
``min_dur_s`` are removed. Nothing is dropped silently: :class:`SegmentReport` accounts for
every frame above the boundary threshold (in a segment, or removed for a named reason), and
:func:`vocalatent.audio.pipeline.segment_paths` collects the reports of all files.

Long files are processed in chunks: each frame depends only on its own samples, chunks are
aligned on the frame grid and overlap by one window minus one hop, so the trace computed chunk
by chunk is bit-identical to the trace of the whole file. Only the trace (8 bytes per frame,
about 14 MB per hour at a 2 ms hop) is kept for the whole file; calibration, smoothing and
thresholding run on it, so a syllable on a chunk boundary is neither lost nor doubled.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import fft as sp_fft
from scipy.ndimage import gaussian_filter1d, minimum_filter1d
from scipy.signal import find_peaks, peak_prominences

from .._utils import DataError, ParameterError, check_option, check_positive, logger
from .io import audio_info, iter_blocks

__all__ = [
    "AVA_ALIASES",
    "AmplitudeTrace",
    "SegmentParams",
    "SegmentReport",
    "amplitude_trace",
    "band_levels",
    "check_percentiles",
    "frame_count",
    "normalize_levels",
    "params_from_dict",
    "segment_file",
    "segment_signal",
    "segments_from_levels",
    "segments_from_trace",
]

_FRAME_BATCH = 2048  # frames per FFT batch (bounds memory; results do not depend on it)
_DIGITAL_SILENCE_DB = -180.0  # frames of exact zeros read -200 dB; left out of calibration


#: AVA's parameter names (``ava.segmenting.amplitude_segmentation``) and the names used here.
AVA_ALIASES = {"th_1": "th1", "th_2": "th2", "th_3": "th3", "min_dur": "min_dur_s",
               "max_dur": "max_dur_s", "smoothing_timescale": "smoothing_s"}


def params_from_dict(cls, d: Mapping[str, Any], aliases: Mapping[str, str] | None = None):
    """Build the frozen parameter dataclass ``cls`` from a mapping (a TOML table).

    ``aliases`` maps other accepted names to field names (an alias given together with its
    field name wins: presets use field names, so the alias is the user's); unknown keys are a
    ParameterError that lists the known ones; lists become tuples.
    """
    if not isinstance(d, Mapping):
        raise ParameterError(f"{cls.__name__}.from_dict needs a mapping; got {type(d).__name__}")
    d = dict(d)
    for alias, name in (aliases or {}).items():
        if alias in d:
            # the other name wins: presets use the field names, so when both are present the
            # alias comes from the user's own file, merged over a preset
            if name in d and d[name] != d[alias]:
                logger.info("%s: %s = %r (another name for %s) replaces %s = %r", cls.__name__,
                            alias, d[alias], name, name, d[name])
            d[name] = d.pop(alias)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ParameterError(
            f"unknown {cls.__name__} key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
    return cls(**kwargs)


def check_percentiles(name: str, value) -> tuple[float, float]:
    """``(low, high)`` percentiles with ``0 <= low < high <= 100``, or a ParameterError."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be two numbers (low, high); got {value!r}") from None
    if not 0.0 <= lo < hi <= 100.0:
        raise ParameterError(f"{name} must satisfy 0 <= low < high <= 100; got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class SegmentParams:
    """Parameters of amplitude segmentation, in physical units.

    Parameters
    ----------
    mode : {"prominence", "ava"}, default="prominence"
        ``"prominence"``: thresholds in dB above a local noise floor and splits at dips deep
        relative to their neighbouring peaks (``floor_window_s``, ``boundary_db``,
        ``peak_db``, ``split_db``). ``"ava"``: AVA-style hysteresis thresholds on a
        calibrated [0, 1] trace (``amp_min_db``, ``amp_max_db``, ``calib_percentiles``,
        ``min_range_db``, ``th1``, ``th2``, ``th3``). See the module docstring.
    floor_window_s : float, default=2.0
        Window (s, centred) of the running minimum that is the local noise floor
        (``"prominence"``). A continuous sound longer than about this window raises the floor
        to its own level and is not found: keep it above twice the longest sound.
    boundary_db : float, default=5
        A segment runs while the smoothed level is more than this above the local floor.
    peak_db : float, default=10
        A segment needs a frame at least this far above the local floor.
    split_db : float, default=6
        A dip at least this deep below the lower of its two neighbouring peaks splits a run.
    edge_db : float or None, default=None
        ``"prominence"``: when set, each segment's edges are moved in to the first and last
        frame within ``edge_db`` of its own peak level — cuts reverberation tails, which
        decay below the syllable but stay above the floor. None: no trimming.
    f_min, f_max : float, default=400, 10000
        Frequency band (Hz) whose power makes the amplitude trace. ``f_max`` must be at most
        half the sample rate of every file (checked per file).
    window_s : float, default=0.008
        Analysis window (s); the FFT length is ``round(window_s * sr)`` samples.
    hop_s : float, default=0.002
        Time between frames (s): the time resolution of onsets and offsets.
    nperseg, noverlap : int or None, default=None
        Window and overlap in samples; when ``nperseg`` is given it replaces ``window_s`` and
        ``hop_s`` (``noverlap`` defaults to ``nperseg // 2``). Useful to copy published settings.
    weighting : {"sum", "softmax"}, default="sum"
        ``"sum"``: total band power per frame. ``"softmax"``: a softmax-weighted mean of the
        per-bin dB levels (temperature ``softmax_temperature_db``), close to the loudest bin's
        level; it favours tonal syllables over broadband noise.
    softmax_temperature_db : float, default=6
    amp_min_db, amp_max_db : float or None, default=None
        Fixed range (dBFS) mapped onto [0, 1]. Both None: calibrated per file as the
        ``calib_percentiles`` of the file's trace (low = noise floor, high = loud syllables),
        widened to at least ``min_range_db``.
    calib_percentiles : (float, float), default=(20, 99.5)
    min_range_db : float, default=20
        Smallest calibrated range (dB); keeps a noise-only file from being "all syllables".
    th1, th2, th3 : float, default=0.1, 0.2, 0.3
        ``"ava"`` mode: thresholds on the normalized trace, ``0 <= th1 < th2 < th3 <= 1``:
        boundary, split dip, onset peak (AVA's ``th_1``, ``th_2``, ``th_3``).
    smoothing_s : float, default=0.004
        Standard deviation (s) of the Gaussian that smooths the trace (0: none); AVA's
        ``smoothing_timescale``.
    min_dur_s, max_dur_s : float, default=0.02, 0.5
        Syllable duration limits (s); ``max_dur_s=None`` means no upper limit. A longer
        segment is split at its deepest dips until its pieces fit; one that cannot be split
        is removed and reported (:class:`SegmentReport`), never dropped silently.
    min_gap_s : float, default=0
        Segments separated by a shorter silence (s) are merged (``"prominence"``: only when
        the gap is less than ``split_db`` deep).
    """

    mode: str = "prominence"
    floor_window_s: float = 2.0
    boundary_db: float = 5.0
    peak_db: float = 10.0
    split_db: float = 6.0
    edge_db: float | None = None
    f_min: float = 400.0
    f_max: float = 10000.0
    window_s: float = 0.008
    hop_s: float = 0.002
    nperseg: int | None = None
    noverlap: int | None = None
    weighting: str = "sum"
    softmax_temperature_db: float = 6.0
    amp_min_db: float | None = None
    amp_max_db: float | None = None
    calib_percentiles: tuple[float, float] = (20.0, 99.5)
    min_range_db: float = 20.0
    th1: float = 0.1
    th2: float = 0.2
    th3: float = 0.3
    smoothing_s: float = 0.004
    min_dur_s: float = 0.02
    max_dur_s: float | None = 0.5
    min_gap_s: float = 0.0

    def __post_init__(self):
        check_option("mode", self.mode, ["prominence", "ava"])
        check_positive("floor_window_s", self.floor_window_s)
        check_positive("boundary_db", self.boundary_db, allow_zero=True)
        check_positive("peak_db", self.peak_db, allow_zero=True)
        check_positive("split_db", self.split_db)
        if self.edge_db is not None:
            check_positive("edge_db", self.edge_db)
        if self.peak_db < self.boundary_db:
            raise ParameterError(f"peak_db must be >= boundary_db; got peak_db={self.peak_db}, "
                                 f"boundary_db={self.boundary_db}")
        check_positive("f_min", self.f_min, allow_zero=True)
        check_positive("f_max", self.f_max)
        if self.f_min >= self.f_max:
            raise ParameterError(f"f_min must be < f_max; got f_min={self.f_min}, f_max={self.f_max}")
        check_positive("window_s", self.window_s)
        check_positive("hop_s", self.hop_s)
        if self.nperseg is not None:
            check_positive("nperseg", self.nperseg, integer=True)
            if self.nperseg < 8:
                raise ParameterError(f"nperseg must be >= 8; got {self.nperseg}")
            if self.noverlap is not None:
                check_positive("noverlap", self.noverlap, integer=True, allow_zero=True)
                if self.noverlap >= self.nperseg:
                    raise ParameterError(
                        f"noverlap must be < nperseg; got noverlap={self.noverlap}, "
                        f"nperseg={self.nperseg}")
        elif self.noverlap is not None:
            raise ParameterError(f"noverlap={self.noverlap} needs nperseg to be set too")
        check_option("weighting", self.weighting, ["sum", "softmax"])
        check_positive("softmax_temperature_db", self.softmax_temperature_db)
        if (self.amp_min_db is None) != (self.amp_max_db is None):
            raise ParameterError(
                "amp_min_db and amp_max_db must both be set (fixed range) or both be None "
                f"(calibrated); got amp_min_db={self.amp_min_db}, amp_max_db={self.amp_max_db}")
        if self.amp_min_db is not None and not self.amp_min_db < self.amp_max_db:
            raise ParameterError(f"amp_min_db must be < amp_max_db; got {self.amp_min_db}, "
                                 f"{self.amp_max_db}")
        object.__setattr__(self, "calib_percentiles",
                           check_percentiles("calib_percentiles", self.calib_percentiles))
        check_positive("min_range_db", self.min_range_db)
        for name in ("th1", "th2", "th3"):
            v = getattr(self, name)
            check_positive(name, v, allow_zero=True)
            if v > 1:
                raise ParameterError(f"{name} must be in [0, 1]; got {v}")
        if not self.th1 < self.th2 < self.th3:
            raise ParameterError(
                f"thresholds must satisfy th1 < th2 < th3; got th1={self.th1}, th2={self.th2}, "
                f"th3={self.th3}")
        check_positive("smoothing_s", self.smoothing_s, allow_zero=True)
        check_positive("min_dur_s", self.min_dur_s, allow_zero=True)
        if self.max_dur_s is not None:
            check_positive("max_dur_s", self.max_dur_s)
            if self.max_dur_s <= self.min_dur_s:
                raise ParameterError(f"max_dur_s must be > min_dur_s; got max_dur_s="
                                     f"{self.max_dur_s}, min_dur_s={self.min_dur_s}")
        check_positive("min_gap_s", self.min_gap_s, allow_zero=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SegmentParams":
        """Build from a mapping (e.g. a TOML ``[segment]`` table); unknown keys are an error.

        AVA's names (:data:`AVA_ALIASES`: ``th_1``, ``th_2``, ``th_3``, ``min_dur``,
        ``max_dur``, ``smoothing_timescale``) are accepted for the parameters they name.
        """
        return params_from_dict(cls, d, AVA_ALIASES)

    def to_dict(self) -> dict:
        """A JSON-ready dict that :meth:`from_dict` turns back into equal parameters."""
        d = dataclasses.asdict(self)
        d["calib_percentiles"] = list(self.calib_percentiles)
        return d

    def frame_geometry(self, sr: int) -> tuple[int, int]:
        """``(nperseg, hop)`` in samples at sample rate ``sr``."""
        if self.nperseg is not None:
            noverlap = self.nperseg // 2 if self.noverlap is None else self.noverlap
            return int(self.nperseg), int(self.nperseg - noverlap)
        nperseg = max(8, int(round(self.window_s * sr)))
        hop = max(1, int(round(self.hop_s * sr)))
        return nperseg, hop


@dataclass(frozen=True)
class AmplitudeTrace:
    """The amplitude trace of a recording, before and after normalization.

    Attributes
    ----------
    times : np.ndarray [shape=(n_frames,)]
        Centre of each frame (s).
    level_db : np.ndarray [shape=(n_frames,)]
        Band level (dBFS) per frame.
    normalized : np.ndarray [shape=(n_frames,), range [0, 1]]
        ``level_db`` mapped onto [0, 1] between ``lo_db`` and ``hi_db`` and smoothed: the trace
        the ``"ava"`` thresholds apply to.
    lo_db, hi_db : float
        The range used (fixed or calibrated).
    hop_s : float
        Time between frames (s).
    smoothed_db : np.ndarray [shape=(n_frames,)]
        ``level_db`` smoothed (``smoothing_s``), frames of digital silence raised to the
        quietest audible frame: the trace the ``"prominence"`` thresholds apply to.
    floor_db : np.ndarray [shape=(n_frames,)]
        The local noise floor (dBFS): running minimum of ``smoothed_db`` over ``floor_window_s``.
    """

    times: np.ndarray
    level_db: np.ndarray
    normalized: np.ndarray
    lo_db: float
    hi_db: float
    hop_s: float
    smoothed_db: np.ndarray | None = None
    floor_db: np.ndarray | None = None

    def thresholds(self, params: "SegmentParams") -> dict[str, np.ndarray | float]:
        """The thresholds of ``params.mode`` on this trace, for plotting.

        Returns
        -------
        dict
            ``"prominence"``: ``floor``, ``boundary``, ``peak`` (dBFS arrays). ``"ava"``:
            ``th1``, ``th2``, ``th3`` as dBFS levels (floats) on the calibrated range.
        """
        if params.mode == "prominence":
            return {"floor": self.floor_db, "boundary": self.floor_db + params.boundary_db,
                    "peak": self.floor_db + params.peak_db}
        span = self.hi_db - self.lo_db
        return {k: self.lo_db + getattr(params, k) * span for k in ("th1", "th2", "th3")}


@dataclass(frozen=True)
class SegmentReport:
    """What segmentation did with every frame above the boundary threshold of one recording.

    Attributes
    ----------
    n_segments : int
        Segments kept.
    above_s : float
        Seconds of frames above the boundary threshold (``"prominence"``: ``boundary_db``
        above the local floor; ``"ava"``: ``th1``).
    in_segments_s : float
        Of those, seconds inside kept segments (frames merged in across a ``min_gap_s`` gap
        are not counted: they were below the threshold).
    removed : dict
        ``reason -> {"n": segments, "s": seconds above threshold}`` for every filter that
        removed something: ``"split_dip"`` (the frames of a dip a run was split at, up to
        where the level has risen ``split_db / 2`` above it), ``"edge_trim"`` (frames
        ``edge_db`` below a segment's peak at its edges), ``"no_peak"`` (never reached ``peak_db`` / ``th3``),
        ``"too_short"`` (< ``min_dur_s``), ``"too_long"`` (> ``max_dur_s`` with no dip left
        to split at). ``above_s == in_segments_s + sum of removed seconds`` (to a frame).
    n_split_for_max_dur : int
        Splits made to bring segments under ``max_dur_s``.
    """

    n_segments: int
    above_s: float
    in_segments_s: float
    removed: dict
    n_split_for_max_dur: int

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"n_segments": self.n_segments, "above_s": self.above_s,
                "in_segments_s": self.in_segments_s,
                "removed": {k: dict(v) for k, v in self.removed.items()},
                "n_split_for_max_dur": self.n_split_for_max_dur}


def _check_rate(sr: int, params: SegmentParams, path) -> None:
    if sr < 2 * params.f_max:
        raise DataError(
            f"sample rate {sr} Hz is below 2*f_max = {2 * params.f_max:g} Hz: the band up to "
            f"f_max={params.f_max:g} Hz is not in this recording; lower f_max",
            path=path)


def _band_levels(frames: np.ndarray, window: np.ndarray, lo_bin: int, hi_bin: int,
                 norm: float, params: SegmentParams, n_fft: int | None = None) -> np.ndarray:
    """Band level (dB) of each row of ``frames`` [shape=(n, nperseg)].

    Each frame's window-weighted mean is removed first, so a DC offset leaks into no bin
    (zero padding to ``n_fft`` would otherwise spread the window's DC response over the band).
    """
    xw = frames * window
    # row by row (not a BLAS product): a frame's value must not depend on its batch position
    dc = xw.sum(axis=-1) / window.sum()
    xw -= dc[:, None] * window
    spec = sp_fft.rfft(xw, n=n_fft, axis=-1)[:, lo_bin:hi_bin]
    power = (spec.real ** 2 + spec.imag ** 2) * norm
    if params.weighting == "sum":
        return 10.0 * np.log10(power.sum(axis=-1) + 1e-20)
    level = 10.0 * np.log10(power + 1e-20)
    z = level / params.softmax_temperature_db
    z -= z.max(axis=-1, keepdims=True)
    w = np.exp(z)
    w /= w.sum(axis=-1, keepdims=True)
    return (w * level).sum(axis=-1)


def _frame_range(frames, n_frames: int) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in frames)
    except (TypeError, ValueError):
        raise ParameterError(f"frames must be (first, stop) integers; got {frames!r}") from None
    if not 0 <= a < b <= n_frames:
        raise ParameterError(f"frames must satisfy 0 <= first < stop <= {n_frames} (the file's "
                             f"frame count); got {frames!r}")
    return a, b


class _TraceBuilder:
    """Computes band levels for frames on a fixed grid, block by block."""

    def __init__(self, sr: int, n_samples: int, params: SegmentParams, path=None,
                 frames: tuple[int, int] | None = None):
        self.params = params
        self.sr = sr
        self.nperseg, self.hop = params.frame_geometry(sr)
        if n_samples < self.nperseg:
            raise DataError(
                f"shorter than one FFT window: {n_samples} samples "
                f"({1000 * n_samples / sr:.2f} ms) < {self.nperseg} samples "
                f"({1000 * self.nperseg / sr:.2f} ms)", path=path)
        self.n_frames = 1 + -(-(n_samples - self.nperseg) // self.hop)
        self.window = np.hanning(self.nperseg + 1)[:-1].astype(np.float64)  # periodic Hann
        # zero-pad each frame to a length pocketfft is fast at (353 samples, 8 ms at 44.1 kHz,
        # is prime: 5x slower than 360)
        self.n_fft = int(sp_fft.next_fast_len(self.nperseg, real=True))
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sr)
        self.lo_bin = int(np.searchsorted(freqs, params.f_min, side="left"))
        self.hi_bin = int(np.searchsorted(freqs, params.f_max, side="right"))
        if self.hi_bin <= self.lo_bin:
            raise ParameterError(
                f"the band [{params.f_min:g}, {params.f_max:g}] Hz holds no FFT bin at "
                f"sr={sr} Hz with a {self.nperseg}-sample window; widen the band or the window")
        s = self.window.sum()
        enbw = self.n_fft * np.sum(self.window ** 2) / s ** 2  # in bins of the n_fft grid
        self.norm = 4.0 / (s * s) / enbw  # full-scale sine in the band -> 0 dB
        self.f0, self.f1 = (0, self.n_frames) if frames is None else _frame_range(
            frames, self.n_frames)
        self.levels = np.empty(self.f1 - self.f0, dtype=np.float64)  # frames f0 .. f1-1
        self.peak = 0.0

    def add_block(self, start: int, y: np.ndarray, first_frame: int, n_frames: int) -> None:
        """Levels of frames ``first_frame .. first_frame+n_frames-1``; ``y`` starts at ``start``."""
        need = (first_frame + n_frames - 1) * self.hop + self.nperseg - start
        if y.size < need:
            y = np.concatenate([y, np.zeros(need - y.size, dtype=y.dtype)])
        if y.size:
            self.peak = max(self.peak, float(np.max(np.abs(y))))
        y64 = y.astype(np.float64)
        offset = first_frame * self.hop - start
        frames = np.lib.stride_tricks.sliding_window_view(y64[offset:], self.nperseg)[::self.hop]
        for b in range(0, n_frames, _FRAME_BATCH):
            rows = frames[b:min(n_frames, b + _FRAME_BATCH)]
            i = first_frame - self.f0 + b
            self.levels[i:i + rows.shape[0]] = _band_levels(
                rows, self.window, self.lo_bin, self.hi_bin, self.norm, self.params, self.n_fft)

    def read(self, info, channel: int, chunk_s: float) -> None:
        """Fill ``levels`` from the file, ``chunk_s`` of audio at a time."""
        per_chunk = max(1, int(round(chunk_s * self.sr / self.hop)))
        for start, y in iter_blocks(info, step=per_chunk * self.hop,
                                    overlap=self.nperseg - self.hop, channel=channel,
                                    start=self.f0 * self.hop, stop=self.f1 * self.hop):
            first = start // self.hop
            n = min(per_chunk, self.f1 - first)
            if n > 0:
                self.add_block(start, y, first, n)

    def finish(self, path=None) -> AmplitudeTrace:
        if self.peak == 0.0:
            raise DataError("silent: every sample is 0", path=path)
        return normalize_levels(self.levels, self.params, hop=self.hop, nperseg=self.nperseg,
                                sr=self.sr)


def normalize_levels(levels: np.ndarray, params: SegmentParams, *, hop: int, nperseg: int,
                     sr: int) -> AmplitudeTrace:
    """Smooth band levels (dB), estimate the local floor, and map them onto [0, 1].

    Parameters
    ----------
    levels : np.ndarray [shape=(n_frames,)]
        Band level (dBFS) per frame.
    params : SegmentParams
    hop, nperseg, sr : int
        Frame geometry (samples) and sample rate (Hz).

    Returns
    -------
    AmplitudeTrace
    """
    levels = np.asarray(levels, dtype=np.float64)
    audible = levels[levels > _DIGITAL_SILENCE_DB]  # zero padding must not set the floor
    audible = audible if audible.size else levels
    if params.amp_min_db is not None:
        lo, hi = float(params.amp_min_db), float(params.amp_max_db)
    else:
        lo, hi = (float(v) for v in np.percentile(audible, params.calib_percentiles))
        hi = max(hi, lo + params.min_range_db)
    hop_s = hop / sr
    sigma = params.smoothing_s / hop_s
    a = np.clip((levels - lo) / (hi - lo), 0.0, 1.0)
    smoothed = np.maximum(levels, float(audible.min()))
    if params.smoothing_s > 0:
        a = gaussian_filter1d(a, sigma, mode="nearest")
        smoothed = gaussian_filter1d(smoothed, sigma, mode="nearest")
    width = max(3, int(round(params.floor_window_s / hop_s)) | 1)
    floor = minimum_filter1d(smoothed, size=width, mode="nearest")
    times = (np.arange(levels.size) * hop + nperseg / 2) / sr
    return AmplitudeTrace(times=times, level_db=levels, normalized=a, lo_db=lo, hi_db=hi,
                          hop_s=hop_s, smoothed_db=smoothed, floor_db=floor)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Start/stop (exclusive) indices of the runs of True in a 1-D boolean array, shape (k, 2)."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1)], axis=1)


def _dips(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interior local minima of ``x`` and their depth below the lower neighbouring peak.

    The depth is the prominence of the minimum as a peak of ``-x``: how far the trace must
    rise from the dip, on the lower of its two sides, before it reaches ground lower than the
    dip (or the end of ``x``).
    """
    if x.size < 3:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    idx, _ = find_peaks(-x)
    if idx.size == 0:
        return idx, np.zeros(0)
    return idx, peak_prominences(-x, idx)[0]


def _split_long(x: np.ndarray, s: int, e: int, max_frames: int | None, min_frames: int,
                min_depth: float, out: list, too_long: list) -> int:
    """Split ``x[s:e]`` at its deepest dips until each piece has at most ``max_frames`` frames.

    Pieces that fit go to ``out``; pieces with no dip left (at least ``min_depth`` deep, and
    leaving both sides at least ``min_frames`` long) go to ``too_long``. Returns the number
    of splits made.
    """
    if max_frames is None or e - s <= max_frames:
        out.append((s, e))
        return 0
    idx, depth = _dips(x[s:e])
    ok = (idx >= min_frames) & (idx <= e - s - min_frames) & (depth >= min_depth)
    if not ok.any():
        too_long.append((s, e))
        return 0
    v = s + int(idx[ok][np.argmax(depth[ok])])
    return 1 + _split_long(x, s, v, max_frames, min_frames, min_depth, out, too_long) \
        + _split_long(x, v, e, max_frames, min_frames, min_depth, out, too_long)


def _candidates_prominence(trace: AmplitudeTrace, params: SegmentParams):
    x = trace.smoothed_db
    above = x > trace.floor_db + params.boundary_db
    pieces, no_peak, dips, edges = [], [], [], []
    for s, e in _runs(above):
        if (x[s:e] - trace.floor_db[s:e]).max() < params.peak_db:
            no_peak.append((s, e))
            continue
        idx, depth = _dips(x[s:e])
        cuts = (s + idx[depth >= params.split_db]).tolist()
        bounds = [s, *cuts, e]
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            # at a split dip the piece starts (ends) where the level has risen half the split
            # depth above the dip: the dip itself belongs to neither syllable
            a0, b0 = a, b
            rise = params.split_db / 2
            if i > 0:
                a = a + int(np.argmax(x[a:b] >= x[a] + rise))
            if i < len(bounds) - 2:
                b = b - int(np.argmax(x[a:b][::-1] >= x[b] + rise))
            if a > a0:
                dips.append((a0, a))
            if b < b0:
                dips.append((b, b0))
            if params.edge_db is not None and b > a:
                ok = np.flatnonzero(x[a:b] >= x[a:b].max() - params.edge_db)
                a1, b1 = a + int(ok[0]), a + int(ok[-1]) + 1
                if a1 > a:
                    edges.append((a, a1))
                if b1 < b:
                    edges.append((b1, b))
                a, b = a1, b1
            if (x[a:b] - trace.floor_db[a:b]).max() >= params.peak_db:
                pieces.append((a, b, i > 0))
            else:
                no_peak.append((a, b))
    return x, above, pieces, no_peak, dips, edges


def _candidates_ava(trace: AmplitudeTrace, params: SegmentParams):
    a = trace.normalized
    above = a > params.th1
    pieces, no_peak = [], []
    for s, e in _runs(above):
        seg = a[s:e]
        if seg.max() <= params.th3:
            no_peak.append((s, e))
            continue
        cur = s
        for ds, de in _runs(seg < params.th2) + s:
            if ds <= cur or de >= e:
                continue
            if a[cur:ds].max() > params.th3 and a[de:e].max() > params.th3:
                split = ds + int(np.argmin(a[ds:de]))
                pieces.append((cur, split))
                cur = split
        pieces.append((cur, e))
    kept = []
    for s, e in pieces:
        if a[s:e].max() > params.th3:
            kept.append((s, e, False))  # AVA merges split pieces closer than min_gap_s too
        else:
            no_peak.append((s, e))
    return a, above, kept, no_peak, [], []


def segments_from_trace(trace: AmplitudeTrace, params: SegmentParams, *,
                        return_report: bool = False):
    """Segment an amplitude trace (``params.mode``: see the module docstring).

    Parameters
    ----------
    trace : AmplitudeTrace
    params : SegmentParams
    return_report : bool, default=False
        Also return the :class:`SegmentReport` (what each filter removed).

    Returns
    -------
    segments : pandas.DataFrame
        Columns ``onset_s``, ``offset_s``, ``duration_s`` (s, frame edges: a segment spanning
        frames i..j runs from ``times[i] - hop/2`` to ``times[j] + hop/2``) and ``peak``
        (``"prominence"``: the highest level above the local floor inside, in dB; ``"ava"``:
        the highest normalized amplitude inside, in [0, 1]); sorted by onset.
    report : SegmentReport
        Only with ``return_report=True``.
    """
    if trace.smoothed_db is None and params.mode == "prominence":
        raise ParameterError("this AmplitudeTrace has no smoothed_db/floor_db; make it with "
                             "normalize_levels or amplitude_trace")
    if params.mode == "prominence":
        x, above, pieces, no_peak, dips, edges = _candidates_prominence(trace, params)
        height = x - trace.floor_db
    else:
        x, above, pieces, no_peak, dips, edges = _candidates_ava(trace, params)
        height = x
    hop = trace.hop_s
    # merge across short gaps
    if params.min_gap_s > 0 and len(pieces) > 1:
        gap_frames = params.min_gap_s / hop - 1e-9
        # pieces split at a dip stay split ("prominence"); "ava" merges them as AVA does
        # and in "prominence" a short gap is bridged only when it is shallower than split_db
        merged = [pieces[0][:2]]
        for s, e, split in pieces[1:]:
            shallow = True
            if params.mode == "prominence" and s > merged[-1][1]:
                ps, pe = merged[-1]
                depth = min(x[ps:pe].max(), x[s:e].max()) - x[pe:s].min()
                shallow = depth < params.split_db
            if not split and shallow and s - merged[-1][1] < gap_frames:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        pieces = merged
    else:
        pieces = [pc[:2] for pc in pieces]
    # split what is too long at its deepest dips; report what cannot be split
    max_frames = None if params.max_dur_s is None else int(np.floor(params.max_dur_s / hop + 1e-9))
    min_frames = max(1, int(np.ceil(params.min_dur_s / hop - 1e-9)))
    fitted, too_long = [], []
    n_split = 0
    # a dip must stand out of the trace's ripple to be cut at: a quarter of split_db (or of
    # th2 - th1 in "ava" units)
    min_depth = params.split_db / 4 if params.mode == "prominence" else (params.th2 - params.th1) / 4
    for s, e in pieces:
        n_split += _split_long(x, s, e, max_frames, min_frames, min_depth, fitted, too_long)
    keep = [(s, e) for s, e in fitted if (e - s) * hop >= params.min_dur_s - 1e-9]
    too_short = [(s, e) for s, e in fitted if (e - s) * hop < params.min_dur_s - 1e-9]
    half = hop / 2
    onsets = np.array([trace.times[s] - half for s, _ in keep], dtype=np.float64)
    offsets = np.array([trace.times[e - 1] + half for _, e in keep], dtype=np.float64)
    peaks = np.array([height[s:e].max() for s, e in keep], dtype=np.float64)
    segments = pd.DataFrame({"onset_s": onsets, "offset_s": offsets,
                             "duration_s": offsets - onsets, "peak": peaks})
    if not return_report:
        return segments

    def frames_above(spans) -> int:
        return int(sum(above[s:e].sum() for s, e in spans))

    removed = {}
    for reason, spans in (("split_dip", dips), ("edge_trim", edges), ("no_peak", no_peak), ("too_short", too_short),
                          ("too_long", too_long)):
        if spans:
            removed[reason] = {"n": len(spans), "s": frames_above(spans) * hop}
    report = SegmentReport(n_segments=len(keep), above_s=int(above.sum()) * hop,
                           in_segments_s=frames_above(keep) * hop, removed=removed,
                           n_split_for_max_dur=n_split)
    return segments, report


def amplitude_trace(y: np.ndarray, sr: int, params: SegmentParams, *, path=None) -> AmplitudeTrace:
    """Amplitude trace of a signal held in memory.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), full-scale float samples]
    sr : int
        Sample rate (Hz), at least ``2 * params.f_max``.
    params : SegmentParams
    path : path-like, optional
        Named in error messages.

    Returns
    -------
    AmplitudeTrace
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"expected a 1-D signal; got shape {y.shape}", path=path)
    if not np.all(np.isfinite(y)):
        if not np.any(np.isfinite(y)):
            raise DataError("all samples are NaN or infinite", path=path)
        y = np.where(np.isfinite(y), y, 0.0)
    _check_rate(sr, params, path)
    builder = _TraceBuilder(sr, y.size, params, path)
    builder.add_block(0, y, 0, builder.n_frames)
    return builder.finish(path)


def segment_signal(y: np.ndarray, sr: int, params: SegmentParams | None = None, *,
                   path=None, return_report: bool = False):
    """Segment a signal held in memory (see the module docstring for the algorithm).

    Parameters
    ----------
    y : np.ndarray [shape=(n,), full-scale float samples]
    sr : int
        Sample rate (Hz).
    params : SegmentParams, optional
        Defaults to ``SegmentParams()``.

    return_report : bool, default=False
        Also return the :class:`SegmentReport`.

    Returns
    -------
    pandas.DataFrame
        ``onset_s``, ``offset_s``, ``duration_s``, ``peak``: see :func:`segments_from_trace`;
        with ``return_report=True``, a tuple ``(segments, report)``.
    """
    params = SegmentParams() if params is None else params
    return segments_from_trace(amplitude_trace(y, sr, params, path=path), params,
                               return_report=return_report)


def segment_file(path: str | os.PathLike, params: SegmentParams | None = None, *,
                 channel: int = 0, chunk_s: float = 60.0, return_trace: bool = False,
                 return_report: bool = False):
    """Segment one channel of an audio file, reading it in chunks with bounded memory.

    Parameters
    ----------
    path : path-like
    params : SegmentParams, optional
    channel : int, default=0
    chunk_s : float, default=60
        Seconds of audio read at a time (rounded to whole hops). Memory is about
        ``chunk_s * sr * 8`` bytes for the chunk plus 8 bytes per frame of trace; the result
        does not depend on ``chunk_s``.
    return_trace : bool, default=False
        Also return the :class:`AmplitudeTrace`.
    return_report : bool, default=False
        Also return the :class:`SegmentReport` (after the trace when both are asked for).

    Returns
    -------
    segments : pandas.DataFrame
        ``onset_s``, ``offset_s``, ``duration_s``, ``peak``, as :func:`segment_signal` gives
        for the whole file.
    trace : AmplitudeTrace
        Only with ``return_trace=True``.
    report : SegmentReport
        Only with ``return_report=True``.

    Raises
    ------
    DataError
        Naming the file: unreadable, corrupt, truncated, empty, wrong extension (see
        :func:`vocalatent.audio.io.audio_info`), all samples NaN, silent (every sample 0),
        shorter than one FFT window, or a sample rate below ``2 * f_max``.
    """
    params = SegmentParams() if params is None else params
    check_positive("chunk_s", chunk_s)
    info = audio_info(path)
    _check_rate(info.sample_rate, params, info.path)
    builder = _TraceBuilder(info.sample_rate, info.n_samples, params, info.path)
    builder.read(info, channel, chunk_s)
    trace = builder.finish(info.path)
    segments, report = segments_from_trace(trace, params, return_report=True)
    out = (segments,) + ((trace,) if return_trace else ()) + ((report,) if return_report else ())
    return out if len(out) > 1 else segments


def frame_count(path: str | os.PathLike, params: SegmentParams | None = None) -> int:
    """Number of frames of the band-level trace of a file (its frame grid's length).

    Raises
    ------
    DataError
        As :func:`segment_file` (unreadable, too short, sample rate too low, ...).
    """
    params = SegmentParams() if params is None else params
    info = audio_info(path)
    _check_rate(info.sample_rate, params, info.path)
    return _TraceBuilder(info.sample_rate, info.n_samples, params, info.path).n_frames


def band_levels(path: str | os.PathLike, params: SegmentParams | None = None, *,
                channel: int = 0, frames: tuple[int, int] | None = None,
                chunk_s: float = 60.0) -> tuple[np.ndarray, float]:
    """Band levels (dBFS) of frames ``[first, stop)`` of a file, and the peak sample read.

    The frames of several calls over adjacent ranges, concatenated, are bit-identical to those
    of the whole file (each frame depends only on its own samples), so one long file can be
    spread over workers by time and finished with :func:`segments_from_levels`.

    Parameters
    ----------
    path : path-like
    params : SegmentParams, optional
    channel : int, default=0
    frames : (int, int), optional
        ``(first, stop)`` on the file's frame grid (:func:`frame_count` frames); default all.
    chunk_s : float, default=60
        Seconds of audio in memory at a time.

    Returns
    -------
    levels : np.ndarray [shape=(stop - first,), dtype=float64]
    peak : float
        Largest absolute sample value read (0 means silence).
    """
    params = SegmentParams() if params is None else params
    check_positive("chunk_s", chunk_s)
    info = audio_info(path)
    _check_rate(info.sample_rate, params, info.path)
    builder = _TraceBuilder(info.sample_rate, info.n_samples, params, info.path, frames=frames)
    builder.read(info, channel, chunk_s)
    return builder.levels, builder.peak


def segments_from_levels(levels: np.ndarray, peak: float, params: SegmentParams, *, sr: int,
                         path=None, return_trace: bool = False, return_report: bool = False):
    """Finish segmentation from a whole file's band levels (:func:`band_levels`).

    Parameters
    ----------
    levels : np.ndarray [shape=(n_frames,)]
        The file's band levels, every frame, in order.
    peak : float
        Largest absolute sample of the file (the largest of the parts' peaks).
    params : SegmentParams
    sr : int
        Sample rate (Hz).
    path : path-like, optional
        Named in error messages.
    return_trace, return_report : bool, default=False

    Returns
    -------
    segments[, trace][, report]
        As :func:`segment_file` returns them for the whole file.
    """
    if peak == 0.0:
        raise DataError("silent: every sample is 0", path=path)
    nperseg, hop = params.frame_geometry(sr)
    trace = normalize_levels(np.asarray(levels, dtype=np.float64), params, hop=hop,
                             nperseg=nperseg, sr=sr)
    segments, report = segments_from_trace(trace, params, return_report=True)
    out = (segments,) + ((trace,) if return_trace else ()) + ((report,) if return_report else ())
    return out if len(out) > 1 else segments
