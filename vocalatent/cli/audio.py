"""``vocalatent segment`` and ``vocalatent spectrograms``: thin click commands over
:mod:`vocalatent.audio.pipeline`. Options left unset do not override the pipeline preset."""

from __future__ import annotations

from pathlib import Path

import click

from .._utils import atomic_path, logger
from ..audio.pipeline import build_store, report_lines, segment_paths
from ..config import resolve_config
from ..config import table as config_table
from .options import config_option, jobs_option, pipeline_option


def _common(f):
    f = click.option("--chunk-s", type=float, default=None,
                     help="Seconds of audio in memory at a time (default: preset, 60).")(f)
    f = click.option("--channel", default=None,
                     help="Channel index, or 'all' (each channel its own source).")(f)
    f = click.option("--annotations", default=None,
                     help="auto (annotation files beside the audio), ignore, or a directory.")(f)
    f = jobs_option(f, default=None,
                    help="Worker processes (-1: all cores; default: [audio] jobs, 1).")
    f = config_option(f, param="config_file")
    f = pipeline_option(f)
    f = click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True,
                     help="Output directory.")(f)
    f = click.argument("path", type=click.Path(exists=True))(f)
    return f


def _settings(pipeline, config_file, jobs, annotations, channel, chunk_s):
    channel_val = None
    if channel is not None:
        channel_val = "all" if channel == "all" else int(channel)
    cfg = resolve_config(pipeline, config_file, overrides={
        "audio": {"annotations": annotations, "channel": channel_val, "chunk_s": chunk_s,
                  "jobs": jobs}})
    audio = config_table(cfg, "audio")
    return cfg, {"annotations": audio.annotations, "channel": audio.channel,
                 "n_jobs": audio.jobs, "chunk_s": float(audio.chunk_s)}


def _write_csv(df, path: Path) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")


def _finish(errors, n_files_ok: int, n_items: int, what: str, out_dir: Path) -> None:
    _write_csv(errors, out_dir / "errors.csv")
    msg = f"{n_items} {what} from {n_files_ok} file(s) in {out_dir}"
    if len(errors):
        raise click.ClickException(
            f"{len(errors)} file(s) failed (see {out_dir / 'errors.csv'}); {msg}")
    click.echo(msg)


def _parse_window(window):
    if window is None:
        return None
    try:
        t0, t1 = (float(v) for v in window.split(","))
    except ValueError:
        raise click.BadParameter(f"expected START,END in seconds (e.g. 2.0,6.5); got {window!r}",
                                 param_hint="--window") from None
    return t0, t1


@click.command("segment")
@_common
@click.option("--tune", is_flag=True,
              help="Search the [segment] parameters that best reproduce the annotations beside "
                   "the recordings; write OUT/tuned_pipeline.toml (use it with --pipeline).")
@click.option("--evaluate", is_flag=True,
              help="Score the segmentation against the annotations: onset/offset precision, "
                   "recall, F1 per file and overall; write OUT/evaluation.csv.")
@click.option("--figures", is_flag=True,
              help="Write OUT/figures/<file>.png: spectrogram, level trace, thresholds, "
                   "predicted and annotated segments.")
@click.option("--window", default=None, metavar="START,END",
              help="With --figures: the part of each file shown (s); default the first 30 s.")
@click.option("--tolerance-ms", type=float, default=10.0, show_default=True,
              help="Boundary tolerance of --tune and --evaluate (ms).")
@click.option("--tune-time", type=float, default=60.0, show_default=True,
              help="Time budget of --tune's search (s).")
def segment(path, out_dir, pipeline, config_file, jobs, annotations, channel, chunk_s, tune,
            evaluate, figures, window, tolerance_ms, tune_time):
    """Segment the recordings under PATH; write OUT/segments.csv, OUT/report.csv (what each
    filter removed, per file) and OUT/errors.csv."""
    cfg, kw = _settings(pipeline, config_file, jobs, annotations, channel, chunk_s)
    params = config_table(cfg, "segment")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tol_s = tolerance_ms / 1000.0
    win = _parse_window(window)
    # --tune/--evaluate compare segmentation with the annotations: segment every file, and
    # read the annotations from where [audio] annotations says ("ignore" -> beside the audio)
    ann_src = kw["annotations"] if kw["annotations"] != "ignore" else "auto"
    if tune or evaluate:
        kw = {**kw, "annotations": "ignore"}
    if tune:
        from ..audio.tune import tune_segmentation, write_pipeline_toml

        res = tune_segmentation(path, params, tol_s=tol_s, annotations=ann_src,
                                channel=0 if kw["channel"] == "all" else kw["channel"],
                                max_time_s=tune_time)
        base = cfg.get("pipeline", {}).get("name", "default")
        toml = write_pipeline_toml(
            out_dir / "tuned_pipeline.toml", res.params, extends=base,
            name="tuned_pipeline",
            description=f"{base} with [segment] tuned on {len(res.after) - 1} annotated file(s)",
            source=(f"vocalatent segment --tune on {path}: mean onset/offset F1 at "
                    f"{tolerance_ms:g} ms {res.score_before:.3f} -> {res.score_after:.3f} "
                    f"({res.n_evaluations} settings, converged={res.converged})"))
        _write_csv(res.after, out_dir / "tuned_evaluation.csv")
        _write_csv(res.history, out_dir / "tuning_history.csv")
        b, a = res.before.iloc[-1], res.after.iloc[-1]
        click.echo(f"tuned on {len(res.after) - 1} file(s) in {res.seconds:.1f} s "
                   f"({res.n_evaluations} settings, converged={res.converged}):")
        click.echo(f"  onset F1 {b['onset_f1']:.3f} -> {a['onset_f1']:.3f}, offset F1 "
                   f"{b['offset_f1']:.3f} -> {a['offset_f1']:.3f} at {tolerance_ms:g} ms")
        changed = {k: v for k, v in res.params.to_dict().items()
                   if v != res.start_params.to_dict()[k]}
        click.echo(f"  changed: {changed or 'nothing'}")
        click.echo(f"  wrote {toml}; use it with --pipeline {toml}")
        params = res.params
    segments, errors, report = segment_paths(path, params=params, return_report=True, **kw)
    _write_csv(segments, out_dir / "segments.csv")
    _write_csv(report, out_dir / "report.csv")
    logger.info("wrote %s and %s", out_dir / "segments.csv", out_dir / "report.csv")
    if report_lines(report, params):  # the lines themselves were logged by segment_paths
        click.echo(f"what each filter removed, per file: {out_dir / 'report.csv'}", err=True)
    if evaluate:
        from ..audio.evaluate import evaluate_segmentation

        table = evaluate_segmentation(path, params, tol_s=tol_s, annotations=ann_src,
                                      chunk_s=kw["chunk_s"])
        _write_csv(table, out_dir / "evaluation.csv")
        cols = ["source", "n_true", "n_found", "onset_precision", "onset_recall", "onset_f1",
                "offset_precision", "offset_recall", "offset_f1"]
        click.echo(f"boundaries within {tolerance_ms:g} ms of the annotations:")
        click.echo(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        click.echo(f"wrote {out_dir / 'evaluation.csv'}")
    if figures:
        from ..audio.annotations import annotations_for
        from ..audio.figures import plot_segmentation
        from ..audio.io import find_audio

        root = Path(path)
        base = root.parent if root.is_file() else root
        fig_dir = out_dir / "figures"
        n = 0
        for f in find_audio(root):
            source = f.relative_to(base).as_posix()
            if source in set(errors["source"]):
                continue
            ann = annotations_for(f, annotations=ann_src, root=base)
            plot_segmentation(f, params, annotations=None if ann is None else ann[0],
                              window=win, segments=segments[segments["source"] == source],
                              out=fig_dir / (source.replace("/", "__") + ".png"))
            n += 1
        click.echo(f"wrote {n} figure(s) in {fig_dir}")
    _finish(errors, segments["source"].nunique(), len(segments), "segments", out_dir)


@click.command("spectrograms")
@_common
@click.option("--dtype", type=click.Choice(["float32", "float16", "uint8"]), default="float32",
              show_default=True, help="On-disk type of the spectrograms.")
def spectrograms(path, out_dir, pipeline, config_file, jobs, annotations, channel, chunk_s, dtype):
    """Segment PATH and write OUT/segments.csv, OUT/syllables.h5 (the store), OUT/errors.csv."""
    cfg, kw = _settings(pipeline, config_file, jobs, annotations, channel, chunk_s)
    seg_params = config_table(cfg, "segment")
    spec_params = config_table(cfg, "spectrogram")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segments, seg_errors = segment_paths(path, params=seg_params, **kw)
    _write_csv(segments, out_dir / "segments.csv")
    store, errors = build_store(path, out_dir / "syllables.h5", segment_params=seg_params,
                                spectrogram_params=spec_params, segments=segments,
                                n_jobs=kw["n_jobs"], dtype=dtype)
    import pandas as pd

    errors = pd.concat([seg_errors, errors], ignore_index=True)
    n_files = store.segments["source"].nunique() if len(store) else 0
    n = len(store)
    store.close()
    _finish(errors, n_files, n, "syllables", out_dir)


commands = [segment, spectrograms]
