"""The single-cell and neural tutorials run end to end at a reduced size (so they cannot rot)."""

from __future__ import annotations

import importlib.util

from vocalatent._utils import REPO_ROOT


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_single_cell_tutorial(tmp_path):
    acc = _load("single_cell_tutorial").main(
        ["--out", str(tmp_path), "--n-cells", "300", "--max-epochs", "15"])
    assert acc >= 0.9
    assert (tmp_path / "run" / "adata.h5ad").is_file()
    assert (tmp_path / "run" / "figures" / "markers.png").is_file()


def test_neural_tutorial(tmp_path):
    rho = _load("neural_tutorial").main(
        ["--out", str(tmp_path), "--n-bins", "1500", "--max-epochs", "15"])
    assert rho >= 0.95
    assert (tmp_path / "run" / "figures" / "tuning_curves.png").is_file()


def test_scanpy_tutorial(tmp_path):
    """The scanpy-user example on the real 10x subset (scanpy optional, anndata needed)."""
    import pytest

    anndata = pytest.importorskip("anndata")
    out = _load("scanpy_tutorial").main(
        ["--out", str(tmp_path), "--n-cells", "300", "--n-top-genes", "200", "--max-epochs", "3"])
    back = anndata.read_h5ad(out["h5ad"])
    assert back.n_obs == 300 and {"X_qlvm", "X_qlvm_torus"} <= set(back.obsm)
    assert "counts" in back.layers and "qlvm_cluster" in back.obs
    assert (tmp_path / "qlvm_map.png").stat().st_size > 5000
    if importlib.util.find_spec("scanpy") is not None:
        assert "X_pca" in back.obsm and "qlvm_neighbors" in back.uns
