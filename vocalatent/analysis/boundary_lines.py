"""Boundary lines between neighbouring clusters, below the grid's resolution (2-D maps).

The rule
--------
Each cluster's *distance field* ``D_c(x)`` is the shortest path length from the cluster (its
mode and its density core) to ``x`` under a cost per unit of latent length: the decoder's
Jacobian norm ``||J||_F`` (so ``D_c`` approximates the length of the decoded path, in data
units: the pull-back metric), or, without a decoder, ``1 / density`` (paths through empty
space are long). The paths run on the 8-neighbour periodic grid, refined ``refine`` times by
multilinear interpolation of ``log10`` of the cost, and are found by Dijkstra's algorithm
(:func:`scipy.sparse.csgraph.dijkstra`). The mode enters at its exact (sub-cell) position:
it is joined to the four grid nodes around it by edges as long as its distance to each.

The boundary between clusters ``a`` and ``b`` is the zero level set of ``D_a - D_b`` where
``a`` and ``b`` are the two nearest clusters, traced by marching squares (``contourpy``) with
linear interpolation along the cell edges. Because ``D`` depends continuously on the cost
values and on the mode positions, the lines move continuously when the map shifts by a
fraction of a cell (tested), instead of jumping from cell to cell like a mask of border
nodes. When the output changes fast across a ridge of ``||J||``, ``D_a - D_b`` changes sign
at the ridge's crest.

Each line carries its *strength*: ``ridge_log10_jacobian`` (the median of ``log10 ||J||``
along it), ``strength`` (that minus the larger ``log10 ||J||`` at the two modes: decades above
the cluster interiors, the same unit as the pass table of
:func:`~vocalatent.analysis.jacobian.boundaries`) and ``density_ratio`` (the highest density
along the line over the lower mode density: how empty the border is; a density dip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._utils import ParameterError, check_positive
from .density import interpolate_grid
from .torus import as_latent, grid_points

__all__ = ["BoundaryLines", "boundary_lines", "distance_fields"]

_COLUMNS = ["line", "cluster_a", "cluster_b", "n_vertices", "length", "ridge_log10_jacobian",
            "strength", "density_ratio"]


@dataclass(frozen=True)
class BoundaryLines:
    """Sub-grid boundary lines (see the module docstring).

    Attributes
    ----------
    lines : list of np.ndarray [shape=(m_i, 2), range [0, 1]]
        Vertices of each polyline on the unit square (a line reaching an edge of the square
        continues from the opposite edge as another line).
    table : pandas.DataFrame
        One row per line: ``line``, ``cluster_a``, ``cluster_b``, ``n_vertices``, ``length``
        (turns), ``ridge_log10_jacobian``, ``strength`` (decades), ``density_ratio``.
    nearest : np.ndarray [shape=(R, R), int]
        The nearest cluster (smallest ``D``) at each node of the refined grid.
    """

    lines: list
    table: pd.DataFrame
    nearest: np.ndarray

    def vertices(self) -> tuple[np.ndarray, np.ndarray]:
        """All vertices [shape=(V, 2)] and the line each belongs to [shape=(V,)]."""
        if not self.lines:
            return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
        return (np.concatenate(self.lines),
                np.concatenate([np.full(len(v), i, dtype=np.int64) for i, v in enumerate(self.lines)]))


def _refined(grid: np.ndarray, refine: int) -> np.ndarray:
    r = grid.shape[0]
    if refine == 1:
        return grid
    pts = grid_points(r * refine, 2)
    return interpolate_grid(grid, pts).reshape(r * refine, r * refine)


def _graph(cost: np.ndarray, extra: int):
    """8-neighbour periodic grid graph with edge weight length x mean cost (+ ``extra`` free
    node slots at the end, for the clusters' virtual sources)."""
    from scipy.sparse import coo_matrix

    R = cost.shape[0]
    idx = np.arange(R * R).reshape(R, R)
    rows, cols, wts = [], [], []
    for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
        nb = np.roll(np.roll(idx, -di, axis=0), -dj, axis=1)
        ncost = np.roll(np.roll(cost, -di, axis=0), -dj, axis=1)
        w = np.hypot(di, dj) / R * 0.5 * (cost + ncost)
        rows += [idx.ravel(), nb.ravel()]
        cols += [nb.ravel(), idx.ravel()]
        wts += [w.ravel(), w.ravel()]
    n = R * R + extra
    return coo_matrix((np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n)).tocsr(), idx


def distance_fields(cost_grid, *, modes, cores=None, refine: int = 2) -> np.ndarray:
    """Shortest-path distance from each cluster under a cost per unit latent length.

    Parameters
    ----------
    cost_grid : np.ndarray [shape=(r, r), > 0]
        Cost per turn at the grid nodes (e.g. ``||J||_F``).
    modes : np.ndarray [shape=(k, 2), range [0, 1)]
    cores : np.ndarray [shape=(r, r), int], optional
        Cluster core of each node (-1 = none): core nodes are at distance 0 from their
        cluster.
    refine : int
        Refinement of the grid (nodes per cell per axis).

    Returns
    -------
    np.ndarray [shape=(k, r * refine, r * refine)]
        ``D_c`` at the nodes of the refined grid.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    cost = np.asarray(cost_grid, dtype=float)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ParameterError(f"boundary lines need a square 2-D grid; got shape {cost.shape}")
    if not np.all(np.isfinite(cost)) or np.any(cost <= 0):
        raise ParameterError("cost_grid must be finite and positive")
    check_positive("refine", refine, integer=True)
    m = as_latent(modes, name="modes", latent_dim=2)
    k = m.shape[0]
    fine = 10.0 ** _refined(np.log10(cost), refine)
    R = fine.shape[0]
    graph, idx = _graph(fine, k)
    rows, cols, wts = [], [], []
    for c in range(k):
        u = m[c] * R - 0.5
        lo = np.floor(u).astype(int)
        for di in (0, 1):
            for dj in (0, 1):
                node = ((lo[0] + di) % R, (lo[1] + dj) % R)
                dist = np.hypot(u[0] - lo[0] - di, u[1] - lo[1] - dj) / R
                rows.append(R * R + c)
                cols.append(idx[node])
                wts.append(max(dist * fine[node], 1e-300))
    if cores is not None:
        core = np.asarray(cores)
        if core.shape != cost.shape:
            raise ParameterError(f"cores must have the grid's shape {cost.shape}; got {core.shape}")
        core_fine = np.kron(core, np.ones((refine, refine), dtype=core.dtype)) if refine > 1 else core
        sel = np.flatnonzero(core_fine.ravel() >= 0)
        rows += (R * R + core_fine.ravel()[sel]).tolist()
        cols += sel.tolist()
        wts += [1e-300] * sel.size  # zero weights would be dropped as missing edges
    n = graph.shape[0]
    links = coo_matrix((wts, (rows, cols)), shape=(n, n)).tocsr()
    graph = graph + links
    dist = dijkstra(graph, directed=True, indices=np.arange(R * R, R * R + k))
    return dist[:, :R * R].reshape(k, R, R)


def _clip_to_square(line: np.ndarray) -> list:
    """Pieces of a polyline inside [0, 1]^2, with the points where it crosses the edges."""
    inside = np.all((line >= 0.0) & (line <= 1.0), axis=1)
    pieces, cur = [], []

    def crossing(p, q):
        t_best = 1.0
        for ax in range(2):
            for edge in (0.0, 1.0):
                dq = q[ax] - p[ax]
                if dq != 0:
                    t = (edge - p[ax]) / dq
                    if 0.0 <= t <= t_best:
                        pt = p + t * (q - p)
                        if np.all((pt >= -1e-12) & (pt <= 1 + 1e-12)):
                            t_best = t
        return np.clip(p + t_best * (q - p), 0.0, 1.0)

    for i in range(len(line)):
        if inside[i]:
            if not cur and i > 0:
                cur.append(crossing(line[i], line[i - 1]))
            cur.append(line[i])
        elif cur:
            cur.append(crossing(line[i - 1], line[i]))
            pieces.append(np.array(cur))
            cur = []
    if cur:
        pieces.append(np.array(cur))
    return [p for p in pieces if len(p) >= 2]


def boundary_lines(cost_grid, *, modes, cores=None, jacobian_grid=None, density_grid=None,
                   refine: int = 2) -> BoundaryLines:
    """Sub-grid boundary lines between neighbouring clusters of a 2-D map.

    Parameters
    ----------
    cost_grid : np.ndarray [shape=(r, r), > 0]
        Cost per unit latent length: ``||J||_F`` (:func:`~vocalatent.analysis.jacobian.
        jacobian_norm_grid`), or ``1 / density`` without a decoder.
    modes : np.ndarray [shape=(k, 2), range [0, 1)]
        Cluster modes (``ClusterResult.modes``).
    cores : np.ndarray [shape=(r, r), int], optional
        Cluster cores (:func:`~vocalatent.analysis.jacobian.cluster_cores`).
    jacobian_grid : np.ndarray [shape=(r, r)], optional
        ``||J||_F`` for the lines' ridge height (default: ``cost_grid``).
    density_grid : np.ndarray [shape=(r, r)], optional
        The density, for the lines' ``density_ratio``.
    refine : int
        Grid refinement for the paths and the contours (2: half-cell nodes).

    Returns
    -------
    BoundaryLines
    """
    import contourpy

    dist = distance_fields(cost_grid, modes=modes, cores=cores, refine=refine)
    k, R, _ = dist.shape
    m = as_latent(modes, name="modes", latent_dim=2)
    jac = np.asarray(cost_grid if jacobian_grid is None else jacobian_grid, dtype=float)
    logj = np.log10(np.maximum(jac, max(jac.max(), 1e-300) * 1e-12))
    mode_log = interpolate_grid(logj, m)
    dens = None if density_grid is None else np.asarray(density_grid, dtype=float)
    mode_dens = None if dens is None else interpolate_grid(dens, m)
    nearest = np.argmin(dist, axis=0)
    lines, rows = [], []
    if k < 2:
        return BoundaryLines(lines=[], table=pd.DataFrame(columns=_COLUMNS), nearest=nearest)
    order = np.argsort(dist, axis=0)
    first, second = order[0], order[1]
    pad = 2
    coords = (np.arange(-pad, R + pad) + 0.5) / R
    pairs = set()
    for a_, b_ in zip(first.ravel(), second.ravel()):
        pairs.add((min(a_, b_), max(a_, b_)))
    for a, b in sorted(pairs):
        # only where a and b are the two nearest clusters: elsewhere the difference is no border
        two = ((first == a) & (second == b)) | ((first == b) & (second == a))
        if not np.any(two) or not (np.any(nearest == a) and np.any(nearest == b)):
            continue
        phi = np.where(two, dist[a] - dist[b], np.nan)
        phi = np.pad(phi, pad, mode="wrap")
        gen = contourpy.contour_generator(coords, coords, phi.T, name="serial",
                                          line_type=contourpy.LineType.Separate)
        for seg in gen.lines(0.0):
            seg = np.asarray(seg, dtype=float)
            for piece in _clip_to_square(seg):
                if len(piece) < 2 or np.max(np.ptp(piece, axis=0)) < 0.25 / R:
                    continue
                key = tuple(np.round(piece[len(piece) // 2], 6))
                if any(key == tuple(np.round(v[len(v) // 2], 6)) for v in lines):
                    continue
                on = np.mod(piece, 1.0)
                lj = interpolate_grid(logj, on)
                ridge = float(np.median(lj))
                ratio = np.nan
                if dens is not None:
                    low = float(min(mode_dens[a], mode_dens[b]))
                    ratio = float(interpolate_grid(dens, on).max() / low) if low > 0 else np.nan
                rows.append({"line": len(lines), "cluster_a": int(a), "cluster_b": int(b),
                             "n_vertices": int(len(piece)),
                             "length": float(np.sum(np.hypot(*np.diff(piece, axis=0).T))),
                             "ridge_log10_jacobian": ridge,
                             "strength": ridge - float(max(mode_log[a], mode_log[b])),
                             "density_ratio": ratio})
                lines.append(piece)
    return BoundaryLines(lines=lines, table=pd.DataFrame(rows, columns=_COLUMNS), nearest=nearest)
