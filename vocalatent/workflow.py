"""The end-to-end job, the same for every domain: files → :class:`~vocalatent.prepare.Prepared`
items → QLVM → embedding → analysis → figures.

:func:`run` takes prepared items (recordings as a syllable store, a count matrix, binned neural
activity: see :mod:`vocalatent.prepare`) and trains, embeds, analyses and draws into an output
folder. :func:`embed` (``vocalatent embed``) prepares any input and calls it; :func:`train_job`,
:func:`project_job`, :func:`analyze_run` and :func:`plot_run` are the other commands. Each
command that writes a folder holds it through :func:`vocalatent.outdir.output_folder` (one
writer at a time, no mixing with another run's files, temporary files of killed runs removed).

A stage whose output exists and was made from the same content with the same settings is not
recomputed: the syllable store is keyed on the sha256 of every audio and annotation file and
its settings, the model file records a key of its training configuration and data, and the
embedding records the keys of the model (and the model file's sha256) and the data. A cached
file that cannot be read is rebuilt with a one-line notice.

Configuration is one nested dict (TOML tables): ``[pipeline]``, ``[audio]``, ``[segment]``,
``[spectrogram]`` (see :mod:`vocalatent.config` and :mod:`vocalatent.audio`), ``[single_cell]``,
``[neural]``, ``[model]`` and ``[analysis]`` (defaults below), resolved as preset ← user file ←
command-line flags and written to ``OUT/config.toml`` so that any run can be repeated exactly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from ._utils import DataError, ParameterError, VocalatentError, atomic_path, file_sha256, json_key
from ._version import __version__
from .data.hdf5_probe import check_hdf5
from .config import defaults as config_defaults
from .lattice import AUTO_SIZES
from .data.rows import take_rows
from .embedding import add_item_coords, heldout_attrs, read_embedding, write_embedding
from .figures import domain_figures, eval_lattice_size, make_figures
from .model import QLVM
from .nn.estimate import convergence_summary, needs_warning
from .nn.refine import REFINE_SIZES
from .outdir import output_folder, read_run
from .prepare import Prepared, detect_domain, pipeline_domain, prepare, prepared_from_store

logger = logging.getLogger(__name__)

__all__ = ["ANALYSIS_DEFAULTS", "AUTO_LATTICE", "JobResult", "MODEL_DEFAULTS", "analyze",
           "analyze_run", "cached_embedding", "config_template", "default_out", "dump_toml",
           "embed", "embed_job", "embedding_key", "load_model", "make_model", "plot_run",
           "project", "project_job", "project_recordings", "read_embedding", "resolve", "run",
           "split_indices", "train", "train_job", "write_embedding", "write_run_anndata"]


#: Defaults of the ``[model]`` table (QLVM constructor arguments plus ``validation``): the
#: configuration schema's, which takes them from QLVM's signature (vocalatent.config.tables).
MODEL_DEFAULTS: dict[str, Any] = config_defaults("model")

#: Lattice sizes used when ``[model] n_lattice`` / ``n_eval_lattice`` are 0, by device type
#: and latent dimension: the one table, :data:`vocalatent.lattice.AUTO_SIZES`.
AUTO_LATTICE = AUTO_SIZES

#: Defaults of the ``[analysis]`` table (vocalatent.analysis.params.AnalysisParams).
ANALYSIS_DEFAULTS: dict[str, Any] = config_defaults("analysis")

#: Grid resolution of the analysis on CPU when ``[analysis] resolution = 0`` (GPU: the
#: analysis module's own defaults, 512 / 128 / 48). 2-D: 128, the grid the repertoire benchmark
#: chose the cluster rule on (at 64 the README session's broad group of noisy calls falls just
#: short of the excess-mass threshold, 2.3 sds against 2.5 at 128); the Jacobian map there is
#: 16,384 decoder JVPs (about 30 s for the 128 x 128 conv decoder on 2 cores).
CPU_RESOLUTION = {1: 256, 2: 128, 3: 24}

_MODEL_KEYS_TO_QLVM = ("latent_dim", "likelihood", "decoder", "batch_size", "max_epochs", "lr",
                       "patience", "n_harmonics", "n_eval_shifts", "precision", "n_restarts",
                       "schedule")


# ------------------------------------------------------------------------------- configuration
def resolve(*, pipeline=None, config=None, overrides: Mapping | None = None) -> dict:
    """The effective configuration with ``[model]`` and ``[analysis]`` defaults filled in.

    Parameters
    ----------
    pipeline : str or path-like, optional
        A preset name (``vocalatent pipelines`` lists them) or a TOML file.
    config : path-like, optional
        A user TOML file (``vocalatent config`` writes a commented template).
    overrides : mapping, optional
        Nested tables from flags; ``None`` values never override.
    """
    from .config import deep_merge, resolve_config

    cfg = resolve_config(pipeline=pipeline, config_file=config, overrides=overrides)
    cfg = deep_merge({"model": MODEL_DEFAULTS, "analysis": ANALYSIS_DEFAULTS}, cfg)
    unknown = set(cfg["model"]) - set(MODEL_DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown key(s) in [model]: {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(MODEL_DEFAULTS)}")
    _check_types("model", cfg["model"], MODEL_DEFAULTS)
    unknown = set(cfg["analysis"]) - set(ANALYSIS_DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown key(s) in [analysis]: {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(ANALYSIS_DEFAULTS)}")
    _check_types("analysis", cfg["analysis"], ANALYSIS_DEFAULTS)
    return cfg


def _check_types(table: str, values: Mapping, defaults: Mapping) -> None:
    """ParameterError naming ``[table] key`` when a value is not of its default's type (so a
    mistake in a TOML file is reported before any preprocessing starts)."""
    from .nn.decoders import DECODERS
    from .nn.likelihoods import LIKELIHOODS

    kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "a table"}
    for key, default in defaults.items():
        v = values.get(key, default)
        kind = type(default)
        ok = (isinstance(v, bool) if kind is bool else
              isinstance(v, int) and not isinstance(v, bool) if kind is int else
              isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else
              isinstance(v, kind))
        if not ok:
            raise ParameterError(f"[{table}] {key} must be {kinds.get(kind, kind.__name__)}; got {v!r}")
    choices = {"likelihood": LIKELIHOODS, "decoder": ("auto",) + tuple(DECODERS),
               "precision": ("32", "bf16")} if table == "model" else {}
    for key, allowed in choices.items():
        if values.get(key, defaults[key]) not in allowed:
            raise ParameterError(f"[{table}] {key} must be one of {', '.join(map(repr, allowed))}; "
                                 f"got {values.get(key)!r}")


def make_model(cfg: Mapping, *, device="auto", seed=None, verbose: bool = True) -> QLVM:
    """A QLVM configured from the ``[model]`` table of ``cfg``."""
    from ._utils import resolve_device

    m = {**MODEL_DEFAULTS, **dict(cfg.get("model", {}))}
    kwargs = {k: m[k] for k in _MODEL_KEYS_TO_QLVM if k != "n_eval_shifts"}
    auto = AUTO_LATTICE.get(resolve_device(device).type, AUTO_LATTICE["cpu"]).get(int(m["latent_dim"]))
    kwargs["n_lattice"] = int(m["n_lattice"]) or (auto[0] if auto else None)
    kwargs["n_eval_lattice"] = int(m["n_eval_lattice"]) or (auto[1] if auto else None)
    kwargs["n_eval_shifts"] = int(m["n_eval_shifts"]) or (auto[2] if auto else 4)
    kwargs["batch_size"] = int(m["batch_size"]) or "auto"      # 0: the cost model's rule
    # the weight average belongs to the "auto" schedule (QLVM's own rule: none under "none")
    kwargs["average_epochs"] = float(m["average_epochs"]) if m["schedule"] == "auto" else None
    kwargs["decoder_options"] = dict(m["decoder_options"]) or None
    kwargs["likelihood_options"] = dict(m["likelihood_options"]) or None
    return QLVM(**kwargs, device=device, random_state=seed, verbose=verbose)


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, held-out) indices; at least one item each side when n >= 2."""
    if not 0 <= fraction < 1:
        raise ParameterError(f"validation must be in [0, 1); got {fraction!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    if fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ------------------------------------------------------------------------------- stages
def load_model(path, *, device="auto") -> QLVM:
    """Load a model file, with one-line errors for every way a checkpoint can be unusable
    (unreadable, truncated, malformed parameters, missing keys, mismatched shapes)."""
    try:
        return QLVM.load(path, device=device)
    except VocalatentError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"not a usable vocalatent model checkpoint ({type(exc).__name__}: "
                        f"{text[:200]})", path=path) from None


def train(X, cfg: Mapping, *, out_dir=None, device="auto", seed=None, data_key: str | None = None,
          metadata: Mapping | None = None, verbose: bool = True) -> QLVM:
    """Fit a QLVM on ``X`` (an array or a store's lazily read spectrograms) per ``cfg["model"]``.

    A fraction ``[model] validation`` of the items is held out (seeded) for early stopping and
    the held-out log-likelihood (``model.heldout_``). With ``out_dir``, the model is written
    to ``out_dir/model.pt``; an existing model file made with the same configuration, seed and
    data (``data_key``) is loaded instead of retrained.
    """
    seed = 0 if seed is None else int(seed)
    m = {**MODEL_DEFAULTS, **dict(cfg.get("model", {}))}
    key = json_key({"model": m, "seed": seed, "data": data_key, "version": __version__})
    path = None if out_dir is None else Path(out_dir) / "model.pt"
    if path is not None and path.exists() and data_key is not None:
        try:
            old = load_model(path, device=device)
            if (old.metadata_ or {}).get("train_key") == key:
                logger.info("model %s is up to date; not retrained", path)
                held = old.metadata_.get("heldout")
                if held and (needs_warning(held) or "refine_sizes" not in held and
                             held.get("converged_fraction", 0.0) < 1.0):
                    # a held-out figure that was not converged (or not checked): score it again
                    # with the current evaluator, keep the model
                    _, val_idx = split_indices(int(X.shape[0]), float(m["validation"]), seed)
                    X_val = take_rows(X, val_idx)
                    old.heldout_ = old.evaluate(X_val, n_lattice="auto")
                    if not needs_warning(old.heldout_):
                        logger.info(convergence_summary(old.heldout_))
                    old.save(path, metadata={**old.metadata_, "heldout": old.heldout_})
                return old
            logger.info("model %s was made with other settings or data; retraining", path)
        except DataError as exc:
            logger.warning("%s; training a new model", exc)
    n = int(X.shape[0])
    train_idx, val_idx = split_indices(n, float(m["validation"]), seed)
    model = make_model(cfg, device=device, seed=seed, verbose=verbose)
    X_train = take_rows(X, train_idx)
    X_val = take_rows(X, val_idx) if len(val_idx) else None
    model.fit(X_train, validation=X_val)
    # the held-out score on the adaptive lattice, with its convergence (vocalatent.nn.estimate)
    model.heldout_ = model.evaluate(X_val, n_lattice="auto") if X_val is not None else None
    if model.heldout_ is not None and not needs_warning(model.heldout_):
        logger.info(convergence_summary(model.heldout_))  # evaluate warns (with the remedy) otherwise
    meta = {"train_key": key, "heldout": model.heldout_, "n_train": int(len(train_idx)),
            "n_heldout": int(len(val_idx)), "config": json.loads(json.dumps(dict(cfg), default=str))}
    meta.update(dict(metadata or {}))
    if path is not None:
        model.save(path, metadata=meta)
    else:
        model.metadata_ = meta
    return model


_RESERVED = {"item", "latent", "embedding", "map_point", "spread", "posterior_entropy",
             "log_likelihood", "ess", "shift_sd", "converged", "refined", "cluster", "density",
             "cluster_mode", "jacobian_norm", "boundary"}


def _safe_coords(coords: pd.DataFrame) -> pd.DataFrame:
    """Item metadata with columns that clash with the embedding's own names renamed ``obs_*``."""
    rename = {c: f"obs_{c}" for c in coords.columns if str(c) in _RESERVED or str(c).startswith("grid_")}
    return coords.rename(columns=rename) if rename else coords


def project(model: QLVM, items, *, metadata: Mapping | None = None) -> xr.Dataset:
    """Embed every item; the per-item metadata (and ``metadata``, constant per item) become
    ``item`` coordinates.

    Parameters
    ----------
    model : QLVM
    items : Prepared or SyllableStore
        Prepared items of any domain, or a syllable store (its segment table is the metadata).
    metadata : mapping, optional
        Columns constant over the items (e.g. the session of a batch).

    Returns
    -------
    xarray.Dataset
        :meth:`QLVM.transform_dataset`'s Dataset with the item coordinates, the held-out score
        of the model's training as attributes and, for syllables, the aggregate posterior on
        one lattice (the density the model itself assigns).
    """
    if isinstance(items, Prepared):
        X, coords, domain = items.X, items.coords.reset_index(drop=True), items.domain
    else:
        X, coords, domain = items.spectrograms, items.segments.reset_index(drop=True), "vocal"
    ds = model.transform_dataset(X)
    coords = _safe_coords(coords.copy())
    for k, v in dict(metadata or {}).items():
        coords[k] = v
    ds = add_item_coords(ds, coords)
    if domain == "vocal":
        # the aggregate posterior on one lattice: the density the model itself assigns
        w, pts = model.aggregate_posterior(X, n_lattice=eval_lattice_size(model))
        ds = ds.assign(aggregate_posterior=("lattice_point", w), lattice_z=(("lattice_point", "latent"), pts))
        ds["aggregate_posterior"].attrs.update(long_name="(1/N) sum_i posterior weight of lattice point j")
    heldout = (getattr(model, "metadata_", None) or {}).get("heldout")
    if heldout:
        ds.attrs.update(heldout_attrs(heldout))
    return ds


def analyze(ds: xr.Dataset, model: QLVM | None, cfg: Mapping, *, data=None) -> xr.Dataset:
    """Density and clusters (always), Jacobian map and boundaries (with a model), per
    ``cfg["analysis"]``; returns a new Dataset with the grid products added. With the model
    and its items ``data`` the clusters get the decoder merge (``decoder_merge``)."""
    import vocalatent.accessor  # noqa: F401  (registers ds.vl)

    a = {**ANALYSIS_DEFAULTS, **dict(cfg.get("analysis", {}))}
    res = int(a["resolution"]) or None
    bw = float(a["bandwidth"]) or None
    if bw is None:
        # The significance rule merges the peaks that sampling noise makes at the
        # cross-validated bandwidth, so it is used as it is (bandwidth_scale 1); the
        # persistence rule needed it doubled (docs/analysis.md, benchmarks/bench_repertoire.py).
        from .analysis.density import select_bandwidth

        bw = select_bandwidth(ds["embedding"].values, method="lcv") * float(a["bandwidth_scale"])
    if res is None and model is not None and model.device_.type == "cpu":
        # the Jacobian map costs resolution**d decoder JVPs: keep CPU runs to minutes
        res = CPU_RESOLUTION.get(int(ds.sizes["latent"]))
    # results of an earlier analysis (grid products, per-cluster variables, labels) go first
    stale_dims = [d for d in ds.dims if str(d).startswith("grid_")
                  or d in ("cluster_id", "boundary_line", "boundary_vertex")]
    ds = ds.drop_dims(stale_dims)
    ds = ds.drop_vars([v for v in ("cluster", "boundary") if v in ds.variables])
    if a["clusters"]:
        merge = bool(a["decoder_merge"]) and model is not None and data is not None
        if bool(a["decoder_merge"]) and not merge:
            logger.info("clusters without the decoder merge (%s)",
                        "no model" if model is None else "the items are not at hand")
        ds = ds.vl.clusters(method=str(a["cluster_method"]), bandwidth=bw, resolution=res,
                            significance=float(a["significance"]), min_size=int(a["min_size"]),
                            min_persistence=float(a["min_persistence"]),
                            min_relative_height=float(a["min_relative_height"]),
                            model=model if merge else None, data=data if merge else None,
                            separation=float(a["separation"]), excess_mass=bool(a["excess_mass"]),
                            linkage=str(a["merge_linkage"]),
                            continuum_separation=float(a["continuum_separation"]),
                            continuum_dip=float(a["continuum_dip"]),
                            decoder_dip=float(a["decoder_dip"]))
    else:
        ds = ds.vl.density(bandwidth=bw, resolution=res)
    if a["jacobian"] and model is not None:
        ds = ds.vl.jacobian(model)
        if "cluster_mode" in ds or "cluster" in ds:
            ds = ds.vl.boundaries()
    return ds


def dump_toml(cfg: Mapping, *, comments: Mapping[str, str] | None = None) -> str:
    """Write nested tables of scalars/lists as TOML (None values are left out)."""
    comments = dict(comments or {})

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float, np.integer, np.floating)):
            return repr(float(v)) if isinstance(v, (float, np.floating)) else str(int(v))
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines: list[str] = []

    def table(name, tab):
        scalars = {k: v for k, v in tab.items() if not isinstance(v, Mapping) and v is not None}
        subs = {k: v for k, v in tab.items() if isinstance(v, Mapping)}
        if name and (scalars or not subs):
            lines.append(f"\n[{name}]")
        for k, v in scalars.items():
            note = comments.get(f"{name}.{k}")
            if note:
                lines.append(f"# {note}")
            lines.append(f"{k} = {value(v)}")
        for k, v in subs.items():
            table(f"{name}.{k}" if name else k, v)

    table("", dict(cfg))
    return "\n".join(lines).lstrip() + "\n"


# ------------------------------------------------------------------------------- the job
def embedding_key(model: QLVM, data_key: str, cfg: Mapping, *, model_file=None) -> str:
    """Key of an embedding: the model's training key (and the sha256 of its file when
    given), the data, the analysis settings (figures aside, which change no number) and the
    rule the per-item log-likelihoods are scored by (refinement sizes, package version)."""
    analysis = {k: v for k, v in dict(cfg.get("analysis", {})).items() if k != "figures"}
    # how the per-item log p(x) is scored (local refinement of unconverged items and its
    # ladder of lattice sizes): an embedding scored by another rule is recomputed
    scoring = {"refine": "ladder", "sizes": {str(d): list(v) for d, v in REFINE_SIZES.items()},
               "version": __version__}
    key = {"model": model.metadata_["train_key"], "data": data_key, "analysis": analysis,
           "scoring": scoring}
    if model_file is not None and Path(model_file).is_file():
        key["model_file"] = file_sha256(model_file)
    return json_key(key)


def cached_embedding(path: Path, key: str) -> xr.Dataset | None:
    """The embedding at ``path`` if it was made with ``key`` (see :func:`embedding_key`);
    None when it is missing, stale or unreadable (then recomputed, with a one-line notice)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        old = read_embedding(path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.warning("%s is unreadable (%s); computing it again", path, text[:200])
        return None
    if old.attrs.get("stage_key") == key:
        logger.info("embedding %s is up to date", path)
        return old
    return None


def _run_summary(ds: xr.Dataset, model: QLVM, cfg: Mapping, prepared: Prepared) -> dict:
    held = (getattr(model, "metadata_", None) or {}).get("heldout") or {}
    return {
        "latent_dim": int(ds.sizes["latent"]),
        "likelihood": str(model.likelihood),
        "decoder": str(getattr(model, "decoder_kind_", model.decoder)),
        "n_genes_modelled": int(prepared.X.shape[1]),
        "n_epochs": int(getattr(model, "n_epochs_", 0)),
        "heldout_log_likelihood": float(held.get("log_likelihood", np.nan)),
        "heldout_stderr": float(held.get("stderr", np.nan)),
        "heldout_converged_fraction": float(held.get("converged_fraction", np.nan)),
        "heldout_n_lattice": int(held.get("n_lattice", 0)),
        "seed": int(ds.attrs.get("seed", 0)),
        "vocalatent_version": __version__,
        "lattice": str(ds.attrs.get("lattice", "")),
        "model": str(ds.attrs.get("model", "")),
        "config": json.dumps(cfg, default=str),
        "genes": [str(g) for g in prepared.features],
        "embedding": "obsm['X_qlvm']: posterior circular mean on the latent torus, in turns [0, 1); "
                     "obsm['X_qlvm_torus']: cos/sin per latent dimension",
    }


def _user_anndata(prepared: Prepared):
    """The user's own AnnData for an AnnData input; an AnnData of the file's counts otherwise."""
    import anndata

    from .data.single_cell import read_counts, to_anndata

    src = Path(prepared.source)
    name = src.name.lower()
    if name.endswith(".h5ad"):
        check_hdf5(src)
        return anndata.read_h5ad(src), True
    if name.endswith(".zarr") or (src.is_dir() and (src / ".zgroup").exists()):
        return anndata.read_zarr(src), True
    return to_anndata(read_counts(src, allow_non_integer=True)), False


def write_run_anndata(path, ds: xr.Dataset, model: QLVM, cfg: Mapping, prepared: Prepared) -> Path:
    """Write a single-cell run as ``.h5ad``, the scanpy way.

    With ``anndata`` installed (the ``anndata`` extra): a copy of the user's own AnnData (an
    ``.h5ad``/``.zarr`` input; for 10x, Matrix Market and CSV inputs, an AnnData of the file's
    counts) with every cell and everything the user had (``obsm``, ``layers``, ``uns``), the
    raw counts in ``layers["counts"]`` when ``X`` held them, and the map written by
    :func:`vocalatent.tl.annotate` (``obsm["X_qlvm"]``, ``obsm["X_qlvm_torus"]``, per-cell
    log-likelihood, spread and string cluster categories in ``obs``, colours and the run's
    summary in ``uns``); cells the run filtered out get NaN. Without anndata: the filtered
    cells only, through the built-in h5py writer (a notice says so).
    """
    from .data.single_cell import anndata_available

    summary = _run_summary(ds, model, cfg, prepared)
    if anndata_available():
        from .tl import annotate

        adata, own = _user_anndata(prepared)
        names = pd.Index(adata.obs_names.astype(str))
        cells = np.asarray(ds["cell"].values, dtype=str) if "cell" in ds.coords else None
        if cells is not None and names.is_unique:
            rows = names.get_indexer(cells)
            if (rows >= 0).all():
                layer = prepared.extra["params"].layer
                if not layer and "counts" not in adata.layers:
                    adata.layers["counts"] = adata.X.copy()
                adata.var["qlvm_modelled"] = np.isin(adata.var_names.astype(str),
                                                     prepared.features.astype(str))
                annotate(adata, ds, rows=rows, key_added="qlvm", uns=summary)
                with atomic_path(path, suffix=".h5ad") as tmp:
                    adata.write_h5ad(tmp)
                logger.info("%s: %s with the map (%d of %d cells modelled)", path,
                            "a copy of the input AnnData" if own else "the counts as AnnData",
                            len(rows), adata.n_obs)
                return Path(path)
        logger.warning("%s: cell names are not unique in the input; writing the modelled cells "
                       "only", path)
    else:
        logger.info("%s: anndata is not installed (pip install vocalatent[anndata]); writing "
                    "the modelled cells with the built-in writer", path)
    return _write_filtered_h5ad(path, ds, prepared, summary)


def _write_filtered_h5ad(path, ds: xr.Dataset, prepared: Prepared, summary: dict) -> Path:
    from .data.h5ad import write_h5ad
    from .tl import torus_coordinates

    cm = prepared.extra["matrix"]
    obs = cm.obs.copy()
    obs.index = pd.Index(np.asarray(cm.cell_names, dtype=str))
    obs["qlvm_log_likelihood"] = ds["log_likelihood"].values
    obs["qlvm_spread"] = ds["spread"].values.mean(axis=1)
    if "cluster" in ds:
        obs["qlvm_cluster"] = pd.Categorical(ds["cluster"].values.astype(int).astype(str))
    var = cm.var.copy()
    var.index = pd.Index(np.asarray(cm.gene_names, dtype=str))
    var["qlvm_modelled"] = np.isin(var.index.to_numpy(), prepared.features.astype(str))
    emb = ds["embedding"].values
    obsm = {"X_qlvm": emb, "X_qlvm_torus": torus_coordinates(emb)}
    uns = dict(summary)
    uns["genes"] = json.dumps(uns["genes"])
    return write_h5ad(path, cm.X, obs=obs, var=var, obsm=obsm, uns={"qlvm": uns})


@dataclass
class JobResult:
    """What a command did: its Dataset, folder, model, and what failed.

    Attributes
    ----------
    dataset : xarray.Dataset or None
        The embedding (None for ``train``).
    out : pathlib.Path
        The output folder.
    model : QLVM or None
    prepared : Prepared or None
    figures : list of pathlib.Path
        Figures written.
    failed_figures : list of str
        ``"name: error"`` of every figure that failed.
    """

    dataset: xr.Dataset | None
    out: Path
    model: QLVM | None = None
    prepared: Prepared | None = None
    figures: list = field(default_factory=list)
    failed_figures: list = field(default_factory=list)

    @property
    def n_failed_inputs(self) -> int:
        return 0 if self.prepared is None else self.prepared.n_failed

    @property
    def ok(self) -> bool:
        """True when no input file and no figure failed."""
        return self.n_failed_inputs == 0 and not self.failed_figures

    def problems(self) -> str:
        """One line counting what failed ("" when nothing did), for a command's last line."""
        parts = []
        if self.n_failed_inputs:
            parts.append(f"{self.n_failed_inputs} of {self.prepared.n_inputs} input file(s) failed "
                         f"(see {self.out / 'errors.csv'})")
        if self.failed_figures:
            parts.append(f"{len(self.failed_figures)} figure(s) failed "
                         f"({', '.join(f.split(':', 1)[0] for f in self.failed_figures)})")
        return "; ".join(parts)


def default_out(path) -> Path:
    """The default output folder of an input: ``<path>_vocalatent`` beside it."""
    path = Path(path).resolve()
    return path.parent / f"{path.name}_vocalatent"


def _example_item(prepared: Prepared) -> np.ndarray:
    return np.asarray(prepared.X[np.array([0])])


def run(prepared: Prepared, cfg: Mapping, out, *, device="auto", seed: int | None = None,
        verbose: bool = True) -> JobResult:
    """Prepared items → QLVM → embedding → analysis → figures, in ``out``; any domain.

    Trains (or reuses the up-to-date ``out/model.pt``), embeds and analyses (or reuses the
    up-to-date ``out/embedding.nc``), writes ``adata.h5ad`` for cells and draws the figures.
    The caller holds the folder (:func:`vocalatent.outdir.output_folder`).

    Parameters
    ----------
    prepared : Prepared
        From :func:`vocalatent.prepare.prepare`.
    cfg : mapping
        The resolved configuration (:func:`resolve`).
    out : path-like
        The output folder.
    device : {"auto", "cpu", "cuda", "cuda:N"}
    seed : int or None
        Seed of the split, initialisation, shuffling and lattice shifts (default 0).
    verbose : bool
        Progress bars.

    Returns
    -------
    JobResult
    """
    out = Path(out)
    seed = 0 if seed is None else int(seed)
    model = train(prepared.X, cfg, out_dir=out, device=device, seed=seed,
                  data_key=prepared.data_key, verbose=verbose,
                  metadata={**prepared.model_metadata, "domain": prepared.domain,
                            "input": str(prepared.source)})
    emb_path = out / "embedding.nc"
    stage_key = embedding_key(model, prepared.data_key, cfg, model_file=out / "model.pt")
    ds = cached_embedding(emb_path, stage_key)
    if ds is None:
        ds = project(model, prepared)
        ds = analyze(ds, model, cfg, data=prepared.X)
        ds.attrs["config"] = json.dumps(cfg, default=str)
        ds.attrs["stage_key"] = stage_key
        ds.attrs["input"] = str(prepared.source)
        ds.attrs["domain"] = prepared.domain
        if prepared.features is not None:
            ds.attrs["features"] = json.dumps([str(f) for f in prepared.features])
        write_embedding(ds, emb_path)
    if prepared.domain == "single_cell" and prepared.extra["params"].write_anndata:
        write_run_anndata(out / "adata.h5ad", ds, model, cfg, prepared)
    result = JobResult(ds, out, model, prepared)
    if cfg.get("analysis", {}).get("figures", True):
        result.figures += make_figures(ds, model, out / "figures", cfg,
                                       example_item=_example_item(prepared),
                                       failed=result.failed_figures)
        result.figures += domain_figures(ds, model, prepared, out / "figures", cfg,
                                         failed=result.failed_figures)
        from .interactive import write_job_map  # OUT/map.html; a notice if Bokeh is missing

        write_job_map(out, ds=ds, model=model,
                      features=None if prepared.domain == "vocal" else prepared.X)
    return result


def _check_device(device):
    from ._utils import resolve_device

    return resolve_device(device)


def _job_config(path: Path, *, pipeline, config, overrides, latent_dim=None, max_epochs=None,
                figures=None) -> tuple[dict, str, Any]:
    """(resolved configuration, domain, pipeline) of an input: a matrix or neural input
    without an explicit preset gets its domain's preset."""
    from .config import deep_merge

    domain = detect_domain(path, pipeline=pipeline, config=config)
    if domain != "vocal" and pipeline is None and pipeline_domain(None, config) is None:
        pipeline = domain
    flags: dict[str, Any] = {"model": {"latent_dim": latent_dim, "max_epochs": max_epochs}}
    if figures is not None:
        flags["analysis"] = {"figures": bool(figures)}
    cfg = resolve(pipeline=pipeline, config=config, overrides=deep_merge(flags, dict(overrides or {})))
    if domain != "vocal":
        if cfg.get("pipeline", {}).get("domain", "vocal") == "vocal":
            cfg.setdefault("pipeline", {})["domain"] = domain
        domain = cfg["pipeline"]["domain"]
    return cfg, domain, pipeline


def _write_config(cfg: Mapping, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dump_toml(cfg))


def embed_job(path, out=None, *, pipeline=None, config=None, latent_dim: int | None = None,
              device="auto", seed: int | None = None, n_jobs: int | None = None, max_epochs: int | None = None,
              overrides: Mapping | None = None, figures: bool | None = None, force: bool = False,
              verbose: bool = True) -> JobResult:
    """:func:`embed`, returning the :class:`JobResult` (what failed, the folder, the model)."""
    path = Path(path).resolve()
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    cfg, domain, _ = _job_config(path, pipeline=pipeline, config=config, overrides=overrides,
                                 latent_dim=latent_dim, max_epochs=max_epochs, figures=figures)
    seed = 0 if seed is None else int(seed)
    _check_device(device)                      # before any preprocessing
    out = Path(out) if out is not None else default_out(path)
    with output_folder(out, command="embed", identity={"kind": "fit", "input": str(path)},
                       force=force, record={"domain": domain, "seed": seed}):
        _write_config({**cfg, "run": {"seed": seed, "input": str(path)}}, out / "config.toml")
        prepared = prepare(path, out, cfg, domain=domain, n_jobs=n_jobs)
        return run(prepared, cfg, out, device=device, seed=seed, verbose=verbose)


def embed(path, out=None, *, pipeline=None, config=None, latent_dim: int | None = None,
          device="auto", seed: int | None = None, n_jobs: int | None = None, max_epochs: int | None = None,
          overrides: Mapping | None = None, figures: bool | None = None, force: bool = False,
          verbose: bool = True) -> xr.Dataset:
    """Any input → prepared items → QLVM → embedding → analysis → figures.

    Parameters
    ----------
    path : path-like
        A folder searched recursively for recordings (or one audio file), a count matrix
        (``.h5ad``, 10x ``.h5``, Matrix Market folder, ``.zarr``, CSV/TSV) or neural data
        (spike times in ``.npz`` / HDF5 / text / ``.nwb``, or a binned matrix); see
        :func:`vocalatent.prepare.detect_domain`.
    out : path-like or None
        Output folder (default ``<path>_vocalatent`` beside the input). It receives
        ``run.json``, ``config.toml`` (the resolved configuration), ``model.pt``,
        ``embedding.nc`` and ``figures/*.png``; for recordings ``segments.csv``,
        ``errors.csv``, ``inputs.json`` and ``syllables.h5``; ``genes.csv`` /
        ``units.csv``, and ``adata.h5ad`` for cells.
    pipeline, config
        Preset name/file and user TOML file (see :func:`resolve`); a matrix or neural input
        without either gets its domain's preset.
    latent_dim, max_epochs : int or None
        Shortcuts for ``[model]`` settings.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        Checked before any preprocessing.
    seed : int or None
        Seed of the split, initialisation, shuffling and lattice shifts (default 0).
    n_jobs : int
        Processes for segmentation and spectrograms.
    overrides : mapping, optional
        Further nested settings (like command-line flags).
    figures : bool or None
        Write figures (default: ``[analysis] figures``).
    force : bool
        Replace a folder holding another run's results (its files are removed first).
    verbose : bool
        Progress bars.

    Returns
    -------
    ds : xarray.Dataset
        The analysed embedding (also written to ``out/embedding.nc``).

    Raises
    ------
    OutputLockedError
        Another process writes ``out``.
    ParameterError
        ``out`` holds another run (without ``force``); a setting is invalid.
    DataError
        Unusable input; ``out`` cannot be written.
    """
    return embed_job(path, out, pipeline=pipeline, config=config, latent_dim=latent_dim,
                     device=device, seed=seed, n_jobs=n_jobs, max_epochs=max_epochs,
                     overrides=overrides, figures=figures, force=force, verbose=verbose).dataset


def train_job(path, out, *, pipeline=None, config=None, device="auto", seed: int | None = None,
              n_jobs: int | None = None, overrides: Mapping | None = None, force: bool = False,
              verbose: bool = True) -> JobResult:
    """Prepare the input at ``path`` (any domain; a ``syllables.h5`` store is used as it is)
    and train a QLVM on it into ``out/model.pt`` (reused when up to date)."""
    path = Path(path).resolve()
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    cfg, domain, _ = _job_config(path, pipeline=pipeline, config=config, overrides=overrides)
    seed = 0 if seed is None else int(seed)
    _check_device(device)
    out = Path(out)
    with output_folder(out, command="train", identity={"kind": "fit", "input": str(path)},
                       force=force, record={"domain": domain, "seed": seed}):
        _write_config({**cfg, "run": {"seed": seed, "input": str(path)}}, out / "config.toml")
        prepared = prepare(path, out, cfg, domain=domain, n_jobs=n_jobs)
        model = train(prepared.X, cfg, out_dir=out, device=device, seed=seed,
                      data_key=prepared.data_key, verbose=verbose,
                      metadata={**prepared.model_metadata, "domain": prepared.domain,
                                "input": str(prepared.source)})
        return JobResult(None, out, model, prepared)


def project_job(model_path, path, out, *, n_jobs: int | None = None, device="auto",
                metadata: Mapping | None = None, force: bool = False) -> JobResult:
    """Embed new data with an existing model, prepared the way its training data was (the
    preprocessing is stored in the model file); writes ``out/embedding.nc`` (and, for
    recordings, ``out/syllables.h5``).

    The model is loaded, and its domain compared with the input's, before any preprocessing.
    """
    _check_device(device)
    model_path = Path(model_path).resolve()
    path = Path(path).resolve()
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    model = load_model(model_path, device=device)
    meta = model.metadata_ or {}
    model_domain = meta.get("domain", "vocal")
    data_domain = detect_domain(path, pipeline=model_domain if model_domain != "vocal" else None)
    if data_domain != model_domain:
        raise ParameterError(f"{model_path} models {model_domain} data but {path} holds "
                             f"{data_domain} data; project it with a model trained on {data_domain} data")
    cfg = dict(meta.get("config") or {})
    if meta.get("spectrogram_resolved"):
        cfg["spectrogram"] = meta["spectrogram_resolved"]
    out = Path(out)
    identity = {"kind": "project", "input": str(path), "model": str(model_path)}
    with output_folder(out, command="project", identity=identity, force=force,
                       record={"domain": model_domain}):
        features = meta.get("features") if model_domain != "vocal" else None
        prepared = prepare(path, out, cfg, domain=model_domain, features=features, n_jobs=n_jobs)
        if tuple(prepared.X.shape[1:]) != tuple(model.item_shape_):
            raise DataError(f"items of shape {tuple(prepared.X.shape[1:])} do not match the "
                            f"model's {tuple(model.item_shape_)}", path=model_path)
        ds = project(model, prepared, metadata=metadata)
        ds.attrs["model_file"] = str(model_path)
        ds.attrs["input"] = str(path)
        ds.attrs["domain"] = model_domain
        write_embedding(ds, out / "embedding.nc")
        return JobResult(ds, out, model, prepared)


def project_recordings(model_path, path, out, *, n_jobs: int | None = None, device="auto",
                       metadata: Mapping | None = None, force: bool = False) -> xr.Dataset:
    """Embed new data with an existing model (see :func:`project_job`); returns the Dataset."""
    return project_job(model_path, path, out, n_jobs=n_jobs, device=device, metadata=metadata,
                       force=force).dataset


def _read_run_embedding(out: Path) -> xr.Dataset:
    path = out / "embedding.nc"
    if not path.is_file():
        raise DataError("no embedding.nc here; run `vocalatent embed` into this folder first", path=out)
    try:
        return read_embedding(path)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"unreadable ({text[:200]}); run `vocalatent embed` again to rebuild it",
                        path=path) from None


def analyze_run(out, *, config=None, overrides: Mapping | None = None) -> JobResult:
    """Recompute density, clusters, Jacobian map and boundaries of the run in ``out`` (any
    domain) and rewrite ``out/embedding.nc``.

    The run's own ``[analysis]`` settings (recorded in the embedding) are the base; a user
    TOML file's ``[analysis]`` table and ``overrides`` (nested tables) go on top.
    """
    from .config import deep_merge

    out = Path(out)
    if not out.is_dir():
        raise DataError("no such output folder", path=out)
    with output_folder(out, command="analyze"):
        ds = _read_run_embedding(out)
        model = load_model(out / "model.pt") if (out / "model.pt").exists() else None
        cfg = run_cfg = json.loads(ds.attrs.get("config", "{}") or "{}")
        if config is not None:
            cfg = deep_merge(cfg, {"analysis": resolve(config=config)["analysis"]})
        cfg = resolve(overrides=deep_merge({"analysis": cfg.get("analysis", {})},
                                           dict(overrides or {})))
        data = None
        if model is not None and cfg["analysis"].get("clusters", True) and cfg["analysis"].get(
                "decoder_merge", True):
            prepared, problem = run_items(out, ds, run_cfg)    # prepared as the run prepared it
            if prepared is not None:
                data = prepared.X
            elif problem is not None:
                logger.warning("analyze %s: the run's items cannot be read again (%s); clusters "
                               "without the decoder merge", out, problem)
        ds = analyze(ds, model, cfg, data=data)
        write_embedding(ds, out / "embedding.nc")
        return JobResult(ds, out, model)


def run_items(out, ds: xr.Dataset, cfg: Mapping):
    """The items of the run in ``out`` read again, in the embedding's order, for the commands
    that work on a finished run (``analyze``: the decoder merge; ``plot``: the domain figures).

    A vocal run's items are its own ``OUT/syllables.h5``; other domains re-read the input the
    run recorded. Returns ``(prepared, None)``, or ``(None, problem)`` with what went wrong
    (the store or input is gone, unreadable, or now holds other items), or ``(None, None)``
    when a vocal run has no store.
    """
    out = Path(out)
    domain = ds.attrs.get("domain", "vocal")
    n = int(ds.sizes["item"])
    if domain == "vocal":
        if not (out / "syllables.h5").exists():
            return None, None
        from .data.store import SyllableStore

        try:
            prepared = prepared_from_store(SyllableStore(out / "syllables.h5"), inputs="")
        except DataError as exc:
            return None, str(exc)
        if prepared.n_items != n:
            return None, f"{out / 'syllables.h5'} holds {prepared.n_items} syllables, the run embedded {n}"
        onsets = prepared.coords["onset_s"] if "onset_s" in prepared.coords else None
        if onsets is not None and "onset_s" in ds and not np.allclose(
                np.asarray(onsets, dtype=float), ds["onset_s"].values.astype(float), atol=1e-6):
            return None, f"{out / 'syllables.h5'} holds other syllables than the embedding"
        return prepared, None
    source = ds.attrs.get("input") or (read_run(out) or {}).get("input")
    try:
        prepared = prepare(Path(source), None, cfg, domain=domain)
    except (VocalatentError, TypeError) as exc:
        return None, str(exc)
    if prepared.n_items != n:
        return None, f"{source} now gives {prepared.n_items} items, the run embedded {n}"
    return prepared, None


def plot_run(out, *, html: bool = False) -> JobResult:
    """(Re)draw the figures of the run in ``out`` (any domain) into ``out/figures``; with
    ``html``, write the interactive page ``out/map.html`` instead.

    The domain's own figures need the input again (re-read as the run read it); when it is
    gone, they are counted as failed.
    """
    out = Path(out)
    if not out.is_dir():
        raise DataError("no such output folder", path=out)
    with output_folder(out, command="plot"):
        if html:
            from .interactive import write_run_map

            return JobResult(None, out, figures=[write_run_map(out).path])
        ds = _read_run_embedding(out)
        model = load_model(out / "model.pt") if (out / "model.pt").exists() else None
        cfg = json.loads(ds.attrs.get("config", "{}") or "{}")
        result = JobResult(ds, out, model)
        example = None
        prepared, problem = run_items(out, ds, cfg)
        if prepared is not None:
            example = _example_item(prepared)
        elif problem is not None:
            result.failed_figures.append(
                f"posterior: {problem}" if ds.attrs.get("domain", "vocal") == "vocal"
                else f"domain figures: the input cannot be read again ({problem})")
        result.figures += make_figures(ds, model, out / "figures", cfg, example_item=example,
                                       failed=result.failed_figures)
        if prepared is not None and model is not None:
            result.figures += domain_figures(ds, model, prepared, out / "figures", cfg,
                                             failed=result.failed_figures)
        result.prepared = None   # re-read inputs are not this command's inputs
        return result


_COMMENTS = {
    "audio.channel": "channel to analyse (0 = first), or \"all\" for each channel as its own source",
    "audio.chunk_s": "seconds of audio held in memory at a time (long recordings are read in chunks)",
    "audio.annotations": "\"auto\": use annotation files beside the audio; \"ignore\"; or a folder",
    "segment.f_min": "lower edge of the band used for amplitude segmentation (Hz)",
    "segment.f_max": "upper edge of that band (Hz); must be below half the sample rate",
    "segment.window_s": "STFT window (s)",
    "segment.hop_s": "STFT hop (s)",
    "segment.th1": "low threshold (fraction of the calibrated dB range): syllable boundaries",
    "segment.th2": "middle threshold: a local minimum below it splits syllables",
    "segment.th3": "high threshold: a syllable must rise above it",
    "segment.smoothing_s": "smoothing of the amplitude trace (s)",
    "segment.min_dur_s": "shortest syllable kept (s)",
    "segment.max_dur_s": "longest syllable kept (s)",
    "segment.min_gap_s": "syllables closer than this are merged (s)",
    "spectrogram.n_freq": "frequency rows of each syllable image",
    "spectrogram.n_time": "time columns of each syllable image",
    "spectrogram.f_min": "lowest frequency shown (Hz)",
    "spectrogram.f_max": "highest frequency shown (Hz)",
    "spectrogram.freq_scale": "\"linear\" or \"mel\" frequency axis",
    "spectrogram.time_mode": "\"stretch\": each syllable fills the image; \"window\": fixed window_dur_s",
    "model.latent_dim": "1 (ring), 2 (torus map) or 3",
    "model.likelihood": "gaussian | bernoulli | poisson | poisson_offset | multinomial | negbin",
    "model.decoder": "auto (conv for images, MLP otherwise) | conv | mlp",
    "model.n_lattice": "training lattice size m; 0 = automatic (d=1/2/3: 256/987/2039 on CUDA, 128/377/1021 on CPU)",
    "model.batch_size": "items per step; a step decodes m points whatever the batch size; 0 = automatic from the cost model (equal batches up to where the likelihood work equals the decoder work, at least 3 steps per epoch)",
    "model.schedule": "\"auto\": lr warm-up and decay on plateaus, a growing training lattice, early stopping on the running median; \"none\": constant lr, one lattice",
    "model.max_epochs": "upper bound on epochs; early stopping on held-out log p(x) usually ends sooner",
    "model.lr": "Adam learning rate",
    "model.patience": "epochs without held-out improvement before stopping",
    "model.n_eval_lattice": "evaluation lattice size; 0 = automatic (6765 for d=2 on CUDA, 2584 on CPU)",
    "model.n_eval_shifts": "random lattice shifts averaged for scores and embeddings; 0 = 4 on CUDA, 2 on CPU",
    "model.validation": "fraction of items held out for early stopping and the held-out score",
    "model.precision": "\"32\" or \"bf16\" (bfloat16 decoder on CUDA)",
    "model.n_restarts": "independent trainings; the one with the best held-out log p(x) is kept (fights folded maps)",
    "analysis.clusters": "find clusters by mode seeking on the periodic density",
    "analysis.jacobian": "compute the decoder Jacobian map and syllable boundaries",
    "analysis.resolution": "grid cells per latent axis; 0 = default",
    "analysis.bandwidth": "KDE bandwidth in torus turns; 0 = automatic (bandwidth_scale x the cross-validated one)",
    "analysis.bandwidth_scale": "automatic bandwidth = this x the likelihood-cross-validated KDE bandwidth (modes need smoother estimates)",
    "analysis.geodesic": "draw a geodesic between the two largest clusters",
    "analysis.cluster_method": "\"significance\": density dips judged against sampling noise; \"persistence\": fixed thresholds (the old rule)",
    "analysis.significance": "two density peaks stay separate clusters when the dip between them exceeds this many sampling-noise standard deviations",
    "analysis.min_size": "a group of items alone in empty space is a cluster when it has at least this many items",
    "analysis.excess_mass": "with significance: a dip also counts when the lower group's excess mass above the pass exceeds the threshold (broad groups)",
    "analysis.min_persistence": "two density peaks stay separate clusters only if the density between them dips by this fraction",
    "analysis.min_relative_height": "density peaks lower than this fraction of the highest peak are merged into a neighbour",
    "analysis.decoder_merge": "join clusters whose items do not separate along the decoder's direction between them",
    "analysis.separation": "with decoder_merge: two clusters stay apart when their items' medians along the decoder's direction are this many sds (of the tighter cluster) apart",
    "analysis.merge_linkage": "with decoder_merge: \"centroid\" joins the closest pair and tests the merged cluster again; \"single\" joins along every close pair",
    "analysis.figures": "write PNG figures to OUT/figures",
}


def config_template(*, pipeline=None) -> str:
    """A commented TOML file of every setting, with the preset's values filled in."""
    cfg = resolve(pipeline=pipeline)
    pipe = dict(cfg.pop("pipeline", {}))
    head = [f"# vocalatent configuration (version {__version__})",
            f"# Start from the preset {pipe.get('name', 'default')!r}: {pipe.get('description', '')}",
            "# Use with: vocalatent embed PATH --config THIS_FILE   (flags override this file)",
            "", "[pipeline]", f"extends = {json.dumps(pipe.get('name', 'default'))}", ""]
    return "\n".join(head) + dump_toml(cfg, comments=_template_comments(cfg))


def _template_comments(cfg: Mapping) -> dict:
    """The template's comment per ``table.key``: the short line of ``_COMMENTS`` where it has
    one, else the key's help text from the config schema (so a new setting needs no second
    copy of its help here)."""
    from .config.schema import field_help

    out = {}
    for table, tab in cfg.items():
        if not isinstance(tab, Mapping):
            continue
        for key, val in tab.items():
            if not isinstance(val, Mapping):
                name = f"{table}.{key}"
                try:
                    out[name] = _COMMENTS.get(name) or " ".join(field_help(table, key).split())
                except (KeyError, VocalatentError):  # a key or table the schema does not know
                    continue
    return out
