"""Per-recording level normalisation: the same song at +0 and +13 dB with different noise
floors gives the same spectrograms and lands in the same places of one model's map."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from vocalatent.audio.pipeline import build_store
from vocalatent.audio.spectrogram import (
    SpectrogramParams,
    apply_level_ranges,
    level_ranges,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, song_at_two_levels):
    """The song at two levels (tests/conftest.py) as quiet.wav and loud.wav."""
    root = tmp_path_factory.mktemp("levels")
    quiet, loud, base, sr = song_at_two_levels
    sf.write(root / "quiet.wav", quiet, sr, subtype="FLOAT")
    sf.write(root / "loud.wav", loud, sr, subtype="FLOAT")
    segments = pd.concat([base.assign(source="quiet.wav"), base.assign(source="loud.wav")],
                         ignore_index=True)
    return root, segments, len(base)


def _params(level, context="keep"):
    # the whole window, gaps included (context="keep"): the noise floors in the gaps are part
    # of what differs between the two recordings
    return SpectrogramParams(n_freq=24, n_time=24, f_min=500.0, f_max=11000.0, time_mode="window",
                             window_dur_s=0.25, level=level, context=context)


def _stores(pair, tmp_path, level, context="keep"):
    root, segments, n = pair
    store, errors = build_store(root, tmp_path / f"{level}_{context}.h5", segments=segments,
                                spectrogram_params=_params(level, context))
    assert errors.empty
    x = np.asarray(store.spectrograms[np.arange(len(store))])
    src = store.segments["source"].to_numpy()
    return x[src == "quiet.wav"], x[src == "loud.wav"], store


def test_per_recording_ranges_give_the_same_spectrograms(pair, tmp_path):
    q, l_, store = _stores(pair, tmp_path, "recording")
    assert store.info["spectrogram_resolved"]["level"] == "recording"
    ranges = store.info["level_ranges"]
    # the gain moved each file's range by the 13 dB, not its width
    assert ranges["loud.wav"][1] - ranges["quiet.wav"][1] == pytest.approx(13.0, abs=0.5)
    assert np.ptp([b - a for a, b in ranges.values()]) == pytest.approx(0.0, abs=0.002)  # 0.001 dB rounding
    diff_rec = float(np.mean(np.abs(q - l_)))
    qs, ls, shared = _stores(pair, tmp_path, "shared")
    assert "level_ranges" not in shared.info
    diff_shared = float(np.mean(np.abs(qs - ls)))
    # shared range: the loud copy is much brighter; own ranges: nearly the same images
    assert ls.mean() > qs.mean() + 0.1
    assert diff_rec < 0.003 < 0.1 < diff_shared
    assert np.mean(np.abs(q - l_) > 0.05) < 0.001 < 0.5 < np.mean(np.abs(qs - ls) > 0.05)
    assert abs(l_.mean() / q.mean() - 1) < 0.25 < 1.0 < ls.mean() / qs.mean() - 1


def test_masked_windows_at_their_own_levels_give_the_same_spectrograms(pair, tmp_path):
    # the default window (neighbours and gaps blanked): the ranges come from the syllables'
    # own columns, and the two copies still agree where one shared range does not
    q, l_, store = _stores(pair, tmp_path, "recording", "mask")
    ranges = store.info["level_ranges"]
    assert ranges["loud.wav"][1] - ranges["quiet.wav"][1] == pytest.approx(13.0, abs=0.5)
    qs, ls, _ = _stores(pair, tmp_path, "shared", "mask")
    assert float(np.mean(np.abs(q - l_))) < 0.003 < 0.05 < float(np.mean(np.abs(qs - ls)))


def test_auto_picks_per_recording_ranges_when_levels_differ(pair, tmp_path):
    _, _, store = _stores(pair, tmp_path, "auto")
    assert store.info["spectrogram_resolved"]["level"] == "recording"
    width = store.info["spectrogram_resolved"]["level_width_db"]
    assert width > 10
    # recordings projected later reuse the recorded width below their own peak
    params = SpectrogramParams.from_dict(store.info["spectrogram_resolved"])
    assert params.calibrated and not params.fixed_range
    db = {"x": np.array([[-30.0, -20.0, -10.0]])}
    (lo, hi), = level_ranges(db, params)[0].values()
    assert hi - lo == pytest.approx(width)


def test_equal_levels_keep_one_shared_range():
    rng = np.random.default_rng(0)
    db = {f"f{i}": rng.normal(-60, 10, size=(20, 16, 16)) for i in range(3)}
    ranges, chosen = level_ranges(db, SpectrogramParams())
    assert chosen == "shared" and len(set(ranges.values())) == 1
    fixed = SpectrogramParams(spec_min_db=-80.0, spec_max_db=-20.0, level="recording")
    assert level_ranges(db, fixed) == ({k: (-80.0, -20.0) for k in db}, "fixed")
    np.testing.assert_allclose(apply_level_ranges(np.array([-90.0, -50.0, 0.0]), -80.0, -20.0),
                               [0.0, 0.5, 1.0])


@pytest.mark.slow
def test_the_same_song_lands_in_the_same_places_of_one_model(pair, tmp_path):
    from vocalatent import QLVM
    from vocalatent.analysis.torus import torus_distance

    q, l_, _ = _stores(pair, tmp_path, "recording")
    qs, ls, _ = _stores(pair, tmp_path, "shared")
    # one model for all four sets of images (both copies under both ranges)
    model = QLVM(2, n_lattice=144, n_eval_lattice=610, max_epochs=40, batch_size=16, lr=3e-3,
                 random_state=0, verbose=False, device="cpu").fit(np.concatenate([q, l_, qs, ls]))
    zq, zl = np.asarray(model.transform(q)), np.asarray(model.transform(l_))
    same = torus_distance(zq, zl)
    other = torus_distance(zq[:, None, :], zq[None, :, :])
    typical = np.median(other[np.triu_indices(len(zq), 1)])
    # each syllable's loud copy lies next to its quiet copy, far closer than other syllables
    assert np.median(same) < 0.05 * typical
    zs = torus_distance(np.asarray(model.transform(qs)), np.asarray(model.transform(ls)))
    assert np.median(zs) > 10 * np.median(same)
