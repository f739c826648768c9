"""Synthetic song repertoires with known syllable types, for benchmarking clusters and maps.

A *repertoire* is a set of syllable types (3 to 30) with unequal abundances (the rarest can be
1/50 of the commonest). Every type is a harmonic stack with its own fundamental ``f0_hz``, a
frequency slope (octaves over the syllable), a duration and the amplitudes of its first
harmonics. *Subtle* types are copies of another type that differ in one thing only: one
harmonic switched off (``"harmonic"``) or a duration 1.6x longer (``"duration"``; visible with
``time_mode="window"`` spectrograms).

Songs are sung by several *birds*: each bird shifts every type's fundamental by its own few
per cent and scales its durations (between-bird variation), and every rendition is jittered
again (within-type variation: fundamental, duration, harmonic amplitudes, a little vibrato).
Each recording has its own *gain* (dB) and *noise floor* (white noise, dBFS), so spectrograms
of the same song can differ in level as they do between real microphones and sessions.

Two levels of use:

* :func:`repertoire_recordings` renders the audio of every recording and its segment table
  (``source``, ``onset_s``, ``offset_s``, ``label``, ``type``, ``bird``, ``gain_db``,
  ``noise_db``), and :func:`repertoire_spectrograms` turns them into syllable spectrograms
  (:func:`vocalatent.audio.spectrogram.syllable_spectrograms`, with a shared or per-recording
  clipping range);
* :func:`repertoire_latents` draws latent points on the 2-D torus with the same structure
  (one blob per type, a sub-blob per bird, subtle types next to their sibling), for
  benchmarking the cluster criterion alone without fitting a model.

:func:`benchmark_repertoires` lists the specs of the repertoire benchmark
(``benchmarks/bench_repertoire.py``, docs/analysis.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .._utils import ParameterError, check_positive, check_random_state

__all__ = [
    "Repertoire",
    "RepertoireSpec",
    "SyllableType",
    "benchmark_repertoires",
    "make_repertoire",
    "renderer_digest",
    "repertoire_latents",
    "repertoire_recordings",
    "repertoire_spectrograms",
]

_RAMP_S = 0.004


@dataclass(frozen=True)
class SyllableType:
    """One syllable type: a harmonic stack.

    Attributes
    ----------
    name : str
    f0_hz : float
        Fundamental at the syllable's middle.
    slope_oct : float
        Frequency change over the syllable, in octaves (``f0 * 2**(slope * (t/d - 1/2))``).
    duration_s : float
    harmonics : tuple of float
        Amplitude of harmonic 1, 2, ... (0 = absent).
    abundance : float
        Relative frequency of the type in the songs.
    sibling : int
        Index of the type this one is a subtle variant of (-1: none).
    """

    name: str
    f0_hz: float
    slope_oct: float
    duration_s: float
    harmonics: tuple
    abundance: float = 1.0
    sibling: int = -1


@dataclass(frozen=True)
class RepertoireSpec:
    """How to draw one repertoire (see :func:`make_repertoire`).

    Attributes
    ----------
    n_types : int
        3..30 types.
    abundance_ratio : float
        Commonest / rarest type abundance (1 = equal; 50 = the rarest is 1/50 of the commonest);
        abundances are spread geometrically between the two.
    n_subtle : int
        Types that are subtle variants of another (one harmonic, or duration).
    n_birds : int
        Birds singing the repertoire (between-bird variation).
    bird_shift : float
        Standard deviation of a bird's fundamental shift (fraction) and duration scale.
    jitter : float
        Standard deviation of the within-type (rendition) jitter of the fundamental (fraction).
    n_syllables : int
        Syllables over all recordings.
    seed : int
    """

    n_types: int = 6
    abundance_ratio: float = 1.0
    n_subtle: int = 0
    n_birds: int = 2
    bird_shift: float = 0.02
    jitter: float = 0.015
    n_syllables: int = 600
    seed: int = 0

    def __post_init__(self):
        if not 3 <= int(self.n_types) <= 30:
            raise ParameterError(f"n_types must be in 3..30; got {self.n_types}")
        if not 1.0 <= float(self.abundance_ratio) <= 1000.0:
            raise ParameterError(f"abundance_ratio must be in [1, 1000]; got {self.abundance_ratio}")
        if not 0 <= int(self.n_subtle) < int(self.n_types):
            raise ParameterError(f"n_subtle must be in 0..n_types-1; got {self.n_subtle}")
        check_positive("n_birds", self.n_birds, integer=True)
        check_positive("n_syllables", self.n_syllables, integer=True)
        check_positive("bird_shift", self.bird_shift, allow_zero=True)
        check_positive("jitter", self.jitter, allow_zero=True)


@dataclass(frozen=True)
class Repertoire:
    """A drawn repertoire: its types and the spec it came from."""

    types: tuple
    spec: RepertoireSpec = field(default_factory=RepertoireSpec)

    @property
    def abundances(self) -> np.ndarray:
        """Probabilities of the types [shape=(n_types,), sums to 1]."""
        a = np.array([t.abundance for t in self.types], dtype=float)
        return a / a.sum()

    def subtle_kind(self, i: int) -> str:
        """``"harmonic"``, ``"duration"`` or ``""`` for type ``i``."""
        t = self.types[i]
        if t.sibling < 0:
            return ""
        return "duration" if t.duration_s != self.types[t.sibling].duration_s else "harmonic"


def make_repertoire(spec: RepertoireSpec | None = None, **kwargs) -> Repertoire:
    """Draw the syllable types of a repertoire.

    Base types get distinct fundamentals (log-uniform 1.2-4 kHz, at least 7 % apart in
    pairs that also share a slope class), slopes from {-1, -0.5, 0, 0.5, 1} octaves, durations
    40-160 ms and 2-4 harmonics; subtle types copy a base type and switch off one harmonic
    (even-numbered subtle types) or stretch the duration 1.6x (odd-numbered ones). Abundances
    fall geometrically from 1 to ``1/abundance_ratio`` in a random order of the types.

    Parameters
    ----------
    spec : RepertoireSpec, optional
    **kwargs
        Fields of :class:`RepertoireSpec` (instead of, or overriding, ``spec``).

    Returns
    -------
    Repertoire
    """
    spec = replace(spec or RepertoireSpec(), **kwargs) if kwargs or spec is None else spec
    rng = np.random.default_rng(spec.seed)
    n_base = spec.n_types - spec.n_subtle
    slopes = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    base: list[SyllableType] = []
    tries = 0
    while len(base) < n_base:
        tries += 1
        f0 = float(np.exp(rng.uniform(np.log(1200.0), np.log(4000.0))))
        slope = float(rng.choice(slopes))
        dur = float(rng.uniform(0.04, 0.16))
        clash = any(abs(np.log(f0 / b.f0_hz)) < 0.07 and b.slope_oct == slope
                    and abs(np.log(dur / b.duration_s)) < 0.35 for b in base)
        if clash and tries < 10_000:
            continue
        n_h = int(rng.integers(2, 5))
        amps = tuple(float(v) for v in np.r_[1.0, rng.uniform(0.4, 1.0, n_h - 1)])
        base.append(SyllableType(name=f"t{len(base):02d}", f0_hz=f0, slope_oct=slope,
                                 duration_s=dur, harmonics=amps))
    types = list(base)
    for j in range(spec.n_subtle):
        sib = int(rng.integers(n_base))
        b = base[sib]
        if j % 2 == 0 and len(b.harmonics) >= 2:
            amps = list(b.harmonics)
            amps[int(rng.integers(1, len(amps)))] = 0.0
            types.append(replace(b, name=f"t{len(types):02d}", harmonics=tuple(amps), sibling=sib))
        else:
            types.append(replace(b, name=f"t{len(types):02d}", duration_s=b.duration_s * 1.6,
                                 sibling=sib))
    ab = np.geomspace(1.0, 1.0 / spec.abundance_ratio, spec.n_types)
    ab = ab[rng.permutation(spec.n_types)]
    types = [replace(t, abundance=float(a)) for t, a in zip(types, ab)]
    return Repertoire(types=tuple(types), spec=spec)


def _type_sequence(rep: Repertoire, rng) -> np.ndarray:
    """Type of every syllable: each type at least 6 times, the rest by abundance."""
    n, k = rep.spec.n_syllables, len(rep.types)
    if n < 6 * k:
        raise ParameterError(f"n_syllables={n} is too few for {k} types (need at least {6 * k})")
    counts = 6 + np.floor(rep.abundances * (n - 6 * k)).astype(int)
    counts[np.argmax(rep.abundances)] += n - counts.sum()
    seq = np.repeat(np.arange(k), counts)
    return seq[rng.permutation(n)]


def _render(t: SyllableType, *, f0_scale: float, dur: float, amp_jitter, sr: int) -> np.ndarray:
    n = max(8, int(round(dur * sr)))
    tt = np.arange(n) / sr
    f = t.f0_hz * f0_scale * 2.0 ** (t.slope_oct * (tt / dur - 0.5))
    f = f * (1.0 + 0.01 * np.sin(2 * np.pi * 25.0 * tt))
    phase = 2 * np.pi * np.cumsum(f) / sr
    y = np.zeros(n)
    for h, a in enumerate(t.harmonics, start=1):
        if a > 0 and h * f.max() < 0.48 * sr:
            y += a * amp_jitter[h - 1] * np.sin(h * phase)
    ramp = min(int(_RAMP_S * sr), n // 2)
    env = np.ones(n)
    if ramp > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        env[:ramp], env[n - ramp:] = r, r[::-1]
    y *= env
    return y / max(np.abs(y).max(), 1e-12)


def repertoire_recordings(rep: Repertoire, *, n_recordings: int = 4, sr: int = 24000,
                          gain_db=(0.0, 13.0), noise_db=(-70.0, -50.0), gap_s=(0.03, 0.09),
                          random_state=None):
    """Render the songs of a repertoire as recordings with their ground truth.

    Recording ``i`` belongs to bird ``i % n_birds``; its gain and noise floor are drawn
    uniformly from ``gain_db`` and ``noise_db`` (give equal bounds to fix them). Syllables peak
    at ``-12 dBFS + gain`` and are separated by gaps drawn uniformly from ``gap_s`` (30-90 ms:
    shorter than a ``time_mode="window"`` window, so the neighbours fall inside it; they show
    in the image with ``context="keep"`` and are blanked with the default ``context="mask"``).

    Parameters
    ----------
    rep : Repertoire
    n_recordings : int
    sr : int
    gain_db : (float, float)
        Range of the per-recording gain (dB).
    noise_db : (float, float)
        Range of the per-recording white-noise level (RMS, dBFS).
    gap_s : (float, float)
        Range of the silent gap between syllables (s).
    random_state : int or numpy Generator, optional
        Default: the repertoire's seed + 1.

    Returns
    -------
    audio : dict of str -> np.ndarray [float64 samples]
        One signal per recording name (``bird{b}/rec{i}.wav``).
    segments : pandas.DataFrame
        One row per syllable: ``source``, ``channel``, ``onset_s``, ``offset_s``,
        ``duration_s``, ``sample_rate``, ``label`` (type name), ``type`` (index), ``bird``,
        ``gain_db``, ``noise_db``, ``f0_scale`` (the rendition's fundamental / the type's,
        bird shift and jitter together).
    """
    check_positive("n_recordings", n_recordings, integer=True)
    rng = check_random_state(rep.spec.seed + 1 if random_state is None else random_state)
    spec = rep.spec
    k = len(rep.types)
    bird_f0 = np.exp(spec.bird_shift * rng.standard_normal((spec.n_birds, k)))
    bird_dur = np.exp(spec.bird_shift * rng.standard_normal((spec.n_birds, k)))
    seq = _type_sequence(rep, rng)
    per_rec = np.array_split(seq, n_recordings)
    audio, rows = {}, []
    for i, types in enumerate(per_rec):
        bird = i % spec.n_birds
        gain = float(rng.uniform(*gain_db))
        noise = float(rng.uniform(*noise_db))
        source = f"bird{bird}/rec{i}.wav"
        pieces, t_now = [np.zeros(int(0.05 * sr))], 0.05
        for ti in types:
            t = rep.types[int(ti)]
            dur = t.duration_s * bird_dur[bird, ti] * np.exp(0.06 * rng.standard_normal())
            f0s = bird_f0[bird, ti] * np.exp(spec.jitter * rng.standard_normal())
            amp_j = np.exp(0.15 * rng.standard_normal(len(t.harmonics)))
            y = _render(t, f0_scale=f0s, dur=dur, amp_jitter=amp_j, sr=sr)
            y *= 10.0 ** ((-12.0 + gain) / 20.0)
            rows.append({"source": source, "channel": 0, "onset_s": t_now,
                         "offset_s": t_now + y.size / sr, "duration_s": y.size / sr,
                         "sample_rate": sr, "label": t.name, "type": int(ti), "bird": bird,
                         "gain_db": gain, "noise_db": noise, "f0_scale": float(f0s)})
            gap = int(rng.uniform(*gap_s) * sr)
            pieces += [y, np.zeros(gap)]
            t_now += (y.size + gap) / sr
        sig = np.concatenate(pieces + [np.zeros(int(0.05 * sr))])
        sig += 10.0 ** (noise / 20.0) * rng.standard_normal(sig.size)
        audio[source] = sig
    return audio, pd.DataFrame(rows)


def repertoire_spectrograms(audio: dict, segments: pd.DataFrame, params, *, level: str = "recording"):
    """Syllable spectrograms of rendered recordings, with a shared or per-recording range.

    Parameters
    ----------
    audio : dict of str -> np.ndarray
        From :func:`repertoire_recordings`.
    segments : pandas.DataFrame
        Its segment table (``source``, ``onset_s``, ``offset_s``, ``sample_rate``).
    params : vocalatent.audio.spectrogram.SpectrogramParams
        Image size and frequency range; its clipping range is calibrated here.
    level : {"shared", "recording", "auto"}
        Clipping range (see :func:`vocalatent.audio.spectrogram.level_ranges`).

    Returns
    -------
    np.ndarray [shape=(N, n_freq, n_time), float32, range [0, 1]]
        In the order of ``segments``.
    """
    from ..audio.spectrogram import apply_level_ranges, level_ranges, syllable_spectrograms

    dbs = {}
    for source, grp in segments.groupby("source", sort=False):
        sr = int(grp["sample_rate"].iloc[0])
        dbs[source] = (grp.index.to_numpy(), syllable_spectrograms(
            audio[source], sr, grp["onset_s"].to_numpy(), grp["offset_s"].to_numpy(), params,
            return_db=True))
    ranges, _ = level_ranges({s: v[1] for s, v in dbs.items()}, params, level=level)
    out = np.empty((len(segments), params.n_freq, params.n_time), dtype=np.float32)
    pos = {ix: i for i, ix in enumerate(segments.index)}
    for source, (idx, db) in dbs.items():
        out[[pos[i] for i in idx]] = apply_level_ranges(db, *ranges[source])
    return out


def renderer_digest() -> str:
    """A digest of the source of the code that renders repertoire images (this module and
    :mod:`vocalatent.audio.spectrogram`): part of a cache key for rendered or fitted sets, so
    a changed generator or spectrogram never serves images of the code before it.

    Returns
    -------
    str
        12 hex digits of a SHA-256.
    """
    import hashlib
    import inspect
    import sys

    from ..audio import spectrogram

    digest = hashlib.sha256()
    for module in (sys.modules[__name__], spectrogram):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def repertoire_latents(rep: Repertoire, *, spread: float = 0.018, bird_offset: float = 0.6,
                       subtle_distance: float = 4.5, outliers: float = 0.01, random_state=None):
    """Latent points on the 2-D torus with the repertoire's cluster structure.

    Each base type is a Gaussian blob (standard deviation ``spread`` turns, anisotropic by up
    to 2x, random orientation) at a random centre at least ``8 * spread`` from the others;
    each bird's renditions sit ``bird_offset * spread`` off the type's centre in a random
    direction; a subtle type sits ``subtle_distance * spread`` from its sibling's centre.
    ``outliers`` of the items are spread uniformly (label ``""``, type -1).

    Parameters
    ----------
    rep : Repertoire
    spread, bird_offset, subtle_distance, outliers : float
    random_state : int or numpy Generator, optional
        Default: the repertoire's seed + 2.

    Returns
    -------
    z : np.ndarray [shape=(n_syllables, 2), range [0, 1)]
    types : np.ndarray [shape=(n_syllables,), int; -1 = outlier]
    birds : np.ndarray [shape=(n_syllables,), int]
    """
    from ..analysis.torus import torus_distance, wrap

    rng = check_random_state(rep.spec.seed + 2 if random_state is None else random_state)
    k = len(rep.types)
    centres = np.zeros((k, 2))
    placed: list[int] = []
    for i, t in enumerate(rep.types):
        if t.sibling >= 0:
            continue
        for _ in range(5000):
            c = rng.random(2)
            if all(torus_distance(c, centres[j]) > 8 * spread for j in placed):
                break
        centres[i] = c
        placed.append(i)
    for i, t in enumerate(rep.types):
        if t.sibling >= 0:
            ang = rng.uniform(0, 2 * np.pi)
            centres[i] = wrap(centres[t.sibling] + subtle_distance * spread * np.array([np.cos(ang), np.sin(ang)]))
    covs = []
    for _ in range(k):
        ang = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        sd = spread * np.array([1.0, rng.uniform(0.5, 1.0)])
        covs.append(rot @ np.diag(sd ** 2) @ rot.T)
    nb = rep.spec.n_birds
    angles = rng.uniform(0, 2 * np.pi, (nb, k))
    offs = bird_offset * spread * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    seq = _type_sequence(rep, rng)
    birds = rng.integers(nb, size=seq.size)
    z = np.empty((seq.size, 2))
    for i in range(k):
        m = seq == i
        z[m] = rng.multivariate_normal(np.zeros(2), covs[i], size=int(m.sum())) + centres[i] + offs[birds[m], i]
    n_out = int(round(outliers * seq.size))
    if n_out:
        pick = rng.choice(seq.size, n_out, replace=False)
        z[pick] = rng.random((n_out, 2))
        seq = seq.copy()
        seq[pick] = -1
    return wrap(z), seq, birds


def benchmark_repertoires(n: int = 12, *, n_syllables: int = 600, seed: int = 0,
                          corners: bool = True) -> list[RepertoireSpec]:
    """The repertoires of the benchmark: 3-30 types, abundance ratios 1-50, subtle types.

    The first four are fixed corners (3 equal types; 30 types at 1:50; 8 types with 3 subtle
    ones at 1:10; 12 types at 1:50 with 2 subtle ones); the rest are drawn from ``seed``:
    ``n_types`` log-uniform in 3..30, ``abundance_ratio`` log-uniform in 1..50, up to a quarter
    of the types subtle, 1-3 birds. Each drawn repertoire's own seed is
    ``100 + 1000 * seed + i``, so different ``seed`` give different repertoires.

    Parameters
    ----------
    n : int
    n_syllables : int
        Syllables per repertoire (at least ``40 * n_types``; 1200 for the 30-type corner).
    seed : int
    corners : bool
        Start with the four fixed corners (``False``: all ``n`` drawn, e.g. a set for
        choosing a setting that shares nothing with the reported one).

    Returns
    -------
    list of RepertoireSpec
    """
    rng = np.random.default_rng(seed)
    specs = [RepertoireSpec(n_types=3, abundance_ratio=1.0, n_subtle=0, n_syllables=n_syllables, seed=1),
             RepertoireSpec(n_types=30, abundance_ratio=50.0, n_subtle=0, n_syllables=max(n_syllables, 1200),
                            seed=2),
             RepertoireSpec(n_types=8, abundance_ratio=10.0, n_subtle=3, n_syllables=n_syllables, seed=3),
             RepertoireSpec(n_types=12, abundance_ratio=50.0, n_subtle=2, n_syllables=n_syllables, seed=4)]
    if not corners:
        specs = []
    while len(specs) < n:
        k = int(round(np.exp(rng.uniform(np.log(3), np.log(30)))))
        ratio = float(np.round(np.exp(rng.uniform(0.0, np.log(50.0))), 1))
        specs.append(RepertoireSpec(n_types=k, abundance_ratio=max(ratio, 1.0),
                                    n_subtle=int(rng.integers(0, k // 4 + 1)),
                                    n_birds=int(rng.integers(1, 4)),
                                    n_syllables=max(n_syllables, 40 * k),
                                    seed=100 + 1000 * int(seed) + len(specs)))
    return specs[:n]
