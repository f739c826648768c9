"""Multi-file pipeline and CLI: errors table, annotations, store contents, exit status."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

from vocalatent.audio.annotations import write_segments
from vocalatent.audio.pipeline import build_store, segment_paths
from vocalatent.audio.segment import SegmentParams
from vocalatent.audio.spectrogram import SpectrogramParams
from vocalatent.audio.synthetic import match_onsets, write_synthetic_dataset
from vocalatent.cli import main
from vocalatent.data.store import SyllableStore



@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "rec"
    truth = write_synthetic_dataset(root / "day1", n_files=3, n_syllables=12, random_state=0)
    truth["source"] = "day1/" + truth["source"]
    (root / "day1" / "ground_truth.csv").unlink()
    (root / "broken.wav").write_bytes(b"RIFF....WAVEnothing")
    return root, truth


def test_segment_paths_bad_file_recorded_rest_processed(dataset):
    root, truth = dataset
    seg, err = segment_paths(root, n_jobs=2)
    assert err["source"].tolist() == ["broken.wav"]
    assert "broken.wav" in err["error"].iloc[0] and "corrupt" in err["error"].iloc[0]
    assert sorted(seg["source"].unique()) == sorted(truth["source"].unique())
    for src, grp in truth.groupby("source"):
        p, r = match_onsets(grp, seg[seg["source"] == src])
        assert p >= 0.9 and r >= 0.9


def test_annotations_replace_automatic_segments(dataset):
    root, truth = dataset
    first = truth[truth["source"] == "day1/song_000.wav"]
    write_segments(first[["onset_s", "offset_s", "label"]], root / "day1" / "song_000.wav.csv")
    seg, _ = segment_paths(root, annotations="auto")
    mine = seg[seg["source"] == "day1/song_000.wav"]
    assert mine["label"].tolist() == first["label"].tolist()
    assert (mine["segmented_by"] == "song_000.wav.csv").all()
    ignored, _ = segment_paths(root, annotations="ignore")
    assert (ignored["label"] == "").all()


def test_build_store_one_item_per_segment_in_small_batches(dataset, tmp_path):
    root, truth = dataset
    seg, _ = segment_paths(root)
    out = tmp_path / "syl.h5"
    store, err = build_store(root, out, segments=seg, batch_syllables=5, n_jobs=2,
                             spectrogram_params=SpectrogramParams(n_freq=32, n_time=24))
    assert len(store) == len(seg) and store.shape == (32, 24)
    pd.testing.assert_frame_equal(store.segments[["source", "onset_s", "offset_s"]],
                                  seg[["source", "onset_s", "offset_s"]])
    assert store.info["spectrogram_resolved"]["spec_min_db"] is not None
    x = store.spectrograms[[0, len(store) - 1]]
    assert x.shape == (2, 32, 24) and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    # same inputs: reused; different params: detected as stale and rebuilt
    again, _ = build_store(root, out, segments=seg, spectrogram_params=SpectrogramParams(n_freq=32, n_time=24))
    assert again.is_compatible(store.params)
    other, _ = build_store(root, out, segments=seg, spectrogram_params=SpectrogramParams(n_freq=16, n_time=24))
    assert other.shape == (16, 24)


def test_cli_segment_and_spectrograms(dataset, tmp_path):
    root, truth = dataset
    runner = CliRunner()
    res = runner.invoke(main, ["-q", "segment", str(root), "-o", str(tmp_path / "o1"),
                               "--pipeline", "zebra_finch", "--jobs", "2"])
    assert res.exit_code == 1 and "1 file(s) failed" in res.output
    seg = pd.read_csv(tmp_path / "o1" / "segments.csv", keep_default_na=False)
    assert {"source", "onset_s", "offset_s", "duration_s", "label"} <= set(seg.columns)
    assert seg["source"].str.startswith("day1/").all()
    errors = pd.read_csv(tmp_path / "o1" / "errors.csv")
    assert errors["source"].tolist() == ["broken.wav"]
    (root / "broken.wav").unlink()
    cfg = tmp_path / "mine.toml"
    cfg.write_text("[spectrogram]\nn_freq = 16\nn_time = 20\n")
    res = runner.invoke(main, ["-q", "spectrograms", str(root), "-o", str(tmp_path / "o2"),
                               "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    st = SyllableStore(tmp_path / "o2" / "syllables.h5")
    assert st.shape == (16, 20) and len(st) == len(truth)
    assert pd.read_csv(tmp_path / "o2" / "errors.csv").empty


def test_channel_all_makes_sources_per_channel(tmp_path):
    from vocalatent.audio.synthetic import synthetic_song

    y, sr, truth = synthetic_song(n_syllables=6, random_state=2)
    sf.write(tmp_path / "st.wav", np.stack([y, y[::-1]], axis=1), sr, subtype="PCM_16")
    seg, err = segment_paths(tmp_path / "st.wav", channel="all", params=SegmentParams())
    assert err.empty and sorted(seg["channel"].unique()) == [0, 1]
    assert (seg.groupby("channel").size() == len(truth)).all()
