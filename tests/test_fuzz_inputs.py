"""Randomly corrupted inputs of every supported format, fed through the CLI.

For each format a small valid file is written, then damaged in seeded random ways (truncated,
bytes flipped, a block zeroed or overwritten, garbage appended, text lines dropped or mangled)
and given to the command a user would run on it. Every run must end in one of two ways:

- exit status 0 with a readable result (the damage happened to leave a valid file), or
- a non-zero exit status with a one-line ``Error: ...`` message (no traceback);

and in both cases nothing half-written is left behind (no temporary files in the output).
Runs are in-process (click's CliRunner), so a crash of compiled code would take the test
process down with it: that counts as a failure too.

The default run tries a few variants per format; the ``slow`` run many more.
"""

from __future__ import annotations

import gzip
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from scipy import io as spio
from scipy import sparse

from vocalatent.audio.synthetic import synthetic_song
from vocalatent.cli import main
from vocalatent.data.simulate import simulate_cell_types


@pytest.fixture(autouse=True)
def short_hdf5_probe(monkeypatch):
    """A damaged HDF5 file that makes libhdf5 loop is refused by the probe
    (vocalatent.data.hdf5_probe) after this many seconds instead of the default 60."""
    monkeypatch.setenv("VOCALATENT_HDF5_PROBE_TIMEOUT", "10")


FAST_TOML = """
[model]
max_epochs = 1
n_lattice = 55
n_eval_lattice = 233
n_eval_shifts = 1
validation = 0.2
batch_size = 64
[analysis]
jacobian = false
geodesic = false
figures = false
"""


# --------------------------------------------------------------------------------------------
# corruption
# --------------------------------------------------------------------------------------------

def _corrupt_bytes(data: bytes, rng: np.random.Generator, text: bool) -> bytes:
    b = bytearray(data)
    n = len(b)
    kinds = ["truncate", "flip", "zero_block", "random_block", "append"]
    if text:
        kinds += ["drop_line", "mangle_line", "swap_delimiter"]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "truncate":
        return bytes(b[: int(rng.integers(0, max(1, n)))])
    if kind == "flip":
        for pos in rng.integers(0, n, size=int(rng.integers(1, 16))):
            b[pos] ^= 1 << int(rng.integers(8))
        return bytes(b)
    if kind in ("zero_block", "random_block"):
        start = int(rng.integers(0, n))
        size = int(rng.integers(1, max(2, n // 8)))
        fill = (bytes(size) if kind == "zero_block"
                else rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        b[start:start + size] = fill[: max(0, min(size, n - start))]
        return bytes(b)
    if kind == "append":
        return bytes(b) + rng.integers(0, 256, int(rng.integers(1, 512)), dtype=np.uint8).tobytes()
    lines = bytes(b).split(b"\n")
    k = int(rng.integers(len(lines)))
    if kind == "drop_line":
        del lines[k]
    elif kind == "mangle_line":
        lines[k] = rng.choice([b"", b"nan,inf,-1", b"\xff\xfe garbage", b"1,2", lines[k][::-1]])
    else:
        lines = [ln.replace(b",", b";").replace(b"\t", b",") for ln in lines]
    return b"\n".join(lines)


def _temp_leftovers(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return [str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.name.startswith(".") and (p.name.endswith(".tmp") or ".vltmp." in p.name)]


def _check_run(result, out: Path, names: list[str]) -> str:
    """'ok' or 'error'; raises AssertionError describing what went wrong."""
    text = result.output
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"unhandled {type(exc).__name__}: {exc}\n{text[-1500:]}")
    assert "Traceback" not in text, text[-1500:]
    assert not _temp_leftovers(out), f"temporary files left: {_temp_leftovers(out)}"
    if result.exit_code == 0:
        return "ok"
    errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, f"expected one 'Error:' line, got {len(errors)}:\n{text[-1500:]}"
    assert any(n in errors[0] for n in names) or (out / "errors.csv").is_file(), (
        f"error does not name the input ({names}): {errors[0]}")
    return "error"


# --------------------------------------------------------------------------------------------
# valid seeds, one per format: (write(folder) -> path to corrupt, command(path, out, cfg))
# --------------------------------------------------------------------------------------------

def _song(folder: Path, fmt: str, subtype: str) -> Path:
    y, sr, _ = synthetic_song(n_syllables=6, random_state=0)
    path = folder / f"song.{fmt}"
    sf.write(path, y, sr, subtype=subtype, format=fmt.upper())
    return path


def _annotated(folder: Path, fmt: str = "audacity") -> Path:
    """A recording with its annotation file beside it, in one of the annotation formats."""
    from vocalatent.audio.annotations import write_raven, write_segments

    y, sr, truth = synthetic_song(n_syllables=6, random_state=1)
    sf.write(folder / "song.wav", y, sr, subtype="PCM_16")
    rows = list(zip(truth["onset_s"], truth["offset_s"], truth["label"]))
    if fmt == "audacity":
        path = folder / "song.txt"
        path.write_text("".join(f"{a:.6f}\t{b:.6f}\t{lab}\n" for a, b, lab in rows))
    elif fmt == "csv":
        path = write_segments(truth[["onset_s", "offset_s", "label"]], folder / "song.csv")
    elif fmt == "raven":
        path = write_raven(truth[["onset_s", "offset_s", "label"]], folder / "song.Table.1.selections.txt")
    elif fmt == "textgrid":
        bounds = [0.0]
        cells = []
        for a, b, lab in rows:
            cells += [(bounds[-1], a, ""), (a, b, str(lab))]
            bounds.append(b)
        cells.append((bounds[-1], len(y) / sr, ""))
        body = "".join(f"        intervals [{i}]:\n            xmin = {a}\n            xmax = {b}\n"
                       f'            text = "{t}"\n' for i, (a, b, t) in enumerate(cells, 1))
        path = folder / "song.TextGrid"
        path.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n'
                        f"xmin = 0\nxmax = {len(y) / sr}\ntiers? <exists>\nsize = 1\nitem []:\n"
                        f'    item [1]:\n        class = "IntervalTier"\n        name = "syllables"\n'
                        f"        xmin = 0\n        xmax = {len(y) / sr}\n"
                        f"        intervals: size = {len(cells)}\n" + body)
    else:                           # evsonganaly .not.mat: times in ms, labels one string
        path = folder / "song.wav.not.mat"
        spio.savemat(path, {"onsets": np.array([a for a, _, _ in rows]) * 1000,
                            "offsets": np.array([b for _, b, _ in rows]) * 1000,
                            "labels": "".join(str(lab)[0] for _, _, lab in rows),
                            "Fs": float(sr), "fname": "song.wav", "min_int": 5.0, "min_dur": 20.0,
                            "threshold": 1000.0, "sm_win": 2.0})
    return path


def _cells():
    sim = simulate_cell_types(60, 40, 3, n_markers=5, library_size_median=400, random_state=0)
    return sparse.csr_matrix(sim.matrix.X, dtype=np.float32)


def _h5ad(folder: Path) -> Path:
    anndata = pytest.importorskip("anndata")
    X = _cells()
    ad = anndata.AnnData(X=X, obs=pd.DataFrame(index=[f"c{k}" for k in range(X.shape[0])]),
                         var=pd.DataFrame(index=[f"g{k}" for k in range(X.shape[1])]))
    path = folder / "cells.h5ad"
    ad.write_h5ad(path)
    return path


def _tenx(folder: Path) -> Path:
    X = _cells()
    path = folder / "filtered_feature_bc_matrix.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=X.data.astype(np.int32))
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.asarray([X.shape[1], X.shape[0]], dtype=np.int32))
        g.create_dataset("barcodes", data=np.asarray([f"AAAC{k:06d}-1" for k in range(X.shape[0])], "S"))
        ft = g.create_group("features")
        ft.create_dataset("id", data=np.asarray([f"ENSG{k:05d}" for k in range(X.shape[1])], "S"))
        ft.create_dataset("name", data=np.asarray([f"g{k}" for k in range(X.shape[1])], "S"))
        ft.create_dataset("feature_type", data=np.asarray(["Gene Expression"] * X.shape[1], "S"))
    return path


def _mtx(folder: Path) -> Path:
    X = _cells()
    d = folder / "mtx"
    d.mkdir()
    with gzip.open(d / "matrix.mtx.gz", "wb") as fh:
        spio.mmwrite(fh, sparse.coo_matrix(X.T), field="integer")
    (d / "barcodes.tsv").write_text("".join(f"AAAC{k:06d}-1\n" for k in range(X.shape[0])))
    (d / "features.tsv").write_text("".join(f"ENSG{k:05d}\tg{k}\tGene Expression\n"
                                            for k in range(X.shape[1])))
    return d / "matrix.mtx.gz"


def _csv(folder: Path) -> Path:
    X = _cells().toarray().astype(int)
    df = pd.DataFrame(X, index=[f"AAAC{k:06d}-1" for k in range(X.shape[0])],
                      columns=[f"g{k}" for k in range(X.shape[1])])
    path = folder / "counts.csv"
    df.to_csv(path)
    return path


def _spikes(rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    return {f"u{k}": np.sort(rng.uniform(0, 60, int(rng.integers(200, 400)))) for k in range(8)}


def _npz(folder: Path) -> Path:
    path = folder / "spikes.npz"
    np.savez(path, **_spikes())
    return path


def _nwb(folder: Path) -> Path:
    trains = list(_spikes().values())
    path = folder / "rec.nwb"
    with h5py.File(path, "w") as f:
        g = f.create_group("units")
        g.attrs["neurodata_type"] = "Units"
        g.create_dataset("spike_times", data=np.concatenate(trains))
        g.create_dataset("spike_times_index", data=np.cumsum([len(t) for t in trains]))
        g.create_dataset("id", data=np.arange(len(trains)))
    return path


def _checkpoint(folder: Path) -> Path:
    from vocalatent import QLVM

    rng = np.random.default_rng(0)
    X = rng.random((40, 12)).astype(np.float32)
    np.save(folder / "data.npy", X)
    model = QLVM(2, n_lattice=55, n_eval_lattice=89, n_eval_shifts=1, max_epochs=1, batch_size=40,
                 random_state=0, verbose=False).fit(X)
    path = folder / "model.pt"
    model.save(path)
    return path


def _cmd_evaluate(path: Path, out: Path, cfg: Path) -> list[str]:
    return ["evaluate", str(path), str(path.parent / "data.npy"), "--n-lattice", "89"]


def _toml(folder: Path) -> Path:
    path = folder / "user.toml"
    path.write_text(FAST_TOML)
    return path


def _cmd_segment(path: Path, out: Path, cfg: Path) -> list[str]:
    return ["segment", str(path.parent), "-o", str(out)]


def _cmd_embed(path: Path, out: Path, cfg: Path) -> list[str]:
    target = path.parent if path.parent.name == "mtx" else path
    return ["embed", str(target), "-o", str(out), "--config", str(cfg), "--no-figures"]


def _cmd_embed_audio_with_config(path: Path, out: Path, cfg: Path) -> list[str]:
    # the corrupted file is the user's TOML; the recordings are fine
    return ["segment", str(path.parent / "rec"), "-o", str(out), "--config", str(path)]


FORMATS = {
    "wav": (lambda d: _song(d, "wav", "PCM_16"), _cmd_segment, True),
    "wav_float": (lambda d: _song(d, "wav", "FLOAT"), _cmd_segment, False),
    "flac": (lambda d: _song(d, "flac", "PCM_24"), _cmd_segment, False),
    "audacity_labels": (_annotated, _cmd_segment, True),
    "csv_annotation": (lambda d: _annotated(d, "csv"), _cmd_segment, True),
    "raven_table": (lambda d: _annotated(d, "raven"), _cmd_segment, True),
    "textgrid": (lambda d: _annotated(d, "textgrid"), _cmd_segment, True),
    "notmat": (lambda d: _annotated(d, "notmat"), _cmd_segment, False),
    "h5ad": (_h5ad, _cmd_embed, False),
    "10x_h5": (_tenx, _cmd_embed, False),
    "mtx": (_mtx, _cmd_embed, False),
    "csv": (_csv, _cmd_embed, True),
    "npz": (_npz, _cmd_embed, False),
    "nwb": (_nwb, _cmd_embed, False),
    "toml": (_toml, _cmd_embed_audio_with_config, True),
    "checkpoint": (_checkpoint, _cmd_evaluate, False),
}


def _fuzz(fmt: str, n_variants: int, tmp_path: Path) -> dict:
    write, command, text = FORMATS[fmt]
    base = tmp_path / "seed"
    base.mkdir()
    if fmt == "toml":
        rec = base / "rec"
        rec.mkdir()
        _song(rec, "wav", "PCM_16")
    valid = write(base)
    cfg = _toml(tmp_path)
    original = valid.read_bytes()
    runner = CliRunner()
    outcomes = {"ok": 0, "error": 0}
    # a fixed seed per format (zlib.crc32, not hash(): str hashes change per process), so a
    # failure is reproducible
    rng = np.random.default_rng(zlib.crc32(fmt.encode()))
    for k in range(n_variants):
        work = tmp_path / f"v{k}"
        shutil.copytree(base, work)
        target = work / valid.relative_to(base)
        target.write_bytes(_corrupt_bytes(original, rng, text))
        out = tmp_path / f"out{k}"
        args = command(target, out, cfg)
        result = runner.invoke(main, args, catch_exceptions=True)
        names = [target.name, target.parent.name]
        try:
            outcomes[_check_run(result, out, names)] += 1
        except AssertionError as exc:
            raise AssertionError(f"{fmt} variant {k} ({' '.join(args)}): {exc}") from None
    return outcomes


ANNOTATION_SEEDS = ("audacity_labels", "csv_annotation", "raven_table", "textgrid", "notmat")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_corrupted_inputs_fail_cleanly(fmt, tmp_path):
    outcomes = _fuzz(fmt, 3, tmp_path)
    assert sum(outcomes.values()) == 3


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_corrupted_inputs_fail_cleanly_many(fmt, tmp_path):
    outcomes = _fuzz(fmt, 25, tmp_path)
    assert sum(outcomes.values()) == 25


@pytest.mark.parametrize("fmt", ["wav", "h5ad", "csv", "npz", "checkpoint", "csv_annotation",
                                 "raven_table", "textgrid", "notmat"])
def test_valid_seed_runs(fmt, tmp_path):
    """The seeds themselves are valid: the uncorrupted file gives exit 0 (so the fuzz test
    exercises damage, not a seed that never worked)."""
    write, command, _ = FORMATS[fmt]
    base = tmp_path / "seed"
    base.mkdir()
    path = write(base)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, command(path, out, _toml(tmp_path)), catch_exceptions=True)
    assert result.exit_code == 0, result.output[-2000:]
    assert _check_run(result, out, [path.name]) == "ok"
    if fmt in ANNOTATION_SEEDS:     # the annotation was read, not replaced by segmentation
        segs = pd.read_csv(out / "segments.csv")
        assert len(segs) == 6 and (segs["segmented_by"] == path.name).all(), segs.head()
