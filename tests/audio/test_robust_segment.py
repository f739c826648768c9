"""Segmentation that holds where the gaps do not fall to the file's silence (issue 12).

Hard synthetic bouts (``synthetic_bout``): in-bout noise 10-30 dB above the file's silence,
reverberation tails, gaps down to 5 ms, syllables of 20-300 ms, levels spread over 15 dB,
amplitude scales 0.01-2.0 — the failure a new user met on a real Bengalese finch bout.
"""

import logging

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from vocalatent import ParameterError
from vocalatent.audio.evaluate import boundary_scores, match_times
from vocalatent.audio.pipeline import build_store, segment_paths
from vocalatent.audio.segment import (AVA_ALIASES, SegmentParams, amplitude_trace, segment_file,
                                      segment_signal, segments_from_trace)
from vocalatent.audio.synthetic import synthetic_bout
from vocalatent.config import load_pipeline

TOL_S = 0.010


def _preset(name="bengalese_finch", **over):
    return SegmentParams.from_dict({**load_pipeline(name)["segment"], **over})


def _onset_f1(truth, found):
    return boundary_scores(truth, found, tol_s=TOL_S)["onset_f1"]


@pytest.mark.parametrize("noise_db", [10.0, 20.0, 30.0])
@pytest.mark.parametrize("scale", [0.01, 1.0, 2.0])
def test_hard_bouts_onset_f1_at_10ms(noise_db, scale):
    y, sr, truth = synthetic_bout(n_syllables=40, in_bout_noise_db=noise_db, scale=scale,
                                  random_state=int(noise_db))
    assert truth["duration_s"].min() < 0.04 and truth["duration_s"].max() > 0.25
    gaps = truth["onset_s"].to_numpy()[1:] - truth["offset_s"].to_numpy()[:-1]
    assert gaps.min() < 0.02
    found, report = segment_signal(y, sr, _preset(), return_report=True)
    assert _onset_f1(truth, found) >= 0.9, (noise_db, scale, len(found))
    removed = sum(v["s"] for v in report.removed.values())
    assert report.above_s == pytest.approx(report.in_segments_s + removed, abs=1e-9)
    assert "too_long" not in report.removed


def test_old_thresholds_fail_on_hard_bouts():
    """Regression: the AVA-style thresholds the presets used before (mode "ava", calibrated
    range from the file's silence to its loudest syllables) merge neighbours whose gaps hold
    in-bout noise; the default mode does not."""
    old, new = [], []
    for seed, noise_db in enumerate((10.0, 20.0, 30.0)):
        y, sr, truth = synthetic_bout(n_syllables=40, in_bout_noise_db=noise_db,
                                      random_state=100 + seed)
        old.append(_onset_f1(truth, segment_signal(y, sr, _preset(mode="ava"))))
        new.append(_onset_f1(truth, segment_signal(y, sr, _preset())))
    assert max(old) < 0.5, old
    assert min(new) >= 0.9, new


def test_same_segments_whatever_the_level_dc_and_sample_format(tmp_path):
    y, sr, truth = synthetic_bout(n_syllables=25, in_bout_noise_db=20.0, random_state=7,
                                  loudest_db=-6.0)
    params = _preset()
    ref = segment_signal(y, sr, params)
    assert _onset_f1(truth, ref) >= 0.9
    hop = params.hop_s
    variants = {}
    for scale in (0.01, 2.0):  # float files above full scale are real
        sf.write(tmp_path / f"x{scale}.wav", y * scale, sr, subtype="FLOAT")
        variants[f"float x{scale}"] = tmp_path / f"x{scale}.wav"
    sf.write(tmp_path / "dc.wav", y + 0.3, sr, subtype="FLOAT")
    variants["DC offset 0.3"] = tmp_path / "dc.wav"
    for subtype in ("PCM_16", "PCM_24", "PCM_32"):
        sf.write(tmp_path / f"{subtype}.wav", y, sr, subtype=subtype)
        variants[subtype] = tmp_path / f"{subtype}.wav"
    sf.write(tmp_path / "q24.wav", y * 0.01, sr, subtype="PCM_24")
    variants["PCM_24 x0.01"] = tmp_path / "q24.wav"
    for name, path in variants.items():
        got = segment_file(path, params)
        assert len(got) == len(ref), name
        assert np.abs(got["onset_s"].to_numpy() - ref["onset_s"].to_numpy()).max() <= hop + 1e-9, name
        assert np.abs(got["offset_s"].to_numpy() - ref["offset_s"].to_numpy()).max() <= hop + 1e-9, name
    got = segment_file(variants["float x2.0"], params)
    pd.testing.assert_frame_equal(got.drop(columns="peak"), ref.drop(columns="peak"))


def _tone(sr, dur, f=3000.0, amp=0.3, am_hz=None, depth=0.0):
    t = np.arange(int(dur * sr)) / sr
    env = np.ones_like(t) if am_hz is None else 1 - depth * (0.5 + 0.5 * np.cos(2 * np.pi * am_hz * t))
    return amp * env * np.sin(2 * np.pi * f * t)


def test_too_long_runs_are_split_at_their_deepest_dips_or_reported(tmp_path, caplog):
    sr = 32000
    rng = np.random.default_rng(0)
    silence = lambda s: np.zeros(int(s * sr))  # noqa: E731
    # a 1.2 s run with shallow 4 dB dips every 0.3 s (below split_db: not split as syllables),
    # then a 0.9 s steady tone with no dip at all
    dippy = _tone(sr, 1.2, am_hz=1 / 0.3, depth=0.37)
    steady = _tone(sr, 0.9, f=2500.0)
    y = np.concatenate([silence(0.5), dippy, silence(0.5), steady, silence(0.5)])
    y = (y + rng.standard_normal(y.size) * 1e-4).astype(np.float32)
    params = SegmentParams(max_dur_s=0.4, min_dur_s=0.02)
    found, report = segment_signal(y, sr, params, return_report=True)
    # the dippy run is cut at its dips into pieces that fit; none of it is lost
    in_dippy = found[(found["onset_s"] >= 0.45) & (found["offset_s"] <= 1.75)]
    assert len(in_dippy) >= 3 and (in_dippy["duration_s"] <= 0.4 + 1e-9).all()
    assert in_dippy["duration_s"].sum() == pytest.approx(1.2, abs=0.05)
    assert report.n_split_for_max_dur >= 2
    # the steady tone cannot be split: removed, and reported with its seconds
    assert report.removed["too_long"]["n"] == 1
    assert report.removed["too_long"]["s"] == pytest.approx(0.9, abs=0.03)
    removed = sum(v["s"] for v in report.removed.values())
    assert report.above_s == pytest.approx(report.in_segments_s + removed, abs=1e-9)
    # ... in the run's report table and on the console (a warning naming the file)
    sf.write(tmp_path / "long.wav", y, sr, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        segs, errors, table = segment_paths(tmp_path, params=params, return_report=True)
    assert len(errors) == 0 and len(segs) == len(found)
    row = table.iloc[0]
    assert row["source"] == "long.wav" and row["too_long_n"] == 1
    assert row["too_long_s"] == pytest.approx(0.9, abs=0.03)
    assert any("long.wav" in r.getMessage() and "max_dur_s=0.4" in r.getMessage()
               for r in caplog.records)
    # ... and in the store a run builds (the workflow writes it as segment_report.json)
    store, _ = build_store(tmp_path, tmp_path / "s.h5", segment_params=params,
                           spectrogram_params={"n_freq": 16, "n_time": 16})
    summary = store.info["segment_report"]
    store.close()
    assert summary["too_long_files"] == ["long.wav"]
    assert summary["removed"]["too_long"]["n"] == 1


def test_ava_mode_also_splits_long_runs_instead_of_dropping():
    sr = 32000
    y = np.concatenate([np.zeros(sr // 2), _tone(sr, 1.2, am_hz=1 / 0.3, depth=0.9),
                        np.zeros(sr // 2)]).astype(np.float32)
    y += np.random.default_rng(1).standard_normal(y.size).astype(np.float32) * 1e-4
    params = SegmentParams(mode="ava", max_dur_s=0.4)
    found, report = segment_signal(y, sr, params, return_report=True)
    assert len(found) >= 3 and (found["duration_s"] <= 0.4 + 1e-9).all()
    assert "too_long" not in report.removed


def test_ava_parameter_names_are_accepted():
    p = SegmentParams.from_dict({"mode": "ava", "th_1": 0.05, "th_2": 0.15, "th_3": 0.25,
                                 "min_dur": 0.01, "max_dur": 0.3, "smoothing_timescale": 0.007})
    assert (p.th1, p.th2, p.th3, p.min_dur_s, p.max_dur_s, p.smoothing_s) == \
        (0.05, 0.15, 0.25, 0.01, 0.3, 0.007)
    assert set(AVA_ALIASES) == {"th_1", "th_2", "th_3", "min_dur", "max_dur",
                                "smoothing_timescale"}
    # a user's AVA name merged over a preset's field name wins
    assert SegmentParams.from_dict({"th1": 0.2, "th_1": 0.1}).th1 == 0.1
    with pytest.raises(ParameterError, match="mode"):
        SegmentParams(mode="fancy")


def test_local_floor_follows_the_bout():
    y, sr, truth = synthetic_bout(n_syllables=20, in_bout_noise_db=25.0, random_state=3)
    tr = amplitude_trace(y, sr, _preset())
    inside = (tr.times > truth["onset_s"].iloc[2]) & (tr.times < truth["offset_s"].iloc[-3])
    outside = tr.times < truth["onset_s"].iloc[0] - 0.5
    # the floor inside the bout sits ~25 dB above the floor outside it
    assert np.median(tr.floor_db[inside]) - np.median(tr.floor_db[outside]) == \
        pytest.approx(25.0, abs=4.0)
    assert np.all(tr.floor_db <= tr.smoothed_db + 1e-9)


def test_chunked_equals_whole_in_prominence_mode(tmp_path):
    y, sr, _ = synthetic_bout(n_syllables=20, random_state=11)
    sf.write(tmp_path / "b.wav", y, sr, subtype="PCM_24")
    whole = segment_file(tmp_path / "b.wav", _preset(), chunk_s=1000.0)
    assert len(whole) >= 15
    for chunk_s in (0.0173, 0.5, 3.3):
        pd.testing.assert_frame_equal(segment_file(tmp_path / "b.wav", _preset(), chunk_s=chunk_s),
                                      whole)


def test_segments_from_trace_report_accounts_for_every_frame():
    y, sr, _ = synthetic_bout(n_syllables=30, in_bout_noise_db=15.0, random_state=5)
    for params in (_preset(), _preset(edge_db=15.0), _preset(mode="ava"),
                   _preset(min_dur_s=0.06, max_dur_s=0.12)):
        tr = amplitude_trace(y, sr, params)
        seg, rep = segments_from_trace(tr, params, return_report=True)
        removed = sum(v["s"] for v in rep.removed.values())
        assert rep.above_s == pytest.approx(rep.in_segments_s + removed, abs=1e-9), params
        assert rep.n_segments == len(seg)


# ------------------------------------------------------------------------------ scoring
def test_match_times_is_one_to_one_and_maximal():
    # greedy nearest matching would pair 0.105 with 0.100 and leave 0.112 unmatched
    assert match_times([0.100, 0.112], [0.105, 0.119], tol_s=0.008) == 2
    assert match_times([0.1, 0.1], [0.1], tol_s=0.01) == 1
    assert match_times([], [0.1], tol_s=0.01) == 0


def test_boundary_scores_known_answer():
    truth = pd.DataFrame({"onset_s": [0.1, 0.5, 0.9], "offset_s": [0.2, 0.6, 1.0]})
    found = pd.DataFrame({"onset_s": [0.104, 0.52, 0.9, 1.5], "offset_s": [0.2, 0.6, 1.03, 1.6]})
    s = boundary_scores(truth, found, tol_s=0.01)
    assert (s["onset_hits"], s["offset_hits"]) == (2, 2)
    assert s["onset_precision"] == pytest.approx(0.5)
    assert s["onset_recall"] == pytest.approx(2 / 3)
    assert s["onset_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


@pytest.mark.parametrize("subtype,ext", [("PCM_16", "wav"), ("FLOAT", "wav")])
def test_time_chunks_of_one_file_give_the_whole_file_segments(tmp_path, subtype, ext):
    from vocalatent.audio.segment import band_levels, frame_count, segments_from_levels

    y, sr, _ = synthetic_bout(n_syllables=30, random_state=21)
    path = tmp_path / f"long.{ext}"
    sf.write(path, y, sr, subtype=subtype)
    params = _preset()
    n = frame_count(path, params)
    whole, peak = band_levels(path, params)
    assert whole.shape == (n,)
    cuts = [0, 1, 777, 2000, n // 2, n - 3, n]
    parts = [band_levels(path, params, frames=(a, b), chunk_s=0.37) for a, b in zip(cuts[:-1], cuts[1:])]
    levels = np.concatenate([p[0] for p in parts])
    np.testing.assert_array_equal(levels, whole)
    assert max(p[1] for p in parts) == peak
    seg, rep = segments_from_levels(levels, peak, params, sr=sr, return_report=True)
    pd.testing.assert_frame_equal(seg, segment_file(path, params))
    with pytest.raises(ParameterError, match="frames must satisfy"):
        band_levels(path, params, frames=(5, n + 1))


def test_ava_names_in_a_pipeline_toml(tmp_path):
    """A user's TOML written with AVA's parameter names works with --pipeline."""
    import subprocess
    import sys

    y, sr, _ = synthetic_bout(n_syllables=12, in_bout_noise_db=10.0, random_state=9)
    (tmp_path / "rec").mkdir()
    sf.write(tmp_path / "rec" / "a.wav", y, sr, subtype="FLOAT")
    (tmp_path / "ava.toml").write_text(
        '[pipeline]\nname = "ava_style"\nextends = "bengalese_finch"\n\n'
        '[segment]\nmode = "ava"\nth_1 = 0.15\nth_2 = 0.3\nth_3 = 0.45\nmin_dur = 0.01\n'
        'max_dur = 0.4\nsmoothing_timescale = 0.003\n')
    res = subprocess.run([sys.executable, "-m", "vocalatent", "segment", str(tmp_path / "rec"),
                          "-o", str(tmp_path / "out"), "--pipeline", str(tmp_path / "ava.toml")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = pd.read_csv(tmp_path / "out" / "segments.csv")
    want = segment_signal(y, sr, SegmentParams.from_dict({
        **load_pipeline("bengalese_finch")["segment"], "mode": "ava", "th1": 0.15, "th2": 0.3,
        "th3": 0.45, "min_dur_s": 0.01, "max_dur_s": 0.4, "smoothing_s": 0.003}))
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got["onset_s"], want["onset_s"], atol=2e-6)
