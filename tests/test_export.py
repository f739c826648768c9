"""`vocalatent export`: cluster labels to Audacity / Raven / generic-seq / CSV, one file per
recording, read back by the job through `[audio] annotations`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from vocalatent.audio.annotations import read_annotation
from vocalatent.audio.synthetic import write_synthetic_dataset
from vocalatent.cli import main
from vocalatent.export import GENERIC_SEQ_ALL, annotation_name, export_annotations, segment_labels

TINY = dict(model={"max_epochs": 2, "n_lattice": 89, "n_eval_lattice": 233, "n_eval_shifts": 2,
                   "batch_size": 64, "decoder_options": {"base_channels": 8, "hidden": 32}},
            spectrogram={"n_freq": 32, "n_time": 32},
            analysis={"resolution": 24, "figures": False})


def _config(path, **audio):
    from vocalatent.workflow import dump_toml

    cfg = dict(TINY)
    if audio:
        cfg = {**cfg, "audio": audio}
    path.write_text(dump_toml(cfg))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    write_synthetic_dataset(root / "rec" / "day1", n_files=2, n_syllables=10, sr=32000, random_state=1)
    out = root / "out"
    res = CliRunner().invoke(main, ["-q", "embed", str(root / "rec"), "-o", str(out), "--config",
                                    str(_config(root / "tiny.toml"))])
    assert res.exit_code == 0, res.output
    return root, out, xr.load_dataset(out / "embedding.nc", engine="h5netcdf")


def test_audacity_round_trip_brings_an_edited_label_into_the_dataset(run):
    root, out, ds = run
    res = CliRunner().invoke(main, ["export", str(out), "--format", "audacity"])
    assert res.exit_code == 0, res.output
    folder = out / "annotations" / "audacity"
    src = str(ds["source"].values[0])
    assert src == "day1/song_000.wav"
    label_file = folder / "day1" / "song_000.wav.txt"
    lines = label_file.read_text().splitlines()
    assert len(lines) == int((ds["source"].values == src).sum())
    on, off, lab = lines[2].split("\t")
    assert lab == f"c{int(ds['cluster'].values[2])}" if ds["cluster"].values[2] >= 0 else "none"
    # a user corrects one label in Audacity
    lines[2] = f"{on}\t{off}\ttrill"
    label_file.write_text("\n".join(lines) + "\n")
    out2 = root / "out2"
    cfg = _config(root / "readback.toml", annotations=str(folder))
    res = CliRunner().invoke(main, ["-q", "embed", str(root / "rec"), "-o", str(out2), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    ds2 = xr.load_dataset(out2 / "embedding.nc", engine="h5netcdf")
    assert ds2.sizes["item"] == ds.sizes["item"]
    np.testing.assert_allclose(ds2["onset_s"].values, ds["onset_s"].values, atol=1e-6)
    labels = ds2["label"].values.astype(str)
    assert labels[2] == "trill"
    expect = segment_labels(ds)
    assert (labels[np.arange(len(labels)) != 2] == np.delete(expect, 2)).all()
    assert set(ds2["segmented_by"].values.astype(str)) == {"song_000.wav.txt", "song_001.wav.txt"}


@pytest.mark.parametrize("fmt", ["raven", "csv", "generic-seq"])
def test_each_format_reads_back_to_the_same_segments(run, tmp_path, fmt):
    _, _, ds = run
    res = export_annotations(ds, tmp_path, format=fmt, label_from="cluster")
    expect = segment_labels(ds)
    for src in np.unique(ds["source"].values.astype(str)):
        rows = ds["source"].values.astype(str) == src
        path = tmp_path / Path(src).parent / annotation_name(src, fmt)
        back = read_annotation(path)
        np.testing.assert_allclose(back["onset_s"], ds["onset_s"].values[rows], atol=1e-6)
        np.testing.assert_allclose(back["offset_s"], ds["offset_s"].values[rows], atol=1e-6)
        assert list(back["label"]) == list(expect[rows])
    assert res.n_segments == ds.sizes["item"]
    if fmt == "generic-seq":
        import crowsetta

        gs = crowsetta.formats.by_name("generic-seq").from_file(tmp_path / GENERIC_SEQ_ALL)
        annots = gs.to_annot()
        assert sum(len(a.seq.onsets_s) for a in annots) == ds.sizes["item"]
        assert sorted(str(a.notated_path).split("/")[-1] for a in annots) == ["song_000.wav", "song_001.wav"]
    if fmt == "raven":
        head = (tmp_path / "day1" / "song_000.Table.1.selections.txt").read_text().splitlines()[1].split("\t")
        assert float(head[5]) == 400.0 and float(head[6]) == 10000.0  # the run's spectrogram band


def test_label_sources(run):
    _, _, ds = run
    d = ds.assign_coords(label=("item", np.where(np.arange(ds.sizes["item"]) % 2 == 0, "a", "")))
    cl = d["cluster"].values
    mixed = segment_labels(d, label_from="label-or-cluster")
    assert mixed[0] == "a" and mixed[1] == (f"c{cl[1]}" if cl[1] >= 0 else "none")
    assert list(segment_labels(d, label_from="label")[:2]) == ["a", ""]
    with pytest.raises(Exception, match="label_from"):
        segment_labels(d, label_from="nope")


def test_export_needs_recordings(run, tmp_path):
    from vocalatent._utils import DataError

    _, _, ds = run
    with pytest.raises(DataError, match="only runs on recordings"):
        export_annotations(ds.drop_vars(["source"]), tmp_path, format="csv")
    frame = pd.read_csv(export_annotations(ds, tmp_path, format="csv").files[0])
    assert list(frame.columns) == ["onset_s", "offset_s", "label", "map_cluster", "original_label"]
