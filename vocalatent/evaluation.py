"""The map-versus-labels report of a run folder (``vocalatent evaluate OUT``).

Wherever items carry labels — the ``label`` column that annotation files give the segments,
any other item variable, or the ``obs`` columns of an AnnData input (they become item
coordinates of the embedding) — :func:`evaluate_run` scores the map and its clusters against
them with :func:`vocalatent.analysis.agreement.label_agreement` and writes
``OUT/agreement.json`` and ``OUT/figures/agreement.png`` (the map coloured by label beside the
map coloured by cluster, and the confusion matrix).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._utils import DataError, atomic_path, logger
from .outdir import output_folder
from .analysis.agreement import AgreementReport, label_agreement, labelled_mask

__all__ = ["evaluate_run"]


def evaluate_run(out, *, labels: str = "label", k=(1, 5), figures: bool = True) -> AgreementReport:
    """Score the map and clusters of the run in ``out`` against item labels.

    Parameters
    ----------
    out : path-like
        A run folder with ``embedding.nc`` (``vocalatent embed`` / ``project`` / ``analyze``).
    labels : str
        The item variable or coordinate holding the labels (default ``"label"``).
    k : int or sequence of int
        Voters of the torus k-NN label accuracy.
    figures : bool
        Also draw ``OUT/figures/agreement.png`` (2-D maps) and ``agreement_confusion.png``.

    Returns
    -------
    AgreementReport
        Also written to ``OUT/agreement.json``.
    """
    import vocalatent.accessor  # noqa: F401  (registers ds.vl)

    from .embedding import read_embedding

    out = Path(out)
    with output_folder(out, command="evaluate"):   # the lock: no analyze rewrites it meanwhile
        path = out / "embedding.nc"
        if not path.is_file():
            raise DataError("no embedding.nc in the run folder (run vocalatent embed first)", path=out)
        ds = read_embedding(path)
        if labels not in ds.variables:
            items = sorted(str(n) for n, v in ds.variables.items() if v.dims == ("item",))
            raise DataError(f"the embedding has no {labels!r} item variable to compare with; "
                            f"item variables: {items}", path=path)
        lab = np.asarray(ds[labels].values, dtype=object)
        if labelled_mask(lab).sum() < 2:
            raise DataError(f"fewer than 2 items carry a {labels!r} (annotation files give the "
                            "segments their labels)", path=path)
        if "cluster" not in ds.variables:
            logger.info("%s has no clusters; finding them with the default rule", path)
            ds = ds.vl.clusters()
        report = label_agreement(ds.vl.embedding, lab, clusters=ds["cluster"].values, k=k)
        payload = {"run": str(out), "labels": labels,
                   "cluster_rule": {k_: v for k_, v in ds["cluster"].attrs.items() if k_ != "long_name"},
                   **report.to_dict()}
        with atomic_path(out / "agreement.json") as tmp:
            tmp.write_text(json.dumps(_jsonable(payload), indent=2))
        if figures:
            _figures(ds, lab, report, out / "figures")
        return report


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _figures(ds, lab, report, fig_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot as vplot

    fig_dir.mkdir(parents=True, exist_ok=True)
    ax = vplot.plot_confusion(report.confusion)
    vplot.save_figure(ax.figure, fig_dir / "agreement_confusion.png")
    if ds.vl.latent_dim == 2:
        fig = vplot.plot_agreement(ds.vl.embedding, lab, ds["cluster"].values, report=report)
        vplot.save_figure(fig, fig_dir / "agreement.png")
    plt.close("all")
