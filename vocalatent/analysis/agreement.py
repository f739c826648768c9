"""How well a latent map and its clusters agree with labels an expert gave some of the items.

Labs with a few hand-labelled songs use this to judge a map before trusting it on the rest:

* **k-NN label accuracy on the torus**: each labelled item is classified by a majority vote of
  its ``k`` nearest *other* labelled items under the wrap-around distance
  (:func:`~vocalatent.analysis.torus.torus_distance`; a periodic k-d tree, ``boxsize=1``); ties
  go to the label of the nearest voter. It measures the map, independently of any clustering.
  ``chance`` is the accuracy of always guessing the most common label.
* **Cluster scores** (scikit-learn): adjusted Rand index (ARI), normalised mutual information
  (NMI, arithmetic normalisation) and the V-measure with its two halves, homogeneity (each
  cluster holds one label) and completeness (each label lies in one cluster).
* **Per label**: its main cluster (the one holding most of its items), *completeness* = the
  share of the label's items in that cluster, *purity* = the share of that cluster's items that
  carry the label.
* **Confusion table**: items per (label, cluster).

Items without a label (empty string, ``None``, NaN) are left out and counted
(``n_unlabelled``); the cluster ``-1`` (below the noise density) counts as a cluster of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._utils import DataError, ParameterError, check_positive, logger
from .torus import as_latent

__all__ = ["AgreementReport", "knn_label_accuracy", "label_agreement", "labelled_mask"]


def labelled_mask(labels) -> np.ndarray:
    """True for items that carry a label (not ``""``, ``None``, NaN or ``"nan"``).

    Parameters
    ----------
    labels : array-like [shape=(n,)]

    Returns
    -------
    np.ndarray [shape=(n,), bool]
    """
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise ParameterError(f"labels must be one value per item; got shape {arr.shape}")
    out = np.ones(arr.shape[0], dtype=bool)
    for i, v in enumerate(arr):
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            out[i] = False
        elif isinstance(v, (str, bytes)) and str(v).strip().lower() in ("", "nan", "none"):
            out[i] = False
    return out


def knn_label_accuracy(z, labels, *, k: int = 5) -> float:
    """Leave-one-out k-NN label accuracy under the torus distance.

    Parameters
    ----------
    z : np.ndarray [shape=(n, d), range [0, 1)]
        Embedding of labelled items (n > k).
    labels : array-like [shape=(n,)]
    k : int
        Voters per item (its k nearest other items).

    Returns
    -------
    float in [0, 1]
        Fraction of items whose vote gives their own label.
    """

    check_positive("k", k, integer=True)
    pts = as_latent(z)
    lab = np.asarray(labels)
    n = pts.shape[0]
    if lab.shape != (n,):
        raise ParameterError(f"labels must have shape ({n},); got {lab.shape}")
    if n <= k:
        raise DataError(f"need more than k={k} labelled items for a k-NN accuracy; got {n}")
    _, codes = np.unique(lab.astype(str), return_inverse=True)
    pred = _knn_predictions(pts, codes, k)
    return float(np.mean(pred == codes))


@dataclass(frozen=True)
class AgreementReport:
    """Map-versus-labels agreement (see the module docstring).

    Attributes
    ----------
    n_items : int
        Labelled items scored.
    n_unlabelled : int
        Items left out because they carry no label.
    n_labels, n_clusters : int
        Distinct labels and clusters among the scored items.
    knn_accuracy : dict
        ``{k: accuracy}`` of the torus k-NN vote, for each k asked.
    chance : float
        Share of the most common label (the accuracy of always guessing it).
    ari, nmi, v_measure, homogeneity, completeness : float
        Cluster-versus-label scores (NaN without clusters).
    per_label : pandas.DataFrame
        One row per label: ``label``, ``n_items``, ``main_cluster``, ``completeness``,
        ``purity``, ``knn_accuracy`` (the smallest k's vote, per label).
    confusion : pandas.DataFrame
        Items per label (rows) and cluster (columns).
    """

    n_items: int
    n_unlabelled: int
    n_labels: int
    n_clusters: int
    knn_accuracy: dict
    chance: float
    ari: float
    nmi: float
    v_measure: float
    homogeneity: float
    completeness: float
    per_label: pd.DataFrame = field(repr=False)
    confusion: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (scores, per-label table and confusion counts)."""
        return {
            "n_items": self.n_items, "n_unlabelled": self.n_unlabelled,
            "n_labels": self.n_labels, "n_clusters": self.n_clusters,
            "knn_accuracy": {str(k): v for k, v in self.knn_accuracy.items()},
            "chance": self.chance, "ari": self.ari, "nmi": self.nmi, "v_measure": self.v_measure,
            "homogeneity": self.homogeneity, "completeness": self.completeness,
            "per_label": self.per_label.to_dict("records"),
            "confusion": {"labels": [str(v) for v in self.confusion.index],
                          "clusters": [int(c) for c in self.confusion.columns],
                          "counts": self.confusion.to_numpy().tolist()},
        }

    def summary(self) -> str:
        """A few lines for a terminal."""
        knn = ", ".join(f"{k}-NN {v:.3f}" for k, v in self.knn_accuracy.items())
        lines = [f"{self.n_items} labelled items ({self.n_unlabelled} unlabelled left out), "
                 f"{self.n_labels} labels, {self.n_clusters} clusters",
                 f"torus label accuracy: {knn} (chance {self.chance:.3f})"]
        if np.isfinite(self.ari):
            lines.append(f"clusters vs labels: ARI {self.ari:.3f}, NMI {self.nmi:.3f}, "
                         f"V-measure {self.v_measure:.3f} (homogeneity {self.homogeneity:.3f}, "
                         f"completeness {self.completeness:.3f})")
        return "\n".join(lines)


def label_agreement(z, labels, *, clusters=None, k=(1, 5)) -> AgreementReport:
    """Agreement of an embedding (and its clusters) with item labels.

    Parameters
    ----------
    z : np.ndarray [shape=(n, d), range [0, 1)]
        Embedding of all items.
    labels : array-like [shape=(n,)]
        Label per item; unlabelled items (``""``, None, NaN) are left out.
    clusters : array-like [shape=(n,), int], optional
        Cluster per item (``-1`` = none); without it only the k-NN accuracy is reported.
    k : int or sequence of int
        Voter counts for the k-NN accuracy.

    Returns
    -------
    AgreementReport
    """
    from sklearn import metrics

    pts = as_latent(z)
    n = pts.shape[0]
    lab = np.asarray(labels, dtype=object)
    if lab.shape != (n,):
        raise ParameterError(f"labels must have one value per item ({n}); got shape {lab.shape}")
    keep = labelled_mask(lab)
    n_lab = int(keep.sum())
    if n_lab < 2:
        raise DataError(f"only {n_lab} of {n} items carry a label; need at least 2 to compare")
    if n_lab < n:
        logger.info("%d of %d items carry no label and are left out of the agreement", n - n_lab, n)
    lab_s = np.array([str(v) for v in lab[keep]])
    ks = [int(k)] if np.isscalar(k) else [int(v) for v in k]
    knn = {}
    for kk in ks:
        if n_lab > kk:
            knn[kk] = knn_label_accuracy(pts[keep], lab_s, k=kk)
        else:
            logger.warning("k=%d needs more than %d labelled items; its k-NN accuracy is left out",
                           kk, n_lab)
    uniq, counts = np.unique(lab_s, return_counts=True)
    chance = float(counts.max() / n_lab)
    nan = float("nan")
    scores = dict(ari=nan, nmi=nan, v_measure=nan, homogeneity=nan, completeness=nan)
    if clusters is not None:
        cl_all = np.asarray(clusters)
        if cl_all.shape != (n,):
            raise ParameterError(f"clusters must have one value per item ({n}); got shape {cl_all.shape}")
        cl = cl_all[keep].astype(np.int64)
        h, c, v = metrics.homogeneity_completeness_v_measure(lab_s, cl)
        scores = dict(ari=float(metrics.adjusted_rand_score(lab_s, cl)),
                      nmi=float(metrics.normalized_mutual_info_score(lab_s, cl)),
                      v_measure=float(v), homogeneity=float(h), completeness=float(c))
        cids = np.unique(cl)
    else:
        cl = np.zeros(n_lab, dtype=np.int64)
        cids = np.array([0])
    table = pd.crosstab(pd.Categorical(lab_s, categories=uniq), pd.Categorical(cl, categories=cids),
                        dropna=False)
    table.index = pd.Index(uniq, name="label")
    table.columns = pd.Index([int(c) for c in cids], name="cluster")
    per_knn = _per_label_knn(pts[keep], lab_s, uniq, min(knn) if knn else None)
    rows = []
    col_tot = table.sum(axis=0).to_numpy()
    for i, name in enumerate(uniq):
        row = table.iloc[i].to_numpy()
        j = int(np.argmax(row))
        rows.append({"label": name, "n_items": int(row.sum()),
                     "main_cluster": int(cids[j]) if clusters is not None else -1,
                     "completeness": float(row[j] / row.sum()),
                     "purity": float(row[j] / col_tot[j]) if clusters is not None else nan,
                     "knn_accuracy": per_knn.get(name, nan)})
    per_label = pd.DataFrame(rows, columns=["label", "n_items", "main_cluster", "completeness",
                                            "purity", "knn_accuracy"])
    return AgreementReport(n_items=n_lab, n_unlabelled=n - n_lab, n_labels=len(uniq),
                           n_clusters=len(cids) if clusters is not None else 0, knn_accuracy=knn,
                           chance=chance, per_label=per_label,
                           confusion=table if clusters is not None else table.iloc[:, :0], **scores)


def _knn_predictions(pts: np.ndarray, codes: np.ndarray, k: int) -> np.ndarray:
    """k-NN vote of each item's k nearest other items on the torus (ties: the nearest voter)."""
    from scipy.spatial import cKDTree

    n = pts.shape[0]
    # boxsize=1 makes the tree periodic; points must lie in [0, 1)
    tree = cKDTree(np.minimum(pts, np.nextafter(1.0, 0.0)), boxsize=1.0)
    _, idx = tree.query(pts, k=k + 1)
    idx = np.asarray(idx).reshape(n, k + 1)
    # drop the item itself (normally column 0; exact duplicates may put it elsewhere)
    not_self = idx != np.arange(n)[:, None]
    order = np.argsort(~not_self, axis=1, kind="stable")
    voters = np.take_along_axis(idx, order, axis=1)[:, :k]
    votes = codes[voters]
    counts = np.zeros((n, int(codes.max()) + 1), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), votes.ravel()), 1)
    nearest_wins = counts[np.arange(n), votes[:, 0]] == counts.max(axis=1)
    return np.where(nearest_wins, votes[:, 0], counts.argmax(axis=1))


def _per_label_knn(pts, lab_s, uniq, k):
    """Per-label share of items whose k-NN vote is right (smallest k asked)."""
    if k is None:
        return {}
    _, codes = np.unique(lab_s, return_inverse=True)
    right = _knn_predictions(pts, codes, k) == codes
    return {name: float(right[codes == j].mean()) for j, name in enumerate(uniq)}
