"""Synthetic songs with known syllable types, onsets and offsets (ground truth for tests).

A song is a sequence of syllables drawn from a small repertoire of types — harmonic stacks,
rising and falling frequency sweeps, band-limited noise bursts — with jittered durations,
pitches and amplitudes, separated by silent gaps, in white background noise. Frequencies are
given relative to a band ``(f_lo, f_hi)`` so the same repertoire works for a finch at 32 kHz
and a mouse at 250 kHz. Each syllable has a 5 ms raised-cosine attack and release; its onset
and offset in the ground truth are where its envelope starts and ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import soundfile as sf

from .._utils import ParameterError, atomic_path, check_positive, check_random_state

__all__ = ["SYLLABLE_TYPES", "match_onsets", "synthetic_bout", "synthetic_song",
           "write_long_recording", "write_synthetic_dataset"]

#: The default repertoire. ``kind`` is the sound; frequencies are fractions of the band
#: (0 = f_lo, 1 = f_hi); ``duration_s`` is the mean duration (jittered by ±15 %).
SYLLABLE_TYPES: dict[str, dict] = {
    "stack": {"kind": "harmonic", "f0": 0.12, "duration_s": 0.12},
    "up": {"kind": "sweep", "f_start": 0.15, "f_end": 0.75, "duration_s": 0.08},
    "down": {"kind": "sweep", "f_start": 0.85, "f_end": 0.35, "duration_s": 0.10},
    "noise": {"kind": "noise", "f_low": 0.45, "f_high": 0.75, "duration_s": 0.06},
}
_RAMP_S = 0.005


def _resolve_types(types) -> dict[str, dict]:
    if types is None:
        return dict(SYLLABLE_TYPES)
    if isinstance(types, Mapping):
        out = dict(types)
    else:
        unknown = [t for t in types if t not in SYLLABLE_TYPES]
        if unknown:
            raise ParameterError(f"unknown syllable type(s) {unknown}; known: "
                                 f"{', '.join(SYLLABLE_TYPES)} (or pass a mapping of specs)")
        out = {t: SYLLABLE_TYPES[t] for t in types}
    if not out:
        raise ParameterError("types must name at least one syllable type; got none")
    for name, spec in out.items():
        if spec.get("kind") not in ("harmonic", "sweep", "noise"):
            raise ParameterError(f"syllable type {name!r} has kind {spec.get('kind')!r}; "
                                 "expected 'harmonic', 'sweep' or 'noise'")
    return out


def _render_syllable(spec: dict, n: int, sr: int, band: tuple[float, float], pitch: float,
                     seed: int) -> np.ndarray:
    """One syllable of ``n`` samples, peak about 1, with raised-cosine ramps."""
    f_lo, f_hi = band
    bw = f_hi - f_lo
    t = np.arange(n) / sr
    kind = spec["kind"]
    if kind == "harmonic":
        f0 = (f_lo + spec["f0"] * bw) * pitch
        vibrato = 1.0 + 0.02 * np.sin(2 * np.pi * 8.0 * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sr
        y = np.zeros(n)
        k = 1
        while k * f0 * 1.02 < min(f_hi, sr / 2):
            y += np.sin(k * phase) / k
            k += 1
    elif kind == "sweep":
        f_start = (f_lo + spec["f_start"] * bw) * pitch
        f_end = (f_lo + spec["f_end"] * bw) * pitch
        freq = f_start + (f_end - f_start) * t / max(t[-1], 1.0 / sr)
        y = np.sin(2 * np.pi * np.cumsum(freq) / sr)
    else:
        rng = np.random.default_rng(seed)
        spec_w = np.fft.rfft(rng.standard_normal(n))
        freqs = np.fft.rfftfreq(n, 1.0 / sr)
        lo = (f_lo + spec["f_low"] * bw) * pitch
        hi = (f_lo + spec["f_high"] * bw) * pitch
        spec_w[(freqs < lo) | (freqs > hi)] = 0
        y = np.fft.irfft(spec_w, n)
    y /= np.max(np.abs(y)) + 1e-12
    ramp = min(int(_RAMP_S * sr), n // 2)
    if ramp > 0:
        env = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        y[:ramp] *= env
        y[n - ramp:] *= env[::-1]
    return y


def _schedule(n_syllables: int, types: dict, rng: np.random.Generator, *, gap_s, lead_s: float,
              bout_every: int | None = None, bout_gap_s=(1.0, 4.0)) -> pd.DataFrame:
    names = list(types)
    labels = rng.choice(len(names), size=n_syllables)
    rows = []
    t = lead_s
    for i, k in enumerate(labels):
        spec = types[names[k]]
        dur = spec["duration_s"] * rng.uniform(0.85, 1.15)
        rows.append({"onset_s": t, "offset_s": t + dur, "label": names[k],
                     "pitch": rng.uniform(0.95, 1.05), "amplitude": rng.uniform(0.25, 0.4),
                     "seed": int(rng.integers(2**31))})
        t += dur + rng.uniform(*gap_s)
        if bout_every and (i + 1) % bout_every == 0:
            t += rng.uniform(*bout_gap_s)
    return pd.DataFrame(rows)


def _render(schedule: pd.DataFrame, types: dict, *, start: int, n: int, sr: int, band,
            noise_rms: float, noise_rng: np.random.Generator) -> np.ndarray:
    y = noise_rng.standard_normal(n) * noise_rms
    onsets = np.round(schedule["onset_s"].to_numpy() * sr).astype(np.int64)
    offsets = np.round(schedule["offset_s"].to_numpy() * sr).astype(np.int64)
    stop = start + n
    for i in np.flatnonzero((offsets > start) & (onsets < stop)):
        row = schedule.iloc[i]
        syl = _render_syllable(types[row["label"]], int(offsets[i] - onsets[i]), sr, band,
                               row["pitch"], int(row["seed"])) * row["amplitude"]
        a, b = max(onsets[i], start), min(offsets[i], stop)
        y[a - start:b - start] += syl[a - onsets[i]:b - onsets[i]]
    return y


def _noise_rms(snr_db: float, amplitude: float = 0.32) -> float:
    # A syllable of peak amplitude A has an RMS of about A / sqrt(2).
    return amplitude / np.sqrt(2) / 10 ** (snr_db / 20)


def _check_band(band, sr):
    f_lo, f_hi = (float(b) for b in band)
    if not 0 <= f_lo < f_hi <= sr / 2:
        raise ParameterError(f"band must satisfy 0 <= f_lo < f_hi <= sr/2 = {sr / 2:g}; got {band!r}")
    return f_lo, f_hi


def synthetic_song(*, n_syllables: int = 20, types: Sequence[str] | Mapping[str, dict] | None = None,
                   sr: int = 32000, snr_db: float = 25.0, band: tuple[float, float] = (500.0, 8000.0),
                   gap_s: tuple[float, float] = (0.03, 0.12), lead_s: float = 0.2,
                   random_state=None) -> tuple[np.ndarray, int, pd.DataFrame]:
    """A synthetic song with known syllables.

    Parameters
    ----------
    n_syllables : int, default=20
    types : sequence of str or mapping, optional
        Names from :data:`SYLLABLE_TYPES` (default: all of them), or a mapping of custom specs
        in the same form.
    sr : int, default=32000
        Sample rate (Hz); any rate works as long as ``band`` is below ``sr / 2``.
    snr_db : float, default=25
        Syllable RMS over background-noise RMS (white noise over the whole spectrum), in dB.
    band : (float, float), default=(500, 8000)
        Frequency band (Hz) the repertoire is scaled into.
    gap_s : (float, float), default=(0.03, 0.12)
        Silent gaps between syllables are uniform in this range (s).
    lead_s : float, default=0.2
        Silence before the first and after the last syllable (s).
    random_state : None, int or numpy Generator

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32, range (-1, 1)]
    sr : int
    segments : pandas.DataFrame
        ``onset_s``, ``offset_s``, ``duration_s``, ``label`` of each syllable (ground truth).
    """
    check_positive("n_syllables", n_syllables, integer=True)
    check_positive("sr", sr, integer=True)
    band = _check_band(band, sr)
    rng = check_random_state(random_state)
    types = _resolve_types(types)
    sched = _schedule(n_syllables, types, rng, gap_s=gap_s, lead_s=lead_s)
    n = int(np.ceil((sched["offset_s"].iloc[-1] + lead_s) * sr))
    y = _render(sched, types, start=0, n=n, sr=sr, band=band, noise_rms=_noise_rms(snr_db),
                noise_rng=rng)
    y = np.clip(y, -1.0, 1.0).astype(np.float32)
    return y, sr, _truth(sched)


def _white(rng: np.random.Generator, n: int, level_db: float, band, sr: int) -> np.ndarray:
    """White noise whose power in ``band`` reads ``level_db`` dBFS on the segmenter's scale."""
    frac = (band[1] - band[0]) / (sr / 2)
    sigma = np.sqrt(10 ** (level_db / 10) / (2 * frac))
    return rng.standard_normal(n) * sigma


def synthetic_bout(*, n_syllables: int = 40, sr: int = 44100,
                   band: tuple[float, float] = (500.0, 8000.0),
                   duration_s: tuple[float, float] = (0.02, 0.3),
                   gap_s: tuple[float, float] = (0.005, 0.15), silence_db: float = -66.0,
                   in_bout_noise_db: float = 20.0, loudest_db: float = -1.0,
                   level_range_db: float = 15.0, reverb_rt60_s: float = 0.1,
                   reverb_db: float = -12.0, lead_s: float = 2.0, scale: float = 1.0,
                   dc_offset: float = 0.0, random_state=None
                   ) -> tuple[np.ndarray, int, pd.DataFrame]:
    """A hard bout: loud noise inside the bout, reverberation tails and very short gaps.

    Reproduces what breaks segmenters that assume gaps fall to the file's silence: outside
    the bout the file is quiet (``silence_db``), inside it the gaps hold noise
    ``in_bout_noise_db`` above that (cage noise, reverberation), syllables of 20-300 ms are
    separated by gaps down to 5 ms, and each syllable rings on in an exponentially decaying
    reverberation tail.

    Parameters
    ----------
    n_syllables : int, default=40
    sr : int, default=44100
    band : (float, float), default=(500, 8000)
        Band (Hz) the repertoire (:data:`SYLLABLE_TYPES`) is scaled into; noise levels are
        levels in this band.
    duration_s, gap_s : (float, float)
        Syllable durations and gaps are uniform in these ranges (s).
    silence_db : float, default=-66
        Level (dBFS in ``band``) of the white noise outside the bout.
    in_bout_noise_db : float, default=20
        Extra noise inside the bout, in dB above ``silence_db``.
    loudest_db, level_range_db : float, default=-1, 15
        Syllable peak levels (dBFS) are uniform in ``[loudest_db - level_range_db, loudest_db]``.
    reverb_rt60_s, reverb_db : float, default=0.1, -12
        Reverberation: time for the tail to decay by 60 dB, and the tail's energy relative to
        the direct sound (0 s: none).
    lead_s : float, default=2
        Silence before and after the bout (s); long enough that, as in a recording triggered
        on song, the file's quietest fifth is silence outside the bout.
    scale : float, default=1
        Gain applied last (e.g. 0.01 or 2.0: the result is not clipped to [-1, 1]).
    dc_offset : float, default=0
        Constant added last.
    random_state : None, int or numpy Generator

    Returns
    -------
    y : np.ndarray [shape=(n,), dtype=float32]
    sr : int
    segments : pandas.DataFrame
        Ground truth ``onset_s``, ``offset_s`` (the dry envelope), ``duration_s``, ``label``.
    """
    check_positive("n_syllables", n_syllables, integer=True)
    check_positive("sr", sr, integer=True)
    band = _check_band(band, sr)
    rng = check_random_state(random_state)
    names = list(SYLLABLE_TYPES)
    rows, t = [], lead_s
    for _ in range(n_syllables):
        k = int(rng.integers(len(names)))
        dur = rng.uniform(*duration_s)
        rows.append({"onset_s": t, "offset_s": t + dur, "label": names[k],
                     "pitch": rng.uniform(0.95, 1.05),
                     "level_db": loudest_db - rng.uniform(0.0, level_range_db),
                     "seed": int(rng.integers(2**31))})
        t += dur + rng.uniform(*gap_s)
    sched = pd.DataFrame(rows)
    n = int(np.ceil((sched["offset_s"].iloc[-1] + lead_s) * sr))
    dry = np.zeros(n)
    for row in sched.itertuples():
        a, b = int(round(row.onset_s * sr)), int(round(row.offset_s * sr))
        syl = _render_syllable(SYLLABLE_TYPES[row.label], b - a, sr, band, row.pitch, row.seed)
        dry[a:b] += syl * 10 ** (row.level_db / 20)
    y = dry.copy()
    if reverb_rt60_s > 0:
        from scipy.signal import fftconvolve

        m = int(reverb_rt60_s * sr)
        h = rng.standard_normal(m) * np.exp(-6.91 * np.arange(m) / m)
        h *= np.sqrt(10 ** (reverb_db / 10) / np.sum(h ** 2))
        y += fftconvolve(dry, h)[:n]
    y += _white(rng, n, silence_db, band, sr)
    b0 = int((sched["onset_s"].iloc[0] - 0.03) * sr)
    b1 = min(n, int((sched["offset_s"].iloc[-1] + 0.1) * sr))
    env = np.ones(b1 - b0)
    ramp = min(int(0.02 * sr), env.size // 2)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[env.size - ramp:] = np.linspace(1, 0, ramp)
    y[b0:b1] += env * _white(rng, b1 - b0, silence_db + in_bout_noise_db, band, sr)
    y = (y * scale + dc_offset).astype(np.float32)
    return y, sr, _truth(sched)


def _truth(sched: pd.DataFrame) -> pd.DataFrame:
    out = sched[["onset_s", "offset_s"]].copy()
    out["duration_s"] = out["offset_s"] - out["onset_s"]
    out["label"] = sched["label"].astype(str)
    return out.reset_index(drop=True)


def write_synthetic_dataset(root: str | os.PathLike, *, n_files: int = 4, n_syllables: int = 20,
                            sr: int = 32000, subtype: str = "PCM_16", random_state=None,
                            **song_kwargs) -> pd.DataFrame:
    """Write ``n_files`` synthetic songs as ``root/song_000.wav`` ... plus ``root/ground_truth.csv``.

    Parameters
    ----------
    root : path-like
        Created if missing.
    n_files, n_syllables, sr : int
    subtype : str, default="PCM_16"
        soundfile subtype of the wav files.
    random_state : None, int or numpy Generator
    **song_kwargs
        Passed to :func:`synthetic_song` (``types``, ``snr_db``, ``band``, ...).

    Returns
    -------
    pandas.DataFrame
        Ground truth: ``source`` (file name relative to ``root``), ``onset_s``, ``offset_s``,
        ``duration_s``, ``label``; also written to ``root/ground_truth.csv``.
    """
    check_positive("n_files", n_files, integer=True)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = check_random_state(random_state)
    tables = []
    for i in range(n_files):
        y, sr_, truth = synthetic_song(n_syllables=n_syllables, sr=sr, random_state=rng,
                                       **song_kwargs)
        name = f"song_{i:03d}.wav"
        with atomic_path(root / name, suffix=".wav") as tmp:
            sf.write(str(tmp), y, sr_, subtype=subtype, format="WAV")
        truth.insert(0, "source", name)
        tables.append(truth)
    table = pd.concat(tables, ignore_index=True)
    with atomic_path(root / "ground_truth.csv") as tmp:
        table.to_csv(tmp, index=False)
    return table


def write_long_recording(path: str | os.PathLike, *, duration_s: float = 3600.0, sr: int = 22050,
                         types=None, snr_db: float = 25.0, band=(500.0, 8000.0),
                         gap_s=(0.03, 0.12), bout_syllables: int = 12, bout_gap_s=(1.0, 4.0),
                         block_s: float = 30.0, subtype: str = "PCM_16",
                         random_state=None) -> pd.DataFrame:
    """Write a long synthetic recording (bouts of syllables between silences) block by block.

    Memory stays bounded by ``block_s`` whatever ``duration_s`` is.

    Parameters
    ----------
    path : path-like
        A ``.wav`` (RF64 is used above 2 GB) or ``.flac`` path.
    duration_s : float, default=3600
    sr : int, default=22050
    bout_syllables : int, default=12
        Syllables per bout; bouts are separated by ``bout_gap_s`` of silence.
    block_s : float, default=30
        Seconds rendered at a time.
    types, snr_db, band, gap_s, subtype, random_state
        As in :func:`synthetic_song`.

    Returns
    -------
    pandas.DataFrame
        Ground truth ``onset_s``, ``offset_s``, ``duration_s``, ``label`` (only syllables that
        end before ``duration_s``).
    """
    check_positive("duration_s", duration_s)
    check_positive("block_s", block_s)
    band = _check_band(band, sr)
    rng = check_random_state(random_state)
    types = _resolve_types(types)
    mean_cycle = np.mean([s["duration_s"] for s in types.values()]) + np.mean(gap_s) \
        + np.mean(bout_gap_s) / bout_syllables
    n_est = int(duration_s / mean_cycle * 1.3) + 10
    sched = _schedule(n_est, types, rng, gap_s=gap_s, lead_s=0.5, bout_every=bout_syllables,
                      bout_gap_s=bout_gap_s)
    n_total = int(round(duration_s * sr))
    sched = sched[sched["offset_s"] * sr < n_total - int(0.05 * sr)].reset_index(drop=True)
    block = int(block_s * sr)
    noise_rms = _noise_rms(snr_db)
    path = Path(path)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else ("RF64" if n_total * 2 > 2**31 else "WAV")
    with atomic_path(path, suffix=path.suffix) as tmp:
        with sf.SoundFile(str(tmp), "w", samplerate=sr, channels=1, subtype=subtype,
                          format=fmt) as fh:
            for start in range(0, n_total, block):
                n = min(block, n_total - start)
                y = _render(sched, types, start=start, n=n, sr=sr, band=band,
                            noise_rms=noise_rms, noise_rng=np.random.default_rng([start, 7]))
                fh.write(np.clip(y, -1.0, 1.0).astype(np.float32))
    return _truth(sched)


def match_onsets(truth: pd.DataFrame, found: pd.DataFrame, *, tol_s: float = 0.010
                 ) -> tuple[float, float]:
    """Precision and recall of found segments against ground truth by onset time.

    Each true onset is matched to at most one found onset (the closest unused one) within
    ``tol_s`` seconds.

    Parameters
    ----------
    truth, found : pandas.DataFrame
        With an ``onset_s`` column (one recording).
    tol_s : float, default=0.010

    Returns
    -------
    precision, recall : float in [0, 1]
    """
    used: set[int] = set()
    tp = 0
    on = found["onset_s"].to_numpy()
    for t in truth["onset_s"]:
        d = np.abs(on - t)
        for j in np.argsort(d):
            if d[j] > tol_s:
                break
            if j not in used:
                used.add(j)
                tp += 1
                break
    return tp / max(len(found), 1), tp / max(len(truth), 1)
