"""A file beside a recording that is not its annotation must not make the recording fail (issue 14, 8b)."""

import logging

import pytest

from vocalatent.audio.annotations import annotations_for
from vocalatent.audio.pipeline import segment_paths
from vocalatent.audio.synthetic import write_synthetic_dataset


@pytest.fixture
def rec(tmp_path):
    root = tmp_path / "rec"
    write_synthetic_dataset(root, n_files=1, n_syllables=6, random_state=0)
    (root / "ground_truth.csv").unlink()
    return root


@pytest.mark.parametrize("name,text", [
    ("song_000.txt", "recorded in the morning, mic 2 was noisy\nbird: or12\n"),
    ("song_000.csv", "date,notes\n2024-05-01,bird or12 sang well\n"),
])
def test_notes_file_is_ignored_with_a_notice(rec, caplog, name, text):
    (rec / name).write_text(text)
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        assert annotations_for(rec / "song_000.wav") is None
        seg, err = segment_paths(rec, n_jobs=1)
    assert err.empty, err["error"].tolist()
    assert len(seg) > 0 and (seg["segmented_by"] == "amplitude").all()
    notices = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    assert notices, caplog.text
    assert all("\n" not in m for m in notices)
    assert 'annotations = "ignore"' in notices[0] and "--annotations" in notices[0]


@pytest.mark.parametrize("name,text", [
    ("song_000.csv", "onset_s,offset_s,label\n0.1,0.2,a\nsoon,0.5,b\n"),
    ("song_000.txt", "0.1\t0.2\ta\n0.3\tlater\tb\n"),
    ("song_000.TextGrid", "this is not praat\n"),
])
def test_broken_annotation_names_file_and_the_cli_way_off(rec, name, text):
    (rec / name).write_text(text)
    seg, err = segment_paths(rec, n_jobs=1)
    assert err["source"].tolist() == ["song_000.wav"]
    msg = err["error"].iloc[0]
    assert name in msg and 'annotations = "ignore"' in msg and "--annotations ignore" in msg
    assert "format=" not in msg and "\n" not in msg


def test_dangling_symlinks_are_counted_and_reported(rec, caplog):
    (rec / "gone.wav").symlink_to(rec / "moved_away.wav")
    (rec / "sub").mkdir()
    (rec / "sub" / "lost.flac").symlink_to("/nonexistent/lost.flac")
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        seg, err = segment_paths(rec, n_jobs=1)
    assert sorted(err["source"]) == ["gone.wav", "sub/lost.flac"]
    assert all("dangling symbolic link" in e for e in err["error"])
    assert sorted(seg["source"].unique()) == ["song_000.wav"]
    lines = [r.getMessage() for r in caplog.records if "dangling symbolic link(s)" in r.getMessage()]
    assert len(lines) == 1 and "2 dangling" in lines[0]
    assert "gone.wav" in lines[0] and "sub/lost.flac" in lines[0]


def test_dangling_links_to_other_files_are_reported_not_skipped(rec, caplog):
    """A dangling link where an annotation belongs fails that recording (segmenting it by
    amplitude instead would be a silent guess); a dangling link to any other file is named."""
    (rec / "song_000.txt").symlink_to(rec / "labels_moved.txt")
    (rec / "notes.pdf").symlink_to("/nonexistent/notes.pdf")
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        seg, err = segment_paths(rec, n_jobs=1)
    assert err["source"].tolist() == ["song_000.wav"] and seg.empty
    msg = err["error"].iloc[0]
    assert "song_000.txt is a dangling symbolic link" in msg and "labels_moved.txt" in msg
    assert 'annotations = "ignore"' in msg
    lines = [r.getMessage() for r in caplog.records if "to other files not read" in r.getMessage()]
    assert len(lines) == 1 and "2 dangling" in lines[0] and "notes.pdf" in lines[0]
    seg, err = segment_paths(rec, n_jobs=1, annotations="ignore")     # the way out it names
    assert err.empty and len(seg) > 0


def test_dangling_links_in_a_matrix_folder_are_named(tmp_path, caplog):
    from vocalatent.prepare.base import input_files

    (tmp_path / "matrix.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n1 1 0\n")
    (tmp_path / "barcodes.tsv").symlink_to(tmp_path / "elsewhere.tsv")
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        files = input_files(tmp_path)
    assert [f.name for f in files] == ["matrix.mtx"]
    assert "1 dangling symbolic link(s) not read" in caplog.text and "barcodes.tsv" in caplog.text


@pytest.mark.parametrize("sr,hint", [(500_000, True), (32_000, False)])
def test_nothing_found_far_above_the_band_names_sample_rate_and_pipelines(tmp_path, sr, hint):
    import numpy as np
    import soundfile as sf

    from vocalatent import DataError
    from vocalatent.prepare.vocal import build_syllable_store

    rec = tmp_path / "rec"
    rec.mkdir()
    t = np.arange(int(0.6 * sr)) / sr
    rng = np.random.default_rng(0)
    x = 1e-4 * rng.standard_normal(t.size)
    if hint:  # 20 ms calls at 60 kHz: ultrasonic, outside the default 0.4-10 kHz band
        for t0 in (0.1, 0.3, 0.5):
            on = (t >= t0) & (t < t0 + 0.02)
            x[on] += 0.5 * np.sin(2 * np.pi * 60_000 * t[on])
    sf.write(rec / "bat.wav", x, sr)
    with pytest.raises(DataError, match="no syllables") as info:
        build_syllable_store(rec, tmp_path / "out", {})
    msg = str(info.value)
    assert ("500 kHz" in msg and "--pipeline bat" in msg and "mouse_usv" in msg) == hint, msg
