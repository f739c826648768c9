"""Fixed-size syllable spectrograms (F x T, log amplitude, clipped to [0, 1]).

Each of the ``n_time`` columns is the spectrum of one Hann-windowed frame (``window_s`` long)
centred on a target time: ``time_mode="stretch"`` spreads the columns evenly over the syllable
from onset to offset (every syllable fills the image; its duration stays in the segment
table), ``time_mode="window"`` spreads them over a fixed window of ``window_dur_s`` centred on
the syllable (durations stay visible; longer syllables are cropped). Frames reaching outside
the recording read zeros. In ``"window"`` mode the columns outside the syllable's own
onset..offset hold its neighbours when the gaps are short; ``context="mask"`` (the default)
blanks them (0 in the image, NaN with ``return_db``, left out of every calibration; a column
the syllable covers in part is dimmed by the part, :func:`context_weights`), so that a
syllable's image shows the syllable alone and its neighbours cannot split one type into
several clusters (docs/analysis.md, "Syllables in context"); ``context="keep"`` keeps them.

The ``n_freq`` rows are target frequencies in [``f_min``, ``f_max``], evenly spaced
(``freq_scale="linear"``) or on the mel scale (``"mel"``). Each row is a triangular weighting
of the FFT power (a filterbank whose triangles are as wide as the row spacing, or one FFT bin
where rows are closer than bins — then it is linear interpolation between the two nearest
bins), so narrow tonal lines between rows are not missed. Power is converted to dB relative to
full scale (a full-scale sine gives 0 dB) and mapped onto [0, 1] between ``spec_min_db`` and
``spec_max_db``, fixed or calibrated from percentiles of the data
(:func:`calibrate_spectrogram_params`).

Level normalisation (``level``)
-------------------------------
Recordings made at different gains or distances differ in level: with one clipping range
shared by all files a recording 13 dB louder is on average about twice as bright and has far
fewer pixels clipped to zero, and a map can set it apart for that alone. ``level`` chooses the
range per recording (:func:`level_ranges`):

* ``"shared"``: one range for all files, the ``calib_percentiles`` of all syllables' dB values;
* ``"recording"``: each file's own range. Its top is the file's peak (the upper
  ``calib_percentiles`` of its own syllables); its bottom lies one common dynamic range ``W``
  below that, where ``W`` is the narrowest of the files' own (peak − noise floor) widths (the
  10th percentile of the widths when there are more than ten files, so that one noisy file does
  not set it for all) less ``level_margin_db`` (6 dB), so that the noisiest file's noise is
  clipped to zero as the quieter files' is. A gain change shifts a file's peak and range
  together, so the same song recorded at +0 and +13 dB gives the same images; a brighter noise
  floor is clipped away with the common range rather than stretching the file's contrast
  (tests/audio/test_spectrogram_levels.py: +0 dB with noise at -75 dBFS against +13 dB with
  noise at -55 dBFS, mean absolute pixel difference below 0.003; with the shared range 0.2);
* ``"auto"`` (default): ``"recording"`` when the files' peaks spread over more than
  ``level_auto_db`` (6 dB), else ``"shared"`` (the same numbers when the levels agree).

With fixed ``spec_min_db``/``spec_max_db`` the range is shared whatever ``level`` says.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from scipy import fft as sp_fft

from .._utils import ParameterError, check_option, check_positive
from .segment import check_percentiles as _check_percentiles, params_from_dict as _params_from_dict

__all__ = [
    "LEVEL_MODES",
    "SpectrogramParams",
    "apply_level_ranges",
    "context_weights",
    "calibrate_spectrogram_params",
    "level_ranges",
    "resolve_level_params",
    "syllable_spectrogram",
    "syllable_spectrograms",
]

_SYLLABLE_BATCH = 32

#: Choices of ``SpectrogramParams.level`` (see the module docstring).
LEVEL_MODES = ("auto", "shared", "recording")


@dataclass(frozen=True)
class SpectrogramParams:
    """Parameters of syllable spectrograms, in physical units.

    Parameters
    ----------
    n_freq, n_time : int, default=128, 128
        Image size: frequency rows x time columns.
    f_min, f_max : float, default=400, 10000
        Frequency range (Hz) of the rows; ``f_max`` at most half the sample rate.
    freq_scale : {"linear", "mel"}, default="linear"
    window_s : float, default=0.008
        Analysis window (s) of each column; ``nperseg`` (samples), when set, replaces it.
    nperseg : int or None, default=None
    time_mode : {"stretch", "window"}, default="stretch"
        ``"stretch"``: columns span onset..offset. ``"window"``: columns span ``window_dur_s``
        centred on the syllable's midpoint.
    window_dur_s : float, default=0.2
        Width (s) of the fixed window in ``"window"`` mode.
    context : {"mask", "keep"}, default="mask"
        In ``"window"`` mode: blank the columns outside onset..offset (``"mask"``), or keep
        whatever sound lies there (``"keep"``). No effect in ``"stretch"`` mode.
    spec_min_db, spec_max_db : float or None, default=None
        dBFS values mapped to 0 and 1 (values outside are clipped). Both None: to be
        calibrated from data with :func:`calibrate_spectrogram_params` (the pipeline does
        this and records the values it used).
    calib_percentiles : (float, float), default=(30, 99.8)
        Percentiles of all syllables' dB values that become ``spec_min_db``, ``spec_max_db``
        (of each file's values for its noise floor and peak with ``level="recording"``).
    level : {"auto", "shared", "recording"}, default="auto"
        One clipping range for all files, or one per recording (its own peak, a common
        dynamic range), or chosen by the spread of the files' peaks (module docstring).
    level_auto_db : float, default=6
        With ``level="auto"``: per-recording ranges when the files' peaks spread over more
        than this (max − min, dB).
    level_margin_db : float, default=6
        With ``level="recording"``: how far above the noisiest file's noise floor the common
        bottom of the ranges lies (dB).
    level_width_db : float or None, default=None
        With ``level="recording"``: the common dynamic range ``W`` (dB) below each file's
        peak. None: chosen from the files (module docstring); the pipeline records the value
        it chose, so that recordings projected later get ranges of the same width.
    """

    n_freq: int = 128
    n_time: int = 128
    f_min: float = 400.0
    f_max: float = 10000.0
    freq_scale: str = "linear"
    window_s: float = 0.008
    nperseg: int | None = None
    time_mode: str = "stretch"
    window_dur_s: float = 0.2
    context: str = "mask"
    spec_min_db: float | None = None
    spec_max_db: float | None = None
    calib_percentiles: tuple[float, float] = (30.0, 99.8)
    level: str = "auto"
    level_auto_db: float = 6.0
    level_margin_db: float = 6.0
    level_width_db: float | None = None

    def __post_init__(self):
        for name in ("n_freq", "n_time"):
            check_positive(name, getattr(self, name), integer=True)
            if getattr(self, name) < 2:
                raise ParameterError(f"{name} must be >= 2; got {getattr(self, name)}")
        check_positive("f_min", self.f_min, allow_zero=True)
        check_positive("f_max", self.f_max)
        if self.f_min >= self.f_max:
            raise ParameterError(f"f_min must be < f_max; got f_min={self.f_min}, f_max={self.f_max}")
        check_option("freq_scale", self.freq_scale, ["linear", "mel"])
        check_positive("window_s", self.window_s)
        if self.nperseg is not None:
            check_positive("nperseg", self.nperseg, integer=True)
            if self.nperseg < 8:
                raise ParameterError(f"nperseg must be >= 8; got {self.nperseg}")
        check_option("time_mode", self.time_mode, ["stretch", "window"])
        check_positive("window_dur_s", self.window_dur_s)
        check_option("context", self.context, ["mask", "keep"])
        if (self.spec_min_db is None) != (self.spec_max_db is None):
            raise ParameterError(
                "spec_min_db and spec_max_db must both be set (fixed range) or both be None "
                f"(calibrated); got spec_min_db={self.spec_min_db}, spec_max_db={self.spec_max_db}")
        if self.spec_min_db is not None and not self.spec_min_db < self.spec_max_db:
            raise ParameterError(f"spec_min_db must be < spec_max_db; got {self.spec_min_db}, "
                                 f"{self.spec_max_db}")
        check_option("level", self.level, list(LEVEL_MODES))
        check_positive("level_auto_db", self.level_auto_db, allow_zero=True)
        check_positive("level_margin_db", self.level_margin_db, allow_zero=True)
        if self.level_width_db is not None:
            check_positive("level_width_db", self.level_width_db)
        object.__setattr__(self, "calib_percentiles",
                           _check_percentiles("calib_percentiles", self.calib_percentiles))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SpectrogramParams":
        """Build from a mapping (e.g. a TOML ``[spectrogram]`` table); unknown keys are an error."""
        return _params_from_dict(cls, d)

    def to_dict(self) -> dict:
        """A JSON-ready dict that :meth:`from_dict` turns back into equal parameters."""
        d = dataclasses.asdict(self)
        d["calib_percentiles"] = list(self.calib_percentiles)
        return d

    @property
    def fixed_range(self) -> bool:
        """True when one clipping range (``spec_min_db``, ``spec_max_db``) is set for all files."""
        return self.spec_min_db is not None

    @property
    def calibrated(self) -> bool:
        """True when every file's clipping range is determined: a fixed range, or
        per-recording ranges of a known width (``level="recording"``, ``level_width_db``)."""
        return self.fixed_range or (self.level == "recording" and self.level_width_db is not None)

    def frequencies(self) -> np.ndarray:
        """Centre frequency (Hz) of each row, low to high [shape=(n_freq,)]."""
        if self.freq_scale == "linear":
            return np.linspace(self.f_min, self.f_max, self.n_freq)
        import librosa

        return librosa.mel_frequencies(n_mels=self.n_freq, fmin=self.f_min, fmax=self.f_max)


def _filterbank(params: SpectrogramParams, sr: int, nperseg: int) -> np.ndarray:
    """Row weights [shape=(n_freq, nperseg//2+1)]: triangles over FFT bins, rows sum to 1."""
    bins = np.fft.rfftfreq(nperseg, 1.0 / sr)
    df = sr / nperseg
    f = params.frequencies()
    spacing = np.gradient(f)
    half = np.maximum(spacing, df)
    w = np.clip(1.0 - np.abs(bins[None, :] - f[:, None]) / half[:, None], 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def _column_times(onsets: np.ndarray, offsets: np.ndarray, params: SpectrogramParams) -> np.ndarray:
    frac = (np.arange(params.n_time) + 0.5) / params.n_time
    if params.time_mode == "stretch":
        return onsets[:, None] + (offsets - onsets)[:, None] * frac[None, :]
    mid = 0.5 * (onsets + offsets)
    return mid[:, None] + params.window_dur_s * (frac[None, :] - 0.5)


def syllable_spectrograms(y: np.ndarray, sr: int, onsets_s, offsets_s,
                          params: SpectrogramParams, *, y_start_s: float = 0.0,
                          return_db: bool = False) -> np.ndarray:
    """Spectrograms of many syllables of one signal.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), full-scale float samples]
    sr : int
        Sample rate (Hz), at least ``2 * params.f_max``.
    onsets_s, offsets_s : array-like [shape=(N,)]
        Syllable times (s) in the recording.
    params : SpectrogramParams
        With a fixed clipping range unless ``return_db``.
    y_start_s : float, default=0
        Time in the recording of ``y[0]`` (when ``y`` is an excerpt).
    return_db : bool, default=False
        Return the unclipped dBFS values (for calibration) instead of [0, 1] images.

    Returns
    -------
    np.ndarray [shape=(N, n_freq, n_time), dtype=float32]
        Row 0 is ``f_min``; values in [0, 1] (or dBFS with ``return_db``). With
        ``context="mask"`` each column is multiplied by its :func:`context_weights` (columns
        wholly outside the syllable are 0, NaN with ``return_db``).
    """
    onsets = np.atleast_1d(np.asarray(onsets_s, dtype=np.float64))
    offsets = np.atleast_1d(np.asarray(offsets_s, dtype=np.float64))
    if onsets.shape != offsets.shape:
        raise ParameterError(f"onsets_s and offsets_s differ in shape: {onsets.shape} vs {offsets.shape}")
    if np.any(offsets < onsets):
        raise ParameterError("every offset_s must be >= its onset_s")
    if sr < 2 * params.f_max:
        raise ParameterError(f"sample rate {sr} Hz is below 2*f_max = {2 * params.f_max:g} Hz")
    if not return_db and not params.fixed_range:
        raise ParameterError("params have no clipping range (spec_min_db/spec_max_db are None): "
                             "set them or use calibrate_spectrogram_params first")
    y = np.asarray(y, dtype=np.float64)
    nperseg = params.nperseg or max(8, int(round(params.window_s * sr)))
    window = np.hanning(nperseg + 1)[:-1]
    fb = _filterbank(params, sr, nperseg).T  # (bins, F)
    # |X| * 2/sum(w) is a sine's amplitude; power in dB re a full-scale sine.
    scale = (2.0 / window.sum()) ** 2
    times = _column_times(onsets, offsets, params)
    weights = context_weights(onsets, offsets, params)
    starts = np.round((times - y_start_s) * sr).astype(np.int64) - nperseg // 2
    out = np.empty((onsets.size, params.n_freq, params.n_time), dtype=np.float32)
    ar = np.arange(nperseg)
    for b in range(0, onsets.size, _SYLLABLE_BATCH):
        idx = starts[b:b + _SYLLABLE_BATCH, :, None] + ar  # (B, T, nperseg)
        inside = (idx >= 0) & (idx < y.size)
        frames = np.where(inside, y[np.clip(idx, 0, max(y.size - 1, 0))], 0.0) * window
        spec = sp_fft.rfft(frames, axis=-1)
        power = (spec.real ** 2 + spec.imag ** 2) * scale
        db = 10.0 * np.log10(power @ fb + 1e-12)  # (B, T, F)
        db = np.swapaxes(db, 1, 2)
        if not return_db:
            db = np.clip((db - params.spec_min_db) / (params.spec_max_db - params.spec_min_db),
                         0.0, 1.0)
        if weights is not None:
            w = weights[b:b + db.shape[0], None, :]
            db = np.where(w > 0, db, np.nan) if return_db else db * w
        out[b:b + db.shape[0]] = db
    return out


def context_weights(onsets_s, offsets_s, params: SpectrogramParams) -> np.ndarray | None:
    """How much of each column lies inside its syllable [shape=(N, n_time), in [0, 1]], or None.

    None unless ``time_mode="window"`` with ``context="mask"``. Column k stands for the time
    span of one column width (``window_dur_s / n_time``) around its centre; its weight is the
    fraction of that span inside onset..offset. Images are multiplied by the weights, so a
    column the syllable only partly covers is dimmed in proportion rather than kept or blanked
    whole: the image then changes continuously with the syllable's duration (a hard mask at a
    column's resolution makes renditions one column apart differ by a whole column, and the map
    splits a type by that).
    """
    if params.time_mode != "window" or params.context != "mask":
        return None
    onsets = np.atleast_1d(np.asarray(onsets_s, dtype=np.float64))
    offsets = np.atleast_1d(np.asarray(offsets_s, dtype=np.float64))
    times = _column_times(onsets, offsets, params)
    half = 0.5 * params.window_dur_s / params.n_time
    inside = (np.minimum(times + half, offsets[:, None]) - np.maximum(times - half, onsets[:, None]))
    return np.clip(inside / (2 * half), 0.0, 1.0)


def syllable_spectrogram(y: np.ndarray, sr: int, onset_s: float, offset_s: float,
                         params: SpectrogramParams, *, y_start_s: float = 0.0) -> np.ndarray:
    """Spectrogram of one syllable.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), full-scale float samples]
    sr : int
    onset_s, offset_s : float
        Syllable times (s) in the recording.
    params : SpectrogramParams
        With a fixed clipping range.
    y_start_s : float, default=0
        Time in the recording of ``y[0]``.

    Returns
    -------
    np.ndarray [shape=(n_freq, n_time), dtype=float32, range [0, 1]]
    """
    return syllable_spectrograms(y, sr, [onset_s], [offset_s], params, y_start_s=y_start_s)[0]


def calibrate_spectrogram_params(db_values: Iterable[np.ndarray] | np.ndarray,
                                 params: SpectrogramParams) -> SpectrogramParams:
    """Fix the clipping range from percentiles of syllables' dB values.

    Parameters
    ----------
    db_values : array or iterable of arrays
        Unclipped dBFS spectrograms (``syllable_spectrograms(..., return_db=True)``) of a
        sample of syllables.
    params : SpectrogramParams

    Returns
    -------
    SpectrogramParams
        ``params`` with ``spec_min_db``, ``spec_max_db`` set to the ``calib_percentiles`` of
        the values (at least 1 dB apart).
    """
    values = _flat(db_values)
    if values.size == 0:
        raise ParameterError("cannot calibrate the spectrogram range from no syllables")
    lo, hi = (float(v) for v in np.percentile(values, params.calib_percentiles))
    hi = max(hi, lo + 1.0)
    return dataclasses.replace(params, spec_min_db=round(lo, 3), spec_max_db=round(hi, 3))


def resolve_level_params(params: SpectrogramParams, ranges: Mapping[str, tuple], chosen: str
                         ) -> SpectrogramParams:
    """The parameters a store records after :func:`level_ranges`: the shared range fixed, or
    ``level="recording"`` with the width ``W`` that was used (so later recordings get the
    same treatment)."""
    if chosen in ("fixed", "shared"):
        lo, hi = next(iter(ranges.values()))
        return dataclasses.replace(params, spec_min_db=lo, spec_max_db=hi)
    if chosen != "recording":
        raise ParameterError(f"chosen must be 'fixed', 'shared' or 'recording'; got {chosen!r}")
    lo, hi = next(iter(ranges.values()))
    return dataclasses.replace(params, level="recording", level_width_db=round(hi - lo, 3))


def apply_level_ranges(db: np.ndarray, spec_min_db: float, spec_max_db: float) -> np.ndarray:
    """Map dBFS spectrograms onto [0, 1] between ``spec_min_db`` and ``spec_max_db`` (clipped).

    Parameters
    ----------
    db : np.ndarray [shape=(...)]
        Unclipped dBFS values (``syllable_spectrograms(..., return_db=True)``).
    spec_min_db, spec_max_db : float

    Returns
    -------
    np.ndarray [shape=(...), float32, range [0, 1]]
    """
    if not spec_min_db < spec_max_db:
        raise ParameterError(f"spec_min_db must be < spec_max_db; got {spec_min_db}, {spec_max_db}")
    out = (np.asarray(db, dtype=np.float64) - spec_min_db) / (spec_max_db - spec_min_db)
    # masked columns (NaN, ``context="mask"``) become 0
    return np.nan_to_num(np.clip(out, 0.0, 1.0), nan=0.0).astype(np.float32)


def _flat(values) -> np.ndarray:
    """All values of an array or of an iterable of arrays, flat, without the masked (NaN) ones."""
    if isinstance(values, np.ndarray):
        flat = values.ravel()
    else:
        parts = [np.asarray(v, dtype=np.float64).ravel() for v in values]
        flat = np.concatenate(parts) if parts else np.empty(0)
    return flat[~np.isnan(flat)]


def level_ranges(db_by_recording: Mapping[str, Any], params: SpectrogramParams, *,
                 level: str | None = None) -> tuple[dict, str]:
    """Clipping range of each recording: shared, per recording, or chosen by the data.

    Parameters
    ----------
    db_by_recording : mapping of str -> array or iterable of arrays
        Unclipped dBFS spectrograms of a sample of each recording's syllables.
    params : SpectrogramParams
        Its ``calib_percentiles`` and ``level_auto_db`` are used; a fixed
        ``spec_min_db``/``spec_max_db`` is returned for every recording.
    level : {"auto", "shared", "recording"}, optional
        Default: ``params.level``.

    Returns
    -------
    ranges : dict of str -> (float, float)
        ``(spec_min_db, spec_max_db)`` per recording (rounded to 0.001 dB).
    chosen : str
        ``"shared"``, ``"recording"`` or ``"fixed"`` (the range given in ``params``).
        With ``"recording"`` all ranges have the same width ``W`` (``spec_max_db -
        spec_min_db``), ``params.level_width_db`` when set.
    """
    level = params.level if level is None else level
    check_option("level", level, list(LEVEL_MODES))
    names = list(db_by_recording)
    if not names:
        raise ParameterError("cannot calibrate the spectrogram range from no recordings")
    if params.fixed_range:
        return {n: (params.spec_min_db, params.spec_max_db) for n in names}, "fixed"
    values = {n: _flat(db_by_recording[n]) for n in names}
    empty = [n for n, v in values.items() if v.size == 0]
    if empty:
        raise ParameterError(f"no syllables to calibrate the spectrogram range of {empty[0]}")
    own = {n: tuple(float(x) for x in np.percentile(v, params.calib_percentiles))
           for n, v in values.items()}
    peaks = np.array([own[n][1] for n in names])
    if level == "auto":
        level = "recording" if peaks.max() - peaks.min() > params.level_auto_db else "shared"
    if level == "shared":
        lo, hi = (float(x) for x in np.percentile(np.concatenate(list(values.values())),
                                                  params.calib_percentiles))
        hi = max(hi, lo + 1.0)
        return {n: (round(lo, 3), round(hi, 3)) for n in names}, "shared"
    widths = np.array([max(own[n][1] - own[n][0], 1.0) for n in names])
    width = float(np.min(widths)) if len(widths) <= 10 else float(np.percentile(widths, 10))
    width = max(width - params.level_margin_db, 0.5 * width)
    if params.level_width_db is not None:
        width = float(params.level_width_db)
    return {n: (round(own[n][1] - width, 3), round(own[n][1], 3)) for n in names}, "recording"
