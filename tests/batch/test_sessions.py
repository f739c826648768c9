"""Session manifests (CSV/TOML, validation messages), the batch run refused on a locked OUT, lazy concatenation."""

import json
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from vocalatent._utils import DataError, ParameterError
from vocalatent.batch import ConcatSpectrograms, run_batch
from vocalatent.locks import OutputLockedError, output_lock
from vocalatent.sessions import check_reference, load_sessions


@pytest.fixture
def recordings(tmp_path):
    """Three folders of (empty-content but correctly named) audio files; manifests only list them."""
    for d, names in {"b1/day1": ["a.wav", "b.wav"], "b1/day2": ["c.wav", "notes.txt"],
                     "b2": ["x.flac", "sub/y.wav"]}.items():
        for n in names:
            p = tmp_path / d / n
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
    return tmp_path


def _csv(path, text):
    path.write_text(text)
    return path


def test_csv_manifest_resolves_folders_globs_files_and_types_metadata(recordings):
    m = load_sessions(_csv(recordings / "m.csv",
                           "session,path,animal,age,date\n"
                           "s1,b1/day1,b1,40,2024-01-01\n"
                           f"s2,{recordings}/b1/day2/*.wav,b1,41,\n"
                           "s3,b2,b2,,2024-01-03\n"
                           "s4,b2/sub/y.wav,b2,50.5,2024-01-04\n"))
    assert m.ids == ["s1", "s2", "s3", "s4"]
    assert [f.name for f in m["s1"].files] == ["a.wav", "b.wav"]
    assert m["s1"].sources() == ["a.wav", "b.wav"]
    assert [f.name for f in m["s2"].files] == ["c.wav"]          # the glob skips notes.txt
    assert m["s2"].base == (recordings / "b1" / "day2").resolve()
    assert m["s3"].sources() == ["sub/y.wav", "x.flac"]          # recursive, sorted
    assert m["s4"].sources() == ["y.wav"] and m["s4"].base == (recordings / "b2" / "sub").resolve()
    meta = m.metadata()
    assert meta["age"].dtype == np.float64
    assert np.isnan(meta.loc["s3", "age"]) and meta.loc["s4", "age"] == 50.5
    assert meta.loc["s2", "date"] == "" and meta.loc["s1", "animal"] == "b1"
    assert list(m.table()["n_files"]) == [2, 1, 2, 1]


def test_toml_manifest_with_defaults_and_dates(recordings):
    (recordings / "sub").mkdir()
    path = recordings / "sub" / "m.toml"
    path.write_text('[defaults]\nspecies = "finch"\ncondition = "baseline"\n\n'
                    '[[sessions]]\nsession = "d1"\npath = "../b1/day1"\ndate = 2024-03-01\n\n'
                    '[[sessions]]\nsession = "d2"\npath = "../b1/day2"\ncondition = "muted"\n')
    m = load_sessions(path)
    meta = m.metadata()
    assert list(meta.columns) == ["species", "condition", "date"]
    assert list(meta["condition"]) == ["baseline", "muted"]
    assert list(meta["date"]) == ["2024-03-01", ""]


@pytest.mark.parametrize("body, message", [
    ("session,path\n,b1/day1\n", "row 1 (line 2), column 'session': the session id is missing"),
    ("session,path\ns1,b1/day1\ns1,b2\n", "row 2 (line 3), column 'session': duplicate session id 's1' (first in row 1"),
    ("session,path\ns1,\n", "row 1 (line 2), column 'path': the path of session 's1' is missing"),
    ("session,path\ns1,b1/nope\n", "row 1 (line 2), column 'path': 'b1/nope' does not exist"),
    ("session,path\ns1,b1/day1/*.mp9\n", "matches no audio file"),
    ("session,path\ns1,b1/day2/notes.txt\n", "is not an audio file"),
    ("session,path\n../evil,b1/day1\n", "is not a valid session id"),
    ("session,path,onset_s\ns1,b1/day1,3\n", "column 'onset_s': this name is reserved"),
    ("session,folder\ns1,b1/day1\n", "the header has no 'path' column"),
    ("session,path\ns1,b1/day1,extra\n", "row 1 (line 2) has more fields"),
])
def test_csv_manifest_errors_name_row_and_column(recordings, body, message):
    path = _csv(recordings / "bad.csv", body)
    with pytest.raises(DataError) as err:
        load_sessions(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_toml_manifest_errors(recordings):
    path = recordings / "bad.toml"
    path.write_text('[[sessions]]\nsession = "a"\npath = "b1/day1"\n[[sessions]]\npath = "b2"\n')
    with pytest.raises(DataError, match=r"sessions\[1\], column 'session': the session id is missing"):
        load_sessions(path)
    path.write_text('[[sessions]]\nsession = "a"\npath = "b1/day1"\nextra = [1, 2]\n')
    with pytest.raises(DataError, match=r"sessions\[0\], column 'extra': metadata must be"):
        load_sessions(path)
    path.write_text('title = "x"\n')
    with pytest.raises(DataError, match="unknown top-level key"):
        load_sessions(path)
    with pytest.raises(DataError, match="must be a .csv or .toml"):
        load_sessions(_csv(recordings / "m.txt", "session,path\n"))


def test_reference_sessions_checked(recordings):
    m = load_sessions(_csv(recordings / "m.csv", "session,path\ns1,b1/day1\ns2,b2\n"))
    assert check_reference(m, None) == ["s1", "s2"]
    assert check_reference(m, ["s2", "s2"]) == ["s2"]
    with pytest.raises(ParameterError, match=r"\['s9'\] are not in"):
        check_reference(m, ["s9"])


def test_example_manifest_in_the_repository_loads(real_data, monkeypatch):
    from vocalatent._utils import REPO_ROOT

    zf, bf = real_data("zebra_finch_song"), real_data("bengalese_finch_song")
    monkeypatch.setenv("VOCALATENT_DATA", str(zf.parent))
    m = load_sessions(REPO_ROOT / "data_manifests" / "sessions" / "example_sessions.toml")
    assert m.ids == ["zf_bells", "zf_flashcam_samba", "zf_simple", "bf_bl26lb16"]
    assert m["zf_flashcam_samba"].sources() == ["flashcam.wav", "samba.wav"]
    assert m["bf_bl26lb16"].files == ((bf / "bl26lb16.wav").resolve(),)
    meta = m.metadata()
    assert list(meta["species"]) == ["zebra finch"] * 3 + ["Bengalese finch"]
    assert list(meta["date"]) == ["", "", "", "2012-04-19"]


def test_path_expands_environment_variables(recordings, monkeypatch):
    monkeypatch.setenv("REC_ROOT", str(recordings / "b1"))
    monkeypatch.delenv("UNSET_ROOT", raising=False)
    m = load_sessions(_csv(recordings / "m.csv", "session,path\n"
                           "s1,${REC_ROOT}/day1\ns2,${UNSET_ROOT:-b2}/sub\n"))
    assert m["s1"].sources() == ["a.wav", "b.wav"] and m["s2"].sources() == ["y.wav"]


# ------------------------------------------------------------------------------------- lock
def test_run_batch_refused_while_out_is_locked(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "a.wav").write_bytes(b"")
    man = _csv(tmp_path / "m.csv", "session,path\ns1,rec\n")
    with output_lock(tmp_path / "out"):
        with pytest.raises(OutputLockedError, match=f"being written by another vocalatent batch "
                           f"\\(pid {os.getpid()} on host {socket.gethostname()}"):
            run_batch(man, tmp_path / "out")
    assert not (tmp_path / "out" / "sessions").exists()


# ------------------------------------------------------------------------------- concatenation
def test_concat_spectrograms_matches_numpy_concatenate(rng):
    parts = [rng.random((n, 3, 4)).astype(np.float32) for n in (5, 0, 2, 7)]
    cat = ConcatSpectrograms(parts)
    ref = np.concatenate(parts)
    assert cat.shape == (14, 3, 4) and len(cat) == 14
    for idx in ([13, 0, 5, 5, 6, 1], np.array([[2, 9], [12, 4]]), slice(3, 11, 2),
                rng.random(14) > 0.5, np.array([], dtype=int), [-1, -14]):
        np.testing.assert_array_equal(cat[idx], ref[idx])
    np.testing.assert_array_equal(cat[6], ref[6])
    np.testing.assert_array_equal(np.asarray(cat), ref)
    with pytest.raises(IndexError):
        cat[[14]]
    with pytest.raises(DataError, match="different shapes"):
        ConcatSpectrograms([np.zeros((2, 3, 4)), np.zeros((2, 4, 3))])
