"""``vocalatent segment`` and ``vocalatent spectrograms``: thin click commands over
:mod:`vocalatent.audio.pipeline`. Options left unset do not override the pipeline preset."""

from __future__ import annotations

from pathlib import Path

import click

from .._utils import atomic_path, logger
from ..audio.pipeline import build_store, segment_paths
from ..audio.segment import SegmentParams
from ..audio.spectrogram import SpectrogramParams
from ..config import resolve_config
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
    audio = cfg.get("audio", {})
    return cfg, {"annotations": audio.get("annotations", "auto"),
                 "channel": audio.get("channel", 0), "n_jobs": audio.get("jobs", 1),
                 "chunk_s": float(audio.get("chunk_s", 60.0))}


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


@click.command("segment")
@_common
def segment(path, out_dir, pipeline, config_file, jobs, annotations, channel, chunk_s):
    """Segment the recordings under PATH; write OUT/segments.csv and OUT/errors.csv."""
    cfg, kw = _settings(pipeline, config_file, jobs, annotations, channel, chunk_s)
    params = SegmentParams.from_dict(cfg.get("segment", {}))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    segments, errors = segment_paths(path, params=params, **kw)
    _write_csv(segments, out_dir / "segments.csv")
    logger.info("wrote %s", out_dir / "segments.csv")
    _finish(errors, segments["source"].nunique(), len(segments), "segments", out_dir)


@click.command("spectrograms")
@_common
@click.option("--dtype", type=click.Choice(["float32", "float16", "uint8"]), default="float32",
              show_default=True, help="On-disk type of the spectrograms.")
def spectrograms(path, out_dir, pipeline, config_file, jobs, annotations, channel, chunk_s, dtype):
    """Segment PATH and write OUT/segments.csv, OUT/syllables.h5 (the store), OUT/errors.csv."""
    cfg, kw = _settings(pipeline, config_file, jobs, annotations, channel, chunk_s)
    seg_params = SegmentParams.from_dict(cfg.get("segment", {}))
    spec_params = SpectrogramParams.from_dict(cfg.get("spectrogram", {}))
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
