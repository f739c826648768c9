"""Map-versus-labels agreement: known answers, the torus k-NN against a brute-force reference."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vocalatent import DataError, ParameterError  # noqa: E402
from vocalatent.analysis.agreement import knn_label_accuracy, label_agreement, labelled_mask  # noqa: E402
from vocalatent.analysis.torus import torus_distance  # noqa: E402


def _brute_knn(z, labels, k):
    d = torus_distance(z[:, None, :], z[None, :, :])
    np.fill_diagonal(d, np.inf)
    right = 0
    for i in range(len(z)):
        nb = np.argsort(d[i], kind="stable")[:k]
        votes = labels[nb]
        vals, cnt = np.unique(votes, return_counts=True)
        best = vals[cnt == cnt.max()]
        pred = votes[0] if votes[0] in best else best[0]
        right += pred == labels[i]
    return right / len(z)


def test_knn_accuracy_matches_a_brute_force_torus_reference():
    rng = np.random.default_rng(3)
    z = rng.random((150, 2))
    labels = np.where(z[:, 0] + 0.3 * rng.standard_normal(150) > 0.5, "a", "b")
    for k in (1, 3, 5):
        assert knn_label_accuracy(z, labels, k=k) == pytest.approx(_brute_knn(z, labels, k))


def test_knn_accuracy_wraps_round_the_seam():
    # one item of type A sits at z1 = 0.997, its kin at 0.003; type B lies at 0.95: only a
    # wrap-around distance finds A's neighbours for it
    z = np.array([[0.997, 0.5]] + [[0.003 + 0.001 * i, 0.5] for i in range(5)]
                 + [[0.95 + 0.002 * i, 0.5] for i in range(6)])
    labels = np.array(["A"] * 6 + ["B"] * 6)
    assert knn_label_accuracy(z, labels, k=1) == 1.0
    # a flat (non-periodic) 1-NN would put it with B
    assert labels[1 + np.argmin(np.abs(z[1:, 0] - z[0, 0]))] == "B"


def test_scores_and_per_label_table_have_the_known_values():
    # A: 30 in cluster 0, 10 in cluster 1; B: 20 in cluster 1; C: 20 in cluster 2
    labels = np.array(["A"] * 40 + ["B"] * 20 + ["C"] * 20)
    clusters = np.array([0] * 30 + [1] * 10 + [1] * 20 + [2] * 20)
    z = np.random.default_rng(0).random((80, 2))
    rep = label_agreement(z, labels, clusters=clusters)
    row = rep.per_label.set_index("label")
    assert row.loc["A", "main_cluster"] == 0 and row.loc["A", "completeness"] == pytest.approx(0.75)
    assert row.loc["A", "purity"] == pytest.approx(1.0)
    assert row.loc["B", "main_cluster"] == 1 and row.loc["B", "purity"] == pytest.approx(20 / 30)
    assert row.loc["C", "completeness"] == 1.0 and row.loc["C", "purity"] == 1.0
    assert rep.confusion.loc["A"].tolist() == [30, 10, 0]
    from sklearn.metrics import adjusted_rand_score, v_measure_score

    assert rep.ari == pytest.approx(adjusted_rand_score(labels, clusters))
    assert rep.v_measure == pytest.approx(v_measure_score(labels, clusters))
    assert rep.chance == pytest.approx(0.5)
    assert rep.n_labels == 3 and rep.n_clusters == 3


def test_perfect_clusters_score_one_and_unlabelled_items_are_left_out():
    rng = np.random.default_rng(1)
    centres = np.array([[0.1, 0.1], [0.5, 0.5], [0.8, 0.2]])
    which = np.repeat([0, 1, 2], 40)
    z = (centres[which] + 0.01 * rng.standard_normal((120, 2))) % 1
    labels = np.array(["x", "y", "z"], dtype=object)[which]
    labels[:7] = ""
    labels[7] = None
    labels[8] = np.nan
    clusters = np.array([2, 0, 1])[which]  # the same partition, other names
    rep = label_agreement(z, labels, clusters=clusters)
    assert rep.n_unlabelled == 9 and rep.n_items == 111
    assert rep.ari == pytest.approx(1.0) and rep.nmi == pytest.approx(1.0)
    assert rep.knn_accuracy == {1: 1.0, 5: 1.0}
    assert (rep.per_label["completeness"] == 1.0).all()
    d = rep.to_dict()
    assert d["confusion"]["labels"] == ["x", "y", "z"]
    assert d["confusion"]["counts"] == [[0, 0, 31], [40, 0, 0], [0, 40, 0]]


def test_labelled_mask_and_bad_input():
    assert labelled_mask(np.array(["a", "", None, np.nan, "nan", "b"], dtype=object)).tolist() == [
        True, False, False, False, False, True]
    z = np.random.default_rng(0).random((5, 2))
    with pytest.raises(DataError, match="only 1 of 5"):
        label_agreement(z, ["a", "", "", "", ""])
    with pytest.raises(ParameterError, match="one value per item"):
        label_agreement(z, ["a", "b"])


def test_confusion_and_agreement_figures_draw():
    from vocalatent import plot as vplot

    rng = np.random.default_rng(0)
    z = rng.random((60, 2))
    labels = np.where(z[:, 0] > 0.5, "hi", "lo")
    clusters = (z[:, 0] > 0.45).astype(int)
    rep = label_agreement(z, labels, clusters=clusters)
    ax = vplot.plot_confusion(rep.confusion)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["hi", "lo"]
    fig = vplot.plot_agreement(z, labels, clusters, report=rep)
    assert len(fig.axes) >= 3
    plt.close("all")
    pd.testing.assert_frame_equal(rep.confusion, label_agreement(z, labels, clusters=clusters).confusion)
