"""The one job serves every domain: embed, analyze, plot, train and project on neural activity
and a count matrix go through the same code path as recordings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from vocalatent.cli import main
from vocalatent.workflow import dump_toml
from vocalatent.embedding import read_embedding

TINY = {"model": {"max_epochs": 3, "n_lattice": 89, "n_eval_lattice": 233, "n_eval_shifts": 2},
        "analysis": {"resolution": 16, "geodesic": False}}


def _cli(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def test_neural_run_embed_analyze_plot_and_project(tmp_path):
    from vocalatent.data.simulate import head_direction_cells

    sim = head_direction_cells(8, 400, bin_s=0.1, random_state=0)
    np.savez(tmp_path / "hd.npz", counts=sim.counts.T, time=sim.time)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(dump_toml(TINY))
    out = tmp_path / "out"
    r = _cli("embed", tmp_path / "hd.npz", "-o", out, "--config", cfg)
    assert r.exit_code == 0, r.output
    ds = read_embedding(out / "embedding.nc").load()
    assert ds.attrs["domain"] == "neural" and ds.sizes["item"] == 400 and "time_s" in ds.coords
    assert json.loads((out / "run.json").read_text())["domain"] == "neural"
    # analyze: another bandwidth changes the density, not the embedding
    r = _cli("analyze", out, "--bandwidth", "0.2")
    assert r.exit_code == 0, r.output
    again = read_embedding(out / "embedding.nc").load()
    np.testing.assert_array_equal(again["embedding"].values, ds["embedding"].values)
    assert json.loads(again.attrs["config"])["analysis"]["figures"] is True
    # the input is read again as the run read it, so the clusters get the decoder merge
    assert again["cluster"].attrs["decoder_merge"] == ds["cluster"].attrs["decoder_merge"] == 1
    # plot: the domain's own figures are drawn again from the input
    for f in (out / "figures").glob("*.png"):
        f.unlink()
    r = _cli("plot", out)
    assert r.exit_code == 0, r.output
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"tuning_curves.png", "latent_trace.png", "embedding_spread.png"} <= figs
    # project with the run's model: the units are matched by name, same embedding
    r = _cli("project", out / "model.pt", tmp_path / "hd.npz", "-o", tmp_path / "proj")
    assert r.exit_code == 0, r.output
    proj = read_embedding(tmp_path / "proj" / "embedding.nc").load()
    np.testing.assert_allclose(proj["embedding"].values, ds["embedding"].values, atol=1e-12)
    np.testing.assert_array_equal(proj["time_s"].values, ds["time_s"].values)


def test_train_on_a_count_matrix_records_its_domain_and_genes(tmp_path):
    from vocalatent.data.simulate import simulate_cell_types
    from vocalatent.workflow import load_model

    sim = simulate_cell_types(80, 40, 2, random_state=0)
    genes = [f"Gene{i}" for i in range(40)]
    pd.DataFrame(sim.matrix.X.toarray().astype(int), index=[f"cell{i}" for i in range(80)],
                 columns=genes).to_csv(tmp_path / "counts.csv")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(dump_toml({**TINY, "single_cell": {"n_top_genes": 20, "min_cells": 1}}))
    r = _cli("train", tmp_path / "counts.csv", "-o", tmp_path / "m", "--config", cfg)
    assert r.exit_code == 0, r.output
    model = load_model(tmp_path / "m" / "model.pt")
    assert model.metadata_["domain"] == "single_cell"
    assert len(model.metadata_["features"]) == 20 and set(model.metadata_["features"]) <= set(genes)
    # the same command again reuses the model (same content, same settings)
    mtime = (tmp_path / "m" / "model.pt").stat().st_mtime_ns
    r = _cli("train", tmp_path / "counts.csv", "-o", tmp_path / "m", "--config", cfg)
    assert r.exit_code == 0 and (tmp_path / "m" / "model.pt").stat().st_mtime_ns == mtime
