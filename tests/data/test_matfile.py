"""MAT-files are checked in Python before scipy's compiled reader sees them (issue 14).

``crashes_scipy_loadmat.not.mat`` is an evsonganaly annotation with four bytes of its last
element zeroed (the fuzz test's corruption, format ``notmat``, variant 34): scipy 1.17's
``loadmat`` ends the process with a segmentation fault on it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from scipy import sparse

from vocalatent._utils import DataError
from vocalatent.audio.annotations import read_annotation
from vocalatent.data.matfile import check_mat_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CRASHER = FIXTURES / "damaged" / "crashes_scipy_loadmat.not.mat"


def test_fixture_crashes_scipy_or_is_skipped():
    """Documents why the check exists; a scipy that no longer crashes skips this test."""
    code = "import sys, scipy.io as s\ns.loadmat(sys.argv[1])"
    r = subprocess.run([sys.executable, "-c", code, str(CRASHER)], capture_output=True, timeout=120)
    if r.returncode >= 0:
        pytest.skip(f"this scipy reads the damaged file without crashing (exit {r.returncode})")
    assert r.returncode < 0


def test_damaged_notmat_is_one_data_error(tmp_path):
    with pytest.raises(DataError, match=r"crashes_scipy_loadmat.not.mat: not a well-formed MATLAB "
                                        r"file \(at byte 840: unknown data type 0\)"):
        check_mat_file(CRASHER)
    with pytest.raises(DataError, match="not a well-formed MATLAB file"):
        read_annotation(CRASHER)


def test_damaged_notmat_beside_a_recording_fails_that_recording_only(tmp_path):
    from vocalatent.audio.pipeline import segment_paths
    from vocalatent.audio.synthetic import write_synthetic_dataset

    rec = tmp_path / "rec"
    write_synthetic_dataset(rec, n_files=2, n_syllables=6, random_state=0)
    (rec / "ground_truth.csv").unlink()
    shutil.copy(CRASHER, rec / "song_000.wav.not.mat")
    seg, err = segment_paths(rec, n_jobs=1)
    assert err["source"].tolist() == ["song_000.wav"]
    assert "song_000.wav.not.mat" in err["error"].iloc[0]
    assert "not a well-formed MATLAB file" in err["error"].iloc[0]
    assert sorted(seg["source"].unique()) == ["song_001.wav"]


def _valid_files(folder: Path) -> list[Path]:
    cases = {
        "numeric": {"a": np.arange(12.0).reshape(3, 4), "c": np.array([1 + 2j, 3j]),
                    "i": np.int16([1, 2, 3]), "u8": np.uint8([[1], [2]]), "s": "hello",
                    "t": "héllo wörld"},
        "cell": {"c": np.array([np.arange(3), "x", np.eye(2)], dtype=object)},
        "struct": {"st": {"f1": np.arange(3), "f2": "txt", "nested": {"z": np.ones((2, 2))}}},
        "sparse": {"sp": sparse.random(10, 7, density=0.3, format="csc", random_state=0)},
        "empty": {"e": np.zeros((0, 3)), "es": "", "ec": np.empty((0,), dtype=object)},
        "notmat": {"onsets": np.array([100.0, 300.0]), "offsets": np.array([200.0, 450.0]),
                   "labels": "ab", "Fs": 32000.0, "fname": "song.wav"},
    }
    paths = []
    for name, content in cases.items():
        for compress in (False, True):
            p = folder / f"{name}_{int(compress)}.mat"
            sio.savemat(p, content, do_compression=compress)
            paths.append(p)
    p = folder / "level4.mat"
    sio.savemat(p, {"a": np.arange(6.0).reshape(2, 3), "s": "abc"}, format="4")
    paths.append(p)
    return paths


def test_every_kind_of_valid_file_passes(tmp_path):
    crowsetta_example = Path(__import__("crowsetta").__file__).parent / "examples"
    files = _valid_files(tmp_path) + sorted(crowsetta_example.glob("*.not.mat"))
    assert len(files) >= 14
    for p in files:
        check_mat_file(p)
        sio.loadmat(p)                   # and they are what scipy reads


def _element_offsets(data: bytes) -> list[int]:
    pos, out = 128, []
    while pos + 8 <= len(data):
        out.append(pos)
        n = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        pos += 8 + n + (-n) % 8
    return out


@pytest.mark.parametrize("damage,message", [
    ("version", "unknown MAT-file version"),
    ("past_end", "runs past its end"),
    ("negative_dim", "negative dimension"),
    ("count", r"real part holds 12 values for dimensions \(1, 11\)"),
    ("sparse_row", "sparse row indices outside the matrix"),
    ("class", "unknown array class 99"),
])
def test_each_kind_of_damage_is_named(tmp_path, damage, message):
    p = tmp_path / "x.mat"
    if damage == "sparse_row":
        m = sparse.csc_matrix(np.array([[1.0, 0], [0, 2.0]]))
        sio.savemat(p, {"sp": m})
    else:
        sio.savemat(p, {"a": np.arange(12.0).reshape(3, 4)})
    b = bytearray(p.read_bytes())
    first = _element_offsets(bytes(b))[0]
    flags, dims = first + 8, first + 8 + 16           # array flags tag, dimensions tag
    if damage == "version":
        b[124:126] = struct.pack("<H", 0x0200)
    elif damage == "past_end":
        b[first + 4:first + 8] = struct.pack("<I", len(b))
    elif damage == "negative_dim":
        b[dims + 8:dims + 12] = struct.pack("<i", -3)
    elif damage == "count":
        b[dims + 12:dims + 16] = struct.pack("<i", 11)      # 1 x 11 instead of 3 x 4
        b[dims + 8:dims + 12] = struct.pack("<i", 1)
    elif damage == "class":
        b[flags + 8] = 99
    else:                                                # the first row index of the sparse matrix
        name_at = dims + 16
        assert struct.unpack("<I", b[name_at:name_at + 4])[0] >> 16 == 2   # "sp": a small element
        ir_at = name_at + 8
        assert struct.unpack("<I", b[ir_at:ir_at + 4])[0] == 5              # int32 row indices
        b[ir_at + 8:ir_at + 12] = struct.pack("<i", 7)
    p.write_bytes(bytes(b))
    with pytest.raises(DataError, match=message):
        check_mat_file(p)


def test_random_damage_gives_a_data_error_or_a_file_scipy_survives(tmp_path):
    """400 randomly damaged files: the check raises nothing but DataError, and every file it
    lets through is read by scipy in a child process without a crash."""
    import zlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_fuzz_inputs import _corrupt_bytes

    (tmp_path / "seeds").mkdir()
    seeds = _valid_files(tmp_path / "seeds")
    rng = np.random.default_rng(zlib.crc32(b"matfile"))
    passed, refused = [], 0
    for i in range(400):
        src = seeds[i % len(seeds)]
        q = tmp_path / f"v{i}.mat"
        q.write_bytes(_corrupt_bytes(src.read_bytes(), rng, False))
        try:
            check_mat_file(q)
            passed.append(q)
        except DataError:
            refused += 1
    assert refused > 100 and passed
    code = ("import sys, scipy.io as s\nfor p in sys.argv[1:]:\n    try:\n        s.loadmat(p)\n"
            "    except Exception:\n        pass\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, passed)], capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
