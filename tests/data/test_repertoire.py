"""The synthetic repertoire generator: its types, abundances, subtle variants and recordings."""

import numpy as np
import pytest

from vocalatent import ParameterError
from vocalatent.data.repertoire import (
    RepertoireSpec,
    benchmark_repertoires,
    make_repertoire,
    repertoire_latents,
    repertoire_recordings,
)


def test_types_abundances_and_subtle_variants():
    rep = make_repertoire(n_types=12, abundance_ratio=50.0, n_subtle=4, seed=3)
    a = rep.abundances
    assert len(rep.types) == 12 and a.sum() == pytest.approx(1.0)
    assert a.max() / a.min() == pytest.approx(50.0)
    kinds = [rep.subtle_kind(i) for i in range(12)]
    assert kinds.count("") == 8 and kinds.count("harmonic") + kinds.count("duration") == 4
    for i, t in enumerate(rep.types):
        if t.sibling < 0:
            continue
        b = rep.types[t.sibling]
        assert t.f0_hz == b.f0_hz and t.slope_oct == b.slope_oct
        if kinds[i] == "harmonic":
            # exactly one harmonic switched off, the rest equal
            diff = [x != y for x, y in zip(t.harmonics, b.harmonics)]
            assert sum(diff) == 1 and t.harmonics[diff.index(True)] == 0.0
            assert t.duration_s == b.duration_s
        else:
            assert t.duration_s == pytest.approx(1.6 * b.duration_s) and t.harmonics == b.harmonics
    with pytest.raises(ParameterError, match="n_types"):
        RepertoireSpec(n_types=31)


def test_recordings_carry_gain_noise_and_truth():
    rep = make_repertoire(n_types=4, n_syllables=60, n_birds=2, seed=1)
    audio, seg = repertoire_recordings(rep, n_recordings=2, gain_db=(0.0, 13.0), noise_db=(-70.0, -50.0))
    assert len(seg) == 60 and set(seg["source"]) == set(audio)
    assert (seg.groupby("source")["bird"].nunique() == 1).all()
    assert seg["type"].value_counts().min() >= 6
    for source, grp in seg.groupby("source"):
        y = audio[source]
        sr = int(grp["sample_rate"].iloc[0])
        on = int(grp["onset_s"].iloc[0] * sr)
        off = int(grp["offset_s"].iloc[0] * sr)
        peak_db = 20 * np.log10(np.abs(y[on:off]).max())
        assert peak_db == pytest.approx(-12.0 + grp["gain_db"].iloc[0], abs=0.5)
        gap = y[:int(0.04 * sr)]
        assert 20 * np.log10(gap.std()) == pytest.approx(grp["noise_db"].iloc[0], abs=1.0)


def test_latents_and_the_benchmark_list():
    rep = make_repertoire(n_types=6, abundance_ratio=10.0, n_subtle=1, n_syllables=400, seed=2)
    z, types, birds = repertoire_latents(rep, outliers=0.02)
    assert z.shape == (400, 2) and np.all((z >= 0) & (z < 1))
    assert np.sum(types == -1) == 8 and birds.max() < rep.spec.n_birds
    specs = benchmark_repertoires(12)
    assert len(specs) == 12 and min(s.n_types for s in specs) == 3 and max(s.n_types for s in specs) == 30
    assert max(s.abundance_ratio for s in specs) == 50.0


def test_renderer_digest_follows_the_rendering_source(monkeypatch):
    import inspect

    from vocalatent.audio import spectrogram
    from vocalatent.data.repertoire import renderer_digest

    first = renderer_digest()
    assert first == renderer_digest() and len(first) == 12
    real = inspect.getsource

    def edited(obj):        # the spectrogram module as if one line had changed
        text = real(obj)
        return text + "\n# edited\n" if obj is spectrogram else text

    monkeypatch.setattr(inspect, "getsource", edited)
    assert renderer_digest() != first
