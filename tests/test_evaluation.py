"""vocalatent evaluate OUT: the map-versus-labels report on synthetic labelled runs."""

import json

import pytest
from click.testing import CliRunner
from sklearn.metrics import adjusted_rand_score

import vocalatent.accessor  # noqa: F401
from vocalatent.analysis._demo import SyntheticSyllableDecoder, synthetic_embedding_dataset
from vocalatent.cli import main
from vocalatent.embedding import write_embedding
from vocalatent.evaluation import evaluate_run


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A run folder whose four syllable types are labelled; D's items are labelled "C" too,
    and 20 items carry no label."""
    ds = synthetic_embedding_dataset(SyntheticSyllableDecoder(2, output_shape=(8, 8)), n_per_type=60,
                                     random_state=3)
    ds = ds.vl.clusters(resolution=64)
    lab = ds["label"].values.astype(object)
    lab[lab == "D"] = "C"
    lab[::12] = ""
    ds = ds.assign_coords(label=("item", lab.astype(str)))
    out = tmp_path_factory.mktemp("run")
    write_embedding(ds, out / "embedding.nc")
    return out, ds


def test_evaluate_run_has_the_known_answers(labelled):
    out, ds = labelled
    rep = evaluate_run(out)
    keep = ds["label"].values != ""
    assert rep.n_unlabelled == int((~keep).sum()) == 20
    assert rep.n_clusters == 4 and rep.n_labels == 3
    # the map separates the four types, so a label is always its neighbours' label
    assert rep.knn_accuracy[1] == 1.0 and rep.knn_accuracy[5] == 1.0
    truth = ds["true_type"].values[keep]
    assert adjusted_rand_score(truth, ds["cluster"].values[keep]) == pytest.approx(1.0)
    assert rep.ari == pytest.approx(adjusted_rand_score(ds["label"].values[keep], ds["cluster"].values[keep]))
    row = rep.per_label.set_index("label")
    # "C" (types C and D) is split over two clusters: half its items in its main one, which is pure
    assert row.loc["C", "completeness"] == pytest.approx(0.5, abs=0.05)
    assert row.loc["C", "purity"] == 1.0 and row.loc["A", "completeness"] == 1.0
    assert rep.homogeneity == pytest.approx(1.0) and rep.completeness < 0.9
    saved = json.loads((out / "agreement.json").read_text())
    assert saved["ari"] == pytest.approx(rep.ari) and saved["cluster_rule"]["method"] == "significance"
    assert (out / "figures" / "agreement.png").stat().st_size > 10_000
    assert (out / "figures" / "agreement_confusion.png").is_file()


def test_evaluate_cli_reports_and_names_missing_labels(labelled):
    out, _ = labelled
    r = CliRunner().invoke(main, ["-q", "evaluate", str(out), "--no-figures", "--k", "3"])
    assert r.exit_code == 0, r.output
    assert "3-NN 1.000" in r.output and "ARI" in r.output and "agreement.json" in r.output
    r = CliRunner().invoke(main, ["-q", "evaluate", str(out), "--labels", "cell_type"])
    assert r.exit_code != 0 and "no 'cell_type' item variable" in r.output
    r = CliRunner().invoke(main, ["-q", "evaluate", str(out / "embedding.nc")])
    assert r.exit_code != 0 and "give the DATA" in r.output


def test_evaluate_takes_the_folder_lock(labelled):
    """evaluate OUT writes agreement.json and figures into the run folder: it goes through the
    folder guard, so it waits for no one and refuses while another command writes the folder."""
    import os

    from vocalatent.locks import OutputLockedError, output_lock

    out, _ = labelled
    with output_lock(out, what="vocalatent analyze"):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            evaluate_run(out, figures=False)
        r = CliRunner().invoke(main, ["-q", "evaluate", str(out), "--no-figures"])
        assert r.exit_code != 0 and "Traceback" not in r.output
        assert len([ln for ln in r.output.splitlines() if ln.startswith("Error:")]) == 1
    stale = out / ".agreement.json.vltmp.abcd1234"    # a killed evaluate's temporary file
    stale.write_text("{")
    evaluate_run(out, figures=False)
    assert not stale.exists()
