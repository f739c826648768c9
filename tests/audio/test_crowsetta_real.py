"""The annotation readers on the real files crowsetta ships (data manifest crowsetta_examples)."""

import shutil

import numpy as np
import pytest
import soundfile as sf

from vocalatent.audio.annotations import annotations_for, read_annotation, read_multi_annotation


def _write_cbin(path, data_int16, sr):
    np.asarray(data_int16, dtype=">i2").tofile(path)
    path.with_suffix(".rec").write_text(
        "File created: Tue Dec  1 09:00:00 2026\n\n   begin rec =      0 ms\n"
        "   trig time =   2000 ms\n   rec end =  12305 ms\n\n"
        f"ADFREQ =  {sr}\nSamples =  {data_int16.size}\nChans =  1\n")

@pytest.mark.network
def test_readers_on_the_real_crowsetta_examples(real_data, tmp_path):
    d = real_data("crowsetta_examples")
    koumura = read_multi_annotation(d / "Annotation.xml")
    assert len(koumura) == 7652 and (koumura["offset_s"] > koumura["onset_s"]).all()
    assert koumura["file"].iloc[0] == "0.wav"
    assert koumura["onset_sample"].iloc[0] == 32000 + 2240
    gs = read_multi_annotation(d / "bird1.csv")
    assert len(gs) == 151 and gs["file"].nunique() == 10
    nm = read_annotation(d / "gy6or6_baseline_230312_0808.138.cbin.not.mat")
    assert len(nm) == 78 and (nm["offset_s"] > nm["onset_s"]).all()
    # a .not.mat beside a .cbin recording is found for it
    rec = tmp_path / "gy6or6_baseline_230312_0808.138.cbin"
    _write_cbin(rec, np.zeros(32000 * 13, np.int16), 32000)
    shutil.copy(d / "gy6or6_baseline_230312_0808.138.cbin.not.mat", tmp_path)
    got, src = annotations_for(rec)
    assert src.name.endswith(".cbin.not.mat") and len(got) == 78
    # the Koumura file in its dataset layout: rows of 0.wav at the wave's own rate
    (tmp_path / "Bird0" / "Wave").mkdir(parents=True)
    shutil.copy(d / "Annotation.xml", tmp_path / "Bird0")
    sf.write(tmp_path / "Bird0" / "Wave" / "0.wav", np.zeros(32000 * 60, np.int16), 32000,
             subtype="PCM_16")
    rows, _ = annotations_for(tmp_path / "Bird0" / "Wave" / "0.wav")
    assert len(rows) == int((koumura["file"] == "0.wav").sum())
    # generic-seq: one CSV for the ten recordings
    names = gs["file"].unique()
    songs = tmp_path / "gs"
    songs.mkdir()
    for name in names:
        sf.write(songs / name, np.zeros(16000, np.float32), 32000)
    counts = [len(annotations_for(songs / n, annotations=d / "bird1.csv", root=songs)[0])
              for n in names]
    assert sum(counts) == 151
