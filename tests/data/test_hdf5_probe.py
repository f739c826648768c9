"""HDF5 files that make libhdf5 hang or crash are refused by a child-process probe (issue 14).

The fixture ``hangs_libhdf5.h5ad.gz`` is an AnnData file with a few bytes damaged at random
(found by the fuzz test's corruption on another seed): opening it with h5py and reading the
attributes of ``X`` never returns, in h5py and in anndata alike.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vocalatent._utils import DataError
from vocalatent.cli import main
from vocalatent.data import hdf5_probe
from vocalatent.data.hdf5_probe import check_hdf5
from vocalatent.data.single_cell import read_h5ad

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "damaged" / "hangs_libhdf5.h5ad.gz"


@pytest.fixture
def hanging_h5ad(tmp_path) -> Path:
    path = tmp_path / "cells.h5ad"
    path.write_bytes(gzip.decompress(FIXTURE.read_bytes()))
    return path


@pytest.fixture(autouse=True)
def fresh_probe_memory(monkeypatch):
    monkeypatch.setattr(hdf5_probe, "_seen", {})


def test_fixture_really_hangs_libhdf5(hanging_h5ad):
    """The file is what the test claims: reading its structure in-process does not return."""
    code = ("import h5py, sys\nf = h5py.File(sys.argv[1], 'r')\n"
            "f.visititems(lambda n, o: dict(o.attrs))\n")
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", code, str(hanging_h5ad)], timeout=5,
                       capture_output=True)


def test_hanging_file_is_refused_by_every_reader(hanging_h5ad, monkeypatch):
    monkeypatch.setenv("VOCALATENT_HDF5_PROBE_TIMEOUT", "3")
    t0 = time.monotonic()
    with pytest.raises(DataError, match="did not finish reading the file's structure within 3 s") as exc:
        check_hdf5(hanging_h5ad)
    assert str(hanging_h5ad) in str(exc.value)
    for backend in ("h5py", "anndata"):
        if backend == "anndata":
            pytest.importorskip("anndata")
        with pytest.raises(DataError, match="did not finish"):
            read_h5ad(hanging_h5ad, backend=backend)
    assert time.monotonic() - t0 < 60        # three probes of 3 s, not a hang


def test_hanging_file_through_the_cli_is_one_line(hanging_h5ad, tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_HDF5_PROBE_TIMEOUT", "3")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["embed", str(hanging_h5ad), "-o", str(out)],
                                catch_exceptions=True)
    assert result.exit_code != 0
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "cells.h5ad" in errors[0] and "did not finish" in errors[0]
    assert "Traceback" not in result.output


def test_crashing_probe_is_reported_as_damage(tmp_path, monkeypatch):
    """A child killed by a signal (libhdf5 aborting) is a damaged file, not a pass."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(3)
    monkeypatch.setattr(hdf5_probe, "_PROBE", "import os, signal\nos.kill(os.getpid(), signal.SIGABRT)\n")
    with pytest.raises(DataError, match=r"crashed .*signal 6"):
        check_hdf5(path, timeout=30)


def test_valid_file_is_probed_once_per_content(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(3)
        f["a"].attrs["note"] = "fine"
    calls = []
    real_run = subprocess.run

    def counting_run(*args, **kwargs):
        calls.append(args[0][-1])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(hdf5_probe.subprocess, "run", counting_run)
    check_hdf5(path)
    check_hdf5(path)
    assert calls == [str(path)]
    with h5py.File(path, "a") as f:          # an edit changes size/mtime/ctime: probed again
        f["b"] = np.arange(5)
    check_hdf5(path)
    assert len(calls) == 2


def test_probe_off_and_ordinary_errors_left_to_the_reader(tmp_path, monkeypatch):
    not_hdf5 = tmp_path / "cells.h5ad"
    not_hdf5.write_bytes(b"this is not an HDF5 file at all")
    check_hdf5(not_hdf5)                      # an ordinary error: the reader words it
    with pytest.raises(DataError, match="not a readable"):
        read_h5ad(not_hdf5, backend="h5py")
    monkeypatch.setenv("VOCALATENT_HDF5_PROBE_TIMEOUT", "0")
    monkeypatch.setattr(hdf5_probe.subprocess, "run",
                        lambda *a, **k: pytest.fail("probe ran although turned off"))
    check_hdf5(not_hdf5)
