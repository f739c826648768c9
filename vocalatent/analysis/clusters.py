"""Clusters on the latent torus by mode seeking on the periodic grid KDE.

Algorithm (a grid version of mean shift with topological merging, cf. ToMATo):

1. Estimate the density on the periodic grid (:func:`~vocalatent.analysis.density.periodic_kde`).
2. Steepest ascent on the grid: every node points to its highest neighbour among the ``3^d - 1``
   wrap-around neighbours (or to itself at a local maximum); following the pointers gives each
   node's basin of attraction. This is mean shift restricted to the grid.
3. Merge basins. For every pair of adjacent basins the *saddle* is the highest "pass"
   ``min(f(a), f(b))`` over neighbouring node pairs across their border. Processing saddles
   from high to low, the group with the lower peak ``p`` is merged into its neighbour unless
   its dip to the pass is real. With ``method="significance"`` (default) real means beyond
   sampling noise: the dip ``p - saddle`` at the peak exceeds ``significance`` noise sds
   (with ``excess_mass=True``, also when the group's excess mass above the pass, summed over
   all its nodes, does: a broad group whose highest node is one small bump of a plateau).
   With ``method="persistence"`` it means the dip ``(p - saddle) / p`` is at least
   ``min_persistence`` and ``p`` at least ``min_relative_height`` times the highest peak.
4. Each item takes the label of its nearest grid node; with a lattice posterior it takes the
   cluster that holds most of its posterior mass instead (posterior-weighted assignment).
5. With the model's decoder and the items' data (:func:`merge_by_decoder`), clusters whose
   data do not separate along the decoder's direction between them (medians fewer than
   ``separation`` sds of the tighter cluster apart) are joined: one type that a fitted map
   laid out as several lumps (``linkage``: closest pair first with the merged clusters tested
   again, or along every close pair). Pairs a little further apart (up to
   ``continuum_separation``) are joined too when their data make *one* mode along that
   direction (:func:`projection_dip`): the pieces of one type's continuum of variation.
   The decoder also speaks in step 3: a dip that sampling noise could have made (fewer than
   ``significance`` sds) but that is at least ``decoder_dip`` sds deep stays a border when the
   two groups' items are clearly two types along the decoder's direction: medians at least
   ``continuum_separation`` sds apart with a near-empty gap between them (pooled density
   below ``continuum_dip / 2`` of the lower peak). Without it a map that lays two types out
   as broad lumps with a thinly populated gap between them gets one cluster for both, which
   step 5 cannot undo.

Labels are 0..k-1 ordered by the number of items (largest first); -1 marks items below
``noise_density`` when that option is used.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from .._utils import DataError, ParameterError, check_option, check_positive
from .density import (GridKDE, RegionMassNoise, interpolate_grid, kde_sampling_sd, periodic_kde,
                      wrapped_gaussian)
from .torus import as_latent, wrap

__all__ = ["DEFAULT_CONTINUUM_DIP", "DEFAULT_CONTINUUM_SEPARATION", "DEFAULT_DECODER_DIP",
           "DEFAULT_SEPARATION", "METHOD_DEFAULTS",
           "ClusterResult", "decoder_separation", "find_clusters", "grid_basins", "merge_by_decoder",
           "nearest_node", "projection_dip", "separation_index"]

#: Default :func:`separation_index` (along the decoder's direction) below which
#: :func:`merge_by_decoder` joins two clusters: medians fewer than 6 sds of the tighter apart.
DEFAULT_SEPARATION = 6.0
#: Pairs up to this :func:`separation_index` are joined by :func:`merge_by_decoder` when their
#: data make one mode along the decoder's direction (:func:`projection_dip` above
#: ``DEFAULT_CONTINUUM_DIP``): pieces of one type's continuum. Both chosen on fitted maps
#: (docs/analysis.md, "One mode or two: the continuum test").
DEFAULT_CONTINUUM_SEPARATION = 10.0
DEFAULT_CONTINUUM_DIP = 0.5
#: With the decoder: a density dip of at least this many sampling-noise sds (and below the
#: significance threshold) keeps two groups apart when the decoder separates their items as
#: two types (docs/analysis.md, "Borderline dips: the decoder decides").
DEFAULT_DECODER_DIP = 1.5

logger = logging.getLogger(__name__)

#: Defaults of each ``find_clusters`` method (``None`` arguments take these).
METHOD_DEFAULTS = {
    "significance": {"significance": 2.5, "min_persistence": 0.0, "min_relative_height": 0.0},
    "persistence": {"significance": 0.0, "min_persistence": 0.3, "min_relative_height": 0.05},
}


def _neighbour_offsets(d: int, *, include_zero: bool = False, half: bool = False):
    offs = [o for o in itertools.product((-1, 0, 1), repeat=d) if include_zero or any(o)]
    if half:
        offs = [o for o in offs if any(o) and o[next(i for i, v in enumerate(o) if v)] > 0]
    return offs


def nearest_node(z, resolution: int) -> tuple:
    """Index tuple of the grid node nearest to each point (periodic).

    Parameters
    ----------
    z : np.ndarray [shape=(n, d), range [0, 1)]
    resolution : int

    Returns
    -------
    tuple of d np.ndarray [shape=(n,), int]
    """
    pts = as_latent(z)
    idx = np.floor(pts * resolution).astype(np.int64) % resolution
    return tuple(idx[:, k] for k in range(pts.shape[1]))


def grid_basins(density) -> tuple[np.ndarray, np.ndarray]:
    """Basins of attraction of steepest ascent on a periodic grid.

    Parameters
    ----------
    density : np.ndarray [shape=(r,)*d]

    Returns
    -------
    basin : np.ndarray [shape=(r,)*d, int]
        Flat index of the local maximum each node climbs to.
    peaks : np.ndarray [shape=(k,), int]
        Flat indices of the local maxima.
    """
    f = np.asarray(density, dtype=float)
    d = f.ndim
    flat_idx = np.arange(f.size).reshape(f.shape)
    best_val = f.copy()
    best_ptr = flat_idx.copy()
    for off in _neighbour_offsets(d):
        shift = tuple(-o for o in off)
        val = np.roll(f, shift, axis=tuple(range(d)))
        ptr = np.roll(flat_idx, shift, axis=tuple(range(d)))
        better = val > best_val
        best_val = np.where(better, val, best_val)
        best_ptr = np.where(better, ptr, best_ptr)
    ptr = best_ptr.ravel()
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    return ptr.reshape(f.shape), np.unique(ptr)


def _saddles(f: np.ndarray, basin: np.ndarray, sd: np.ndarray | None = None) -> dict:
    """Highest pass ``min(f(a), f(b))`` over neighbouring node pairs across each pair of
    basins: ``{(basin_a, basin_b): (pass, sd at the pass node)}`` (sd 0 without ``sd``)."""
    d = f.ndim
    sd = np.zeros_like(f) if sd is None else sd
    best: dict = {}
    for off in _neighbour_offsets(d, half=True):
        shift = tuple(-o for o in off)
        nb = np.roll(basin, shift, axis=tuple(range(d)))
        nf = np.roll(f, shift, axis=tuple(range(d)))
        nsd = np.roll(sd, shift, axis=tuple(range(d)))
        diff = basin != nb
        if not np.any(diff):
            continue
        a, b = basin[diff], nb[diff]
        here_low = f[diff] <= nf[diff]
        passes = np.where(here_low, f[diff], nf[diff])
        pass_sd = np.where(here_low, sd[diff], nsd[diff])
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        key = lo * f.size + hi
        order = np.lexsort((-passes, key))
        key, passes, pass_sd = key[order], passes[order], pass_sd[order]
        first = np.r_[True, key[1:] != key[:-1]]
        for k, p, q in zip(key[first], passes[first], pass_sd[first]):
            pair = (int(k // f.size), int(k % f.size))
            if p > best.get(pair, (-np.inf, 0.0))[0]:
                best[pair] = (float(p), float(q))
    return best


class _ExcessMass:
    """The excess-mass dip of a group of basins above a pass, in sampling-noise sds.

    The excess mass is ``E = sum over the group's nodes above s of (f - s) / N``: the items
    the group holds above the pass level. Its noise is that of the density's mass in those
    nodes (:class:`~vocalatent.analysis.density.RegionMassNoise`, exact in the binned
    approximation) and of the pass level itself, which moves every node at once:
    ``sd(E) = sqrt(sd(mass)^2 + (sd(s) * area)^2)``."""

    def __init__(self, f: np.ndarray, basin: np.ndarray, noise: RegionMassNoise):
        self._f, self._basin, self._noise = f, basin, noise

    def __call__(self, members, level: float, sd_level: float) -> float:
        region = np.isin(self._basin, members) & (self._f > level)
        if not region.any():
            return 0.0
        mass = float(np.sum(self._f[region] - level)) / region.size
        area = float(region.sum()) / region.size
        sd = float(np.hypot(self._noise(region), sd_level * area))
        return mass / sd if sd > 0 else np.inf


class _DecoderSplit:
    """Whether the decoder says, clearly, that two groups of basins hold two types.

    The items of each group (those whose nearest grid node lies in its basins) are projected
    with their data onto the direction between the groups' mean decoded images, and
    ``two_types(values, groups)`` judges the two sets of values (:func:`find_clusters` asks for
    a :func:`separation_index` of at least ``continuum_separation`` *and* a pooled density
    that falls below half of ``continuum_dip`` between the medians, :func:`projection_dip`).
    Every item is decoded once and projected once onto each basin's mean decoded image
    (``n x basins`` values, the data read in chunks); a group's projection is the
    count-weighted mean of its basins' columns, so no test reads the data again. Groups of
    fewer than ``min_size`` items are not judged."""

    def __init__(self, pts, item_peaks, *, decoder, data, two_types, min_size: int):
        self._pts, self._decoder, self._data, self._two_types = pts, decoder, data, two_types
        self._peaks, self._col = np.unique(item_peaks, return_inverse=True)
        self._min_size = max(int(min_size), 2)
        self._proj = None
        self._seen: dict = {}
        self.tested = self.kept = 0

    def __call__(self, low, high) -> bool:
        key = (tuple(sorted(low)), tuple(sorted(high)))
        if key not in self._seen:
            self._seen[key] = self._judge(low, high)
        return self._seen[key]

    def _judge(self, low, high) -> bool:
        ca = np.flatnonzero(np.isin(self._peaks, low))
        cb = np.flatnonzero(np.isin(self._peaks, high))
        ia, ib = np.flatnonzero(np.isin(self._col, ca)), np.flatnonzero(np.isin(self._col, cb))
        if ia.size < self._min_size or ib.size < self._min_size:
            return False
        if self._proj is None:
            means, self._counts = _decoded_means(self._decoder, self._pts, self._col, self._peaks.size)
            self._proj = _projections(self._data, means, len(self._pts))
        both = np.r_[ia, ib]
        wa, wb = self._counts[ca] / self._counts[ca].sum(), self._counts[cb] / self._counts[cb].sum()
        values = self._proj[np.ix_(both, ca)] @ wa - self._proj[np.ix_(both, cb)] @ wb
        self.tested += 1
        two = bool(self._two_types(values, np.arange(both.size) < ia.size))
        self.kept += two
        return two


def _merge_basins(f_flat: np.ndarray, peaks: np.ndarray, saddles: dict, *,
                  min_persistence: float, min_relative_height: float, sd_flat=None,
                  significance: float = 0.0, sizes: dict | None = None, empty_level: float = 0.0,
                  min_size: int = 1, excess: _ExcessMass | None = None,
                  split=None, split_dip: float = np.inf) -> tuple[dict, dict]:
    """Union-find merge of basins over saddles from high to low; returns each peak's root and,
    for every peak that was merged, the dip (in sampling-noise sd) at which it was.

    With ``sd_flat`` (the significance rule), a pass at or below ``empty_level`` (no item
    within about three bandwidths) separates two groups outright when the lower one holds at
    least ``min_size`` items (``sizes``: items per basin peak); smaller groups are merged.
    ``split(low_members, high_members) -> bool`` (:class:`_DecoderSplit`) is asked about every
    merge that the significance test alone makes at a dip of ``split_dip`` sds or more; True
    keeps the two groups apart."""
    parent = {int(p): int(p) for p in peaks}
    members = {int(p): [int(p)] for p in peaks}
    size = {int(p): int((sizes or {}).get(int(p), 0)) for p in peaks}
    merged_at: dict = {}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    top = float(f_flat[peaks].max())
    for (a, b), (s, sd_s) in sorted(saddles.items(), key=lambda kv: -kv[1][0]):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        low, high = (ra, rb) if f_flat[ra] < f_flat[rb] else (rb, ra)
        p = float(f_flat[low])
        dip = (p - s) / p if p > 0 else 0.0
        noise = np.inf
        if sd_flat is not None:
            if s <= empty_level:
                noise = np.inf if size[low] >= min_size else 0.0
            else:
                scale = float(np.hypot(sd_flat[low], sd_s))
                noise = (p - s) / scale if scale > 0 else np.inf
                if excess is not None and scale > 0 and noise < significance:
                    noise = max(noise, excess(members[low], s, sd_s))
        if dip < min_persistence or p < min_relative_height * top or noise < significance:
            if (split is not None and split_dip <= noise < significance and s > empty_level
                    and dip >= min_persistence and p >= min_relative_height * top
                    and split(members[low], members[high])):
                continue
            parent[low] = high
            members[high] += members.pop(low)
            size[high] += size[low]
            merged_at[low] = noise
    return {int(p): find(int(p)) for p in peaks}, merged_at


def _refine_mode(f: np.ndarray, flat: int) -> np.ndarray:
    """Sub-grid mode location: density-weighted circular centroid of the 3^d neighbourhood."""
    d, r = f.ndim, f.shape[0]
    idx = np.array(np.unravel_index(flat, f.shape))
    offs = np.array(_neighbour_offsets(d, include_zero=True))
    nb = (idx[None, :] + offs) % r
    w = f[tuple(nb.T)]
    w = w - w.min()
    centre = (idx + 0.5) / r
    if w.sum() <= 0:
        return centre
    return wrap(centre + (w[:, None] * offs).sum(0) / w.sum() / r)


@dataclass(frozen=True)
class ClusterResult:
    """Clusters found by :func:`find_clusters`.

    Attributes
    ----------
    labels : np.ndarray [shape=(n,), int, range -1..k-1]
        Cluster of each item (0 = most items; -1 = below the noise density).
    modes : np.ndarray [shape=(k, d), range [0, 1)]
        Mode (density peak) of each cluster, sub-grid refined.
    mode_density : np.ndarray [shape=(k,)]
        KDE value at each mode's grid node (per unit torus volume).
    grid_labels : np.ndarray [shape=(r,)*d, int]
        Cluster of every grid node (its merged basin of attraction).
    kde : GridKDE
        The density the modes were found on.
    """

    labels: np.ndarray
    modes: np.ndarray
    mode_density: np.ndarray
    grid_labels: np.ndarray
    kde: GridKDE

    @property
    def n_clusters(self) -> int:
        """Number of clusters k."""
        return int(self.modes.shape[0])


def find_clusters(z, *, method: str = "significance", weights=None, bandwidth=None,
                  resolution: int | None = None, significance: float | None = None,
                  min_persistence: float | None = None, min_relative_height: float | None = None,
                  min_size: int = 5, posterior=None, lattice_z=None,
                  noise_density: float | None = None, kde: GridKDE | None = None, decoder=None,
                  data=None, separation: float = DEFAULT_SEPARATION,
                  excess_mass: bool = True, linkage: str = "centroid",
                  continuum_separation: float = DEFAULT_CONTINUUM_SEPARATION,
                  continuum_dip: float = DEFAULT_CONTINUUM_DIP,
                  decoder_dip: float | None = DEFAULT_DECODER_DIP) -> ClusterResult:
    """Cluster points on the torus by periodic mode seeking on the grid KDE.

    Parameters
    ----------
    z : np.ndarray [shape=(n, d) or (n,), range [0, 1)]
        Item embeddings (circular posterior means).
    method : {"significance", "persistence"}
        How a density dip between two peaks is judged (``METHOD_DEFAULTS`` gives each
        method's defaults). ``"significance"`` (default): two peaks stay apart when the dip
        from the lower peak to the saddle exceeds ``significance`` times what sampling noise
        produces there (:func:`~vocalatent.analysis.density.kde_sampling_sd` at the peak and
        at the saddle), so the number of clusters follows the data: a small cluster of a rare
        type survives when its dip is many noise sds deep, a wiggle of a large one does not.
        ``"persistence"``: the fixed-threshold rule (weighted periodic mean shift with
        persistence merging) kept for comparison: the dip must be ``min_persistence`` of the
        lower peak and the peak ``min_relative_height`` of the highest one.
    weights : np.ndarray [shape=(n,)], optional
        Item weights for the KDE.
    bandwidth : float or np.ndarray [shape=(d,)], optional
        KDE bandwidth in turns; ``None`` selects it by leave-one-out likelihood.
    resolution : int, optional
        Grid nodes per axis (default 512 / 128 / 48 for d = 1 / 2 / 3).
    significance : float >= 0, optional
        With ``"significance"``: the dip a peak needs, in sampling-noise standard deviations
        (default 2.5; ``benchmarks/bench_repertoire.py``).
    min_persistence : float in [0, 1), optional
        Two density peaks stay separate clusters only if the density between them dips by at
        least this fraction of the lower peak (``"persistence"`` default 0.3: the saddle is
        below 70 % of the lower peak; ``"significance"`` default 0).
    min_relative_height : float in [0, 1), optional
        Peaks lower than this fraction of the highest peak are merged into a neighbour
        (``"persistence"`` default 0.05; ``"significance"`` default 0).
    excess_mass : bool
        With ``"significance"``: a dip also counts when the lower group's *excess mass* above
        the pass (the items above the pass level over all of its nodes) exceeds ``significance``
        times its sampling noise. The peak test sees only the items within about a bandwidth of
        the group's highest node; a type spread over a plateau wider than the kernel has a
        small bump for a peak and needs all its items counted. For a group no wider than the
        kernel the two tests agree. Default True: without it the maps of a converged fit,
        whose types are broad plateaus, lose types (the synthetic song sets of
        docs/analysis.md, "One mode or two: the continuum test"); the lumps that one type's
        birds make, which it also keeps apart, are joined again by the decoder merge's
        continuum test.
    min_size : int
        With ``"significance"``: a group alone in empty space (no item within about three
        bandwidths of the pass to its neighbours) is a cluster when it holds at least this
        many items, whatever its height; smaller ones are merged into the neighbour.
    posterior : np.ndarray [shape=(n, m)], optional
        Each item's posterior weights on the lattice ``lattice_z``; when given, an item is
        assigned to the cluster holding most of its posterior mass (posterior-weighted).
    lattice_z : np.ndarray [shape=(m, d)], optional
        Lattice points (required with ``posterior``).
    noise_density : float, optional
        Items where the KDE is below this fraction of the highest peak get label -1.
    kde : GridKDE, optional
        A density already computed for ``z`` (then ``weights``/``bandwidth``/``resolution`` are
        not used).
    decoder : callable, optional
        The model's decoder mean ``f(z: torch.Tensor[n, d]) -> torch.Tensor[n, D]``
        (``QLVM.mean_function()``). With ``data``, the density clusters are then joined where
        the decoder says they are one type (:func:`merge_by_decoder`): a fitted map that lays
        one type out as several lumps gets one cluster for it.
    data : np.ndarray [shape=(n, D) or (n, *item_shape)], optional
        The items the model was fitted to (required with ``decoder``).
    separation : float
        :func:`separation_index` (along the decoder's direction) below which
        :func:`merge_by_decoder` joins two clusters (default 6: medians fewer than 6 sds of
        the tighter cluster apart).
    linkage : {"centroid", "single"}
        How :func:`merge_by_decoder` joins the pairs below ``separation`` (default
        ``"centroid"``).
    continuum_separation, continuum_dip : float
        :func:`merge_by_decoder` also joins pairs with an index below ``continuum_separation``
        (default 10) whose data make one mode (:func:`projection_dip` above ``continuum_dip``,
        default 0.5).
    decoder_dip : float >= 0 or None
        With ``"significance"`` and the decoder: a dip of at least this many noise sds but
        below ``significance``, which the density alone would merge, stays a border when the
        two groups' items (``min_size`` or more each) are clearly two types along the
        decoder's direction: a :func:`separation_index` of ``continuum_separation`` or more
        and a :func:`projection_dip` below ``continuum_dip / 2`` (two modes with a near-empty
        gap; default 1.5; None: the density alone decides). Two types that a fit lays out as
        broad lumps with a few items in the gap between them have such a dip. The lumps of
        one type made by its birds separate by large indices too, but their items fill the
        gap (dips of 0.36 or more on the repertoire benchmark), hence the stricter dip than
        the continuum test's (docs/analysis.md, "Borderline dips: the decoder decides").

    Returns
    -------
    ClusterResult
    """
    pts = as_latent(z)
    n, d = pts.shape
    if n == 0:
        raise DataError("no points to cluster")
    check_option("method", method, list(METHOD_DEFAULTS))
    defaults = METHOD_DEFAULTS[method]
    significance = defaults["significance"] if significance is None else float(significance)
    min_persistence = defaults["min_persistence"] if min_persistence is None else float(min_persistence)
    min_relative_height = (defaults["min_relative_height"] if min_relative_height is None
                           else float(min_relative_height))
    check_positive("significance", significance, allow_zero=True)
    check_positive("min_size", min_size, integer=True)
    for name, val in (("min_persistence", min_persistence), ("min_relative_height", min_relative_height)):
        check_positive(name, val, allow_zero=True)
        if val >= 1:
            raise ParameterError(f"{name} must be in [0, 1); got {val!r}")
    if kde is None:
        kde = periodic_kde(pts, bandwidth=bandwidth, resolution=resolution, weights=weights)
    elif kde.latent_dim != d:
        raise ParameterError(f"kde is {kde.latent_dim}-D but z has {d} latent dimension(s)")
    f = kde.density
    r = f.shape[0]
    basin, peaks = grid_basins(f)
    sd, empty, sizes = None, 0.0, None
    if method == "significance" and significance > 0:
        if not np.all(np.isfinite(kde.bandwidth)):
            raise ParameterError("the given kde has no bandwidth; the significance test needs it")
        sd = kde_sampling_sd(pts, bandwidth=kde.bandwidth, resolution=r, weights=weights)
        v = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, float) / np.sum(weights)
        # one item's kernel three bandwidths away: below this the pass is empty space
        one_item = float(v.max()) * float(np.prod([wrapped_gaussian(0.0, float(h)) for h in kde.bandwidth]))
        empty = one_item * np.exp(-4.5)
        item_peaks = basin[nearest_node(pts, r)]
        uniq, cnt = np.unique(item_peaks, return_counts=True)
        sizes = dict(zip(uniq.tolist(), cnt.tolist()))
    if (decoder is None) != (data is None):
        raise ParameterError("decoder and data go together: the decoder merge needs both "
                             f"(got decoder={'set' if decoder is not None else None}, "
                             f"data={'set' if data is not None else None})")
    split = None
    if decoder is not None and sd is not None and decoder_dip is not None:
        check_positive("decoder_dip", decoder_dip, allow_zero=True)
        far = max(separation, continuum_separation)

        def two_types(v, g):
            return separation_index(v, g) >= far and projection_dip(v, g) < continuum_dip / 2

        split = _DecoderSplit(pts, item_peaks, decoder=decoder, data=data, min_size=min_size,
                              two_types=two_types)
    root, _ = _merge_basins(f.ravel(), peaks, _saddles(f, basin, sd),
                            min_persistence=min_persistence, min_relative_height=min_relative_height,
                            sd_flat=None if sd is None else sd.ravel(), significance=significance,
                            sizes=sizes, empty_level=empty, min_size=min_size,
                            excess=None if sd is None or not excess_mass else _ExcessMass(
                                f, basin, RegionMassNoise(pts, bandwidth=kde.bandwidth, resolution=r,
                                                          weights=weights)),
                            split=split, split_dip=np.inf if decoder_dip is None else float(decoder_dip))
    if split is not None and split.tested:
        logger.info("clusters: %d of %d borderline density dip(s) (%g to %g noise sds) kept as "
                    "borders: the decoder separates the items on their two sides as two types",
                    split.kept, split.tested, decoder_dip, significance)
    roots = np.array(sorted(set(root.values())))
    lut = np.zeros(f.size, dtype=np.int64)
    for p, rt in root.items():
        lut[p] = int(np.searchsorted(roots, rt))
    grid_labels = lut[basin]

    if posterior is not None:
        labels = _posterior_labels(posterior, lattice_z, grid_labels, len(roots), n)
    else:
        labels = grid_labels[nearest_node(pts, r)]

    counts = np.bincount(labels, minlength=len(roots))
    heights = f.ravel()[roots]
    order = np.lexsort((-heights, -counts))
    relabel = np.empty_like(order)
    relabel[order] = np.arange(len(order))
    labels = relabel[labels]
    grid_labels = relabel[grid_labels]
    roots, heights = roots[order], heights[order]
    modes = np.stack([_refine_mode(f, int(p)) for p in roots])
    if noise_density is not None:
        check_positive("noise_density", noise_density, allow_zero=True)
        labels = np.where(interpolate_grid(f, pts) < noise_density * f.max(), -1, labels)
    result = ClusterResult(labels=labels.astype(np.int64), modes=modes, mode_density=heights,
                           grid_labels=grid_labels, kde=kde)
    if decoder is not None:
        result = merge_by_decoder(result, pts, decoder=decoder, data=data, separation=separation,
                                  linkage=linkage, continuum_separation=continuum_separation,
                                  continuum_dip=continuum_dip)
    return result


def _posterior_labels(posterior, lattice_z, grid_labels, k, n):
    if lattice_z is None:
        raise ParameterError("lattice_z is required with posterior (the lattice points the weights refer to)")
    w = np.asarray(posterior, dtype=float)
    lz = as_latent(lattice_z, name="lattice_z", latent_dim=grid_labels.ndim)
    if w.shape != (n, lz.shape[0]):
        raise ParameterError(f"posterior must have shape ({n}, {lz.shape[0]}) (items x lattice points); "
                             f"got shape {w.shape}")
    lattice_labels = grid_labels[nearest_node(lz, grid_labels.shape[0])]
    onehot = np.zeros((lz.shape[0], k))
    onehot[np.arange(lz.shape[0]), lattice_labels] = 1.0
    return np.argmax(w @ onehot, axis=1)



def _projections(data, means: np.ndarray, n: int, *, chunk: int = 1024) -> np.ndarray:
    """``x @ means.T`` (n, k) for the items ``data`` (an array or lazily read rows), in chunks
    (memory: one chunk of items at a time)."""
    if len(data) != n:
        raise ParameterError(f"data has {len(data)} items but z has {n} points")
    out = np.empty((n, means.shape[0]))
    for c0 in range(0, n, chunk):
        x = np.asarray(data[c0:c0 + chunk], dtype=np.float64).reshape(min(chunk, n - c0), -1)
        if x.shape[1] != means.shape[1]:
            raise ParameterError(f"the decoder gives {means.shape[1]} values per item but data has "
                                 f"{x.shape[1]}")
        out[c0:c0 + chunk] = x @ means.T
    return out


def _decoded_means(decoder, z: np.ndarray, labels: np.ndarray, k: int, *, chunk: int = 1024):
    """Mean decoded image of each cluster's items, ``(k, D)`` float64, and the counts."""
    import torch

    sums, counts = None, np.bincount(labels[labels >= 0], minlength=k).astype(float)
    with torch.no_grad():
        for c0 in range(0, len(z), chunk):
            lab = labels[c0:c0 + chunk]
            out = decoder(torch.as_tensor(z[c0:c0 + chunk], dtype=torch.float32))
            out = out.detach().double().cpu().numpy().reshape(len(lab), -1)
            if sums is None:
                sums = np.zeros((k, out.shape[1]))
            keep = lab >= 0
            np.add.at(sums, lab[keep], out[keep])
    return sums / np.maximum(counts, 1)[:, None], counts


def separation_index(values, groups) -> float:
    """How far apart two groups of 1-D values are, in sds of the tighter group.

    ``|m_1 - m_2| / min(sd_1, sd_2)`` with each group's median ``m`` and MAD-based standard
    deviation ``sd = 1.4826 MAD`` (robust to a few misassigned items). The tighter group's
    spread is the yardstick, so a group that mixes several types (a wide spread) does not make
    its neighbours look close; for two Gaussians of equal sd it is Ashman's D / sqrt(2)
    (Ashman, Bird & Zepf 1994, AJ 108, 2348: D > 2, i.e. an index above sqrt(2), is needed for
    the mixture to be bimodal at all).

    Parameters
    ----------
    values : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,), bool]
        True for the items of the first group (each group needs 2 or more items).

    Returns
    -------
    float >= 0
        ``inf`` when a group has zero spread and the medians differ.
    """
    v = np.asarray(values, dtype=float)
    g = np.asarray(groups, dtype=bool)
    if g.sum() < 2 or (~g).sum() < 2:
        raise ParameterError(f"each group needs 2 or more values; got {int(g.sum())} and {int((~g).sum())}")
    stats = []
    for part in (v[g], v[~g]):
        med = float(np.median(part))
        stats.append((med, 1.4826 * float(np.median(np.abs(part - med)))))
    (m1, s1), (m2, s2) = stats
    scale = min(s1, s2)
    if scale == 0:
        return 0.0 if m1 == m2 else float("inf")
    return float(abs(m1 - m2) / scale)


def projection_dip(values, groups, *, bins: int = 1024) -> float:
    """How deep the density of two groups' pooled 1-D values dips between their medians.

    The pooled values get a Gaussian KDE with the normal-reference (Scott) bandwidth
    ``h = 1.06 sd n^(-1/5)`` of the pooled values. Between the two groups' medians the value is
    the KDE's lowest point over the lower of its two highest points on either side of it:
    1 when it does not dip (one mode: the pieces of one type's continuum of variation), near
    0 for an empty gap (two modes: two types). The normal-reference bandwidth is the one a
    single normal mode is smoothed with, and it over-smooths a mixture, so a dip that survives
    it comes from two modes (the fact behind Silverman's 1981 test of multimodality). Binned
    on ``bins`` cells over the values' range (the kernel spans several cells unless a few far
    outliers stretch the range: ``h / dx`` is about 6 for a million values within 10 sds).

    Parameters
    ----------
    values : np.ndarray [shape=(n,)]
    groups : np.ndarray [shape=(n,), bool]
        True for the items of the first group (each group needs 2 or more items).
    bins : int

    Returns
    -------
    float in [0, 1]
    """
    from scipy.ndimage import gaussian_filter1d

    v = np.asarray(values, dtype=float)
    g = np.asarray(groups, dtype=bool)
    if g.sum() < 2 or (~g).sum() < 2:
        raise ParameterError(f"each group needs 2 or more values; got {int(g.sum())} and {int((~g).sum())}")
    m1, m2 = sorted((float(np.median(v[g])), float(np.median(v[~g]))))
    h = 1.06 * float(np.std(v)) * v.size ** -0.2
    if h == 0 or m1 == m2:
        return 1.0
    lo, hi = float(v.min()) - 3 * h, float(v.max()) + 3 * h
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    dx = edges[1] - edges[0]
    f = gaussian_filter1d(hist.astype(float), sigma=h / dx, mode="constant", truncate=5.0)
    i1, i2 = (np.clip(((np.array([m1, m2]) - lo) / dx).astype(int), 0, bins - 1))
    seg = f[i1:i2 + 1]
    j = int(np.argmin(seg))
    top = min(float(seg[:j + 1].max()), float(seg[j:].max()))
    return float(seg[j] / top) if top > 0 else 1.0


def _merge_score(values, groups, separation: float, continuum_separation: float,
                 continuum_dip: float) -> float:
    """Below 1: :func:`merge_by_decoder` joins the pair (smaller first). ``S / separation``
    when the separation index ``S`` is below ``separation``; ``S / continuum_separation`` when
    it is below that and the pooled projections make one mode; else at least 1."""
    sep = separation_index(values, groups)
    if sep < separation or not sep < continuum_separation:
        return sep / separation
    if projection_dip(values, groups) > continuum_dip:
        return sep / continuum_separation
    return max(sep / separation, 1.0)


def decoder_separation(z, *, decoder, data, labels) -> np.ndarray:
    """How clearly the data of every pair of clusters separate along the decoder's direction.

    For clusters a and b, ``u`` is the direction between the mean decoded images
    ``mean_i f(z_i)`` of their items: the direction in data space along which the model says the
    two differ. Every item of a or b is projected onto it with its *data*, ``s_i = <x_i, u>``
    (not its decoded image, so within-type variation and observation noise are in it), and the
    value is :func:`separation_index` of the two clusters' ``s_i``: how many sds of the
    tighter cluster their medians are apart along the only direction in which the model
    tells them apart. Two syllable types differ by many times their
    within-type spread; two lumps that one type was laid out as (by its birds, its context,
    or a fold of the map) overlap or nearly touch along it.

    Parameters
    ----------
    z : np.ndarray [shape=(n, d), range [0, 1)]
    decoder : callable
        ``f(z: torch.Tensor[n, d]) -> torch.Tensor[n, D]``, e.g. ``QLVM.mean_function()``.
    data : array-like [shape=(n, D) or (n, *item_shape)]
        The items, in the space of the decoder's mean (an array or lazily read rows; read in
        chunks).
    labels : np.ndarray [shape=(n,), int, range -1..k-1]

    Returns
    -------
    np.ndarray [shape=(k, k)]
        Symmetric; ``inf`` on the diagonal and where a cluster has fewer than 2 items.
    """
    pts = as_latent(z)
    lab = np.asarray(labels, dtype=np.int64)
    if lab.shape != (len(pts),):
        raise ParameterError(f"labels must have one value per item ({len(pts)}); got shape {lab.shape}")
    k = int(lab.max()) + 1 if np.any(lab >= 0) else 0
    means, counts = _decoded_means(decoder, pts, lab, k)
    return _separation_matrix(_projections(data, means, len(pts)), means, lab, counts)


def _separation_matrix(proj, means, lab, counts, index=separation_index) -> np.ndarray:
    """Pairwise ``index`` (default :func:`separation_index`) from the projections
    ``proj = x @ means.T`` (n, k)."""
    k = means.shape[0]
    out = np.full((k, k), np.inf)
    members = [np.flatnonzero(lab == c) for c in range(k)]
    for a in range(k):
        for b in range(a + 1, k):
            if counts[a] < 2 or counts[b] < 2:
                continue
            both = np.r_[members[a], members[b]]
            s = proj[both, a] - proj[both, b]
            out[a, b] = out[b, a] = index(s, np.arange(both.size) < members[a].size)
    return out


def merge_by_decoder(result: ClusterResult, z, *, decoder, data,
                     separation: float = DEFAULT_SEPARATION, linkage: str = "centroid",
                     continuum_separation: float = DEFAULT_CONTINUUM_SEPARATION,
                     continuum_dip: float = DEFAULT_CONTINUUM_DIP) -> ClusterResult:
    """Join clusters that the decoder says are one type laid out as several lumps.

    A fitted map can split one type into two or more density peaks (it spends part of the
    torus on the type's within-type variation, or folds it twice). Two clusters whose data
    separate along the decoder's direction between them (:func:`decoder_separation`) by less
    than ``separation`` are one type. With ``linkage="centroid"`` (default) the closest pair
    is merged while it is below ``separation``, a merged cluster's decoded mean is the
    count-weighted mean of its parts, and its pairs are tested again: the far end of one
    type's long continuum of variation (an arc of the map cut into pieces by density dips) is
    then compared with all the rest of it and can stay apart. With ``linkage="single"`` the
    clusters are joined along every such pair, so the pieces of an arc, each close to its
    neighbours only, become one; but two pieces that are each close to different parts of
    one type can be left as two. Neither wins on the repertoire benchmark (docs/analysis.md,
    "Broad groups and long continua"). Pairs need not touch on the torus (a type folded into two places is
    joined too). The merged cluster keeps the mode and basin of its highest part.

    A pair whose index lies between ``separation`` and ``continuum_separation`` is joined too
    when the two clusters' data make one mode along that direction (:func:`projection_dip`
    above ``continuum_dip``): the pieces of a type's long continuum are narrow, so their
    medians lie many piece-sds apart, but the items fill the space between them; two types
    with the same index leave a dip between their modes. Pairs are taken in the order of
    their index relative to the threshold that applies (``index / separation`` or
    ``index / continuum_separation``).

    Parameters
    ----------
    result : ClusterResult
        Clusters from :func:`find_clusters`.
    z : np.ndarray [shape=(n, d), range [0, 1)]
        The embedding they were found on.
    decoder : callable
        ``f(z: torch.Tensor[n, d]) -> torch.Tensor[n, D]``, e.g. ``QLVM.mean_function()``.
    data : array-like [shape=(n, D) or (n, *item_shape)]
        The items in the space of the decoder's mean (the spectrograms the model was fitted to;
        an array or lazily read rows, read in chunks).
    separation : float > 0
        :func:`separation_index` two clusters need along the decoder's direction to stay
        apart (default 6: medians 6 sds of the tighter cluster apart; chosen among 3-10 on
        fitted maps of repertoires that are not the reported ones,
        ``benchmarks/bench_repertoire.py``). A piece of one type's continuum of variation is
        narrower than the type, so the yardstick is a piece's spread: hence a large value.
    linkage : {"centroid", "single"}
        How pairs below ``separation`` are joined (above).
    continuum_separation : float
        Pairs with an index below this are joined when their data make one mode (default 10;
        a value at or below ``separation`` switches the test off).
    continuum_dip : float in [0, 1]
        :func:`projection_dip` above which a pair's data count as one mode (default 0.5: the
        pooled density between the medians never falls below half of the lower peak).

    Returns
    -------
    ClusterResult
        With fewer (or as many) clusters; labels 0..k-1 by decreasing size again.
    """
    check_positive("separation", separation)
    check_positive("continuum_separation", continuum_separation, allow_zero=True)
    check_option("linkage", linkage, ["centroid", "single"])
    if not 0 <= continuum_dip <= 1:
        raise ParameterError(f"continuum_dip must be in [0, 1]; got {continuum_dip!r}")

    def score(values, groups):
        return _merge_score(values, groups, separation, continuum_separation, continuum_dip)

    pts = as_latent(z)
    lab = np.asarray(result.labels, dtype=np.int64).copy()
    k = result.n_clusters
    if lab.shape != (len(pts),):
        raise ParameterError(f"result has {lab.shape[0]} labels but z has {len(pts)} points")
    means, counts = _decoded_means(decoder, pts, lab, k)
    proj = _projections(data, means, len(pts))
    height = np.asarray(result.mode_density, dtype=float).copy()
    if linkage == "single":
        return _join_components(result, lab, _separation_matrix(proj, means, lab, counts, score) < 1,
                                height)
    target = np.arange(k)  # original cluster -> the cluster it now belongs to
    alive = set(range(k))

    def sep(a, b):
        ia, ib = np.flatnonzero(lab == a), np.flatnonzero(lab == b)
        if ia.size < 2 or ib.size < 2:
            return np.inf
        both = np.r_[ia, ib]
        return score(proj[both, a] - proj[both, b], np.arange(both.size) < ia.size)

    cache = {(a, b): sep(a, b) for a in range(k) for b in range(a + 1, k)}
    while cache:
        (a, b), val = min(cache.items(), key=lambda kv: kv[1])
        if not val < 1:
            break
        keep, drop = (a, b) if height[a] >= height[b] else (b, a)
        w = counts[[keep, drop]]
        means[keep] = (w[0] * means[keep] + w[1] * means[drop]) / w.sum()
        proj[:, keep] = (w[0] * proj[:, keep] + w[1] * proj[:, drop]) / w.sum()
        counts[keep] = w.sum()
        lab[lab == drop] = keep
        target[target == drop] = keep
        alive.discard(drop)
        cache = {pq: v for pq, v in cache.items() if drop not in pq and keep not in pq}
        for c in alive - {keep}:
            cache[(min(c, keep), max(c, keep))] = sep(min(c, keep), max(c, keep))
    return _relabel(result, lab, target, sorted(alive))


def _join_components(result: ClusterResult, lab: np.ndarray, close: np.ndarray,
                     height: np.ndarray) -> ClusterResult:
    """Join the clusters of each connected component of the graph ``close`` (k x k, bool);
    each component keeps the label, mode and basin of its highest cluster."""
    from scipy.sparse.csgraph import connected_components

    k = close.shape[0]
    adjacency = close & ~np.eye(k, dtype=bool)
    _, comp = connected_components(adjacency.astype(np.int8), directed=False)
    target = np.arange(k)
    for c in np.unique(comp):
        parts = np.flatnonzero(comp == c)
        target[parts] = parts[np.argmax(height[parts])]
    lab = np.where(lab >= 0, target[np.maximum(lab, 0)], -1)
    return _relabel(result, lab, target, sorted(set(target.tolist())))


def _compact(lab: np.ndarray, alive: list) -> np.ndarray:
    """Labels re-indexed to positions in ``alive`` (others -1)."""
    lut = np.full(max(alive) + 2, -1, dtype=np.int64)
    lut[np.asarray(alive)] = np.arange(len(alive))
    out = np.full_like(lab, -1)
    ok = lab >= 0
    out[ok] = lut[lab[ok]]
    return out


def _relabel(result: ClusterResult, lab: np.ndarray, target: np.ndarray, alive: list) -> ClusterResult:
    """A ClusterResult with the merged labels, ordered by size (then mode height)."""
    alive = np.asarray(alive)
    counts = np.array([np.sum(lab == c) for c in alive])
    heights = np.asarray(result.mode_density)[alive]
    order = np.lexsort((-heights, -counts))
    new_of = np.full(result.n_clusters, -1, dtype=np.int64)
    new_of[alive[order]] = np.arange(len(alive))
    item = np.where(lab >= 0, new_of[np.maximum(lab, 0)], -1)
    grid = new_of[target[result.grid_labels]]
    return ClusterResult(labels=item, modes=result.modes[alive[order]],
                         mode_density=heights[order], grid_labels=grid, kde=result.kde)
