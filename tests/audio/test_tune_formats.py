"""Tuning from annotations, the segment command's --tune/--evaluate/--figures, and the formats
users bring (evsonganaly .cbin/.rec, Koumura XML, crowsetta generic-seq CSV)."""

import itertools
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from vocalatent import DataError
from vocalatent.audio.annotations import annotations_for, read_annotation, read_multi_annotation
from vocalatent.audio.evaluate import (annotated_files, boundary_scores, evaluate_segmentation,
                                       pooled_scores)
from vocalatent.audio.io import audio_info, find_audio, load_audio
from vocalatent.audio.segment import (SegmentParams, amplitude_trace, normalize_levels,
                                      segment_file, segments_from_trace)
from vocalatent.audio.synthetic import synthetic_bout
from vocalatent.audio.tune import tune_segmentation, write_pipeline_toml
from vocalatent.config import load_pipeline

TOL_S = 0.010


def _write_bouts(root, n=3, **kw):
    root.mkdir(parents=True, exist_ok=True)
    truths = {}
    for i in range(n):
        y, sr, truth = synthetic_bout(n_syllables=25, random_state=40 + i, **kw)
        sf.write(root / f"bout{i}.wav", y, sr, subtype="FLOAT")
        truth[["onset_s", "offset_s", "label"]].to_csv(root / f"bout{i}.wav.csv", index=False)
        truths[f"bout{i}.wav"] = truth
    return truths


def _score(items, traces, params):
    rows = []
    for it, (tr, sr, nperseg, hop) in zip(items, traces):
        t2 = normalize_levels(tr.level_db, params, hop=hop, nperseg=nperseg, sr=sr)
        rows.append(boundary_scores(it.truth, segments_from_trace(t2, params), tol_s=TOL_S))
    tot = pooled_scores(rows)
    return (tot["onset_f1"] + tot["offset_f1"]) / 2


def test_tune_reaches_the_best_grid_point(tmp_path):
    import vocalatent.audio

    assert vocalatent.audio.tune_segmentation is tune_segmentation
    _write_bouts(tmp_path / "songs", in_bout_noise_db=20.0, reverb_rt60_s=0.12)
    items = annotated_files(tmp_path / "songs")
    assert len(items) == 3
    grid = {"split_db": [3.0, 6.0, 10.0, 16.0], "boundary_db": [2.0, 5.0, 10.0],
            "edge_db": [None, 20.0, 12.0], "min_dur_s": [0.005, 0.02]}
    start = SegmentParams(f_min=500.0, split_db=16.0, boundary_db=2.0, peak_db=10.0,
                          min_dur_s=0.005)
    traces = []
    for it in items:
        sr = audio_info(it.path).sample_rate
        y, _ = load_audio(it.path)
        traces.append((amplitude_trace(y, sr, start), sr) + start.frame_geometry(sr))
    best = -1.0
    for values in itertools.product(*grid.values()):
        p = SegmentParams(**{**start.to_dict(), "calib_percentiles": start.calib_percentiles,
                             **dict(zip(grid, values))})
        best = max(best, _score(items, traces, p))
    res = tune_segmentation(items, start, grid=grid, tol_s=TOL_S, max_time_s=120)
    assert res.converged
    assert res.score_after >= best - 0.02, (res.score_after, best)
    assert res.score_after > res.score_before + 0.1
    assert res.score_after == pytest.approx(_score(items, traces, res.params), abs=1e-12)
    # the tuned setting round-trips through a pipeline TOML usable with --pipeline
    toml = write_pipeline_toml(tmp_path / "my_birds.toml", res.params, extends="bengalese_finch",
                               source="test")
    cfg = load_pipeline(str(toml))
    assert SegmentParams.from_dict(cfg["segment"]) == res.params
    assert cfg["spectrogram"] == load_pipeline("bengalese_finch")["spectrogram"]


def test_tune_needs_annotations(tmp_path):
    y, sr, _ = synthetic_bout(n_syllables=5, random_state=0)
    sf.write(tmp_path / "a.wav", y, sr)
    with pytest.raises(DataError, match="none of the 1 recording"):
        tune_segmentation(tmp_path)


def test_cli_tune_evaluate_figures(tmp_path):
    truths = _write_bouts(tmp_path / "songs", n=2, in_bout_noise_db=25.0)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vocalatent", "segment", str(tmp_path / "songs"), "-o", str(out),
           "-p", "bengalese_finch", "--tune", "--evaluate", "--figures", "--tune-time", "30"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "onset F1" in res.stdout and "tuned_pipeline.toml" in res.stdout
    ev = pd.read_csv(out / "evaluation.csv")
    assert list(ev["source"]) == ["bout0.wav", "bout1.wav", "ALL"]
    assert ev["onset_f1"].iloc[-1] >= 0.9
    segs = pd.read_csv(out / "segments.csv")
    for name, truth in truths.items():  # the table's scores are those of segments.csv
        s = boundary_scores(truth, segs[segs["source"] == name], tol_s=TOL_S)
        assert s["onset_f1"] == pytest.approx(ev.set_index("source").loc[name, "onset_f1"])
    report = pd.read_csv(out / "report.csv")
    assert set(report["source"]) == set(truths)
    for name in truths:
        png = out / "figures" / f"{name}.png"
        assert png.stat().st_size > 20000 and png.read_bytes()[:4] == b"\x89PNG"
    # the tuned TOML works with --pipeline and gives the same evaluation
    out2 = tmp_path / "out2"
    res = subprocess.run([sys.executable, "-m", "vocalatent", "segment", str(tmp_path / "songs"),
                          "-o", str(out2), "--pipeline", str(out / "tuned_pipeline.toml"),
                          "--evaluate"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out2 / "evaluation.csv"), ev)


# ------------------------------------------------------------------------------- formats
def _write_cbin(path, data_int16, sr, n_channels=1):
    np.asarray(data_int16, dtype=">i2").tofile(path)
    n = data_int16.size // n_channels
    path.with_suffix(".rec").write_text(
        "File created: Tue Dec  1 09:00:00 2026\n\n   begin rec =      0 ms\n"
        "   trig time =   2000 ms\n   rec end =  12305 ms\n\n"
        f"ADFREQ =  {sr}\nSamples =  {n}\nChans =  {n_channels}\nT Before =  2.000\n"
        "T After =  2.000\n")


def test_cbin_reads_like_the_same_samples_in_a_wav(tmp_path):
    y, sr, truth = synthetic_bout(n_syllables=15, sr=32000, random_state=2, loudest_db=-6.0)
    q = np.round(np.clip(y, -1, 1 - 1 / 32768) * 32768).astype(np.int16)
    noise = (np.random.default_rng(0).standard_normal(q.size) * 30).astype(np.int16)
    _write_cbin(tmp_path / "bird.cbin", np.stack([noise, q], axis=1).ravel(), sr, n_channels=2)
    sf.write(tmp_path / "bird.wav", q, sr, subtype="PCM_16")
    info = audio_info(tmp_path / "bird.cbin")
    assert (info.sample_rate, info.n_channels, info.n_samples, info.format) == (32000, 2, q.size, "CBIN")
    y_cbin, _ = load_audio(tmp_path / "bird.cbin", channel=1)
    y_wav, _ = load_audio(tmp_path / "bird.wav")
    np.testing.assert_array_equal(y_cbin, y_wav)
    params = SegmentParams.from_dict(load_pipeline("bengalese_finch")["segment"])
    ref = segment_file(tmp_path / "bird.wav", params)
    for chunk_s in (1000.0, 0.0317):  # bounded-memory reading gives the same segments
        pd.testing.assert_frame_equal(segment_file(tmp_path / "bird.cbin", params, channel=1,
                                                   chunk_s=chunk_s), ref)
    assert boundary_scores(truth, ref, tol_s=TOL_S)["onset_f1"] >= 0.9
    assert tmp_path / "bird.cbin" in find_audio(tmp_path)
    (tmp_path / "bird.rec").unlink()
    with pytest.raises(DataError, match=r"bird\.cbin: no bird\.rec beside it"):
        audio_info(tmp_path / "bird.cbin")


def test_generic_seq_csv_one_file_for_many_recordings(tmp_path):
    truths = _write_bouts(tmp_path / "songs", n=2, in_bout_noise_db=15.0)
    for name in truths:
        (tmp_path / "songs" / f"{name}.csv").unlink()
    rows = [t.assign(notated_path=f"/lab/raw/{name}", annot_path="x.csv", sequence=i,
                     annotation=0) for i, (name, t) in enumerate(truths.items())]
    gs = pd.concat(rows)[["label", "onset_s", "offset_s", "notated_path", "annot_path",
                          "sequence", "annotation"]]
    gs.to_csv(tmp_path / "annotations.csv", index=False)
    table = read_multi_annotation(tmp_path / "annotations.csv")
    assert len(table) == sum(len(t) for t in truths.values())
    for name, truth in truths.items():
        got, src = annotations_for(tmp_path / "songs" / name, annotations=tmp_path / "annotations.csv",
                                   root=tmp_path / "songs")
        assert src.name == "annotations.csv"
        np.testing.assert_allclose(got["onset_s"], truth["onset_s"])
        assert list(got["label"]) == list(truth["label"])
    ev = evaluate_segmentation(tmp_path / "songs", annotations=tmp_path / "annotations.csv",
                               params=SegmentParams(f_min=500.0))
    assert list(ev["n_true"]) == [25, 25, 50]


def test_koumura_xml_layout_is_found_beside_the_wave_folder(tmp_path):
    xml = """<?xml version="1.0" encoding="UTF-8"?>
<Sequences><NumSequence>2</NumSequence>
<Sequence><WaveFileName>0.wav</WaveFileName><Position>16000</Position><Length>20000</Length>
<NumNote>2</NumNote><Note><Position>100</Position><Length>3200</Length><Label>a</Label></Note>
<Note><Position>6500</Position><Length>1600</Length><Label>b</Label></Note></Sequence>
<Sequence><WaveFileName>1.wav</WaveFileName><Position>0</Position><Length>5000</Length>
<NumNote>1</NumNote><Note><Position>320</Position><Length>640</Length><Label>c</Label></Note></Sequence>
</Sequences>"""
    bird = tmp_path / "Bird0"
    (bird / "Wave").mkdir(parents=True)
    (bird / "Annotation.xml").write_text(xml)
    for name in ("0.wav", "1.wav", "2.wav"):
        sf.write(bird / "Wave" / name, np.zeros(40000, np.float32), 32000)
    got, src = annotations_for(bird / "Wave" / "0.wav")
    assert src.name == "Annotation.xml"
    np.testing.assert_allclose(got["onset_s"], [16100 / 32000, 22500 / 32000])
    np.testing.assert_allclose(got["offset_s"], [19300 / 32000, 24100 / 32000])
    assert list(got["label"]) == ["a", "b"]
    assert annotations_for(bird / "Wave" / "2.wav") is None
    assert [it.source for it in annotated_files(bird)] == ["Wave/0.wav", "Wave/1.wav"]
    (bird / "Annotation.xml").write_text("<Sequences><Sequence><Position>x</Position>")
    from vocalatent.audio import annotations as ann_mod

    ann_mod._MULTI_CACHE.clear()
    with pytest.raises(DataError, match="Annotation.xml: not a valid BirdsongRecognition"):
        read_multi_annotation(bird / "Annotation.xml")


def test_figure_of_a_chosen_window_with_annotations(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from vocalatent.audio.figures import plot_segmentation

    truths = _write_bouts(tmp_path, n=1, in_bout_noise_db=20.0)
    truth = truths["bout0.wav"]
    params = SegmentParams.from_dict(load_pipeline("bengalese_finch")["segment"])
    fig = plot_segmentation(tmp_path / "bout0.wav", params, annotations=tmp_path / "bout0.wav.csv",
                            window=(2.0, 4.0))
    ax_spec, ax_trace = fig.axes[:2]
    assert ax_trace.get_xlim() == pytest.approx((2.0, 4.0))
    n_in = int(((truth["offset_s"] > 2.0) & (truth["onset_s"] < 4.0)).sum())
    assert f"annotated ({n_in})" in ax_spec.get_title(loc="left")
    labels = [t.get_text() for t in ax_trace.get_legend().get_texts()]
    assert "local noise floor" in labels and any(lab.startswith("peak") for lab in labels)
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(Exception, match="window"):
        plot_segmentation(tmp_path / "bout0.wav", params, window=(4.0, 2.0))
