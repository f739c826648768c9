"""End-to-end job and every subcommand, on small synthetic songs and the real example songs."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from vocalatent.audio.synthetic import write_synthetic_dataset
from vocalatent.cli import main
from vocalatent.embedding import read_embedding

TINY = dict(model={"max_epochs": 3, "n_lattice": 89, "n_eval_lattice": 233, "n_eval_shifts": 2,
                   "batch_size": 64, "decoder_options": {"base_channels": 8, "hidden": 32}},
            spectrogram={"n_freq": 32, "n_time": 32},
            analysis={"resolution": 24})


def _tiny_config(path: Path) -> Path:
    from vocalatent.workflow import dump_toml

    path.write_text(dump_toml(TINY))
    return path


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    root = tmp_path_factory.mktemp("songs")
    truth = write_synthetic_dataset(root / "rec", n_files=2, n_syllables=12, sr=32000, random_state=0)
    return root / "rec", truth


@pytest.fixture(scope="module")
def run(songs, tmp_path_factory):
    rec, _ = songs
    tmp = tmp_path_factory.mktemp("run")
    cfg = _tiny_config(tmp / "tiny.toml")
    out = tmp / "out"
    result = CliRunner().invoke(main, ["-q", "embed", str(rec), "-o", str(out), "--config", str(cfg), "--seed", "1"])
    assert result.exit_code == 0, result.output
    return out, cfg, result


def test_embed_writes_dataset_figures_and_config(run, songs):
    out, _, result = run
    assert "items embedded in 2-D" in result.output
    ds = read_embedding(out / "embedding.nc")
    n = len(np.atleast_1d(ds.item))
    segs = ds["source"].values
    assert n == len((out / "segments.csv").read_text().strip().splitlines()) - 1
    assert set(segs) <= {"song_000.wav", "song_001.wav"}
    for var in ("embedding", "map_point", "spread", "log_likelihood", "cluster", "density", "jacobian_norm"):
        assert var in ds, var
    for coord in ("onset_s", "offset_s", "duration_s", "source"):
        assert coord in ds.coords
    emb = ds.embedding.values
    assert emb.shape == (n, 2) and np.all((emb >= 0) & (emb < 1))
    assert ds.aggregate_posterior.sum() == pytest.approx(1.0) and ds.lattice_z.shape[1] == 2
    assert json.loads(ds.attrs["config"])["model"]["max_epochs"] == 3
    assert ds.attrs["seed"] == 1 and "heldout_log_likelihood" in ds.attrs
    assert ds.attrs["vocalatent_version"]
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"embedding_cluster.png", "density.png", "latent_map.png", "jacobian.png",
            "training_curves.png", "posterior_item0.png", "aggregate_posterior.png"} <= figs
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert (out / "config.toml").exists() and (out / "model.pt").exists()
    ds.close()


def test_rerun_reuses_stages(run, songs):
    out, cfg, _ = run
    rec, _ = songs
    before = {p: (out / p).stat().st_mtime_ns for p in ("model.pt", "syllables.h5", "embedding.nc")}
    result = CliRunner().invoke(main, ["-q", "embed", str(rec), "-o", str(out), "--config", str(cfg),
                                       "--seed", "1", "--no-figures"])
    assert result.exit_code == 0, result.output
    after = {p: (out / p).stat().st_mtime_ns for p in before}
    assert before == after


def test_changed_model_setting_retrains(run, songs, tmp_path):
    out, cfg, _ = run
    rec, _ = songs
    before = (out / "model.pt").stat().st_mtime_ns
    store_before = (out / "syllables.h5").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["-q", "embed", str(rec), "-o", str(out), "--config", str(cfg),
                                       "--seed", "1", "--max-epochs", "2", "--no-figures"])
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").stat().st_mtime_ns != before
    assert (out / "syllables.h5").stat().st_mtime_ns == store_before


def test_train_project_evaluate_analyze_plot(run, songs, tmp_path):
    out, cfg, _ = run
    rec, _ = songs
    r = CliRunner().invoke(main, ["-q", "train", str(out / "syllables.h5"), "-o", str(tmp_path / "t"),
                                  "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "held-out log p(x)" in r.output and (tmp_path / "t" / "model.pt").exists()
    r = CliRunner().invoke(main, ["-q", "project", str(out / "model.pt"), str(rec), "-o", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    ds = read_embedding(tmp_path / "p" / "embedding.nc")
    ref = read_embedding(out / "embedding.nc")
    # same model, same preprocessing: the projected embedding equals the run's own
    np.testing.assert_allclose(ds.embedding.values, ref.embedding.values, atol=1e-9)
    ds.close(); ref.close()
    r = CliRunner().invoke(main, ["-q", "evaluate", str(out / "model.pt"), str(out / "syllables.h5"),
                                  "--n-lattice", "233", "--n-shifts", "2"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert np.isfinite(res["log_likelihood"]) and res["n_shifts"] == 2
    r = CliRunner().invoke(main, ["-q", "analyze", str(out), "--resolution", "16"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["-q", "plot", str(out)])
    assert r.exit_code == 0, r.output
    assert "embedding_cluster.png" in r.output


def test_pipelines_and_config_template(tmp_path):
    r = CliRunner().invoke(main, ["pipelines"])
    assert r.exit_code == 0 and "zebra_finch" in r.output and "source:" in r.output
    r = CliRunner().invoke(main, ["config", "-o", str(tmp_path / "c.toml"), "--pipeline", "zebra_finch"])
    assert r.exit_code == 0, r.output
    import tomllib

    cfg = tomllib.loads((tmp_path / "c.toml").read_text())
    assert cfg["pipeline"]["extends"] == "zebra_finch" and cfg["model"]["latent_dim"] == 2
    assert "# training lattice size m" in (tmp_path / "c.toml").read_text()
    from vocalatent.workflow import resolve

    resolved = resolve(config=tmp_path / "c.toml")
    assert resolved["segment"]["f_max"] == 10000.0
    r = CliRunner().invoke(main, ["config", "-o", str(tmp_path / "c.toml")])
    assert r.exit_code != 0 and "exists" in r.output


@pytest.mark.parametrize("args, message", [
    (["embed", "/no/such/folder"], "does not exist"),
    (["embed", "{empty}", "-o", "{tmp}/o1"], "no syllables"),
    (["embed", "{rec}", "-o", "{tmp}/o2", "--pipeline", "nope"], "unknown pipeline"),
    (["embed", "{rec}", "-o", "{tmp}/o3", "--latent-dim", "5"], "latent-dim"),
    (["embed", "{rec}", "-o", "{foreign}"], "not a vocalatent output folder"),
    (["evaluate", "{tmp}/missing.pt", "{rec}"], "does not exist"),
])
def test_user_mistakes_are_one_line_errors(args, message, songs, tmp_path):
    rec, _ = songs
    (tmp_path / "empty").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.docx").write_text("precious")
    args = [a.format(tmp=tmp_path, rec=rec, empty=tmp_path / "empty", foreign=tmp_path / "foreign") for a in args]
    r = CliRunner().invoke(main, ["-q"] + args)
    assert r.exit_code != 0
    assert message.lower() in r.output.lower(), r.output
    assert "Traceback" not in r.output


def test_out_holding_another_run_is_refused(run, tmp_path):
    out, cfg, _ = run
    other = tmp_path / "other"
    write_synthetic_dataset(other, n_files=1, n_syllables=5, random_state=3)
    r = CliRunner().invoke(main, ["-q", "embed", str(other), "-o", str(out), "--config", str(cfg)])
    assert r.exit_code != 0 and "another run" in r.output


def test_embed_dispatches_count_matrices_to_the_single_cell_job(tmp_path):
    import pandas as pd

    from vocalatent.data.simulate import simulate_cell_types

    sim = simulate_cell_types(120, 60, 3, random_state=0)
    genes = [f"Gene{i}" for i in range(60)]
    pd.DataFrame(sim.matrix.X.toarray().astype(int), index=[f"cell{i}" for i in range(120)], columns=genes).to_csv(tmp_path / "counts.csv")
    cfg = tmp_path / "c.toml"
    from vocalatent.workflow import dump_toml

    cfg.write_text(dump_toml({"model": {"max_epochs": 2, "n_lattice": 89, "n_eval_lattice": 233,
                                        "n_eval_shifts": 2}, "analysis": {"resolution": 16}}))
    r = CliRunner().invoke(main, ["-q", "embed", str(tmp_path / "counts.csv"), "-o", str(tmp_path / "o"),
                                  "--pipeline", "single_cell", "--config", str(cfg), "--no-figures"])
    assert r.exit_code == 0, r.output
    ds = read_embedding(tmp_path / "o" / "embedding.nc")
    assert ds.sizes["item"] == 120 and ds.attrs["likelihood"] == "multinomial"
    ds.close()
    assert (tmp_path / "o" / "adata.h5ad").exists()


@pytest.mark.parametrize("latent_dim", [1, 3])
def test_embed_ring_and_3d_latents_write_their_figures(latent_dim, songs, tmp_path):
    rec, _ = songs
    cfg = _tiny_config(tmp_path / "tiny.toml")
    out = tmp_path / f"out{latent_dim}"
    r = CliRunner().invoke(main, ["-q", "embed", str(rec), "-o", str(out), "--config", str(cfg),
                                  "--latent-dim", str(latent_dim)])
    assert r.exit_code == 0, r.output
    assert f"in {latent_dim}-D" in r.output
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert {"embedding_cluster.png", "density.png", "latent_map.png", "jacobian.png"} <= figs
    ds = read_embedding(out / "embedding.nc")
    assert ds.sizes["latent"] == latent_dim and ds["density"].ndim == latent_dim
    ds.close()


def test_analyze_reads_the_runs_items_for_the_decoder_merge(run, tmp_path):
    import shutil

    from vocalatent.workflow import analyze_run, run_items

    out = tmp_path / "out"
    shutil.copytree(run[0], out)
    job = read_embedding(out / "embedding.nc")
    job_labels, job_merge = job["cluster"].values.copy(), job["cluster"].attrs["decoder_merge"]
    job.close()
    assert job_merge == 1
    # analyze of the finished run: the store gives the items, so the same merge and clusters
    ds = analyze_run(out).dataset
    assert ds["cluster"].attrs["decoder_merge"] == 1
    np.testing.assert_array_equal(ds["cluster"].values, job_labels)
    assert ds["cluster"].attrs["linkage"] == "centroid" and ds["cluster"].attrs["excess_mass"] == 1
    assert ds["cluster"].attrs["continuum_separation"] == 10.0 and ds["cluster"].attrs["continuum_dip"] == 0.5
    # the [analysis] table's cluster options reach the clusters
    opt = analyze_run(out, overrides={"analysis": {"excess_mass": False, "merge_linkage": "single",
                                                   "continuum_separation": 8.0,
                                                   "continuum_dip": 0.4}}).dataset
    assert opt["cluster"].attrs["linkage"] == "single" and opt["cluster"].attrs["excess_mass"] == 0
    assert opt["cluster"].attrs["continuum_separation"] == 8.0 and opt["cluster"].attrs["continuum_dip"] == 0.4
    # a store that holds other syllables than the embedding is named, not used
    prepared, problem = run_items(out, ds.isel(item=slice(1, None)), {})
    assert prepared is None and f"holds {ds.sizes['item']} syllables, the run embedded" in problem
    # no store: clusters without the merge
    (out / "syllables.h5").unlink()
    assert run_items(out, ds, {}) == (None, None)
    ds = analyze_run(out).dataset
    assert ds["cluster"].attrs["decoder_merge"] == 0
