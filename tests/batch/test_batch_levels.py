"""Batch runs choose the spectrogram level per recording like a single run (issue 13): the same
song recorded as two sessions, at +0 dB with noise at -75 dBFS and at +13 dB with noise at
-55 dBFS, gives the same spectrograms in both sessions' stores."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from vocalatent.batch import calibrate_stage, plan_batch, segment_stage, store_stage
from vocalatent.data.store import SyllableStore

distributed = pytest.importorskip("distributed")

# the whole window, gaps included (context "keep"): the noise floors in the gaps are part of
# what differs between the two sessions
SPEC = {"n_freq": 24, "n_time": 24, "f_min": 500.0, "f_max": 11000.0, "time_mode": "window",
        "window_dur_s": 0.25, "context": "keep"}


@pytest.fixture(scope="module")
def client():
    c = distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                           dashboard_address=None)
    yield c
    c.close()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, song_at_two_levels):
    """The song at two levels (tests/conftest.py) as two sessions."""
    root = tmp_path_factory.mktemp("levels")
    quiet, loud, seg, sr = song_at_two_levels
    for name, y in {"quiet": quiet, "loud": loud}.items():
        (root / name).mkdir()
        sf.write(root / name / "song.wav", y, sr, subtype="FLOAT")
        # the same segments in both (an annotation file), so only the levels differ
        (root / name / "song.txt").write_text("".join(
            f"{a:.6f}\t{b:.6f}\t{t}\n" for a, b, t in zip(seg["onset_s"], seg["offset_s"], seg["type"])))
    manifest = root / "sessions.csv"
    manifest.write_text("session,path\nquiet,quiet\nloud,loud\n")
    return root, manifest, len(seg)


def _stores(run):
    out = {}
    for sid in ("quiet", "loud"):
        st = SyllableStore(run.sessions[sid].dir / "syllables.h5")
        out[sid] = np.asarray(st.spectrograms[np.arange(len(st))])
        st.close()
    return out


@pytest.mark.parametrize("level", ["auto", "shared"])
def test_sessions_at_different_levels_get_the_same_images(client, sessions, tmp_path, level):
    root, manifest, n = sessions
    run = plan_batch(manifest, tmp_path / "out", overrides={"spectrogram": {**SPEC, "level": level}},
                     device="cpu", seed=0)
    run.client = client
    segment_stage(run)
    calibrate_stage(run)
    calib = json.loads((tmp_path / "out" / "calibration.json").read_text())
    store_stage(run)
    x = _stores(run)
    assert x["quiet"].shape == x["loud"].shape == (n, 24, 24)
    diff = float(np.abs(x["quiet"] - x["loud"]).mean())
    if level == "auto":
        assert calib["level"] == "recording" and run.spec_params.level == "recording"
        peaks = {k.split("/")[0]: v[1] for k, v in calib["reference_ranges"].items()}
        assert peaks["loud"] - peaks["quiet"] == pytest.approx(13.0, abs=1.0)
        width = run.spec_params.level_width_db
        assert all(b - a == pytest.approx(width, abs=1e-3) for a, b in calib["reference_ranges"].values())
        assert diff < 0.01, diff
    else:
        assert calib["level"] == "shared" and run.spec_params.fixed_range
        assert diff > 0.1, diff              # one range: the loud session is brighter


def test_calibration_is_reused_only_for_the_same_choice(client, sessions, tmp_path):
    root, manifest, _ = sessions
    out = tmp_path / "out"
    kw = dict(overrides={"spectrogram": SPEC}, device="cpu", seed=0)
    run = plan_batch(manifest, out, **kw)
    run.client = client
    segment_stage(run)
    calibrate_stage(run)
    first = (out / "calibration.json").read_text()
    again = plan_batch(manifest, out, **kw)
    again.client = client
    segment_stage(again)
    calibrate_stage(again)
    assert (out / "calibration.json").read_text() == first
    assert again.spec_params == run.spec_params
    shared = plan_batch(manifest, out, overrides={"spectrogram": {**SPEC, "level": "shared"}},
                        device="cpu", seed=0)
    shared.client = client
    segment_stage(shared)
    calibrate_stage(shared)
    assert json.loads((out / "calibration.json").read_text())["level"] == "shared"
    assert pd.notna(shared.spec_params.spec_min_db)
