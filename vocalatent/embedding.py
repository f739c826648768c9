"""The embedding as an xarray Dataset: every item's latent position with its metadata.

Layout (written as NetCDF with h5netcdf; readable with plain ``xarray.open_dataset``):

- dims ``item`` and ``latent``;
- ``embedding`` (item, latent): posterior circular mean in [0, 1) per latent dimension;
- ``map_point`` (item, latent): the lattice point of highest posterior weight;
- ``spread`` (item, latent): 1 − mean resultant length of the posterior per dimension, in
  [0, 1] (0: all mass at one angle; 1: spread uniformly);
- ``posterior_entropy`` (item): nats; ``log_likelihood`` (item): held-out log p(x) in nats;
- ``ess``, ``shift_sd``, ``converged`` (item): how far to trust ``log_likelihood`` (ESS of the
  lattice posterior, spread of the per-shift estimates, the criterion in the attrs);
  ``refined`` (item): the estimate was refined locally (attrs ``refined_items``,
  ``refine_sizes``), for the items the lattice alone left unconverged;
- item metadata as coordinates on ``item`` (``source``, ``onset_s``, ...);
- attrs: ``vocalatent_version``, ``latent_dim``, ``seed``, ``lattice`` (JSON), ``model``
  (JSON of the estimator's parameters), plus what the caller adds (``config``, held-out score).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ._utils import DataError, atomic_path
from ._version import __version__


def to_jsonable(value):
    """``value`` with NumPy scalars, tuples and other objects turned into JSON types."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def build_embedding(result: dict, *, model, n_lattice: int, n_shifts: int,
                    coords: dict | pd.DataFrame | None = None) -> xr.Dataset:
    """Assemble the Dataset from streamed posterior statistics (see :meth:`QLVM.transform`)."""
    n, d = result["embedding"].shape
    ds = xr.Dataset(
        {
            "embedding": (("item", "latent"), result["embedding"].astype(np.float64)),
            "map_point": (("item", "latent"), result["map_point"].astype(np.float64)),
            "spread": (("item", "latent"), np.clip(1.0 - result["resultant_length"], 0.0, 1.0)),
            "posterior_entropy": ("item", result["entropy"].astype(np.float64)),
            "log_likelihood": ("item", result["log_likelihood"].astype(np.float64)),
        },
        coords={"item": np.arange(n), "latent": [f"z{k + 1}" for k in range(d)]},
    )
    ds["embedding"].attrs.update(long_name="posterior circular mean", units="torus turns [0, 1)")
    ds["map_point"].attrs.update(long_name="MAP lattice point", units="torus turns [0, 1)")
    ds["spread"].attrs.update(long_name="1 - posterior mean resultant length")
    ds["posterior_entropy"].attrs.update(units="nats")
    ds["log_likelihood"].attrs.update(long_name="log p(x) lattice estimate", units="nats")
    if "converged" in result:  # the per-item diagnostics of the estimate (vocalatent.nn.estimate)
        ds["ess"] = ("item", np.asarray(result["ess"], dtype=np.float64))
        ds["ess"].attrs.update(long_name="effective sample size of the lattice posterior, pooled over shifts")
        ds["shift_sd"] = ("item", np.asarray(result["shift_sd"], dtype=np.float64))
        ds["shift_sd"].attrs.update(long_name="standard deviation of the per-shift log p(x) estimates",
                                    units="nats")
        ds["converged"] = ("item", np.asarray(result["converged"], dtype=bool))
        ds["converged"].attrs.update(long_name="log p(x) estimate converged", criterion=str(result.get("criterion", "")))
        ds.attrs.update(convergence_criterion=str(result.get("criterion", "")),
                        converged_fraction=float(np.mean(result["converged"])))
    if "refined" in result:  # local refinement of the unconverged items (vocalatent.nn.refine)
        ds["refined"] = ("item", np.asarray(result["refined"], dtype=bool))
        ds["refined"].attrs.update(long_name="log p(x) refined in a local box around the posterior mode")
        ds.attrs.update(refined_items=int(np.sum(result["refined"])),
                        refine_sizes=json.dumps([int(m) for m in result.get("refine_sizes", [])]))
    if coords is not None:
        ds = add_item_coords(ds, coords)
    ds.attrs.update(
        vocalatent_version=__version__,
        latent_dim=int(d),
        seed=int(model.seed_),
        lattice=json.dumps({"n_train": int(model.n_lattice_), "generator": list(model.lattice_generator_),
                            "n_eval": int(n_lattice), "n_eval_shifts": int(n_shifts)}),
        model=json.dumps(to_jsonable(model.get_params())),
        likelihood=str(model.likelihood),
        decoder=str(model.decoder_kind_),
    )
    return ds


def heldout_attrs(heldout: dict) -> dict:
    """Dataset attrs for a held-out score (a :meth:`QLVM.evaluate` result): the figure with
    its standard error, item count, convergence and the one-line summary."""
    from .nn.estimate import convergence_summary

    attrs = {"heldout_log_likelihood": float(heldout["log_likelihood"]),
             "heldout_stderr": float(heldout["stderr"]), "heldout_n_items": int(heldout["n_items"])}
    if "converged_fraction" in heldout:
        attrs.update(heldout_converged_fraction=float(heldout["converged_fraction"]),
                     heldout_n_lattice=int(heldout["n_lattice"]),
                     heldout_tol_met=int(bool(heldout.get("tol_met", False))),
                     heldout_summary=convergence_summary(heldout))
    return attrs


def add_item_coords(ds: xr.Dataset, coords: dict | pd.DataFrame) -> xr.Dataset:
    """Add per-item metadata columns as coordinates on ``item`` (lengths must match)."""
    frame = coords if isinstance(coords, pd.DataFrame) else pd.DataFrame(dict(coords))
    n = ds.sizes["item"]
    if len(frame) != n:
        raise DataError(f"item metadata has {len(frame)} rows but the embedding has {n} items")
    new = {}
    for col in frame.columns:
        values = frame[col].to_numpy()
        if values.dtype == object or pd.api.types.is_string_dtype(frame[col].dtype):
            values = frame[col].astype("string").fillna("").astype(str).to_numpy(dtype=str)
        new[str(col)] = ("item", values)
    return ds.assign_coords(new)


#: dims of the per-item table (the file's root group)
ITEM_DIMS = ("item", "latent")


def _group_of(dims) -> str:
    """The file group of a variable with these dims: 'grid' for grid_* dims, 'lattice' for
    lattice_* dims, else 'per_<dim>' (e.g. 'per_cluster_id')."""
    others = [str(d) for d in dims if d not in ITEM_DIMS]
    for prefix in ("grid", "lattice"):
        if any(d.startswith(prefix) for d in others):
            return prefix
    return f"per_{others[0]}" if others else "extra"


def split_layers(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    """The on-disk layout of an embedding: a tidy per-item table and its product groups.

    Returns
    -------
    items : xarray.Dataset
        Every variable on ``item`` alone; an ``(item, latent)`` variable becomes one column
        per latent dimension (``embedding_z1``, ``embedding_z2``, ...), so that
        ``items.to_dataframe()`` has one row per item. Per-item coordinates and the attrs
        stay.
    groups : dict
        Group name -> Dataset of everything else (``grid``: density, clusters, Jacobian and
        boundaries on the regular grid; ``lattice``: lattice products such as the aggregate
        posterior; ``per_cluster_id``: per-cluster values; ...).
    """
    root_vars, groups = {}, {}
    split = []
    latent = [v.item() if hasattr(v, "item") else v for v in ds["latent"].values] if "latent" in ds.coords else []
    for name, var in ds.data_vars.items():
        dims = tuple(var.dims)
        if "item" in dims and set(dims) <= set(ITEM_DIMS):
            if "latent" in dims:
                split.append(name)
                for k, lab in enumerate(latent):
                    col = var.isel(latent=k, drop=True)
                    col.attrs = {**var.attrs, "latent": lab}
                    root_vars[f"{name}_{lab}"] = col
            else:
                root_vars[name] = var
        else:
            groups.setdefault(_group_of(dims), {})[name] = var
    item_coords = {c: ds.coords[c] for c in ds.coords if ds.coords[c].dims == ("item",) or c == "item"}
    items = xr.Dataset(root_vars, coords=item_coords, attrs=dict(ds.attrs))
    items.attrs["latent_columns"] = json.dumps({"variables": split, "latent": latent})
    out_groups = {}
    for g, variables in groups.items():
        sub = xr.Dataset(variables)
        sub = sub.drop_vars([c for c in sub.coords if "item" in sub.coords[c].dims], errors="ignore")
        out_groups[g] = sub
    return items, out_groups


def join_layers(items: xr.Dataset, groups: dict[str, xr.Dataset]) -> xr.Dataset:
    """Inverse of :func:`split_layers`: one in-memory Dataset (what ``ds.vl`` works on)."""
    info = json.loads(items.attrs.get("latent_columns", '{"variables": [], "latent": []}'))
    latent = info.get("latent", [])
    ds = items.copy()
    for name in info.get("variables", []):
        cols = [f"{name}_{lab}" for lab in latent]
        if not all(c in ds for c in cols):
            continue
        attrs = {k: v for k, v in ds[cols[0]].attrs.items() if k != "latent"}
        stacked = xr.concat([ds[c] for c in cols], dim="latent").transpose("item", "latent")
        stacked.attrs = attrs
        ds = ds.drop_vars(cols)
        ds[name] = stacked
    if latent:
        ds = ds.assign_coords(latent=latent)
    for sub in groups.values():
        ds = xr.merge([ds, sub], combine_attrs="override", compat="override", join="outer")
    ds.attrs = {k: v for k, v in items.attrs.items() if k != "latent_columns"}
    return ds


def write_embedding(ds: xr.Dataset, path) -> Path:
    """Write the Dataset as NetCDF4 (h5netcdf engine) atomically; returns the path.

    Layout (:func:`split_layers`): the root group is the per-item table —
    ``xarray.open_dataset(path).to_dataframe()`` gives one row per item, without vocalatent —
    and the grid, lattice and per-cluster products live in their own groups (``grid``,
    ``lattice``, ``per_cluster_id``; open one with ``xarray.open_dataset(path, group="grid")``).
    :func:`read_embedding` joins them back into one Dataset.
    """
    path = Path(path)
    ds = ds.copy()
    for name in list(ds.variables):
        # a Dataset read from disk keeps its old string widths and chunking; drop them so
        # longer strings are never cut on rewrite
        ds[name].encoding = {}
    items, groups = split_layers(ds)
    items.attrs["groups"] = json.dumps(sorted(groups))
    with atomic_path(path, suffix=".nc") as tmp:
        items.to_netcdf(tmp, engine="h5netcdf", invalid_netcdf=False)
        for name, sub in sorted(groups.items()):
            sub.to_netcdf(tmp, mode="a", group=name, engine="h5netcdf", invalid_netcdf=False)
    return path


def read_embedding(path) -> xr.Dataset:
    """Read an embedding written by :func:`write_embedding` (loaded into memory), with its
    product groups joined to the per-item table; files of the earlier one-group layout are
    read as they are."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such embedding file", path=path)
    with xr.open_dataset(path, engine="h5netcdf") as root:
        items = root.load()
    names = json.loads(items.attrs.get("groups", "[]"))
    groups = {}
    for name in names:
        with xr.open_dataset(path, engine="h5netcdf", group=name) as sub:
            groups[name] = sub.load()
    items.attrs.pop("groups", None)
    if "latent_columns" not in items.attrs:     # the earlier layout: one group holds all
        return items
    return join_layers(items, groups)
