"""Syllable spectrograms: geometry against known tones and sweeps, calibration, validation."""

import numpy as np
import pytest

from vocalatent import ParameterError
from vocalatent.audio.spectrogram import (SpectrogramParams, calibrate_spectrogram_params,
                                          syllable_spectrogram, syllable_spectrograms)
from vocalatent.audio.synthetic import synthetic_song

SR = 32000


def _tone(freq, dur=0.1, amp=0.5, pad=0.2):
    t = np.arange(int((dur + 2 * pad) * SR)) / SR
    y = np.where((t >= pad) & (t < pad + dur), amp * np.sin(2 * np.pi * freq * t), 0.0)
    return y.astype(np.float32), pad, pad + dur


@pytest.mark.parametrize("scale", ["linear", "mel"])
def test_tone_lands_on_its_row(scale):
    p = SpectrogramParams(freq_scale=scale, spec_min_db=-80, spec_max_db=0)
    rows = p.frequencies()
    for f in (1000.0, 3000.0, 7000.0):
        y, on, off = _tone(f)
        S = syllable_spectrogram(y, SR, on, off, p)
        assert S.shape == (128, 128) and S.dtype == np.float32
        assert 0.0 <= S.min() and S.max() <= 1.0
        peak_row = np.argmax(S[:, 64])
        assert abs(rows[peak_row] - f) <= np.diff(rows).max()
        # a full-scale sine reads 0 dB: amplitude 0.5 -> -6 dB -> (80-6)/80, less up to
        # 3 dB when the tone falls between two rows (triangular row weights)
        assert -9.5 <= S[peak_row, 64] * 80 - 80 <= -5.5


def test_stretch_vs_window_time_axis():
    y, on, off = _tone(2000.0, dur=0.05)
    stretch = syllable_spectrogram(y, SR, on, off, SpectrogramParams(spec_min_db=-80, spec_max_db=0))
    window = syllable_spectrogram(y, SR, on, off, SpectrogramParams(
        time_mode="window", window_dur_s=0.2, spec_min_db=-80, spec_max_db=0))
    row = np.argmax(stretch[:, 64])
    on_cols = np.flatnonzero(window[row] > 0.5)
    # the 50 ms tone covers a quarter of a 200 ms window, centred
    assert 28 <= on_cols.size <= 40 and abs(on_cols.mean() - 63.5) < 3
    assert (stretch[row, 8:120] > 0.5).all()


def _two_tones(gap):
    """A 60 ms 2 kHz tone, then after ``gap`` s a louder 80 ms 6 kHz neighbour."""
    pad, d1, d2 = 0.3, 0.06, 0.08
    t = np.arange(int((2 * pad + d1 + gap + d2) * SR)) / SR
    first = (t >= pad) & (t < pad + d1)
    second = (t >= pad + d1 + gap) & (t < pad + d1 + gap + d2)
    y = 0.3 * np.sin(2 * np.pi * 2000 * t) * first + 0.8 * np.sin(2 * np.pi * 6000 * t) * second
    return y.astype(np.float32), (pad, pad + d1), (pad + d1 + gap, pad + d1 + gap + d2)


def test_window_mode_masks_the_neighbours_and_calibration_ignores_them():
    from vocalatent.audio.spectrogram import context_weights, level_ranges

    y, a, b = _two_tones(gap=0.04)
    alone = y.copy()
    alone[int(round(b[0] * SR)) - 8:] = 0.0                      # the same tone, no neighbour
    fixed = dict(time_mode="window", window_dur_s=0.3, spec_min_db=-80, spec_max_db=0)
    masked = SpectrogramParams(**fixed)
    kept = SpectrogramParams(**fixed, context="keep")
    assert masked.context == "mask"
    S_mask = syllable_spectrogram(y, SR, *a, masked)
    S_keep = syllable_spectrogram(y, SR, *a, kept)
    # the neighbour shows in the kept window only; masked, the image is the tone's own
    row6k = int(np.argmin(np.abs(masked.frequencies() - 6000)))
    assert S_keep[row6k].max() > 0.9 and S_mask[row6k].max() < 0.4      # < 0.4: the tone's own edge clicks
    w = context_weights([a[0]], [a[1]], masked)[0]
    np.testing.assert_allclose(S_mask, syllable_spectrogram(alone, SR, *a, kept) * w, atol=1e-6)
    # 60 ms of a 300 ms window: the weights add up to 20 % of the 128 columns, centred; the
    # edge columns are partly inside
    assert w.sum() == pytest.approx(0.2 * 128, abs=1e-9)
    assert abs(np.average(np.arange(128), weights=w) - 63.5) < 0.01
    out = w == 0
    assert (S_mask[:, out] == 0).all() and S_mask[:, w > 0.999].max() > 0.8
    assert 0 < np.sum((w > 0) & (w < 0.999)) <= 2
    # the weights move continuously with the offset (no jump of a whole column)
    w2 = context_weights([a[0]], [a[1] + 0.0005], masked)[0]
    assert 0 < np.abs(w2 - w).sum() <= 0.0005 / (0.3 / 128) + 1e-9
    assert context_weights([a[0]], [a[1]], kept) is None
    assert context_weights([a[0]], [a[1]], SpectrogramParams()) is None       # stretch: no effect
    # unclipped dB: NaN where masked, and the calibration uses the syllable's columns only
    db = syllable_spectrograms(y, SR, [a[0]], [a[1]], SpectrogramParams(time_mode="window",
                                                                        window_dur_s=0.3), return_db=True)
    assert np.isnan(db[0][:, out]).all() and np.isfinite(db[0][:, ~out]).all()
    p = SpectrogramParams(time_mode="window", window_dur_s=0.3, calib_percentiles=(0.0, 100.0))
    cal = calibrate_spectrogram_params(db, p)
    assert cal.spec_max_db == pytest.approx(np.nanmax(db), abs=1e-3)
    ranges, _ = level_ranges({"x.wav": [db]}, p, level="shared")
    assert ranges["x.wav"][1] == pytest.approx(np.nanmax(db), abs=1e-3)
    with pytest.raises(ParameterError, match="context"):
        SpectrogramParams(context="blur")


def test_sweep_rises_left_to_right():
    y, sr, truth = synthetic_song(n_syllables=12, types=["up"], random_state=1)
    p = SpectrogramParams(spec_min_db=-80, spec_max_db=-5)
    S = syllable_spectrograms(y, sr, truth["onset_s"], truth["offset_s"], p)
    peak_rows = S.argmax(axis=1)  # (N, T)
    assert (peak_rows[:, 100] > peak_rows[:, 20] + 30).all()


def test_calibration_and_validation():
    y, sr, truth = synthetic_song(n_syllables=10, random_state=2)
    p = SpectrogramParams()
    with pytest.raises(ParameterError, match="clipping range"):
        syllable_spectrograms(y, sr, truth["onset_s"], truth["offset_s"], p)
    db = syllable_spectrograms(y, sr, truth["onset_s"], truth["offset_s"], p, return_db=True)
    cal = calibrate_spectrogram_params(db, p)
    assert cal.spec_min_db == pytest.approx(np.percentile(db, 30), abs=1e-3)
    assert cal.spec_max_db == pytest.approx(np.percentile(db, 99.8), abs=1e-3)
    with pytest.raises(ParameterError, match="time_mode"):
        SpectrogramParams(time_mode="crop")
    with pytest.raises(ParameterError, match="unknown SpectrogramParams key.*'mel'"):
        SpectrogramParams.from_dict({"mel": True})
    with pytest.raises(ParameterError, match="below 2\\*f_max"):
        syllable_spectrograms(y, 16000, [0.1], [0.2], cal)
    assert SpectrogramParams.from_dict(cal.to_dict()) == cal
