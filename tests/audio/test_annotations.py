"""Annotation formats: round trips and reading files made by the tools of the field."""

import numpy as np
import pandas as pd
import pytest

from vocalatent import DataError
from vocalatent.audio.annotations import (annotation_candidates, find_annotation, read_annotation,
                                          sniff_format, write_segments)

SEG = pd.DataFrame({"onset_s": [0.1, 0.523456, 1.25], "offset_s": [0.2, 0.75, 1.5],
                    "label": ["a", "", "b c"]})


@pytest.mark.parametrize("fmt,name", [("csv", "s.wav.csv"), ("audacity", "s.txt"),
                                      ("raven", "s.Table.1.selections.txt")])
def test_round_trip(tmp_path, fmt, name):
    path = write_segments(SEG, tmp_path / name, format=fmt)
    assert sniff_format(path) == fmt
    back = read_annotation(path)
    np.testing.assert_allclose(back["onset_s"], SEG["onset_s"], atol=1e-6)
    np.testing.assert_allclose(back["offset_s"], SEG["offset_s"], atol=1e-6)
    assert back["label"].tolist() == SEG["label"].tolist()


def test_csv_keeps_extra_columns(tmp_path):
    df = SEG.assign(animal=["m1", "m1", "m2"])
    back = read_annotation(write_segments(df, tmp_path / "x.csv"))
    assert back["animal"].tolist() == ["m1", "m1", "m2"]


def test_ava_two_column(tmp_path):
    p = tmp_path / "song.txt"
    p.write_text("# Onsets/offsets for song.wav\n0.100000\t0.200000\n0.300000\t0.450000\n")
    assert sniff_format(p) == "ava"
    back = read_annotation(p)
    assert back["onset_s"].tolist() == [0.1, 0.3] and back["label"].tolist() == ["", ""]


def test_notmat_through_crowsetta(tmp_path):
    import crowsetta

    nm = crowsetta.formats.by_name("notmat")(onsets=np.array([0.1, 0.3]),
                                             offsets=np.array([0.2, 0.4]),
                                             labels=np.array(["i", "a"]),
                                             annot_path=tmp_path / "x.wav.not.mat",
                                             audio_path=tmp_path / "x.wav")
    nm.to_file(samp_freq=32000, threshold=5000, min_syl_dur=0.02, min_silent_dur=0.002,
               fname=tmp_path / "x.wav")
    back = read_annotation(tmp_path / "x.wav.not.mat")
    np.testing.assert_allclose(back["onset_s"], [0.1, 0.3])
    assert back["label"].tolist() == ["i", "a"]


def test_textgrid_first_interval_tier(tmp_path):
    p = tmp_path / "song.TextGrid"
    p.write_text(
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1.0\n'
        'tiers? <exists>\nsize = 1\nitem []:\n    item [1]:\n        class = "IntervalTier"\n'
        '        name = "syllables"\n        xmin = 0\n        xmax = 1.0\n'
        '        intervals: size = 3\n'
        '        intervals [1]:\n            xmin = 0\n            xmax = 0.25\n            text = ""\n'
        '        intervals [2]:\n            xmin = 0.25\n            xmax = 0.5\n            text = "A"\n'
        '        intervals [3]:\n            xmin = 0.5\n            xmax = 1.0\n            text = "B"\n')
    back = read_annotation(p)
    assert back["label"].tolist() == ["A", "B"]
    np.testing.assert_allclose(back["onset_s"], [0.25, 0.5])


def test_raven_with_waveform_rows_and_species_column(tmp_path):
    p = tmp_path / "r.Table.1.selections.txt"
    p.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t"
                 "High Freq (Hz)\tSpecies\n"
                 "1\tWaveform 1\t1\t0.5\t0.9\t0\t0\tEATO\n"
                 "1\tSpectrogram 1\t1\t0.5\t0.9\t1000\t4000\tEATO\n"
                 "2\tWaveform 1\t1\t1.5\t1.7\t0\t0\t\n"
                 "2\tSpectrogram 1\t1\t1.5\t1.7\t1000\t4000\t\n")
    back = read_annotation(p)
    assert back["onset_s"].tolist() == [0.5, 1.5] and back["label"].tolist() == ["EATO", ""]


def test_discovery_order_and_errors(tmp_path):
    audio = tmp_path / "song.wav"
    assert find_annotation(audio) is None
    (tmp_path / "song.txt").write_text("0.1\t0.2\tx\n")
    (tmp_path / "song.wav.csv").write_text("onset_s,offset_s\n0.1,0.2\n")
    assert find_annotation(audio) == tmp_path / "song.wav.csv"
    assert annotation_candidates(audio, directory=tmp_path / "ann")[0] == tmp_path / "ann" / "song.wav.csv"
    bad = tmp_path / "bad.csv"
    bad.write_text("start,stop\n1,2\n")
    with pytest.raises(DataError, match="bad.csv.*lacks column"):
        read_annotation(bad)
    rev = tmp_path / "rev.txt"
    rev.write_text("0.5\t0.2\tx\n")
    with pytest.raises(DataError, match="rev.txt.*ends before it starts"):
        read_annotation(rev)
