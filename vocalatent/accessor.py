"""The ``ds.vl`` accessor: the torus analyses and figures, reached from an embedding Dataset.

Importing this module (``import vocalatent.accessor``) registers the accessor. Methods that
compute something return a *new* Dataset with the result added (xarray style; the original is
not modified) or a result object; plotting methods return the Axes/Figure.

Grid products live on their own dims ``grid_0``, ``grid_1``, ``grid_2`` (coordinates: the cell
centres ``(i + 0.5) / r``). All grid variables of a Dataset share one resolution: asking for
another raises an error naming the variables to drop first.

Example
-------
>>> import vocalatent.accessor  # noqa: F401
>>> ds = ds.vl.clusters()                       # adds density, cluster, cluster_mode
>>> ds = ds.vl.jacobian(model).vl.boundaries()  # adds jacobian_norm, boundary
>>> ds.vl.boundary_strength()                   # pandas DataFrame
>>> ds.vl.plot_embedding(color="cluster")
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from . import plot as _plot
from ._utils import ParameterError
from .analysis._decoder import model_decoder
from .analysis.agreement import label_agreement
from .analysis.clusters import (DEFAULT_CONTINUUM_DIP, DEFAULT_CONTINUUM_SEPARATION, DEFAULT_DECODER_DIP,
                                DEFAULT_SEPARATION,
                                METHOD_DEFAULTS, find_clusters)
from .analysis.density import GridKDE, default_resolution, periodic_kde
from .analysis.geodesic import geodesic as _geodesic
from .analysis.boundary_lines import BoundaryLines, boundary_lines
from .analysis.jacobian import boundaries as _boundaries
from .analysis.jacobian import cluster_cores
from .analysis.jacobian import jacobian_norm_grid
from .analysis.torus import grid_centres

__all__ = ["VocalatentAccessor"]


def _with_lines(ds: xr.Dataset, lines: BoundaryLines, from_jacobian: bool) -> xr.Dataset:
    z, which = lines.vertices()
    t = lines.table
    unit = "decades of ||J||" if from_jacobian else "decades of 1/density"
    return ds.assign(
        boundary_line_z=xr.DataArray(z, dims=("boundary_vertex", "latent"), attrs={
            "long_name": "vertices of the sub-grid boundary lines", "units": "turns"}),
        boundary_vertex_line=xr.DataArray(which, dims="boundary_vertex",
                                          attrs={"long_name": "boundary line of each vertex"}),
        boundary_line_cluster_a=xr.DataArray(t["cluster_a"].to_numpy(np.int64), dims="boundary_line"),
        boundary_line_cluster_b=xr.DataArray(t["cluster_b"].to_numpy(np.int64), dims="boundary_line"),
        boundary_line_strength=xr.DataArray(t["strength"].to_numpy(float), dims="boundary_line", attrs={
            "long_name": "median ridge height along the line above the larger of the two modes",
            "units": unit}),
        boundary_line_ridge=xr.DataArray(t["ridge_log10_jacobian"].to_numpy(float), dims="boundary_line",
                                         attrs={"long_name": "median log10 cost along the line"}),
        boundary_line_density_ratio=xr.DataArray(t["density_ratio"].to_numpy(float), dims="boundary_line",
                                                 attrs={"long_name": "highest density on the line / "
                                                                     "lower mode density"}),
        boundary_line_length=xr.DataArray(t["length"].to_numpy(float), dims="boundary_line",
                                          attrs={"units": "turns"}),
    )


@xr.register_dataset_accessor("vl")
class VocalatentAccessor:
    """Analyses on the latent torus for an embedding Dataset (``ds.vl``)."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    # ------------------------------------------------------------------ basics
    def _require(self, *names, hint: str = ""):
        missing = [n for n in names if n not in self._ds.variables]
        if missing:
            raise ParameterError(
                f"the Dataset has no {', '.join(repr(m) for m in missing)} variable"
                f"{'s' if len(missing) > 1 else ''}{'; ' + hint if hint else ''} "
                f"(it has {sorted(map(str, self._ds.data_vars))})")

    @property
    def embedding(self) -> np.ndarray:
        """The ``embedding`` variable as an array [shape=(n_items, d), range [0, 1)]."""
        self._require("embedding")
        emb = self._ds["embedding"]
        if emb.dims != ("item", "latent"):
            raise ParameterError(f"'embedding' must have dims ('item', 'latent'); got {emb.dims}")
        return np.asarray(emb.values, dtype=float)

    @property
    def latent_dim(self) -> int:
        """Number of latent dimensions d."""
        if "latent" in self._ds.sizes:
            return int(self._ds.sizes["latent"])
        if "latent_dim" in self._ds.attrs:
            return int(self._ds.attrs["latent_dim"])
        self._require("embedding", hint="this does not look like a vocalatent embedding")
        raise ParameterError("the Dataset's 'embedding' has no 'latent' dim")

    @property
    def grid_dims(self) -> tuple:
        """Names of the grid dims for this latent dimension (``grid_0``, ...)."""
        return tuple(f"grid_{k}" for k in range(self.latent_dim))

    @property
    def grid_resolution(self) -> int | None:
        """Resolution of the grid variables already present, or None."""
        dim = self.grid_dims[0]
        return int(self._ds.sizes[dim]) if dim in self._ds.sizes else None

    def _resolution(self, resolution):
        existing = self.grid_resolution
        if resolution is None:
            return existing if existing is not None else default_resolution(self.latent_dim)
        if existing is not None and resolution != existing:
            on_grid = [str(n) for n, v in self._ds.variables.items()
                       if any(d in v.dims for d in self.grid_dims) and n not in self.grid_dims]
            raise ParameterError(
                f"resolution={resolution!r} differs from the grid already in the Dataset "
                f"({existing} per axis, used by {on_grid}); drop them first with "
                f"ds.drop_dims({list(self.grid_dims)!r})")
        return resolution

    def _grid_coords(self, resolution: int) -> dict:
        c = grid_centres(resolution)
        return {dim: (dim, c, {"long_name": f"z{k + 1} (grid cell centre)", "units": "turns"})
                for k, dim in enumerate(self.grid_dims)}

    def _grid_var(self, values, attrs):
        return xr.DataArray(values, dims=self.grid_dims, attrs=attrs)

    # ------------------------------------------------------------------ analyses
    def density(self, *, bandwidth=None, resolution: int | None = None, weights=None,
                method: str = "lcv") -> xr.Dataset:
        """Add the periodic KDE of the embedding as ``density`` (grid dims).

        Parameters
        ----------
        bandwidth : float or sequence of float, optional
            Kernel standard deviation in turns; ``None`` chooses it (``method``).
        resolution : int, optional
            Grid nodes per axis (default: the Dataset's grid, else 512/128/48 for d = 1/2/3).
        weights : str or np.ndarray [shape=(n_items,)], optional
            Item weights, or the name of an item variable holding them.
        method : {"lcv", "scott"}
            Bandwidth rule (see :func:`vocalatent.analysis.density.select_bandwidth`).

        Returns
        -------
        xarray.Dataset
            A copy with ``density`` (per unit torus volume; mean 1 = uniform) whose attrs hold
            the bandwidth.
        """
        res = self._resolution(resolution)
        kde = periodic_kde(self.embedding, bandwidth=bandwidth, resolution=res,
                           weights=self._weights(weights), method=method)
        return self._with_density(kde)

    def _weights(self, weights):
        if isinstance(weights, str):
            self._require(weights)
            return np.asarray(self._ds[weights].values, dtype=float)
        return weights

    def _with_density(self, kde: GridKDE) -> xr.Dataset:
        var = self._grid_var(kde.density, {
            "long_name": "periodic KDE of the embedding (wrapped-Gaussian kernel)",
            "units": "per unit torus volume (mean 1 = uniform)",
            "bandwidth": np.asarray(kde.bandwidth, dtype=float)})
        return self._ds.assign_coords(self._grid_coords(kde.resolution)).assign(density=var)

    def clusters(self, *, method: str = "significance", bandwidth=None, resolution: int | None = None,
                 weights=None, significance: float | None = None, min_persistence: float | None = None,
                 min_relative_height: float | None = None, min_size: int = 5, posterior=None,
                 lattice_z=None, noise_density: float | None = None, model=None, data=None,
                 separation: float | None = None, excess_mass: bool = True,
                 linkage: str = "centroid", continuum_separation: float = DEFAULT_CONTINUUM_SEPARATION,
                 continuum_dip: float = DEFAULT_CONTINUUM_DIP,
                 decoder_dip: float | None = DEFAULT_DECODER_DIP) -> xr.Dataset:
        """Cluster the items by periodic mode seeking; adds ``cluster`` and friends.

        With ``model`` (anything with ``mean_function()``) and ``data`` (the items it was fitted
        to), clusters that the decoder says are one type are joined
        (:func:`vocalatent.analysis.clusters.merge_by_decoder`, separation index < ``separation``).

        Reuses the Dataset's ``density`` when present and no bandwidth/weights are given.
        See :func:`vocalatent.analysis.clusters.find_clusters` for the parameters (default
        ``method="significance"``: peaks stay apart when their dip exceeds 2.5 sampling-noise
        sds; ``method="persistence"`` is the fixed-threshold rule).

        Returns
        -------
        xarray.Dataset
            A copy with ``density`` (grid), ``cluster`` (item; -1 = none), ``cluster_mode``
            (cluster_id, latent), ``cluster_size`` (cluster_id), ``cluster_grid`` (grid: the cluster
            whose basin holds each node).
        """
        res = self._resolution(resolution)
        kde = None
        if "density" in self._ds.data_vars and bandwidth is None and weights is None:
            dens = np.asarray(self._ds["density"].values, dtype=float)
            if dens.shape[0] == res:
                bw = np.atleast_1d(np.asarray(self._ds["density"].attrs.get(
                    "bandwidth", np.full(self.latent_dim, np.nan)), dtype=float))
                if np.all(np.isfinite(bw)):  # without its bandwidth the density is recomputed
                    kde = GridKDE(density=dens, bandwidth=bw)
        result = find_clusters(self.embedding, method=method, weights=self._weights(weights),
                               bandwidth=bandwidth, resolution=res, significance=significance,
                               min_persistence=min_persistence, min_relative_height=min_relative_height,
                               min_size=min_size, posterior=posterior, lattice_z=lattice_z,
                               noise_density=noise_density, kde=kde,
                               decoder=None if model is None else model.mean_function(), data=data,
                               separation=DEFAULT_SEPARATION if separation is None else separation,
                               excess_mass=excess_mass, linkage=linkage,
                               continuum_separation=continuum_separation, continuum_dip=continuum_dip,
                               decoder_dip=decoder_dip)
        ds = self._with_density(result.kde)
        k = result.n_clusters
        sizes = np.bincount(result.labels[result.labels >= 0], minlength=k)
        chosen = {**METHOD_DEFAULTS[method], **{k: v for k, v in (
            ("significance", significance), ("min_persistence", min_persistence),
            ("min_relative_height", min_relative_height)) if v is not None}}
        params = {"method": method, **{k: float(v) for k, v in chosen.items()}, "min_size": int(min_size),
                  "posterior_weighted": int(posterior is not None), "excess_mass": int(excess_mass),
                  "decoder_merge": int(model is not None)}
        if model is not None:
            params["separation"] = float(DEFAULT_SEPARATION if separation is None else separation)
            params["linkage"] = str(linkage)
            params["continuum_separation"] = float(continuum_separation)
            params["continuum_dip"] = float(continuum_dip)
            if decoder_dip is not None:
                params["decoder_dip"] = float(decoder_dip)
        return ds.assign(
            cluster=xr.DataArray(result.labels, dims="item",
                                 attrs={"long_name": "cluster (periodic mode seeking; -1 = none)", **params}),
            cluster_mode=xr.DataArray(result.modes, dims=("cluster_id", "latent"),
                                      coords={"cluster_id": np.arange(k)},
                                      attrs={"long_name": "density mode of each cluster", "units": "turns"}),
            cluster_size=xr.DataArray(sizes, dims="cluster_id", attrs={"long_name": "items per cluster"}),
            cluster_grid=self._grid_var(result.grid_labels, {"long_name": "cluster basin of each grid node"}),
        )

    def _model(self, model):
        f, d, output_shape, device = model_decoder(model)
        if d != self.latent_dim:
            raise ParameterError(f"the model has a {d}-D latent but the Dataset's embedding is "
                                 f"{self.latent_dim}-D")
        return f, output_shape, device

    def jacobian(self, model, *, resolution: int | None = None, chunk_size: int = 512,
                 device=None) -> xr.Dataset:
        """Add ``jacobian_norm`` = ``||df/dz||_F`` of the model's decoder on the grid.

        Parameters
        ----------
        model : object with ``mean_function()``, ``latent_dim``, ``output_shape``
        resolution : int, optional
            Default: the Dataset's grid, else 512/128/48 for d = 1/2/3.
        chunk_size : int
            Grid points per vmapped Jacobian call.
        device : optional
            Default: the model's device.

        Returns
        -------
        xarray.Dataset
        """
        f, _, model_device = self._model(model)
        res = self._resolution(resolution)
        jac = jacobian_norm_grid(f, latent_dim=self.latent_dim, resolution=res, chunk_size=chunk_size,
                                 device=device if device is not None else model_device)
        var = self._grid_var(jac, {"long_name": "Frobenius norm of the decoder Jacobian",
                                   "units": "data units per turn"})
        return self._ds.assign_coords(self._grid_coords(res)).assign(jacobian_norm=var)

    def _boundaries(self):
        self._require("jacobian_norm", "cluster_mode",
                      hint="run ds.vl.clusters() and ds.vl.jacobian(model) first")
        dens = self._ds["density"].values if "density" in self._ds.data_vars else None
        cores = None
        if dens is not None and "cluster_grid" in self._ds.data_vars:
            cores = cluster_cores(self._ds["cluster_grid"].values, dens)
        return _boundaries(self._ds["jacobian_norm"].values, modes=self._ds["cluster_mode"].values,
                           density_grid=dens, cores=cores)

    def boundaries(self, *, refine: int = 2) -> xr.Dataset:
        """Add the boundaries between clusters: the ridge mask ``boundary`` (grid dims, bool)
        and, for 2-D maps, sub-grid boundary lines with their strengths.

        Needs ``cluster_mode`` and ``jacobian_norm`` (without ``jacobian_norm`` a 2-D map gets
        the lines only, from the density: cost ``1 / density``). See
        :func:`vocalatent.analysis.jacobian.boundaries` (mask) and
        :func:`vocalatent.analysis.boundary_lines.boundary_lines` (lines) for the rules.

        Parameters
        ----------
        refine : int
            Grid refinement for the lines' paths and contours.

        Returns
        -------
        xarray.Dataset
            With ``boundary`` (when there is a Jacobian map) and, for d = 2, the lines:
            ``boundary_line_z`` (boundary_vertex, latent) and ``boundary_vertex_line``
            (boundary_vertex: the line each vertex belongs to), and per line (boundary_line)
            ``boundary_line_cluster_a``, ``boundary_line_cluster_b``,
            ``boundary_line_strength`` (decades of ``||J||`` above the two modes),
            ``boundary_line_ridge`` (median ``log10 ||J||`` along the line),
            ``boundary_line_density_ratio`` (highest density on the line / lower mode density),
            ``boundary_line_length`` (turns).
        """
        ds = self._ds.drop_dims([d for d in ("boundary_line", "boundary_vertex") if d in self._ds.dims])
        ds = ds.drop_vars([v for v in ("boundary",) if v in ds.variables])
        if "jacobian_norm" in self._ds.data_vars or self.latent_dim != 2:
            b = self._boundaries()
            ds = ds.assign(boundary=self._grid_var(
                b.ridge_mask, {"long_name": "ridge of the log-Jacobian map between cluster modes"}))
        if self.latent_dim == 2:
            lines = self.boundary_lines(refine=refine)
            ds = _with_lines(ds, lines, "jacobian_norm" in self._ds.data_vars)
        return ds

    def boundary_lines(self, *, refine: int = 2) -> BoundaryLines:
        """Sub-grid boundary lines between neighbouring clusters of a 2-D map (a
        :class:`~vocalatent.analysis.boundary_lines.BoundaryLines`); from ``jacobian_norm``
        when present, else from the density (cost ``1 / density``)."""
        self._require("cluster_mode", "density", hint="run ds.vl.clusters() first")
        if self.latent_dim != 2:
            raise ParameterError(f"boundary lines are drawn on 2-D maps; this one is {self.latent_dim}-D")
        dens = np.asarray(self._ds["density"].values, dtype=float)
        cores = cluster_cores(self._ds["cluster_grid"].values, dens) if "cluster_grid" in self._ds else None
        if "jacobian_norm" in self._ds.data_vars:
            jac = np.asarray(self._ds["jacobian_norm"].values, dtype=float)
            cost = np.maximum(jac, max(jac.max(), 1e-300) * 1e-12)
        else:
            jac = None
            cost = 1.0 / np.maximum(dens, max(dens.max(), 1e-300) * 1e-9)
        return boundary_lines(cost, modes=self._ds["cluster_mode"].values, cores=cores,
                              jacobian_grid=jac if jac is not None else cost, density_grid=dens,
                              refine=refine)

    def boundary_strength(self):
        """Per-pair boundary strengths between clusters (pandas DataFrame).

        Columns ``cluster_a``, ``cluster_b``, ``strength`` (decades of ``||J||_F`` climbed at
        the easiest crossing), ``pass_log10_jacobian``, ``straight_max_log10_jacobian``,
        ``adjacent``, ``pass_density_ratio``.
        """
        return self._boundaries().strength

    def geodesic(self, model, z_start, z_end, **kwargs):
        """Geodesic between two latent points under the model's decoder (a GeodesicResult).

        ``kwargs`` go to :func:`vocalatent.analysis.geodesic.geodesic` (``resolution``,
        ``connectivity``, ``n_frames``, ...).
        """
        f, _, model_device = self._model(model)
        kwargs.setdefault("device", model_device)
        return _geodesic(f, z_start, z_end, **kwargs)

    def geodesic_between_clusters(self, model, a: int, b: int, **kwargs):
        """Geodesic from the mode of cluster ``a`` to the mode of cluster ``b``."""
        self._require("cluster_mode", hint="run ds.vl.clusters() first")
        modes = self._ds["cluster_mode"].values
        for name, c in (("a", a), ("b", b)):
            if not isinstance(c, (int, np.integer)) or not 0 <= c < modes.shape[0]:
                raise ParameterError(f"cluster {name} must be an integer in 0..{modes.shape[0] - 1}; got {c!r}")
        return self.geodesic(model, modes[a], modes[b], **kwargs)

    def _labels(self, labels):
        n = self._ds.sizes.get("item")
        if isinstance(labels, str):
            if labels not in self._ds.variables:
                raise ParameterError(
                    f"no item variable or coordinate named {labels!r} holds labels; item variables: "
                    f"{sorted(str(k) for k, v in self._ds.variables.items() if v.dims == ('item',))}")
            var = self._ds[labels]
            if var.dims != ("item",):
                raise ParameterError(f"{labels!r} must have dims ('item',) to be labels; got {var.dims}")
            return np.asarray(var.values, dtype=object)
        arr = np.asarray(getattr(labels, "values", labels), dtype=object)
        if arr.shape != (n,):
            raise ParameterError(f"labels must have one value per item ({n}); got shape {arr.shape}")
        return arr

    def agreement(self, labels="label", *, k=(1, 5)):
        """How well the map and its clusters agree with labels some items carry.

        Parameters
        ----------
        labels : str or array-like [shape=(n_items,)]
            Name of an item variable / coordinate (``"label"``: the annotation files' labels;
            the ``obs`` columns of an AnnData input, which become item coordinates), or the labels
            themselves (e.g. ``adata.obs["cell_type"]``). Unlabelled items (``""``, None, NaN)
            are left out.
        k : int or sequence of int
            Voters of the torus k-NN label accuracy.

        Returns
        -------
        vocalatent.analysis.agreement.AgreementReport
            Uses the Dataset's ``cluster`` (computed with :meth:`clusters` when absent).
        """
        lab = self._labels(labels)
        ds = self._ds if "cluster" in self._ds.variables else self.clusters()
        return label_agreement(self.embedding, lab, clusters=ds["cluster"].values, k=k)

    # ------------------------------------------------------------------ figures
    def _color(self, color):
        if color is None:
            return None, None
        if not isinstance(color, str):
            return np.asarray(color), "colour"
        if color == "spread":
            self._require("spread")
            sp = self._ds["spread"]
            vals = sp.mean("latent").values if "latent" in sp.dims else sp.values
            return np.asarray(vals, dtype=float), "spread (1 − R), mean over axes"
        if color == "cluster":
            self._require("cluster", hint="run ds.vl.clusters() first")
        if color not in self._ds.variables:
            raise ParameterError(f"no item variable or coordinate named {color!r} to colour by; "
                                 f"item variables: {sorted(str(n) for n, v in self._ds.variables.items() if v.dims == ('item',))}")
        var = self._ds[color]
        if var.dims != ("item",):
            raise ParameterError(f"{color!r} must have dims ('item',) to colour points; got {var.dims}")
        return np.asarray(var.values), color

    def plot_embedding(self, color="cluster", *, ax=None, **kwargs):
        """Scatter of the embedding coloured by ``cluster``, ``label``, ``source``, ``spread``,
        any item variable name, or an array (see :func:`vocalatent.plot.plot_embedding`)."""
        values, label = self._color(color)
        if self.latent_dim == 1:
            dens = self._ds["density"].values if "density" in self._ds.data_vars else None
            return _plot.plot_ring(self.embedding[:, 0], color=values, ax=ax, color_label=label or "",
                                   density=dens, title=kwargs.get("title"))
        return _plot.plot_embedding(self.embedding, color=values, ax=ax, color_label=label, **kwargs)

    def plot_density(self, *, ax=None, **kwargs):
        """The ``density`` grid with the cluster modes (if present)."""
        self._require("density", hint="run ds.vl.density() first")
        modes = self._ds["cluster_mode"].values if "cluster_mode" in self._ds.data_vars else None
        pts = self.embedding if self.latent_dim == 1 else None
        return _plot.plot_density(self._ds["density"].values, ax=ax, modes=modes, points=pts, **kwargs)

    def plot_jacobian(self, *, ax=None, **kwargs):
        """The log Jacobian map with boundaries (computed if clusters exist) and modes; on a
        2-D map the boundaries are the sub-grid lines, drawn thicker where stronger."""
        self._require("jacobian_norm", hint="run ds.vl.jacobian(model) first")
        modes = self._ds["cluster_mode"].values if "cluster_mode" in self._ds.data_vars else None
        if self.latent_dim == 2 and modes is not None:
            if "boundary_line_z" in self._ds.data_vars:
                z = self._ds["boundary_line_z"].values
                which = self._ds["boundary_vertex_line"].values
                n = self._ds.sizes.get("boundary_line", 0)
                lines = [z[which == i] for i in range(n)]
                strength = self._ds["boundary_line_strength"].values
            else:
                bl = self.boundary_lines()
                lines, strength = bl.lines, bl.table["strength"].to_numpy(float)
            return _plot.plot_jacobian(self._ds["jacobian_norm"].values, lines=lines,
                                       line_strength=strength, modes=modes, ax=ax, **kwargs)
        mask = self._ds["boundary"].values if "boundary" in self._ds.data_vars else (
            self._boundaries().ridge_mask if modes is not None else None)
        return _plot.plot_jacobian(self._ds["jacobian_norm"].values, boundaries=mask, modes=modes,
                                   ax=ax, **kwargs)

    def plot_agreement(self, labels="label", *, report=None, **kwargs):
        """The map coloured by label beside the map coloured by cluster, and the confusion
        matrix (:func:`vocalatent.plot.plot_agreement`); returns the Figure."""
        lab = self._labels(labels)
        ds = self._ds if "cluster" in self._ds.variables else self.clusters()
        return _plot.plot_agreement(self.embedding, lab, ds["cluster"].values, report=report, **kwargs)

    def plot_latent_map(self, model, *, n_tiles: int = 8, ax=None, **kwargs):
        """Decoded outputs of the model tiled over the torus."""
        f, output_shape, device = self._model(model)
        return _plot.plot_latent_map(f, output_shape, n_tiles=n_tiles, latent_dim=self.latent_dim,
                                     ax=ax, device=device, **kwargs)

    def plot_aggregate_posterior(self, *, ax=None, **kwargs):
        """The aggregate lattice posterior (``aggregate_posterior`` on ``lattice_z``)."""
        self._require("aggregate_posterior", "lattice_z")
        kwargs.setdefault("title", "Aggregate posterior on the lattice (mean over items)")
        kwargs.setdefault("mark_summary", False)
        return _plot.plot_posterior(self._ds["aggregate_posterior"].values, self._ds["lattice_z"].values,
                                    ax=ax, **kwargs)

    # ------------------------------------------------------------------ the interactive page
    def explore(self, path="map.html", *, model=None, store=None, audio_root=None, **kwargs):
        """Write the interactive map of this embedding (an offline HTML page) and return it.

        Parameters
        ----------
        path : path-like
            The page to write.
        model : fitted QLVM, optional
            Clicking an empty place then shows what it decodes there.
        store : SyllableStore or path-like, optional
            The run's ``syllables.h5``: hover thumbnails (axes in kHz and ms) and, with its
            recordings' folder, audio on click.
        audio_root : path-like, optional
            Where the recordings are (default: the store's root).
        **kwargs
            Passed to :func:`vocalatent.interactive.write_map` (``mode``, ``features``, ...).

        Returns
        -------
        vocalatent.interactive.MapPage
            Shows itself in an iframe in a notebook; ``.path`` is the file.
        """
        from .interactive import write_map

        spectrograms = spec_params = None
        if store is not None:
            from pathlib import Path

            from .data.store import SyllableStore

            store = SyllableStore(store) if isinstance(store, (str, Path)) else store
            spectrograms = store.spectrograms
            spec_params = store.info.get("spectrogram_resolved") or store.params.get("spectrogram")
            audio_root = audio_root if audio_root is not None else store.info.get("root")
        return write_map(self._ds, path, model=model, spectrograms=spectrograms,
                         spectrogram_params=spec_params, audio_root=audio_root, **kwargs)
