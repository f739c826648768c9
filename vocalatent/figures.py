"""The figures of a run: the standard set every domain gets (embedding, density, latent map,
Jacobian, training curves, geodesic, posterior of one item) and each domain's own (marker genes
and decoded expression for cells; tuning curves and the latent trace for neurons).

Every figure is drawn on its own: one that fails is logged and counted (``failed``), and the
others are still written.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import xarray as xr

from ._utils import DataError, ParameterError, check_positive
from .prepare.base import Prepared

logger = logging.getLogger(__name__)

__all__ = ["decoded_gene_figure", "domain_figures", "eval_lattice_size", "make_figures",
           "marker_figure", "tuning_curve_figure"]


def eval_lattice_size(model, *, cap: int = 6765) -> int:
    """Points of the evaluation lattice the job uses for a model's posteriors: the model's
    own evaluation lattice size, at most ``cap``."""
    return min(int(model.eval_lattice_size()), int(cap))


def make_figures(ds: xr.Dataset, model, fig_dir, cfg: Mapping | None = None, *,
                 example_item: np.ndarray | None = None, failed: list | None = None) -> list[Path]:
    """Write the standard figures (PNG) into ``fig_dir``; returns their paths.

    Parameters
    ----------
    ds : xarray.Dataset
        The analysed embedding.
    model : QLVM or None
        Without a model, only the figures of the embedding itself are drawn.
    fig_dir : path-like
    cfg : mapping, optional
        The run's configuration (``[analysis] geodesic``).
    example_item : np.ndarray [shape=(1, ...)], optional
        One item, drawn as a posterior heat map.
    failed : list, optional
        Receives ``"name: error"`` for every figure that failed (each is also logged).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import vocalatent.accessor  # noqa: F401
    from . import plot as vplot

    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    d = int(ds.sizes["latent"])

    def save(fig, name):
        written.append(vplot.save_figure(fig if fig is not None else plt.gcf(), fig_dir / name))

    def panel(size):
        """(fig, ax) for a latent-space figure; in 3-D the plot functions draw their own
        projections or slices, so they get ax=None and the figure they made is saved."""
        return (None, None) if d == 3 else plt.subplots(figsize=size)

    def attempt(name, fn):
        try:
            fn()
        except Exception as exc:  # one broken figure must not lose the others
            logger.warning("figure %s failed: %s: %s", name, type(exc).__name__, exc)
            if failed is not None:
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
            plt.close("all")

    def latent_figure(filename, draw, size=(6.5, 5.5)):
        """One latent-space figure: ``draw(ax)`` on a fresh panel, saved as ``filename``."""
        def run():
            fig, ax = panel(size)
            draw(ax)
            save(fig, filename)

        attempt(filename, run)

    for color in ("cluster", "label", "source"):
        values = ds[color].values if color in ds.variables else None
        if values is None or (color == "label" and not any(str(v) for v in values)):
            continue
        latent_figure(f"embedding_{color}.png", lambda ax, c=color: ds.vl.plot_embedding(color=c, ax=ax))
    latent_figure("embedding_spread.png", lambda ax: vplot.plot_embedding(
        ds["embedding"].values, color=ds["spread"].values.mean(1), ax=ax,
        color_label="posterior spread (1 − resultant length)",
        title="Embedding coloured by posterior spread"))
    if "aggregate_posterior" in ds and d == 2:
        latent_figure("aggregate_posterior.png", lambda ax: ds.vl.plot_aggregate_posterior(ax=ax))
    if "density" in ds:
        latent_figure("density.png", lambda ax: ds.vl.plot_density(ax=ax))
    if model is None:
        return written
    if len(tuple(model.output_shape_)) == 2:  # images only (spectrograms)
        latent_figure("latent_map.png", lambda ax: ds.vl.plot_latent_map(model, ax=ax), size=(9, 8))
    if "jacobian_norm" in ds:
        latent_figure("jacobian.png", lambda ax: ds.vl.plot_jacobian(ax=ax))

    def training():
        fig, ax = plt.subplots(figsize=(6.5, 4))
        vplot.plot_training_curves(model.history_, ax=ax)
        save(fig, "training_curves.png")

    attempt("training_curves", training)

    def geodesic_fig():
        n_clusters = int(ds["cluster"].max()) + 1 if "cluster" in ds else 0
        if n_clusters < 2 or d != 2:
            return
        sizes = np.bincount(ds["cluster"].values[ds["cluster"].values >= 0])
        a, b = (int(i) for i in np.argsort(sizes)[::-1][:2])
        res = ds.vl.geodesic_between_clusters(model, a, b)
        fig = plt.figure(figsize=(10, 10), layout="constrained")
        grid = fig.add_gridspec(2, 1, height_ratios=[3, 1.6])
        vplot.plot_geodesic(res, output_shape=model.output_shape_, ax=fig.add_subplot(grid[0]),
                            strip_ax=fig.add_subplot(grid[1]),
                            jacobian=ds["jacobian_norm"].values if "jacobian_norm" in ds else None)
        save(fig, "geodesic.png")

    if (cfg or {}).get("analysis", {}).get("geodesic", True):
        attempt("geodesic", geodesic_fig)

    def posterior_fig():
        w, pts = model.posterior(example_item, n_lattice=eval_lattice_size(model))
        fig, ax = plt.subplots(figsize=(6, 5))
        vplot.plot_posterior(w[0], pts, ax=ax, title="Lattice posterior of item 0")
        save(fig, "posterior_item0.png")

    if example_item is not None:
        attempt("posterior", posterior_fig)
    return written


def _chosen_genes(prepared: Prepared, requested, n: int) -> tuple[list[str], list[str]]:
    """(genes to show observed, genes to show decoded); requested ones first, else top HVGs."""
    cm = prepared.extra["matrix"]
    all_genes = [str(g) for g in cm.gene_names]
    modelled = [str(g) for g in prepared.features]
    if requested:
        observed = [g for g in requested if g in set(all_genes)]
        missing = [g for g in requested if g not in set(all_genes)]
        if missing:
            logger.info("marker genes not in the matrix: %s", ", ".join(missing))
        decoded = [g for g in observed if g in set(modelled)]
        if observed:
            return observed, decoded
    rank = prepared.extra.get("hvg_rank")
    if rank is None:   # all genes modelled: rank by the variance of their proportions
        X = prepared.X
        rank = np.argsort(np.argsort(-(X / np.maximum(X.sum(1, keepdims=True), 1)).var(axis=0)))
    top = [modelled[i] for i in np.argsort(rank, kind="stable")[:n]]
    return top, top


def _normalised_expression(prepared: Prepared, genes) -> np.ndarray:
    """log1p(counts per 10k) of ``genes`` [shape=(n_cells, len(genes))]."""
    cm = prepared.extra["matrix"]
    idx = {str(g): i for i, g in enumerate(cm.gene_names)}
    cols = [idx[g] for g in genes]
    lib = np.asarray(cm.X.sum(axis=1), dtype=np.float64).ravel()
    sub = cm.X[:, cols]
    sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
    return np.log1p(sub / np.maximum(lib, 1)[:, None] * 1e4)


def _panel_grid(n: int, ncols: int = 4):
    import matplotlib.pyplot as plt

    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.1 * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()[:n]


def marker_figure(ds: xr.Dataset, prepared: Prepared, genes, *, title: str | None = None):
    """Embedding coloured by the observed expression of each gene, one panel per gene.

    Parameters
    ----------
    ds : xarray.Dataset
        The embedding (``embedding`` [item, latent]); items in the order of ``prepared``.
    prepared : Prepared
        A single-cell preparation (``extra["matrix"]`` holds all genes).
    genes : sequence of str
        Gene names present in the matrix.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Colour: log1p(counts per 10,000) of the cell; d = 1 as a ring, d >= 2 the z1-z2 plane.
    """
    from . import plot as vplot

    genes = list(genes)
    if not genes:
        raise ParameterError("no genes to draw")
    expr = _normalised_expression(prepared, genes)
    emb = ds["embedding"].values
    fig, axes = _panel_grid(len(genes))
    order = None
    for k, (g, ax) in enumerate(zip(genes, axes)):
        order = np.argsort(expr[:, k], kind="stable")          # expressing cells on top
        z = emb[order] if emb.shape[1] <= 2 else emb[order, :2]
        vplot.plot_embedding(z, color=expr[order, k], ax=ax, color_label="log1p CP10k",
                             cmap="magma_r", title=g)
        ax.set_xlabel("")
        ax.set_ylabel("")
    fig.suptitle(title or f"QLVM map of {emb.shape[0]} cells coloured by marker expression")
    return fig


def decoded_gene_figure(model, genes, features, *, resolution: int = 64, library_size: float = 1e4,
                        title: str | None = None):
    """Decoded expression of ``genes`` over the latent torus (what the model predicts where).

    Parameters
    ----------
    model : QLVM
        Fitted with a count likelihood whose mean is the proportion vector (multinomial,
        poisson_offset, negbin).
    genes : sequence of str
        Modelled gene names.
    features : np.ndarray [shape=(D,)]
        The model's feature names, in its column order.
    resolution : int > 0
        Grid cells per latent axis.
    library_size : float > 0
        Decoded proportions are shown as log1p(proportion x library_size).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .analysis.torus import grid_centres, grid_points

    genes = [g for g in genes if g in set(map(str, features))]
    if not genes:
        raise ParameterError("none of the genes is modelled (pick genes among the selected ones)")
    idx = {str(g): i for i, g in enumerate(features)}
    cols = [idx[g] for g in genes]
    d = int(model.latent_dim)
    fig, axes = _panel_grid(len(genes))
    if d == 1:
        z = grid_centres(resolution * 4)[:, None]
        mu = model.decode(z).reshape(len(z), -1)[:, cols]
        for k, (g, ax) in enumerate(zip(genes, axes)):
            ax.plot(z[:, 0], np.log1p(mu[:, k] * library_size), color="C3")
            ax.set_xlim(0, 1)
            ax.set_xlabel("z1 (turns)")
            ax.set_title(g)
        axes[0].set_ylabel(f"log1p(decoded x {library_size:g})")
    else:
        pts = grid_points(resolution, 2)
        if d > 2:
            pts = np.c_[pts, np.full((len(pts), d - 2), 0.5)]
        mu = model.decode(pts).reshape(len(pts), -1)[:, cols]
        for k, (g, ax) in enumerate(zip(genes, axes)):
            img = np.log1p(mu[:, k] * library_size).reshape(resolution, resolution)
            im = ax.imshow(img.T, origin="lower", extent=(0, 1, 0, 1), cmap="magma_r", aspect="equal")
            fig.colorbar(im, ax=ax, shrink=0.8)
            ax.set_title(g)
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
    fig.suptitle(title or ("Decoded expression over the latent " + ("ring" if d == 1 else "torus")
                           + f" (log1p of proportion x {library_size:g})"
                           + (" at z3 = 0.5" if d > 2 else "")))
    return fig


def tuning_curve_figure(model, features, *, bin_s: float | None, n_units: int = 16,
                        resolution: int = 128, title: str | None = None):
    """Decoded rate of each unit against the latent: the tuning curves the model learned.

    d = 1: a heat map of every unit's curve (rows sorted by preferred latent, each scaled to its
    maximum) beside the curves of ``n_units`` units in Hz; d >= 2: rate maps of ``n_units`` units
    over the z1-z2 torus (z3 = 0.5).

    Parameters
    ----------
    model : QLVM
        Fitted with the Poisson likelihood (decoded mean = expected count per bin).
    features : np.ndarray [shape=(n_units,)]
        Unit names.
    bin_s : float or None
        Bin width in seconds (rates in Hz); None: counts per bin.
    n_units : int > 0
    resolution : int > 0

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    from .analysis.torus import grid_centres, grid_points

    check_positive("n_units", n_units, integer=True)
    d = int(model.latent_dim)
    scale = 1.0 / bin_s if bin_s else 1.0
    unit = "Hz" if bin_s else "counts / bin"
    names = [str(f) for f in features]
    D = len(names)
    show = np.linspace(0, D - 1, min(n_units, D)).round().astype(int)
    if d == 1:
        z = grid_centres(resolution)
        rate = model.decode(z[:, None]).reshape(resolution, -1) * scale    # [r, D]
        order = np.argsort(z[np.argmax(rate, axis=0)], kind="stable")
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
        norm = rate / np.maximum(rate.max(axis=0, keepdims=True), 1e-12)
        im = ax0.imshow(norm[:, order].T, aspect="auto", origin="lower", extent=(0, 1, 0, D),
                        cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax0).set_label("rate / unit's maximum")
        ax0.set_xlabel("z1 (turns; 0 and 1 meet)")
        ax0.set_ylabel("unit (sorted by preferred z1)")
        ax0.set_title(f"Decoded tuning of all {D} units")
        for k in show:
            ax1.plot(z, rate[:, k], lw=1.2, label=names[k])
        ax1.set_xlim(0, 1)
        ax1.set_xlabel("z1 (turns)")
        ax1.set_ylabel(f"decoded rate ({unit})")
        ax1.set_title(f"{len(show)} units")
        if len(show) <= 16:
            ax1.legend(fontsize="x-small", ncols=2, loc="upper right")
        fig.suptitle(title or "Tuning curves over the latent ring")
        return fig
    pts = grid_points(min(resolution, 64), 2)
    r = min(resolution, 64)
    if d > 2:
        pts = np.c_[pts, np.full((len(pts), d - 2), 0.5)]
    rate = model.decode(pts).reshape(len(pts), -1) * scale
    fig, axes = _panel_grid(len(show))
    for k, ax in zip(show, axes):
        im = ax.imshow(rate[:, k].reshape(r, r).T, origin="lower", extent=(0, 1, 0, 1),
                       cmap="viridis", aspect="equal")
        fig.colorbar(im, ax=ax, shrink=0.8).set_label(unit)
        ax.set_title(names[k])
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
    fig.suptitle(title or "Decoded rate maps over the latent torus (z1 across, z2 up)"
                 + (" at z3 = 0.5" if d > 2 else ""))
    return fig


def _latent_trace_figure(ds: xr.Dataset, *, max_points: int = 5000):
    import matplotlib.pyplot as plt

    t = ds["time_s"].values
    emb = ds["embedding"].values
    d = emb.shape[1]
    step = max(1, len(t) // max_points)
    fig, axes = plt.subplots(d, 1, figsize=(11, 2.2 * d + 0.6), squeeze=False, sharex=True,
                             layout="constrained")
    for k in range(d):
        ax = axes[k, 0]
        ax.plot(t[::step], emb[::step, k], ".", ms=2, color="C0")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"z{k + 1} (turns)")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Latent position of each time bin")
    return fig


def domain_figures(ds: xr.Dataset, model, prepared: Prepared, fig_dir, cfg: Mapping, *,
                   failed: list | None = None) -> list[Path]:
    """Write the domain's own figures into ``fig_dir`` (each failure is logged and appended
    to ``failed``, not raised); none for syllables.

    Single cells: ``markers.png`` (observed expression on the map) and ``decoded_genes.png``;
    neural: ``tuning_curves.png`` and ``latent_trace.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot as vplot

    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def attempt(name, make):
        try:
            written.append(vplot.save_figure(make(), fig_dir / name))
        except (ParameterError, DataError, ValueError, RuntimeError) as exc:
            logger.warning("figure %s failed: %s: %s", name, type(exc).__name__, exc)
            if failed is not None:
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
            plt.close("all")

    if prepared.domain == "vocal":
        return written
    if prepared.domain == "single_cell":
        p = prepared.extra["params"]
        observed, decoded = _chosen_genes(prepared, p.marker_genes, p.n_marker_panels)
        if observed:
            attempt("markers.png", lambda: marker_figure(ds, prepared, observed))
        if decoded:
            attempt("decoded_genes.png", lambda: decoded_gene_figure(model, decoded, prepared.features))
    else:
        p = prepared.extra["params"]
        attempt("tuning_curves.png", lambda: tuning_curve_figure(
            model, prepared.features, bin_s=prepared.extra.get("bin_s"), n_units=p.n_tuning_units))
        if "time_s" in ds.coords:
            attempt("latent_trace.png", lambda: _latent_trace_figure(ds))
    return written
