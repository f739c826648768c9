"""Segmentation: known answers on synthetic songs, chunk equivalence, bad inputs."""

import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from vocalatent import DataError, ParameterError
from vocalatent.audio.io import audio_info, find_audio, iter_chunks, load_audio
from vocalatent.audio.segment import (SegmentParams, amplitude_trace, segment_file,
                                      segment_signal)
from vocalatent.audio.synthetic import match_onsets as _match
from vocalatent.audio.synthetic import synthetic_song, write_long_recording

TOL_S = 0.010  # onset/offset tolerance used for precision and recall


def match_onsets(truth, found, tol=TOL_S):
    return _match(truth, found, tol_s=tol)


def test_precision_recall_on_synthetic_songs():
    precisions, recalls, off_err = [], [], []
    for seed in range(5):
        y, sr, truth = synthetic_song(n_syllables=30, sr=32000, snr_db=20, random_state=seed)
        found = segment_signal(y, sr, SegmentParams())
        p, r = match_onsets(truth, found)
        precisions.append(p)
        recalls.append(r)
        if len(found) == len(truth):
            off_err.append(np.abs(found["offset_s"].to_numpy() - truth["offset_s"].to_numpy()).max())
    assert np.mean(precisions) >= 0.9 and np.mean(recalls) >= 0.9, (precisions, recalls)
    assert off_err and max(off_err) < 0.015


@pytest.mark.parametrize("sr,band,params", [
    (250000, (30000.0, 100000.0), dict(f_min=30000.0, f_max=110000.0, window_s=0.004, hop_s=0.001)),
    (8000, (300.0, 3500.0), dict(f_min=300.0, f_max=3800.0, window_s=0.016, hop_s=0.002)),
])
def test_segmentation_at_other_sample_rates(sr, band, params):
    y, sr, truth = synthetic_song(n_syllables=15, sr=sr, band=band, snr_db=20, random_state=3)
    found = segment_signal(y, sr, SegmentParams(**params))
    p, r = match_onsets(truth, found)
    assert p >= 0.9 and r >= 0.9


def test_thresholds_and_units_validated():
    with pytest.raises(ParameterError, match="th1 < th2 < th3"):
        SegmentParams(th1=0.3, th2=0.2, th3=0.4)
    with pytest.raises(ParameterError, match="f_min must be < f_max"):
        SegmentParams(f_min=5000, f_max=400)
    with pytest.raises(ParameterError, match="unknown SegmentParams key.*'thresh'"):
        SegmentParams.from_dict({"thresh": 1})
    with pytest.raises(ParameterError, match="amp_min_db"):
        SegmentParams(amp_min_db=-60)
    p = SegmentParams(calib_percentiles=[10, 90])
    assert SegmentParams.from_dict(p.to_dict()) == p


def test_int16_and_float_files_give_the_same_segments(tmp_path):
    y, sr, _ = synthetic_song(n_syllables=10, random_state=4)
    sf.write(tmp_path / "a16.wav", y, sr, subtype="PCM_16")
    sf.write(tmp_path / "a24.flac", y, sr, subtype="PCM_24")
    sf.write(tmp_path / "af.wav", y, sr, subtype="FLOAT")
    y16, _ = load_audio(tmp_path / "a16.wav")
    yf, _ = load_audio(tmp_path / "af.wav")
    assert np.max(np.abs(y16 - yf)) < 2 / 32768  # same full-scale convention
    fixed = SegmentParams(amp_min_db=-60, amp_max_db=-10)
    segs = [segment_file(tmp_path / n, fixed) for n in ("a16.wav", "a24.flac", "af.wav")]
    for s in segs[1:]:
        np.testing.assert_allclose(s["onset_s"], segs[0]["onset_s"])


def test_chunked_equals_whole_with_tiny_chunks(tmp_path):
    y, sr, _ = synthetic_song(n_syllables=25, random_state=5)
    path = tmp_path / "song.wav"
    sf.write(path, y, sr, subtype="PCM_16")
    whole = segment_signal(load_audio(path)[0], sr, SegmentParams())
    assert len(whole) >= 20
    for chunk_s in (0.013, 0.1, 0.777, 1000.0):  # boundaries fall inside syllables
        pd.testing.assert_frame_equal(segment_file(path, SegmentParams(), chunk_s=chunk_s), whole)


def test_iter_chunks_covers_file_with_overlap(tmp_path):
    y = np.sin(np.arange(10000) / 7.0).astype(np.float32) * 0.5
    sf.write(tmp_path / "x.wav", y, 8000, subtype="FLOAT")
    chunks = list(iter_chunks(tmp_path / "x.wav", chunk_s=0.3, overlap_s=0.05))
    assert [c[0] for c in chunks] == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.2])
    for start, block, sr in chunks:
        i = int(round(start * sr))
        np.testing.assert_array_equal(block, y[i:i + 2400 + 400])


def test_multichannel_channel_choice(tmp_path):
    y, sr, truth = synthetic_song(n_syllables=8, random_state=6)
    noise = np.random.default_rng(0).standard_normal(y.size).astype(np.float32) * 1e-3
    sf.write(tmp_path / "st.wav", np.stack([noise, y], axis=1), sr, subtype="PCM_16")
    assert audio_info(tmp_path / "st.wav").n_channels == 2
    assert len(segment_file(tmp_path / "st.wav", channel=1)) == len(truth)
    assert len(segment_file(tmp_path / "st.wav", channel=0)) == 0
    with pytest.raises(DataError, match="st.wav.*channel 2 does not exist"):
        load_audio(tmp_path / "st.wav", channel=2)


def test_find_audio_recursive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for p in ("x.wav", "a/y.FLAC", "a/b/z.ogg"):
        sf.write(tmp_path / p, np.zeros(100, np.float32), 8000,
                 format={"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}[p.rsplit(".", 1)[1].lower()])
    (tmp_path / "a" / "notes.txt").write_text("hi")
    (tmp_path / "a" / "y.FLAC.not.mat").write_text("")
    found = [p.relative_to(tmp_path).as_posix() for p in find_audio(tmp_path)]
    assert found == ["a/b/z.ogg", "a/y.FLAC", "x.wav"]


# ----------------------------------------------------------------------------- bad inputs
def _song(tmp_path, name="ok.wav", sr=32000):
    y, sr, _ = synthetic_song(n_syllables=3, sr=sr, random_state=0)
    sf.write(tmp_path / name, y, sr, subtype="PCM_16")
    return tmp_path / name


def test_bad_inputs_have_specific_messages(tmp_path):
    p = tmp_path
    (p / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    ok = _song(p)
    raw = ok.read_bytes()
    (p / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    sf.write(p / "empty.wav", np.zeros(0, np.float32), 32000)
    (p / "wrong.xyz").write_bytes(raw)
    (p / "notes.mp3x").write_text("hello")
    nan = np.full(4000, np.nan, np.float32)
    sf.write(p / "nan.wav", nan, 32000, subtype="FLOAT")
    sf.write(p / "silent.wav", np.zeros(4000, np.float32), 32000, subtype="PCM_16")
    sf.write(p / "short.wav", np.ones(100, np.float32) * 0.1, 32000, subtype="PCM_16")
    sf.write(p / "lowrate.wav", np.random.default_rng(0).standard_normal(16000).astype(np.float32) * .1,
             16000, subtype="PCM_16")
    cases = {
        "corrupt.wav": "corrupt",
        "truncated.wav": "truncated",
        "empty.wav": "empty",
        "wrong.xyz": "wrong extension",
        "notes.mp3x": "wrong extension",
        "nan.wav": "NaN",
        "silent.wav": "silent",
        "short.wav": "shorter than one FFT window",
        "lowrate.wav": r"sample rate 16000 Hz is below 2\*f_max",
        "missing.wav": "no such file",
    }
    for name, problem in cases.items():
        with pytest.raises(DataError, match=problem) as info:
            segment_file(p / name, SegmentParams())
        assert name in str(info.value), (name, str(info.value))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    ok = _song(tmp_path)
    ok.chmod(0)
    try:
        with pytest.raises(DataError, match="ok.wav: unreadable"):
            segment_file(ok)
    finally:
        ok.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_amplitude_trace_calibration_is_in_db_full_scale():
    sr = 32000
    t = np.arange(sr) / sr
    y = (0.5 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    tr = amplitude_trace(y, sr, SegmentParams())
    # a sine of amplitude 0.5 in the band reads 20*log10(0.5) = -6 dBFS
    assert np.median(tr.level_db) == pytest.approx(-6.02, abs=0.2)


@pytest.mark.slow
def test_one_hour_recording_bounded_memory_and_same_segments(tmp_path):
    path = tmp_path / "hour.wav"
    truth = write_long_recording(path, duration_s=3600.0, sr=22050, random_state=0)
    code = textwrap.dedent(f"""
        import resource, sys
        from vocalatent.audio.segment import segment_file
        s = segment_file({str(path)!r}, chunk_s=60.0)
        s.to_csv({str(tmp_path / 'chunked.csv')!r}, index=False, float_format='%.9f')
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak_kb = int(out.stdout.strip().splitlines()[-1])
    assert peak_kb < 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    chunked = pd.read_csv(tmp_path / "chunked.csv")
    y, sr = load_audio(path)
    whole = segment_signal(y, sr, SegmentParams())
    np.testing.assert_allclose(chunked["onset_s"], whole["onset_s"], atol=1e-9)
    np.testing.assert_allclose(chunked["offset_s"], whole["offset_s"], atol=1e-9)
    p, r = match_onsets(truth, whole)
    assert p >= 0.9 and r >= 0.9
