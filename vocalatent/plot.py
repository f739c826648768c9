"""Figures of latent maps and their analyses (matplotlib).

Every function takes ``ax=None`` (a new figure is made through pyplot, so notebooks show it)
and returns the Axes it drew on, or the Figure for multi-panel figures. Nothing is written to
disk except by :func:`save_figure`, which writes a PNG atomically (and closes the figure).

Conventions: the latent torus [0, 1)^d is drawn as the unit square with axes ``z1``, ``z2``
(its edges wrap); grids are indexed ``grid[i1, i2]`` with ``i1`` along ``z1`` (x axis);
spectrograms are drawn with ``origin="lower"`` (frequency up) in the perceptual ``magma``
colormap; densities in ``viridis``; Jacobian maps in ``cividis`` on a log10 scale.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from ._utils import ParameterError, atomic_path, check_positive
from .analysis.torus import as_latent, circular_mean, grid_points, wrapped_diff

__all__ = [
    "save_figure",
    "plot_latent_map",
    "plot_embedding",
    "plot_ring",
    "plot_density",
    "plot_jacobian",
    "plot_geodesic",
    "plot_training_curves",
    "plot_posterior",
    "plot_3d_slices",
    "plot_confusion",
    "plot_agreement",
]

SPECTROGRAM_CMAP = "magma"
DENSITY_CMAP = "viridis"
JACOBIAN_CMAP = "cividis"
_MISSING_COLOR = "0.6"


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _new_axes(ax, figsize=(5.2, 4.6)):
    if ax is not None:
        return ax
    _, ax = _plt().subplots(figsize=figsize, layout="constrained")
    return ax


def save_figure(fig, path, *, dpi: int = 150, close: bool = True) -> Path:
    """Write a figure to ``path`` as PNG, atomically (temporary file, then rename).

    Parameters
    ----------
    fig : matplotlib.figure.Figure or matplotlib.axes.Axes
        The figure (an Axes is taken as its figure).
    path : str or os.PathLike
        Destination; parent folders are created.
    dpi : int
        Resolution in dots per inch.
    close : bool
        Close the figure afterwards (frees pyplot's memory in long runs).

    Returns
    -------
    pathlib.Path
    """
    check_positive("dpi", dpi, integer=True)
    fig = getattr(fig, "figure", fig)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give a figure normal permissions
    if close:
        _plt().close(fig)
    return path


def _torus_axes(ax, d: int, *, labels=("z1", "z2")):
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{labels[0]} (turns; 0 and 1 meet)")
    ax.set_ylabel(f"{labels[1]} (turns; 0 and 1 meet)")
    ticks = [0, 0.25, 0.5, 0.75, 1]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)


def _point_style(n: int):
    size = float(np.clip(30.0 / np.sqrt(max(n, 1) / 500.0), 1.0, 30.0))
    alpha = float(np.clip(1.2 - 0.2 * np.log10(max(n, 1)), 0.15, 0.9))
    return size, alpha


def _is_categorical(values: np.ndarray) -> bool:
    return values.dtype.kind in "OUSbiu"


def _category_colors(cats):
    import matplotlib as mpl

    n = len(cats)
    base = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    colors = {}
    j = 0
    for c in cats:
        if str(c) in ("-1", "none", "None", ""):
            colors[c] = _MISSING_COLOR
        elif n <= 20:
            colors[c] = base(j % base.N)
            j += 1
        else:
            colors[c] = mpl.colormaps["hsv"](j / n)
            j += 1
    return colors


def _scatter(ax, x, y, color, *, color_label, cmap, s, alpha, legend, max_legend, rng):
    n = x.size
    order = rng.permutation(n)
    size, a = _point_style(n)
    size = size if s is None else s
    a = a if alpha is None else alpha
    if color is None:
        ax.scatter(x[order], y[order], s=size, alpha=a, linewidths=0, color="C0", rasterized=True)
        return None
    values = np.asarray(color)
    if values.shape != (n,):
        raise ParameterError(f"color must have one value per point ({n}); got shape {values.shape}")
    if _is_categorical(values):
        cats = list(dict.fromkeys(sorted(values.tolist(), key=lambda v: (str(v) in ("-1", "none"), str(v)))))
        if values.dtype.kind in "iu":
            cats = sorted(cats, key=lambda v: (v < 0, v))
        colors = _category_colors(cats)
        cols = np.array([colors[v] for v in values.tolist()], dtype=object)
        rgba = np.array([_to_rgba(c) for c in cols])
        ax.scatter(x[order], y[order], s=size, c=rgba[order], alpha=a, linewidths=0, rasterized=True)
        if legend and len(cats) <= max_legend:
            from matplotlib.lines import Line2D

            counts = {c: int(np.sum(values == c)) for c in cats}
            handles = [Line2D([], [], marker="o", linestyle="", color=colors[c],
                              label=f"{'none' if str(c) == '-1' else c} (n={counts[c]})") for c in cats]
            ax.legend(handles=handles, title=color_label, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      borderaxespad=0.0, fontsize="small", title_fontsize="small", frameon=False)
        elif legend:
            ax.text(1.02, 1.0, f"{len(cats)} {color_label} values\n(too many for a legend)",
                    transform=ax.transAxes, va="top", fontsize="small")
        return None
    vals = values.astype(float)
    sc = ax.scatter(x[order], y[order], s=size, c=vals[order], cmap=cmap or "viridis", alpha=a,
                    linewidths=0, rasterized=True)
    cb = ax.figure.colorbar(sc, ax=ax, shrink=0.85)
    cb.solids.set_alpha(1)
    cb.set_label(color_label)
    return cb


def _to_rgba(c):
    import matplotlib.colors as mcolors

    return mcolors.to_rgba(c)


def plot_embedding(z, *, color=None, ax=None, color_label: str | None = None, cmap=None,
                   s: float | None = None, alpha: float | None = None, legend: bool = True,
                   max_legend: int = 20, title: str | None = None):
    """Scatter of the embedding on the torus, coloured by a category or a value.

    Parameters
    ----------
    z : np.ndarray [shape=(n, d), range [0, 1)]
        Embedding (d = 1: a ring, see :func:`plot_ring`; d = 3: three pairwise projections).
    color : np.ndarray [shape=(n,)], optional
        Integers / strings / booleans are categories (legend; -1 or "none" drawn grey);
        floats are continuous (colorbar).
    ax : matplotlib Axes, optional
        For d = 3, ignored unless a sequence of three Axes.
    color_label : str, optional
        Legend title / colorbar label (e.g. "cluster", "spread (1 - R)").
    cmap : str, optional
        Colormap for continuous colours (default viridis).
    s, alpha : float, optional
        Marker area and opacity; default scales with n (30 pt^2 / 0.8 for a few hundred
        points down to 2 pt^2 / 0.2 for 100k).
    legend : bool
    max_legend : int
        Categories beyond this get no legend entries.
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes, or matplotlib.figure.Figure for d = 3
    """
    pts = as_latent(z)
    n, d = pts.shape
    label = color_label or ("" if color is None else "colour")
    rng = np.random.default_rng(0)
    if d == 1:
        return plot_ring(pts[:, 0], color=color, ax=ax, color_label=label, title=title)
    if d == 2:
        ax = _new_axes(ax, figsize=(6.4, 4.8))
        _scatter(ax, pts[:, 0], pts[:, 1], color, color_label=label, cmap=cmap, s=s, alpha=alpha,
                 legend=legend, max_legend=max_legend, rng=rng)
        _torus_axes(ax, 2)
        ax.set_title(title or f"Embedding of {n} items" + (f" by {label}" if color is not None else ""))
        return ax
    if ax is None:
        fig, axes = _plt().subplots(1, 3, figsize=(13, 4.4), layout="constrained")
    else:
        axes = list(ax)
        fig = axes[0].figure
    for k, (i, j) in enumerate(itertools.combinations(range(3), 2)):
        _scatter(axes[k], pts[:, i], pts[:, j], color, color_label=label, cmap=cmap, s=s, alpha=alpha,
                 legend=legend and k == 2, max_legend=max_legend, rng=rng)
        _torus_axes(axes[k], 2, labels=(f"z{i + 1}", f"z{j + 1}"))
    fig.suptitle(title or f"Embedding of {n} items (3-D latent, pairwise projections)")
    return fig


def plot_ring(z, *, color=None, ax=None, color_label: str = "", density=None, title: str | None = None):
    """A 1-D latent drawn as points on a circle (the latent is periodic).

    Parameters
    ----------
    z : np.ndarray [shape=(n,), range [0, 1)]
        Positions in turns (0 at the top, increasing clockwise).
    color : np.ndarray [shape=(n,)], optional
        As in :func:`plot_embedding`.
    ax : matplotlib Axes, optional
    color_label : str
    density : np.ndarray [shape=(r,)], optional
        A density on the grid ``(i + 0.5) / r`` (e.g. the KDE), drawn as a radial profile
        outside the ring (mean 1 = the uniform density).
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    zz = as_latent(z)[:, 0]
    n = zz.size
    ax = _new_axes(ax, figsize=(6.2, 5.0))
    rng = np.random.default_rng(0)
    theta = np.pi / 2 - 2 * np.pi * zz
    radius = 1.0 + rng.uniform(-0.06, 0.06, n)
    _scatter(ax, radius * np.cos(theta), radius * np.sin(theta), color, color_label=color_label,
             cmap=None, s=None, alpha=None, legend=True, max_legend=20, rng=rng)
    circle = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(circle), np.sin(circle), color="0.8", lw=0.8, zorder=0)
    if density is not None:
        dens = np.asarray(density, dtype=float)
        grid = (np.arange(dens.size) + 0.5) / dens.size
        th = np.pi / 2 - 2 * np.pi * np.r_[grid, grid[:1]]
        rr = 1.2 + 0.45 * np.r_[dens, dens[:1]] / dens.max()
        ax.plot(rr * np.cos(th), rr * np.sin(th), color="k", lw=1.0)
        ax.text(0.0, 0.0, "outer curve:\ndensity (KDE)", ha="center", va="center", fontsize="small",
                color="0.3")
    for t in (0.0, 0.25, 0.5, 0.75):
        a = np.pi / 2 - 2 * np.pi * t
        ax.text(1.85 * np.cos(a), 1.85 * np.sin(a), f"z1={t:g}", ha="center", va="center", fontsize="small")
    ax.set_xlim(-2.05, 2.05)
    ax.set_ylim(-2.05, 2.05)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"Ring embedding of {n} items (1-D latent, clockwise from top)")
    return ax


def _mosaic(tiles: np.ndarray, n_rows: int, n_cols: int, gap: int) -> np.ndarray:
    """tiles [n_cols, n_rows, F, T] (x index first) -> image with NaN gaps, origin lower."""
    _, _, F, T = tiles.shape
    img = np.full((n_rows * (F + gap) - gap, n_cols * (T + gap) - gap), np.nan)
    for i in range(n_cols):
        for j in range(n_rows):
            img[j * (F + gap): j * (F + gap) + F, i * (T + gap): i * (T + gap) + T] = tiles[i, j]
    return img


def _decode_tiles(f, z, output_shape, device):
    from .analysis._decoder import decode

    x = decode(f, z, device=device)
    F, T = output_shape
    if x.shape[1] != F * T:
        raise ParameterError(f"output_shape {output_shape} does not match the decoder's output size {x.shape[1]}")
    return x.reshape(-1, F, T)


def plot_latent_map(f, output_shape, *, n_tiles: int = 8, latent_dim: int | None = None, ax=None,
                    n_slices: int = 3, cmap: str = SPECTROGRAM_CMAP, device=None,
                    value_label: str = "decoded value (model units)", title: str | None = None):
    """Decoded outputs (spectrograms) tiled over the latent torus.

    Parameters
    ----------
    f : callable
        Decoder ``[n, d] -> [n, F*T]``; ``latent_dim`` is read from ``f.latent_dim`` if present.
    output_shape : tuple (F, T)
        Shape of one decoded image (frequency bins, time bins).
    n_tiles : int
        Tiles per latent axis, at the cell centres ``(i + 0.5) / n_tiles``.
    latent_dim : int, optional
    ax : matplotlib Axes, optional
        d = 3: a sequence of ``n_slices`` Axes.
    n_slices : int
        d = 3: slices along z3 (each a z1-z2 mosaic).
    cmap : str
    device : optional
        Where to decode (default: the decoder's device).
    value_label : str
        Colorbar label.
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes (d = 1, 2) or matplotlib.figure.Figure (d = 3)
    """
    check_positive("n_tiles", n_tiles, integer=True)
    d = latent_dim if latent_dim is not None else getattr(f, "latent_dim", None)
    if d not in (1, 2, 3):
        raise ParameterError(f"latent_dim must be 1, 2 or 3 (pass latent_dim=); got {d!r}")
    if output_shape is None or len(output_shape) != 2:
        raise ParameterError(f"output_shape must be (F, T); got {output_shape!r}")
    F, T = (int(v) for v in output_shape)
    gap = max(1, min(F, T) // 12)
    centres = (np.arange(n_tiles) + 0.5) / n_tiles
    if d == 1:
        tiles = _decode_tiles(f, centres[:, None], (F, T), device)
        img = _mosaic(tiles[:, None], 1, n_tiles, gap)
        vmin, vmax = np.nanpercentile(img, [1, 99.5])
        ax = _new_axes(ax, figsize=(min(16, 1.2 * n_tiles + 1.5), 2.6))
        im = ax.imshow(img, origin="lower", cmap=_with_bad(cmap), extent=(0, 1, 0, 1), aspect="auto",
                       vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xlabel("z1 (turns; 0 and 1 meet)")
        ax.set_ylabel("frequency →")
        ax.figure.colorbar(im, ax=ax, pad=0.01).set_label(value_label)
        ax.set_title(title or "Latent map: decoded outputs along the ring")
        return ax
    if d == 2:
        z = grid_points(n_tiles, 2)
        tiles = _decode_tiles(f, z, (F, T), device).reshape(n_tiles, n_tiles, F, T)
        ax = _new_axes(ax, figsize=(7.0, 6.2))
        _draw_mosaic(ax, tiles, gap, cmap, value_label)
        ax.set_title(title or "Latent map: decoded outputs tiled over the torus\n"
                              "(each tile: frequency up, time right)")
        return ax
    check_positive("n_slices", n_slices, integer=True)
    if ax is None:
        fig, axes = _plt().subplots(1, n_slices, figsize=(4.6 * n_slices, 4.6), layout="constrained")
        axes = np.atleast_1d(axes)
    else:
        axes = list(ax)
        fig = axes[0].figure
    z3 = (np.arange(n_slices) + 0.5) / n_slices
    pts2 = grid_points(n_tiles, 2)
    all_tiles = [_decode_tiles(f, np.c_[pts2, np.full(len(pts2), s)], (F, T), device) for s in z3]
    vmin, vmax = np.nanpercentile(np.concatenate(all_tiles), [1, 99.5])
    for k, s in enumerate(z3):
        _draw_mosaic(axes[k], all_tiles[k].reshape(n_tiles, n_tiles, F, T), gap, cmap, value_label,
                     vmin=vmin, vmax=vmax, colorbar=k == n_slices - 1)
        axes[k].set_title(f"z3 = {s:.2f}")
    fig.suptitle(title or "Latent map: decoded outputs, slices of the 3-D torus")
    return fig


def _with_bad(cmap):
    import matplotlib as mpl

    cm = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    return cm.with_extremes(bad="white")


def _draw_mosaic(ax, tiles, gap, cmap, value_label, *, vmin=None, vmax=None, colorbar=True):
    n = tiles.shape[0]
    img = _mosaic(tiles, n, n, gap)
    if vmin is None:
        vmin, vmax = np.nanpercentile(img, [1, 99.5])
    im = ax.imshow(img, origin="lower", cmap=_with_bad(cmap), extent=(0, 1, 0, 1), vmin=vmin,
                   vmax=vmax, interpolation="nearest")
    _torus_axes(ax, 2)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.85).set_label(value_label)


def _grid_image(ax, grid, *, cmap, label, norm=None, vmin=None, vmax=None, colorbar=True):
    im = ax.imshow(np.asarray(grid).T, origin="lower", extent=(0, 1, 0, 1), cmap=cmap, norm=norm,
                   vmin=vmin, vmax=vmax, interpolation="nearest")
    _torus_axes(ax, 2)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.85).set_label(label)
    return im


def _mark_modes(ax, modes, *, color="white"):
    if modes is None:
        return
    m = as_latent(modes)
    if m.shape[1] == 1:
        for k, v in enumerate(m[:, 0]):
            ax.axvline(v, color="C3", lw=0.8, ls=":")
            ax.annotate(str(k), (v, 1.0), xycoords=("data", "axes fraction"), ha="center",
                        va="bottom", fontsize="small", color="C3")
        return
    ax.scatter(m[:, 0], m[:, 1], marker="x", s=40, color=color, linewidths=1.5, zorder=5)
    for k, (x, y) in enumerate(m[:, :2]):
        ax.annotate(str(k), (x, y), xytext=(4, 4), textcoords="offset points", color=color,
                    fontsize="small", fontweight="bold", zorder=6)


def plot_density(density, *, ax=None, modes=None, points=None, cmap: str = DENSITY_CMAP,
                 log: bool = False, title: str | None = None):
    """A density on the periodic grid (KDE or binned aggregate posterior).

    Parameters
    ----------
    density : np.ndarray [shape=(r,)*d], d in 1..3
        Density per unit torus volume (mean 1 = the uniform density).
    ax : matplotlib Axes, optional
    modes : np.ndarray [shape=(k, d)], optional
        Cluster modes, marked with their index.
    points : np.ndarray [shape=(n,) or (n, 1)], optional
        d = 1: the items, drawn as a rug.
    cmap : str
    log : bool
        Log colour scale (from 1e-3 of the maximum).
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes (d = 1, 2) or matplotlib.figure.Figure (d = 3)
    """
    import matplotlib.colors as mcolors

    dens = np.asarray(density, dtype=float)
    label = "density (× uniform)"
    if dens.ndim == 1:
        ax = _new_axes(ax, figsize=(6.4, 3.2))
        x = (np.arange(dens.size) + 0.5) / dens.size
        ax.plot(x, dens, color="C0")
        ax.axhline(1.0, color="0.6", ls="--", lw=0.8, label="uniform")
        if points is not None:
            p = as_latent(points)[:, 0]
            ax.plot(p, np.full(p.size, -0.02 * dens.max()), "|", color="k", alpha=0.3, ms=6)
        _mark_modes(ax, modes)
        ax.set_xlim(0, 1)
        ax.set_xlabel("z1 (turns; 0 and 1 meet)")
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.legend(loc="upper right", fontsize="small", frameon=False)
        ax.set_title(title or "Density of the embedding")
        return ax
    if dens.ndim == 2:
        ax = _new_axes(ax)
        norm = mcolors.LogNorm(vmin=max(dens.max() * 1e-3, 1e-12), vmax=dens.max()) if log else None
        _grid_image(ax, np.maximum(dens, 1e-12) if log else dens, cmap=cmap, label=label, norm=norm)
        _mark_modes(ax, modes)
        ax.set_title(title or "Density of the embedding")
        return ax
    if dens.ndim == 3:
        return plot_3d_slices(dens, axes=ax, label=label, cmap=cmap, log=log,
                              title=title or "Density of the embedding (slices along z3)")
    raise ParameterError(f"density must be a 1-, 2- or 3-D grid; got shape {dens.shape}")


def plot_jacobian(jacobian, *, boundaries=None, modes=None, ax=None, cmap: str = JACOBIAN_CMAP,
                  title: str | None = None, lines=None, line_strength=None):
    """The Jacobian map ``||df/dz||_F`` on a log10 scale, with boundaries and modes.

    Parameters
    ----------
    jacobian : np.ndarray [shape=(r,)*d], d in 1..3
        ``||df/dz||_F`` on the periodic grid (data units per turn).
    boundaries : np.ndarray [shape=(r,)*d, bool], optional
        Ridge mask (``Boundaries.ridge_mask``), overlaid in red.
    modes : np.ndarray [shape=(k, d)], optional
        Cluster modes, marked with their index.
    ax : matplotlib Axes, optional
    cmap : str
    title : str, optional
    lines : list of np.ndarray [shape=(m_i, 2)], optional
        Sub-grid boundary lines (``BoundaryLines.lines``; d = 2), drawn as smooth red lines.
    line_strength : np.ndarray [shape=(len(lines),)], optional
        Strength of each line (decades); sets its width (0.6 to 3 pt).

    Returns
    -------
    matplotlib.axes.Axes (d = 1, 2) or matplotlib.figure.Figure (d = 3)
    """
    jac = np.asarray(jacobian, dtype=float)
    logj = np.log10(np.maximum(jac, max(jac.max(), 1e-300) * 1e-12))
    label = "log10 ||∂f/∂z||  (data units per turn)"
    if jac.ndim == 1:
        ax = _new_axes(ax, figsize=(6.4, 3.2))
        x = (np.arange(jac.size) + 0.5) / jac.size
        ax.plot(x, logj, color="k")
        if boundaries is not None:
            for v in x[np.asarray(boundaries, dtype=bool)]:
                ax.axvline(v, color="C3", alpha=0.4, lw=1)
        _mark_modes(ax, modes)
        ax.set_xlim(0, 1)
        ax.set_xlabel("z1 (turns; 0 and 1 meet)")
        ax.set_ylabel(label)
        ax.set_title(title or "Jacobian map (red: boundaries)")
        return ax
    if jac.ndim == 2:
        ax = _new_axes(ax)
        _grid_image(ax, logj, cmap=cmap, label=label)
        if lines is not None:
            _draw_lines(ax, lines, line_strength)
        elif boundaries is not None:
            _overlay_mask(ax, boundaries)
        _mark_modes(ax, modes)
        ax.set_title(title or "Jacobian map: where the decoded output changes fast\n"
                              + ("(red: boundaries, wider = stronger; ×: modes)" if lines is not None
                                 else "(red: boundaries between clusters; ×: modes)"))
        return ax
    if jac.ndim == 3:
        return plot_3d_slices(logj, axes=ax, label=label, cmap=cmap,
                              title=title or "Jacobian map (slices along z3)")
    raise ParameterError(f"jacobian must be a 1-, 2- or 3-D grid; got shape {jac.shape}")


def _draw_lines(ax, lines, strength):
    """Boundary polylines on the unit square, width by strength."""
    n = len(lines)
    if n == 0:
        return
    st = np.full(n, np.nan) if strength is None else np.asarray(strength, dtype=float)
    if st.shape != (n,):
        raise ParameterError(f"line_strength must have one value per line ({n}); got shape {st.shape}")
    ok = np.isfinite(st)
    lo, hi = (np.nanmin(st), np.nanmax(st)) if ok.any() else (0.0, 1.0)
    for line, s in zip(lines, st):
        w = 1.6 if not np.isfinite(s) or hi <= lo else 0.6 + 2.4 * (s - lo) / (hi - lo)
        pts = np.asarray(line, dtype=float)
        ax.plot(pts[:, 0], pts[:, 1], color="red", lw=w, alpha=0.9, solid_capstyle="round")


def _overlay_mask(ax, mask):
    import matplotlib.colors as mcolors

    m = np.asarray(mask, dtype=bool)
    overlay = np.ma.masked_where(~m.T, np.ones(m.T.shape))
    ax.imshow(overlay, origin="lower", extent=(0, 1, 0, 1), cmap=mcolors.ListedColormap(["red"]),
              alpha=0.75, interpolation="nearest", vmin=0, vmax=1)


def _draw_wrapped_polyline(ax, route, **kwargs):
    """Draw a polyline on the unit square, continuing across the wrap-around edges."""
    pts = np.atleast_2d(route)
    if pts.shape[1] == 1:
        pts = np.c_[pts, np.full(len(pts), 0.5)]
    pts = pts[:, :2]
    steps = wrapped_diff(pts[1:], pts[:-1])
    unwrapped = np.concatenate([pts[:1], pts[:1] + np.cumsum(steps, axis=0)])
    first = True
    for ox, oy in itertools.product((-2, -1, 0, 1, 2), repeat=2):
        shifted = unwrapped + [ox, oy]
        lo, hi = shifted.min(0), shifted.max(0)
        if np.any(hi < 0) or np.any(lo > 1):
            continue
        kw = dict(kwargs)
        if not first:
            kw.pop("label", None)
        ax.plot(shifted[:, 0], shifted[:, 1], **kw)
        first = False


def plot_geodesic(result, *, output_shape, jacobian=None, ax=None, strip_ax=None,
                  cmap: str = SPECTROGRAM_CMAP, value_label: str = "decoded value (model units)"):
    """A geodesic on the Jacobian map, with its decoded frames as a strip below.

    Parameters
    ----------
    result : GeodesicResult
        From :func:`vocalatent.analysis.geodesic.geodesic`.
    output_shape : tuple (F, T)
        Shape of one decoded frame.
    jacobian : np.ndarray [shape=(r, r)], optional
        ``||df/dz||_F`` grid drawn underneath (log10) for a 2-D latent.
    ax, strip_ax : matplotlib Axes, optional
        Map and frame-strip axes (both or neither).
    cmap : str
        Colormap of the frames.
    value_label : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    F, T = (int(v) for v in output_shape)
    frames = np.asarray(result.decoded)
    k = frames.shape[0]
    if frames.shape[1] != F * T:
        raise ParameterError(f"output_shape {output_shape} does not match the decoded size {frames.shape[1]}")
    if (ax is None) != (strip_ax is None):
        raise ParameterError("pass both ax and strip_ax, or neither")
    if ax is None:
        fig = _plt().figure(figsize=(max(7.0, 0.9 * k + 1), 8.6), layout="constrained")
        gs = fig.add_gridspec(2, 1, height_ratios=[3.2, 1.0])
        ax, strip_ax = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    fig = ax.figure
    d = result.path.shape[1]
    if jacobian is not None and np.ndim(jacobian) == 2 and d == 2:
        jac = np.asarray(jacobian, dtype=float)
        _grid_image(ax, np.log10(np.maximum(jac, jac.max() * 1e-12)), cmap=JACOBIAN_CMAP,
                    label="log10 ||∂f/∂z||  (data units per turn)")
    else:
        _torus_axes(ax, 2)
    straight = np.stack([result.path[0], result.path[0] + wrapped_diff(result.path[-1], result.path[0])])
    import matplotlib.patheffects as pe

    _draw_wrapped_polyline(ax, straight, color="white", ls="--", lw=1.4,
                           path_effects=[pe.withStroke(linewidth=2.8, foreground="black")],
                           label=f"straight path (length {result.straight_length:.3g})")
    _draw_wrapped_polyline(ax, result.route, color="C3", lw=2.2, label=f"geodesic (length {result.length:.3g})")
    p2 = result.path if d >= 2 else np.c_[result.path, np.full(k, 0.5)]
    ax.scatter(p2[:, 0], p2[:, 1], s=22, color="C3", edgecolors="white", zorder=5)
    last = None
    for i, (x, y) in enumerate(p2[:, :2]):
        if last is not None and np.hypot(*wrapped_diff(np.array([x, y]), last)) < 0.04 and i < k - 1:
            continue  # keep frame numbers legible where frames bunch up (fast change)
        last = np.array([x, y])
        ax.annotate(str(i + 1), (x, y), xytext=(4, -10), textcoords="offset points", color="white",
                    fontsize="x-small", fontweight="bold", zorder=6,
                    path_effects=[pe.withStroke(linewidth=2, foreground="black")])
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize="small", ncol=2, frameon=False)
    if d == 1:
        ax.set_ylabel("")
        ax.set_yticks([])
    ax.set_title("Geodesic under the decoder's metric"
                 + (" on the Jacobian map" if jacobian is not None and d == 2 else "")
                 + f"\n(length {result.length:.3g} vs straight {result.straight_length:.3g}, data units)")
    gap = max(1, min(F, T) // 12)
    img = _mosaic(frames.reshape(k, 1, F, T), 1, k, gap)
    vmin, vmax = np.nanpercentile(img, [1, 99.5])
    im = strip_ax.imshow(img, origin="lower", cmap=_with_bad(cmap), extent=(0.5, k + 0.5, 0, 1),
                         vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    strip_ax.set_xticks(np.arange(1, k + 1))
    strip_ax.set_yticks([])
    strip_ax.set_xlabel("frame along the geodesic (equal steps in data space)")
    strip_ax.set_ylabel("frequency →")
    fig.colorbar(im, ax=strip_ax, pad=0.01).set_label(value_label, fontsize="small")
    return fig


def plot_training_curves(history, *, ax=None, title: str | None = None):
    """Training and validation log-likelihood per epoch.

    Parameters
    ----------
    history : dict or pandas.DataFrame
        Columns ``epoch``, ``train_log_likelihood`` and optionally ``val_log_likelihood`` (nats per item).
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes
    """
    import pandas as pd

    df = pd.DataFrame(history)
    missing = [c for c in ("epoch", "train_log_likelihood") if c not in df.columns]
    if missing:
        raise ParameterError(f"history is missing column(s) {missing}; it has {list(df.columns)}")
    if df.empty:
        raise ParameterError("history is empty")
    ax = _new_axes(ax, figsize=(6.4, 4.0))
    ax.plot(df["epoch"], df["train_log_likelihood"], marker="o", ms=3, label="train")
    if "val_log_likelihood" in df.columns and df["val_log_likelihood"].notna().any():
        ax.plot(df["epoch"], df["val_log_likelihood"], marker="s", ms=3, label="validation")
        best = df.loc[df["val_log_likelihood"].idxmax()]
        ax.axvline(best["epoch"], color="0.6", ls=":", lw=1)
        ax.annotate(f"best validation\n{best['val_log_likelihood']:.1f} (epoch {int(best['epoch'])})",
                    (best["epoch"], best["val_log_likelihood"]), xytext=(-10, -30), textcoords="offset points",
                    ha="right", fontsize="small", arrowprops={"arrowstyle": "-", "color": "0.5"})
    ax.set_xlabel("epoch")
    ax.set_ylabel("log-likelihood (nats per item)")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    ax.set_title(title or "Training curves (higher is better)")
    return ax


def plot_posterior(weights, lattice_z, *, ax=None, title: str | None = None, resolution: int = 48,
                   mark_summary: bool = True):
    """One item's posterior over the lattice, as a heat map relative to the uniform prior.

    Parameters
    ----------
    weights : np.ndarray [shape=(m,), >= 0]
        The item's posterior weights on the lattice points (normalised here).
    lattice_z : np.ndarray [shape=(m, d), range [0, 1)]
        The (shifted) lattice points.
    ax : matplotlib Axes, optional
    title : str, optional
    resolution : int
        d = 3: grid for the (z1, z2) marginal.
    mark_summary : bool
        Mark the circular mean (the embedding) and the MAP lattice point.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.colors as mcolors

    w = np.asarray(weights, dtype=float).ravel()
    lz = as_latent(lattice_z, name="lattice_z")
    m, d = lz.shape
    if w.shape != (m,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ParameterError(f"weights must be {m} finite non-negative values, not all zero; "
                             f"got shape {w.shape}")
    w = w / w.sum()
    rel = w * m  # posterior density relative to the uniform prior
    mean = circular_mean(lz, weights=w)
    cmap = "inferno"
    label = "posterior density (× prior)"
    if d == 1:
        ax = _new_axes(ax, figsize=(6.4, 3.2))
        order = np.argsort(lz[:, 0])
        ax.plot(lz[order, 0], rel[order], color="C0")
        if mark_summary:
            ax.axvline(mean[0], color="C3", ls="--", label=f"circular mean {mean[0]:.3f}")
            ax.legend(frameon=False, fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_xlabel("z1 (turns; 0 and 1 meet)")
        ax.set_ylabel(label)
        ax.set_title(title or "One item's posterior on the lattice")
        return ax
    ax = _new_axes(ax)
    vmax = rel.max()
    norm = mcolors.LogNorm(vmin=vmax * 1e-4, vmax=vmax)
    if d == 2:
        size = float(np.clip(4.0e4 / m, 1.0, 60.0))
        order = np.argsort(rel)
        sc = ax.scatter(lz[order, 0], lz[order, 1], c=np.maximum(rel[order], vmax * 1e-4), s=size,
                        marker="s", cmap=cmap, norm=norm, linewidths=0, rasterized=True)
        ax.set_facecolor("black")
        ax.figure.colorbar(sc, ax=ax, shrink=0.85).set_label(label)
        _torus_axes(ax, 2)
    else:
        idx = np.floor(lz[:, :2] * resolution).astype(int) % resolution
        marg = np.zeros((resolution, resolution))
        np.add.at(marg, (idx[:, 0], idx[:, 1]), w)
        marg *= resolution ** 2
        _grid_image(ax, np.maximum(marg, vmax * 1e-4), cmap=cmap, label=label + ", (z1, z2) marginal",
                    norm=mcolors.LogNorm(vmin=max(marg.max() * 1e-4, 1e-12), vmax=max(marg.max(), 1e-11)))
    if not mark_summary:
        ax.set_title(title or f"Posterior on the lattice (m = {m})")
        return ax
    map_pt = lz[np.argmax(w)]
    ax.scatter([mean[0]], [mean[1]], marker="+", s=120, color="cyan", linewidths=2,
               label=f"circular mean ({mean[0]:.2f}, {mean[1]:.2f})", zorder=5)
    ax.scatter([map_pt[0]], [map_pt[1]], marker="o", s=60, facecolors="none", edgecolors="lime",
               linewidths=1.5, label="MAP lattice point", zorder=5)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize="small", ncol=2, frameon=False)
    ax.set_title(title or f"One item's posterior on the lattice (m = {m})")
    return ax


def plot_3d_slices(grid, *, n_slices: int = 4, axes=None, label: str = "value", cmap: str = DENSITY_CMAP,
                   log: bool = False, title: str | None = None):
    """Slices along z3 of a 3-D grid (density, log-Jacobian, ...), on a shared colour scale.

    Parameters
    ----------
    grid : np.ndarray [shape=(r, r, r)]
        Values at the nodes ``(i + 0.5) / r``; axis order (z1, z2, z3).
    n_slices : int
        Number of z3 slices, evenly spaced (the nearest grid planes are shown).
    axes : sequence of matplotlib Axes, optional
        ``n_slices`` axes to draw on.
    label : str
        Colorbar label.
    cmap : str
    log : bool
        Log colour scale.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.colors as mcolors

    g = np.asarray(grid, dtype=float)
    if g.ndim != 3:
        raise ParameterError(f"grid must be 3-D; got shape {g.shape}")
    check_positive("n_slices", n_slices, integer=True)
    r = g.shape[2]
    planes = np.unique(np.floor((np.arange(n_slices) + 0.5) / n_slices * r).astype(int))
    if axes is None:
        fig, axes = _plt().subplots(1, len(planes), figsize=(3.9 * len(planes) + 1.2, 4.0),
                                    layout="constrained")
        axes = np.atleast_1d(axes)
    else:
        axes = list(axes)
        if len(axes) < len(planes):
            raise ParameterError(f"need {len(planes)} axes for {len(planes)} slices; got {len(axes)}")
    fig = axes[0].figure
    vmin, vmax = float(g.min()), float(g.max())
    norm = mcolors.LogNorm(vmin=max(vmax * 1e-3, 1e-12), vmax=vmax) if log else None
    im = None
    for ax, p in zip(axes, planes):
        sl = np.maximum(g[:, :, p], 1e-12) if log else g[:, :, p]
        im = _grid_image(ax, sl, cmap=cmap, label=label, norm=norm,
                         vmin=None if log else vmin, vmax=None if log else vmax, colorbar=False)
        ax.set_title(f"z3 = {(p + 0.5) / r:.2f}")
    fig.colorbar(im, ax=list(axes), shrink=0.85).set_label(label)
    if title:
        fig.suptitle(title)
    return fig



def plot_confusion(confusion, *, ax=None, normalise: bool = True, title: str | None = None,
                   cmap: str = "Blues"):
    """Confusion matrix of labels (rows) against clusters (columns).

    Parameters
    ----------
    confusion : pandas.DataFrame
        Items per label and cluster (``AgreementReport.confusion``).
    ax : matplotlib Axes, optional
    normalise : bool
        Colour by the share of each label's items (rows sum to 1); the counts are written in
        the cells either way (up to 30 x 30 cells).
    title : str, optional
    cmap : str

    Returns
    -------
    matplotlib.axes.Axes
    """
    counts = np.asarray(confusion.to_numpy(), dtype=float)
    if counts.ndim != 2 or counts.size == 0:
        raise ParameterError(f"confusion must be a non-empty labels x clusters table; got shape {counts.shape}")
    n_lab, n_cl = counts.shape
    ax = _new_axes(ax, figsize=(max(4.0, 0.45 * n_cl + 2.5), max(3.5, 0.4 * n_lab + 1.8)))
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0) if normalise else counts
    im = ax.imshow(share, cmap=cmap, vmin=0, vmax=1 if normalise else None, aspect="auto",
                   interpolation="nearest")
    cb = ax.figure.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label("share of the label's items" if normalise else "items")
    if n_lab <= 30 and n_cl <= 30:
        for i in range(n_lab):
            for j in range(n_cl):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize="x-small",
                            color="white" if share[i, j] > 0.6 * np.nanmax(share) else "black")
    ax.set_xticks(range(n_cl))
    ax.set_xticklabels(["none" if str(c) == "-1" else str(c) for c in confusion.columns], fontsize="small")
    ax.set_yticks(range(n_lab))
    ax.set_yticklabels([str(v) for v in confusion.index], fontsize="small")
    ax.set_xlabel("cluster")
    ax.set_ylabel("label")
    ax.set_title(title or "Labels against clusters")
    return ax


def plot_agreement(z, labels, clusters, *, report=None, title: str | None = None):
    """The map coloured by label beside the map coloured by cluster, and the confusion matrix.

    Parameters
    ----------
    z : np.ndarray [shape=(n, 2), range [0, 1)]
        Embedding of the items (2-D; for d = 1 or 3 only the first two axes / a ring are drawn
        by :func:`plot_embedding` on separate figures, so this figure needs d = 2).
    labels : array-like [shape=(n,)]
        Labels; unlabelled items ("" / None) are drawn grey.
    clusters : array-like [shape=(n,), int]
    report : AgreementReport, optional
        Its scores go into the title and its confusion table into the third panel (computed
        from ``labels`` and ``clusters`` when not given).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .analysis.agreement import label_agreement, labelled_mask

    pts = as_latent(z)
    if pts.shape[1] != 2:
        raise ParameterError(f"plot_agreement draws 2-D maps; got a {pts.shape[1]}-D embedding")
    lab = np.asarray(labels, dtype=object)
    shown = np.where(labelled_mask(lab), lab, "none").astype(str)
    if report is None:
        report = label_agreement(pts, lab, clusters=clusters)
    fig, axes = _plt().subplots(1, 3, figsize=(19, 5.4), layout="constrained",
                                gridspec_kw={"width_ratios": [1, 1, 0.9]})
    plot_embedding(pts, color=shown, ax=axes[0], color_label="label", title="Map coloured by label")
    plot_embedding(pts, color=np.asarray(clusters, dtype=np.int64), ax=axes[1], color_label="cluster",
                   title="Map coloured by cluster")
    plot_confusion(report.confusion, ax=axes[2])
    knn = ", ".join(f"{k}-NN {v:.2f}" for k, v in report.knn_accuracy.items())
    fig.suptitle(title or f"Map versus labels ({report.n_items} labelled items): {knn}; "
                          f"clusters ARI {report.ari:.2f}, NMI {report.nmi:.2f}, V {report.v_measure:.2f}")
    return fig
