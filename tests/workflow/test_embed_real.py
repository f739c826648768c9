"""`vocalatent embed` on the real example recordings, and on synthetic songs with known types."""
import vocalatent.accessor  # noqa: F401

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

from vocalatent.cli import main
from vocalatent.workflow import dump_toml
from vocalatent.embedding import read_embedding


def test_embed_real_zebra_and_bengalese_finch(real_data, tmp_path):
    rec = tmp_path / "rec"
    for name in ("zebra_finch_song", "bengalese_finch_song"):
        shutil.copytree(real_data(name), rec / name)
    cfg = tmp_path / "c.toml"
    cfg.write_text(dump_toml({
        "model": {"max_epochs": 4, "n_lattice": 144, "n_eval_lattice": 377, "n_eval_shifts": 2,
                  "decoder_options": {"base_channels": 8, "hidden": 32}},
        "spectrogram": {"n_freq": 48, "n_time": 48}, "analysis": {"resolution": 24}}))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["-q", "embed", str(rec), "-o", str(out), "--pipeline", "zebra_finch",
                                  "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    ds = read_embedding(out / "embedding.nc")
    sources = set(ds["source"].values)
    assert any(s.startswith("zebra_finch_song/") for s in sources)
    assert any(s.startswith("bengalese_finch_song/") for s in sources)
    assert ds.sizes["item"] >= 30
    assert np.all(np.isfinite(ds.log_likelihood.values))
    assert np.all(ds.duration_s.values > 0) and np.all(ds.offset_s.values > ds.onset_s.values)
    assert ds.attrs["heldout_n_items"] >= 1
    for fig in ("embedding_source.png", "latent_map.png", "jacobian.png", "density.png"):
        assert (out / "figures" / fig).stat().st_size > 5000
    ds.close()


@pytest.mark.slow
def test_synthetic_song_types_become_clusters_and_boundaries(tmp_path):
    from vocalatent.audio.synthetic import write_synthetic_dataset
    from vocalatent.model import QLVM
    from vocalatent.workflow import embed

    truth = write_synthetic_dataset(tmp_path / "rec", n_files=6, n_syllables=40, sr=32000,
                                    random_state=0, snr_db=25)
    # the shipping training settings (issue 15's lr 3e-3, schedule "auto", automatic batch
    # size): with the old test overrides (batch 64, lr 2e-3, 120 epochs) the schedule gave a map
    # that joined two of the four types (ARI 0.78; without the schedule 1.0)
    ds = embed(tmp_path / "rec", tmp_path / "out", figures=False, seed=0, verbose=False,
               overrides={"spectrogram": {"n_freq": 48, "n_time": 48},
                          "audio": {"annotations": "ignore"}, "analysis": {"resolution": 48}})
    # match each embedded syllable to its ground-truth type by file and onset
    seg = ds[["source", "onset_s"]].to_dataframe().reset_index(drop=True)
    labels = []
    for src, onset in zip(seg["source"], seg["onset_s"]):
        t = truth[truth.source == src]
        j = int(np.argmin(np.abs(t.onset_s.values - onset)))
        labels.append(t.label.values[j] if abs(t.onset_s.values[j] - onset) < 0.02 else "none")
    labels = np.array(labels)
    keep = labels != "none"
    assert keep.mean() > 0.8
    ari = adjusted_rand_score(labels[keep], ds.cluster.values[keep])
    assert ari >= 0.9, ari
    # boundaries: clusters are separated by ridges of the Jacobian map (positive climb)
    strength = ds.vl.boundary_strength()
    assert len(strength) >= 1 and (strength["strength"] > 0).all()
    model = QLVM.load(tmp_path / "out" / "model.pt")
    geo = ds.vl.geodesic_between_clusters(model, 0, 1)
    assert geo.length <= geo.straight_length * 1.0001
