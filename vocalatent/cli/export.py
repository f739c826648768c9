"""``vocalatent export``: a run's segments with their cluster labels as annotation files
(Audacity, Raven, crowsetta generic-seq, CSV), one per recording."""

from __future__ import annotations

import click

from ..export import EXPORT_FORMATS, LABEL_SOURCES

__all__ = ["commands", "export"]


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False))
@click.option("-f", "--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="audacity", show_default=True,
              help="Annotation format: Audacity label track, Raven selection table, crowsetta "
                   "generic-seq CSV, or CSV.")
@click.option("-o", "--out-dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to write (default: OUT/annotations/FORMAT, mirroring the recordings' folders).")
@click.option("--labels", "label_from", type=click.Choice(LABEL_SOURCES), default="cluster", show_default=True,
              help="Label text: the cluster (c0, c1, ...; 'none' outside clusters), the existing "
                   "labels, or the existing label where there is one, else the cluster.")
def export(out, fmt, directory, label_from):
    """Write the segments of the run in OUT with their labels, one annotation file per recording.

    Edit the labels in Audacity or Raven, then read them back by running the job with
    `[audio] annotations = "<the folder>"` in a --config file: they become the items' labels.
    """
    from ..export import export_run

    res = export_run(out, format=fmt, directory=directory, label_from=label_from)
    click.echo(f"{res.n_segments} segments in {len(res.files)} file(s)\nwrote {res.directory}\n"
               f"read back with: [audio] annotations = \"{res.directory}\"")


commands = [export]
