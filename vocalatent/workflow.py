"""The end-to-end job and its stages: recordings → syllable store → QLVM → embedding →
analysis → figures.

Each stage is a public function, and :func:`embed` chains them (the ``vocalatent embed``
command is a thin layer over it). A stage whose output exists and was made with the same
parameters from the same input is not recomputed: the syllable store checks its own
parameters and segments, the model file records a key of its training configuration and
data, and the embedding records the keys of the model and store it came from.

Configuration is one nested dict (TOML tables): ``[pipeline]``, ``[audio]``, ``[segment]``,
``[spectrogram]`` (see :mod:`vocalatent.config` and :mod:`vocalatent.audio`), ``[model]`` and
``[analysis]`` (defaults below), resolved as preset ← user file ← command-line flags and
written to ``OUT/config.toml`` so that any run can be repeated exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from ._utils import DataError, ParameterError, atomic_path, json_key
from ._version import __version__
from .embedding import add_item_coords, heldout_attrs, read_embedding, write_embedding
from .model import QLVM
from .nn.estimate import convergence_summary, needs_warning

logger = logging.getLogger(__name__)

#: Defaults of the ``[model]`` table (QLVM constructor arguments plus ``validation``).
MODEL_DEFAULTS: dict[str, Any] = {
    "latent_dim": 2,
    "likelihood": "gaussian",
    "decoder": "auto",
    "n_lattice": 0,            # 0: automatic by device, see AUTO_LATTICE
    "batch_size": 256,
    "max_epochs": 150,
    "lr": 1e-3,
    "patience": 20,
    "n_harmonics": 1,
    "n_eval_lattice": 0,       # 0: automatic by device, see AUTO_LATTICE
    "n_eval_shifts": 0,        # 0: automatic by device (4 on CUDA, 2 on CPU)
    "validation": 0.1,         # fraction held out for early stopping and the held-out score
    "n_restarts": 1,           # trainings from different initialisations; the best held-out one is kept
    "precision": "32",
    "decoder_options": {},
    "likelihood_options": {},
}

#: Lattice sizes used when ``[model] n_lattice`` / ``n_eval_lattice`` are 0, by device type
#: and latent dimension: (training m, evaluation m, evaluation shifts). A training step
#: decodes m points and costs ~6·B·m·D flops in the likelihood, so on a CPU the job uses
#: smaller lattices to finish a 128 x 128 spectrogram map in minutes (docs/method.md).
AUTO_LATTICE = {
    "cuda": {1: (256, 2048, 4), 2: (987, 6765, 4), 3: (2039, 8191, 4)},
    "cpu": {1: (128, 1024, 2), 2: (377, 2584, 2), 3: (1021, 4093, 2)},
}

#: Defaults of the ``[analysis]`` table.
ANALYSIS_DEFAULTS: dict[str, Any] = {
    "clusters": True,
    "jacobian": True,
    "resolution": 0,           # 0: the default grid for the latent dimension
    "bandwidth": 0.0,          # 0: chosen automatically (see bandwidth_scale)
    "bandwidth_scale": 1.0,    # automatic bandwidth = this x the cross-validated KDE bandwidth
    # clusters (docs/analysis.md; the old rule: "persistence", bandwidth_scale 2,
    # min_persistence 0.5, min_relative_height 0.1)
    "cluster_method": "significance",  # dips judged against sampling noise, or "persistence"
    "significance": 2.5,       # a dip must exceed this many sampling-noise sds
    "min_size": 5,             # a group alone in empty space needs this many items
    "min_persistence": 0.0,    # peaks stay apart only if the density dips by this fraction
    "min_relative_height": 0.0,  # peaks lower than this fraction of the highest are merged
    "geodesic": True,
    "figures": True,
}

#: Grid resolution of the analysis on CPU when ``[analysis] resolution = 0`` (GPU: the
#: analysis module's own defaults, 512 / 128 / 48).
CPU_RESOLUTION = {1: 256, 2: 64, 3: 24}

_MODEL_KEYS_TO_QLVM = ("latent_dim", "likelihood", "decoder", "batch_size", "max_epochs", "lr",
                       "patience", "n_harmonics", "n_eval_shifts", "precision", "n_restarts")


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
    unknown = set(cfg["analysis"]) - set(ANALYSIS_DEFAULTS)
    if unknown:
        raise ParameterError(f"unknown key(s) in [analysis]: {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(ANALYSIS_DEFAULTS)}")
    return cfg


def make_model(cfg: Mapping, *, device="auto", seed=None, verbose: bool = True) -> QLVM:
    """A QLVM configured from the ``[model]`` table of ``cfg``."""
    from ._utils import resolve_device

    m = {**MODEL_DEFAULTS, **dict(cfg.get("model", {}))}
    kwargs = {k: m[k] for k in _MODEL_KEYS_TO_QLVM if k != "n_eval_shifts"}
    auto = AUTO_LATTICE[resolve_device(device).type].get(int(m["latent_dim"]))
    kwargs["n_lattice"] = int(m["n_lattice"]) or (auto[0] if auto else None)
    kwargs["n_eval_lattice"] = int(m["n_eval_lattice"]) or (auto[1] if auto else None)
    kwargs["n_eval_shifts"] = int(m["n_eval_shifts"]) or (auto[2] if auto else 4)
    kwargs["decoder_options"] = dict(m["decoder_options"]) or None
    kwargs["likelihood_options"] = dict(m["likelihood_options"]) or None
    return QLVM(**kwargs, device=device, random_state=seed, verbose=verbose)


class IndexedArray:
    """A lazily read view of rows ``index`` of an array-like (for held-out splits of a store)."""

    def __init__(self, base, index):
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index),) + tuple(base.shape[1:])
        self.dtype = getattr(base, "dtype", np.float32)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, idx):
        rows = self.index[np.asarray(idx)]
        order = np.argsort(rows, kind="stable")
        data = np.asarray(self.base[rows[order]])
        out = np.empty_like(data)
        out[order] = data
        return out


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
def build_syllable_store(path, out_dir, cfg: Mapping, *, n_jobs: int = 1):
    """Segment the recordings under ``path`` (or read their annotations) and write the store.

    Writes ``out_dir/syllables.h5``, ``out_dir/segments.csv`` and ``out_dir/errors.csv``.

    Returns
    -------
    store : SyllableStore
    errors : pandas.DataFrame [columns: source, error]
    """
    from .audio.pipeline import build_store

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    audio = dict(cfg.get("audio", {}))
    store, errors = build_store(
        path, out_dir / "syllables.h5",
        segment_params=cfg.get("segment", {}), spectrogram_params=cfg.get("spectrogram", {}),
        annotations=audio.get("annotations", "auto"), channel=audio.get("channel", 0),
        n_jobs=n_jobs, chunk_s=float(audio.get("chunk_s", 60.0)), reuse=True)
    segs = store.segments
    with atomic_path(out_dir / "segments.csv") as tmp:
        segs.to_csv(tmp, index=False)
    with atomic_path(out_dir / "errors.csv") as tmp:
        errors.to_csv(tmp, index=False)
    if "segment_report" in store.info:  # what segmentation's filters removed (issue 12)
        with atomic_path(out_dir / "segment_report.json") as tmp:
            tmp.write_text(json.dumps(store.info["segment_report"], indent=1))
    if len(store) == 0:
        raise DataError(f"no syllables were found in {path} "
                        f"({len(errors)} file(s) failed; see {out_dir / 'errors.csv'})")
    return store, errors


def _store_key(store) -> str:
    from .audio.pipeline import segments_digest

    return json_key({"params": store.params, "n": len(store), "segments": segments_digest(store.segments)})


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
            old = QLVM.load(path, device=device)
            if (old.metadata_ or {}).get("train_key") == key:
                logger.info("model %s is up to date; not retrained", path)
                return old
            logger.info("model %s was made with other settings or data; retraining", path)
        except DataError as exc:
            logger.warning("ignoring unreadable model file: %s", exc)
    n = int(X.shape[0])
    train_idx, val_idx = split_indices(n, float(m["validation"]), seed)
    model = make_model(cfg, device=device, seed=seed, verbose=verbose)
    X_train = X[train_idx] if isinstance(X, np.ndarray) else IndexedArray(X, train_idx)
    X_val = None
    if len(val_idx):
        X_val = X[val_idx] if isinstance(X, np.ndarray) else IndexedArray(X, val_idx)
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


def project(model: QLVM, store, *, metadata: Mapping | None = None) -> xr.Dataset:
    """Embed every item of a syllable store; its segment table (and ``metadata``, constant
    per item) become ``item`` coordinates."""
    segs = store.segments.reset_index(drop=True)
    ds = model.transform_dataset(store.spectrograms)
    coords = segs.copy()
    for k, v in dict(metadata or {}).items():
        coords[k] = v
    ds = add_item_coords(ds, coords)
    # the aggregate posterior on one lattice: the density the model itself assigns
    w, pts = model.aggregate_posterior(store.spectrograms, n_lattice=min(model.eval_lattice_size(), 6765))
    ds = ds.assign(aggregate_posterior=("lattice_point", w), lattice_z=(("lattice_point", "latent"), pts))
    ds["aggregate_posterior"].attrs.update(long_name="(1/N) sum_i posterior weight of lattice point j")
    heldout = (getattr(model, "metadata_", None) or {}).get("heldout")
    if heldout:
        ds.attrs.update(heldout_attrs(heldout))
    return ds


def analyze(ds: xr.Dataset, model: QLVM | None, cfg: Mapping) -> xr.Dataset:
    """Density and clusters (always), Jacobian map and boundaries (with a model), per
    ``cfg["analysis"]``; returns a new Dataset with the grid products added."""
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
        ds = ds.vl.clusters(method=str(a["cluster_method"]), bandwidth=bw, resolution=res,
                            significance=float(a["significance"]), min_size=int(a["min_size"]),
                            min_persistence=float(a["min_persistence"]),
                            min_relative_height=float(a["min_relative_height"]))
    else:
        ds = ds.vl.density(bandwidth=bw, resolution=res)
    if a["jacobian"] and model is not None:
        ds = ds.vl.jacobian(model)
        if "cluster_mode" in ds or "cluster" in ds:
            ds = ds.vl.boundaries()
    return ds


def make_figures(ds: xr.Dataset, model: QLVM | None, fig_dir, cfg: Mapping | None = None, *,
                 example_item: np.ndarray | None = None) -> list[Path]:
    """Write the standard figures (PNG) into ``fig_dir``; returns their paths.

    ``example_item`` (one item, shape (1, ...)) gets a posterior heat map.
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
        w, pts = model.posterior(example_item, n_lattice=min(model.eval_lattice_size(), 6765))
        fig, ax = plt.subplots(figsize=(6, 5))
        vplot.plot_posterior(w[0], pts, ax=ax, title="Lattice posterior of item 0")
        save(fig, "posterior_item0.png")

    if example_item is not None:
        attempt("posterior", posterior_fig)
    return written


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
def embedding_key(model: QLVM, data_key: str, cfg: Mapping) -> str:
    """Key of an embedding: the model's training key, the data and the analysis settings
    (figures aside, which change no number)."""
    analysis = {k: v for k, v in dict(cfg.get("analysis", {})).items() if k != "figures"}
    return json_key({"model": model.metadata_["train_key"], "data": data_key, "analysis": analysis})


def cached_embedding(path: Path, key: str) -> xr.Dataset | None:
    """The embedding at ``path`` if it was made with ``key`` (see :func:`embedding_key`)."""
    if not Path(path).exists():
        return None
    old = read_embedding(path)
    if old.attrs.get("stage_key") == key:
        logger.info("embedding %s is up to date", path)
        return old
    return None


def _check_out(out: Path, path: Path, force: bool) -> None:
    run = out / "run.json"
    if run.exists() and not force:
        try:
            info = json.loads(run.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        if info.get("input") and info.get("input") != str(path):
            raise ParameterError(
                f"{out} holds the results of another run (input {info.get('input')}); "
                f"choose another output folder or pass --force to overwrite"
            )
    elif out.exists() and any(out.iterdir()) and not run.exists() and not force:
        raise ParameterError(f"{out} exists and is not a vocalatent output folder; choose an "
                             "empty or new folder (or pass --force)")


def _write_config(cfg: Mapping, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(dump_toml(cfg))


def embed(path, out=None, *, pipeline=None, config=None, latent_dim: int | None = None,
          device="auto", seed: int | None = None, n_jobs: int = 1, max_epochs: int | None = None,
          overrides: Mapping | None = None, figures: bool | None = None, force: bool = False,
          verbose: bool = True) -> xr.Dataset:
    """Recordings → syllable store → QLVM → embedding → analysis → figures.

    Parameters
    ----------
    path : path-like
        A folder searched recursively for recordings (or one file).
    out : path-like or None
        Output folder (default ``<path>_vocalatent`` beside the input). It receives
        ``config.toml`` (the resolved configuration), ``segments.csv``, ``errors.csv``,
        ``syllables.h5``, ``model.pt``, ``embedding.nc`` and ``figures/*.png``.
    pipeline, config
        Preset name/file and user TOML file (see :func:`resolve`).
    latent_dim, max_epochs : int or None
        Shortcuts for ``[model]`` settings.
    device : {"auto", "cpu", "cuda"}
    seed : int or None
        Seed of the split, initialisation, shuffling and lattice shifts (default 0).
    n_jobs : int
        Processes for segmentation and spectrograms.
    overrides : mapping, optional
        Further nested settings (like command-line flags).
    figures : bool or None
        Write figures (default: ``[analysis] figures``).
    force : bool
        Allow writing into a folder that holds another run's results.

    Returns
    -------
    ds : xarray.Dataset
        The analysed embedding (also written to ``out/embedding.nc``).
    """
    from .config import deep_merge

    path = Path(path).resolve()
    if not path.exists():
        raise DataError("no such file or folder", path=path)
    from .domains import detect_domain, embed_matrix

    if detect_domain(path, pipeline=pipeline, config=config) != "vocal":
        # count matrices and neural activity: same outputs, their own preparation
        return embed_matrix(path, out, pipeline=pipeline, config=config, device=device, seed=seed,
                            overrides=overrides, figures=figures, force=force, latent_dim=latent_dim,
                            max_epochs=max_epochs, verbose=verbose)
    out = Path(out) if out is not None else path.parent / f"{path.name}_vocalatent"
    flags = {"model": {"latent_dim": latent_dim, "max_epochs": max_epochs}}
    if figures is not None:
        flags["analysis"] = {"figures": bool(figures)}
    cfg = resolve(pipeline=pipeline, config=config,
                  overrides=deep_merge(flags, dict(overrides or {})))
    seed = 0 if seed is None else int(seed)
    _check_out(out, path, force)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps({"input": str(path), "vocalatent_version": __version__, "seed": seed}))
    _write_config({**cfg, "run": {"seed": seed, "input": str(path)}}, out / "config.toml")

    store, errors = build_syllable_store(path, out, cfg, n_jobs=n_jobs)
    logger.info("%d syllables from %s (%d file(s) failed)", len(store), path, len(errors))
    store_key = _store_key(store)
    model = train(store.spectrograms, cfg, out_dir=out, device=device, seed=seed,
                  data_key=store_key, verbose=verbose,
                  metadata={"spectrogram_resolved": store.info.get("spectrogram_resolved"),
                            "segment": store.info.get("segment")})
    emb_path = out / "embedding.nc"
    stage_key = embedding_key(model, store_key, cfg)
    ds = cached_embedding(emb_path, stage_key)
    if ds is None:
        ds = project(model, store)
        ds = analyze(ds, model, cfg)
        ds.attrs["config"] = json.dumps(cfg, default=str)
        ds.attrs["stage_key"] = stage_key
        ds.attrs["input"] = str(path)
        write_embedding(ds, emb_path)
    if cfg["analysis"].get("figures", True):
        make_figures(ds, model, out / "figures", cfg,
                     example_item=np.asarray(store.spectrograms[np.array([0])]))
        from .interactive import write_job_map  # OUT/map.html; a notice if Bokeh is missing

        write_job_map(out, ds=ds, model=model)
    return ds


def project_recordings(model_path, path, out, *, n_jobs: int = 1, device="auto",
                       metadata: Mapping | None = None) -> xr.Dataset:
    """Embed new recordings with an existing model, using the preprocessing it was trained
    with (stored in the model file); writes ``out/syllables.h5`` and ``out/embedding.nc``."""
    model = QLVM.load(model_path, device=device)
    meta = model.metadata_ or {}
    cfg = dict(meta.get("config") or {})
    if meta.get("spectrogram_resolved"):
        cfg["spectrogram"] = meta["spectrogram_resolved"]
    store, _ = build_syllable_store(path, out, cfg, n_jobs=n_jobs)
    if tuple(store.spectrograms.shape[1:]) != tuple(model.item_shape_):
        raise DataError(f"spectrograms of shape {store.spectrograms.shape[1:]} do not match the "
                        f"model's {model.item_shape_}", path=model_path)
    ds = project(model, store, metadata=metadata)
    ds.attrs["model_file"] = str(Path(model_path).resolve())
    write_embedding(ds, Path(out) / "embedding.nc")
    return ds


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
    "model.batch_size": "items per step; a step decodes m points whatever the batch size",
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
    "analysis.min_persistence": "two density peaks stay separate clusters only if the density between them dips by this fraction",
    "analysis.min_relative_height": "density peaks lower than this fraction of the highest peak are merged into a neighbour",
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
    return "\n".join(head) + dump_toml(cfg, comments=_COMMENTS)
