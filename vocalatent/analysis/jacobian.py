"""The Jacobian map of a decoder on the latent torus, and boundaries between clusters.

``J(z) = df/dz`` is the ``D x d`` Jacobian of the decoded mean; ``||J(z)||_F`` (data units per
turn) is large where the decoded output changes fast with the latent position. Its log map shows
ridges that separate syllable types.

Boundaries (the rule used here)
-------------------------------
A *seeded watershed of the log-Jacobian map*: the density modes (one per cluster) are the seeds
and every grid node joins the mode it can reach along the path whose highest ``log10 ||J||`` is
lowest (a minimax / priority-flood over face neighbours of the periodic grid). Region borders
lie on the ridges of the log-Jacobian map between modes; the *ridge mask* marks the nodes on
a border. For each pair of clusters:

* ``pass_log10_jacobian``: the lowest possible highest value of ``log10 ||J||`` on any path
  between the two modes (the bottleneck of the region graph whose edge weights are the lowest
  border crossings);
* ``strength`` = pass minus the larger ``log10 ||J||`` at the two modes, in decades: how much
  faster the output changes at the easiest crossing than inside the clusters;
* ``straight_max_log10_jacobian``: the maximum along the straight (shortest wrapped) segment;
* ``adjacent``: the two regions share a border;
* ``pass_density_ratio`` (with a density): density at the pass node over the lower mode density.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._utils import ParameterError, check_positive, logger, progress
from ._decoder import check_output, decoder_device
from .density import default_resolution, interpolate_grid
from .torus import as_latent, grid_points, wrap, wrapped_diff

__all__ = ["jacobian_norm_grid", "Boundaries", "boundaries", "boundary_strength"]


def jacobian_norm_grid(f, *, latent_dim: int, resolution: int | None = None,
                       chunk_size: int = 512, device=None, dtype=None) -> np.ndarray:
    """Frobenius norm of the decoder's Jacobian on the regular periodic grid.

    Computed with ``torch.func.vmap(torch.func.jacfwd(f_single))`` (forward mode: d Jacobian
    columns per point), chunk by chunk, so at most ``chunk_size * D * d`` Jacobian entries exist
    at once.

    Parameters
    ----------
    f : callable
        Decoder ``torch.Tensor [n, d] -> torch.Tensor [n, D]`` (rows decoded independently).
    latent_dim : int
        d.
    resolution : int, optional
        Grid nodes per axis (default 512, 128, 48 for d = 1, 2, 3). Cost: ``resolution**d``
        forward-mode decoder evaluations.
    chunk_size : int
        Grid points per vmapped call.
    device : str or torch.device, optional
        Where to evaluate (default: the decoder's own device, else CPU; ``"auto"`` = CUDA if
        present).
    dtype : torch.dtype, optional
        Input dtype (default float32; use float64 with a float64 decoder for references).

    Returns
    -------
    np.ndarray [shape=(resolution,)*d, float64, >= 0]
        ``||df/dz||_F`` at the nodes ``(i + 0.5) / resolution`` (data units per turn).
    """
    import torch
    from torch.func import jacfwd, vmap

    check_positive("latent_dim", latent_dim, integer=True)
    check_positive("chunk_size", chunk_size, integer=True)
    res = default_resolution(latent_dim) if resolution is None else resolution
    check_positive("resolution", res, integer=True)
    dev = decoder_device(f, device)
    dtype = torch.float32 if dtype is None else dtype

    def single(z1):
        return f(z1[None])[0]

    jac = vmap(jacfwd(single))
    pts = grid_points(res, latent_dim)
    out = np.empty(pts.shape[0])
    starts = range(0, pts.shape[0], chunk_size)
    with torch.no_grad():
        for start in progress(starts, desc="Jacobian map", total=len(starts)):
            zc = torch.as_tensor(pts[start:start + chunk_size], dtype=dtype, device=dev)
            if start == 0:
                check_output(f(zc[:2]), min(2, zc.shape[0]))
            j = jac(zc)
            out[start:start + zc.shape[0]] = torch.linalg.vector_norm(
                j.reshape(j.shape[0], -1), dim=1).double().cpu().numpy()
    return out.reshape((res,) * latent_dim)


def _face_offsets(d):
    for axis in range(d):
        for step in (-1, 1):
            off = [0] * d
            off[axis] = step
            yield tuple(off)


def _priority_flood(cost: np.ndarray, seeds: list, labels: list | None = None) -> np.ndarray:
    """Minimax flood of a periodic grid from seed nodes (index tuples); returns seed labels
    (``labels[i]`` for seed i, default i)."""
    shape = cost.shape
    d = cost.ndim
    label = np.full(shape, -1, dtype=np.int64)
    level = np.full(shape, np.inf)
    heap = []
    counter = itertools.count()
    for k, s in enumerate(seeds):
        if label[s] >= 0:
            continue
        label[s] = k if labels is None else labels[k]
        level[s] = cost[s]
        heapq.heappush(heap, (cost[s], next(counter), s))
    offsets = list(_face_offsets(d))
    while heap:
        c, _, node = heapq.heappop(heap)
        lab = label[node]
        for off in offsets:
            nb = tuple((node[a] + off[a]) % shape[a] for a in range(d))
            if label[nb] >= 0:
                continue
            label[nb] = lab
            lv = max(c, cost[nb])
            level[nb] = lv
            heapq.heappush(heap, (lv, next(counter), nb))
    return label


@dataclass(frozen=True)
class Boundaries:
    """Boundaries between clusters on the log-Jacobian map (see the module docstring).

    Attributes
    ----------
    ridge_mask : np.ndarray [shape=(r,)*d, bool]
        Nodes on a border between two modes' watershed regions.
    regions : np.ndarray [shape=(r,)*d, int, range 0..k-1]
        The mode (cluster) whose watershed region holds each node.
    strength : pandas.DataFrame
        One row per pair of clusters: ``cluster_a``, ``cluster_b``, ``strength`` (decades),
        ``pass_log10_jacobian``, ``straight_max_log10_jacobian``, ``adjacent``,
        ``pass_density_ratio``.
    """

    ridge_mask: np.ndarray
    regions: np.ndarray
    strength: pd.DataFrame


def boundaries(jac_grid, *, modes, density_grid=None, cores=None) -> Boundaries:
    """Ridges of the log-Jacobian map between density modes, and per-pair boundary strengths.

    Parameters
    ----------
    jac_grid : np.ndarray [shape=(r,)*d, >= 0]
        ``||J||_F`` on the periodic grid (:func:`jacobian_norm_grid`).
    modes : np.ndarray [shape=(k, d), range [0, 1)]
        Cluster modes (``ClusterResult.modes``); row i is cluster i.
    density_grid : np.ndarray [shape=(r,)*d], optional
        The density on the same grid, for the ``pass_density_ratio`` column.
    cores : np.ndarray [shape=(r,)*d, int], optional
        Each cluster's core (label i, -1 elsewhere), flooded from as a whole instead of from the
        mode's node alone, so that a mode sitting on a local bump of the Jacobian map does not
        get a boundary drawn around itself (see :func:`cluster_cores`).

    Returns
    -------
    Boundaries
    """
    jac = np.asarray(jac_grid, dtype=float)
    d, r = jac.ndim, jac.shape[0]
    if any(s != r for s in jac.shape) or r < 3:
        raise ParameterError(f"jac_grid must be a grid with the same resolution (>= 3) on every axis; "
                             f"got shape {jac.shape}")
    if not np.all(np.isfinite(jac)) or np.any(jac < 0):
        raise ParameterError("jac_grid must be finite and non-negative")
    mode_arr = as_latent(modes, name="modes", latent_dim=d)
    k = mode_arr.shape[0]
    if k < 1:
        raise ParameterError("need at least one mode")
    dens = None
    if density_grid is not None:
        dens = np.asarray(density_grid, dtype=float)
        if dens.shape != jac.shape:
            raise ParameterError(f"density_grid must have the Jacobian grid's shape {jac.shape}; "
                                 f"got {dens.shape}")
    floor = max(jac.max(), 1e-300) * 1e-12
    logj = np.log10(np.maximum(jac, floor))
    seeds = [tuple(int(v) for v in np.floor(m * r).astype(int) % r) for m in mode_arr]
    if len(set(seeds)) < len(seeds):
        logger.warning("two modes share a grid node at resolution %d; raise the resolution", r)
    seed_nodes, seed_labels = list(seeds), list(range(k))
    if cores is not None:
        cores = np.asarray(cores)
        if cores.shape != jac.shape:
            raise ParameterError(f"cores must have the Jacobian grid's shape {jac.shape}; got {cores.shape}")
        for node in np.argwhere(cores >= 0):
            seed_nodes.append(tuple(int(v) for v in node))
            seed_labels.append(int(cores[tuple(node)]))
    regions = _priority_flood(logj, seed_nodes, seed_labels)

    ridge = np.zeros(jac.shape, dtype=bool)
    direct = np.full((k, k), np.inf)
    pass_node = {}
    for axis in range(d):
        nb_reg = np.roll(regions, -1, axis=axis)
        nb_log = np.roll(logj, -1, axis=axis)
        diff = regions != nb_reg
        ridge |= diff | np.roll(diff, 1, axis=axis)
        if not np.any(diff):
            continue
        a, b = regions[diff], nb_reg[diff]
        hi = np.maximum(logj[diff], nb_log[diff])
        here = np.argwhere(diff)
        take_nb = nb_log[diff] > logj[diff]
        for i in range(a.size):
            p, q = (a[i], b[i]) if a[i] < b[i] else (b[i], a[i])
            if hi[i] < direct[p, q]:
                direct[p, q] = direct[q, p] = hi[i]
                node = here[i].copy()
                if take_nb[i]:
                    node[axis] = (node[axis] + 1) % r
                pass_node[(p, q)] = tuple(node)
    bottleneck = direct.copy()
    np.fill_diagonal(bottleneck, -np.inf)
    for m in range(k):
        bottleneck = np.minimum(bottleneck, np.maximum(bottleneck[:, m:m + 1], bottleneck[m:m + 1, :]))

    mode_log = np.array([logj[s] for s in seeds])
    mode_dens = None if dens is None else np.array([dens[s] for s in seeds])
    rows = []
    for p, q in itertools.combinations(range(k), 2):
        seg = _segment(mode_arr[p], mode_arr[q], r)
        straight = float(interpolate_grid(logj, seg).max())
        ratio = np.nan
        if mode_dens is not None and (p, q) in pass_node:
            low = min(mode_dens[p], mode_dens[q])
            ratio = float(dens[pass_node[(p, q)]] / low) if low > 0 else np.nan
        rows.append({
            "cluster_a": p, "cluster_b": q,
            "strength": float(bottleneck[p, q] - max(mode_log[p], mode_log[q])),
            "pass_log10_jacobian": float(bottleneck[p, q]),
            "straight_max_log10_jacobian": straight,
            "adjacent": bool(np.isfinite(direct[p, q])),
            "pass_density_ratio": ratio,
        })
    table = pd.DataFrame(rows, columns=["cluster_a", "cluster_b", "strength", "pass_log10_jacobian",
                                        "straight_max_log10_jacobian", "adjacent",
                                        "pass_density_ratio"])
    return Boundaries(ridge_mask=ridge, regions=regions, strength=table)


def cluster_cores(cluster_grid, density_grid, *, fraction: float = 0.5) -> np.ndarray:
    """Cores of the clusters' density basins: nodes of basin i whose density is at least
    ``fraction`` of the basin's peak (label i), -1 elsewhere."""
    basins = np.asarray(cluster_grid)
    dens = np.asarray(density_grid, dtype=float)
    cores = np.full(basins.shape, -1, dtype=np.int64)
    for c in np.unique(basins[basins >= 0]):
        inside = basins == c
        peak = dens[inside].max()
        cores[inside & (dens >= fraction * peak)] = c
    return cores


def _segment(a: np.ndarray, b: np.ndarray, resolution: int) -> np.ndarray:
    """Points along the shortest wrapped segment a -> b, 4 per grid spacing."""
    delta = wrapped_diff(b, a)
    n = max(2, int(np.ceil(4 * resolution * np.sqrt(np.sum(delta ** 2)))) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return wrap(a[None, :] + t * delta[None, :])


def boundary_strength(jac_grid, *, modes, density_grid=None) -> pd.DataFrame:
    """Per-pair boundary strength table (``boundaries(...).strength``).

    Parameters
    ----------
    jac_grid : np.ndarray [shape=(r,)*d]
    modes : np.ndarray [shape=(k, d)]
    density_grid : np.ndarray [shape=(r,)*d], optional

    Returns
    -------
    pandas.DataFrame
        Columns ``cluster_a``, ``cluster_b``, ``strength`` (decades of ``||J||_F`` climbed at
        the easiest crossing), ``pass_log10_jacobian``, ``straight_max_log10_jacobian``,
        ``adjacent``, ``pass_density_ratio``.
    """
    return boundaries(jac_grid, modes=modes, density_grid=density_grid).strength
