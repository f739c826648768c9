"""Subcommands of the end-to-end job: embed, train, project, evaluate, analyze, plot,
pipelines and config. Each one parses its options and calls one public function of
:mod:`vocalatent.workflow`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .._utils import READ_ERRORS, DataError, ParameterError
from .options import (config_option, device_option, jobs_option, pipeline_option, schema_option,
                      seed_option)


def _common(f):
    return pipeline_option(config_option(device_option(seed_option(f))))


def _model_flags(f):
    f = schema_option("--max-epochs", table="model", key="max_epochs")(f)
    f = schema_option("--n-lattice", table="model", key="n_lattice",
                      text="Training lattice size m (latent points decoded per step; the cost "
                           "of a step grows linearly with m)")(f)
    f = schema_option("--latent-dim", table="model", key="latent_dim",
                      text="Dimension of the latent torus: 1 (ring), 2 (map) or 3")(f)
    return f


def _overrides(latent_dim=None, n_lattice=None, max_epochs=None):
    return {"model": {"latent_dim": latent_dim, "n_lattice": n_lattice, "max_epochs": max_epochs}}


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: PATH_vocalatent beside PATH).")
@_common
@_model_flags
@jobs_option(default=None, help="Processes for segmentation and spectrograms (-1: all cores). "
                               "Default: [audio] jobs of the configuration (1).")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@click.option("--force", is_flag=True, help="Write into OUT even if it holds another run's results.")
def embed(path, out, pipeline, config, device, seed, latent_dim, n_lattice, max_epochs, jobs,
          no_figures, force):
    """Recordings, a count matrix or neural activity at PATH -> QLVM -> embedding, analysis
    and figures in OUT.

    PATH is a folder searched recursively for audio files (wav, flac, ogg, ...) or one file;
    annotation files beside the audio (Audacity, Raven, TextGrid, .not.mat, CSV) replace the
    automatic segmentation. A count matrix (.h5ad, 10x .h5, .mtx, .zarr, CSV) or neural data
    (.npz, .nwb, HDF5, text) is told apart by its contents (or by --pipeline). Stages whose
    outputs exist, made from the same input content with the same settings, are reused.
    Exits 1 when any input file or figure failed (the last line counts them).
    """
    from ..workflow import embed_job

    res = embed_job(path, out, pipeline=pipeline, config=config, device=device, seed=seed,
                    n_jobs=jobs, overrides=_overrides(latent_dim, n_lattice, max_epochs),
                    figures=False if no_figures else None, force=force)
    ds = res.dataset
    n_clusters = int(ds["cluster"].max()) + 1 if "cluster" in ds else 0
    msg = f"{ds.sizes['item']} items embedded in {ds.sizes['latent']}-D"
    if n_clusters:
        msg += f", {n_clusters} clusters"
    if "heldout_summary" in ds.attrs:  # the figure with its convergence (vocalatent.nn.estimate)
        msg += f"; {ds.attrs['heldout_summary']}"
    elif "heldout_log_likelihood" in ds.attrs:
        msg += f"; held-out log p(x) = {ds.attrs['heldout_log_likelihood']:.1f} nats/item (convergence not checked)"
    _finish(res, f"{msg}\nwrote {res.out}")


def _finish(res, text: str) -> None:
    """Print the command's report; when something failed, say so last and exit 1."""
    problems = res.problems()
    click.echo(text + (f"\n{problems}" if problems else ""))
    if problems:
        raise SystemExit(1)


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@_common
@_model_flags
@jobs_option(default=None, help="Processes for segmentation and spectrograms (-1: all cores). "
                               "Default: [audio] jobs of the configuration (1).")
@click.option("--force", is_flag=True, help="Write into OUT even if it holds another run's results.")
def train(path, out, pipeline, config, device, seed, latent_dim, n_lattice, max_epochs, jobs, force):
    """Train a QLVM on PATH (recordings, a syllables.h5 store, a count matrix or neural data);
    writes OUT/model.pt. Exits 1 when any input file failed."""
    from ..nn.estimate import convergence_summary
    from ..workflow import train_job

    res = train_job(path, out, pipeline=pipeline, config=config, device=device, seed=seed,
                    n_jobs=jobs, overrides=_overrides(latent_dim, n_lattice, max_epochs), force=force)
    model = res.model
    held = model.metadata_.get("heldout")
    _finish(res, f"trained on {model.metadata_['n_train']} items in {model.n_epochs_} epochs"
            + (f"; {convergence_summary(held)}" if held and "converged_fraction" in held else
               f"; held-out log p(x) = {held['log_likelihood']:.2f} ± {held['stderr']:.2f} nats/item "
               "(convergence not checked)" if held else "")
            + f"\nwrote {Path(out) / 'model.pt'}")


@click.command(short_help="Embed PATH with a trained MODEL (also: predict, transform).")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("path", type=click.Path(exists=True))
@click.option("-o", "--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
@device_option
@jobs_option(default=None, help="Processes for segmentation and spectrograms (-1: all cores). "
                               "Default: [audio] jobs of the configuration (1).")
@click.option("--force", is_flag=True, help="Write into OUT even if it holds another run's results.")
def project(model, path, out, device, jobs, force):
    """Embed PATH with a trained MODEL (also: predict, transform).

    PATH is prepared as the model's training data was (same domain); writes OUT/embedding.nc
    (and OUT/syllables.h5 for recordings). Exits 1 when any input file failed."""
    from ..workflow import project_job

    res = project_job(model, path, out, n_jobs=jobs, device=device, force=force)
    _finish(res, f"{res.dataset.sizes['item']} items embedded\nwrote {Path(out) / 'embedding.nc'}")


@click.command()
@click.argument("target", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True), required=False)
@click.option("--labels", default="label", show_default=True,
              help="With a run folder: the item variable holding the labels (annotation labels, "
                   "an AnnData obs column).")
@click.option("--k", "k", type=click.IntRange(min=1), multiple=True, default=(1, 5), show_default=True,
              help="With a run folder: voters of the torus k-NN label accuracy (repeatable).")
@click.option("--no-figures", is_flag=True, help="With a run folder: do not draw the figures.")
@click.option("--n-lattice", type=click.IntRange(min=2), default=None,
              help="Evaluation lattice size (default 2048 / 6765 / 8191 by latent dim).")
@click.option("--n-shifts", type=click.IntRange(min=2), default=None, help="Random shifts (default 4).")
@device_option
def evaluate(target, data, labels, k, no_figures, n_lattice, n_shifts, device):
    """Score a map against labels, or a model on held-out data.

    \b
    vocalatent evaluate OUT            map versus labels for the run folder OUT: torus k-NN label
                                       accuracy, ARI / NMI / V-measure of the clusters, per-label
                                       purity and completeness; writes OUT/agreement.json and
                                       OUT/figures/agreement*.png
    vocalatent evaluate MODEL DATA     held-out log p(x) of MODEL on DATA (a syllables.h5 store or
                                       an .npy array), nats per item with its standard error
    """
    import numpy as np

    from ..data.store import SyllableStore
    from ..workflow import load_model

    p = Path(target)
    if p.is_dir():
        if data is not None:
            raise ParameterError(f"{target} is a run folder: evaluate OUT takes no DATA argument")
        from ..evaluation import evaluate_run

        report = evaluate_run(p, labels=labels, k=tuple(k), figures=not no_figures)
        click.echo(report.summary())
        click.echo(report.per_label.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        click.echo(f"wrote {p / 'agreement.json'}")
        return
    if data is None:
        raise ParameterError(f"{target} is a file: give the DATA to evaluate the model on "
                             "(or a run folder for the map-versus-labels report)")
    d = Path(data)
    if d.suffix == ".npy":  # checked before the model is loaded: a bad array is the user's
        try:
            X = np.load(d, mmap_mode="r", allow_pickle=False)
        except READ_ERRORS as exc:
            raise DataError(f"not a readable .npy array ({exc})", path=d) from None
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool) or X.ndim < 2:
            raise DataError(f"evaluate needs a numeric array of items (n_items, ...); got "
                            f"dtype {X.dtype}, shape {X.shape}", path=d)
    elif d.suffix not in (".h5", ".hdf5"):
        raise DataError("evaluate reads a syllables.h5 store or a .npy array", path=d)
    m = load_model(target, device=device)
    if d.suffix in (".h5", ".hdf5"):
        X = SyllableStore(d).spectrograms
    res = m.evaluate(X, n_lattice=n_lattice, n_shifts=n_shifts)
    click.echo(json.dumps(res, indent=2))


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@config_option
@click.option("--bandwidth", type=float, default=None, help="KDE bandwidth in torus turns (default: automatic).")
@click.option("--resolution", type=int, default=None, help="Grid cells per latent axis.")
def analyze(out, config, bandwidth, resolution):
    """Recompute density, clusters, Jacobian map and boundaries for the run in OUT (any domain)."""
    from ..workflow import analyze_run

    res = analyze_run(out, config=config,
                      overrides={"analysis": {"bandwidth": bandwidth, "resolution": resolution}})
    ds = res.dataset
    n = int(ds["cluster"].max()) + 1 if "cluster" in ds else 0
    _finish(res, f"{n} clusters\nwrote {Path(out) / 'embedding.nc'}")


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("--html", "html", is_flag=True,
              help="Write the interactive page OUT/map.html instead of the PNG figures "
                   "(needs the 'interactive' extra: pip install 'vocalatent[interactive]').")
def plot(out, html):
    """(Re)draw the figures of the run in OUT into OUT/figures (any domain; --html:
    OUT/map.html). Exits 1 when a figure failed."""
    from ..workflow import plot_run

    res = plot_run(out, html=html)
    _finish(res, "\n".join(str(p) for p in res.figures))


@click.command()
def pipelines():
    """List the pipeline presets with their domain and the sources of their numbers."""
    from ..config import list_pipelines

    for p in list_pipelines():
        click.echo(f"{p['name']:<16} {p.get('domain', ''):<12} {p.get('description', '')}")
        if p.get("source"):
            click.echo(f"{'':<16} source: {p['source']}")


@click.command()
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="Write the template here (default: print it).")
@pipeline_option
def config(out, pipeline):
    """Write a commented TOML template of every setting (the preset's values filled in)."""
    from ..config.docs import template

    text = template(pipeline=pipeline)
    if out:
        if Path(out).exists():
            raise ParameterError(f"{out} exists; not overwriting it")
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


commands = [embed, train, project, evaluate, analyze, plot, pipelines, config]
