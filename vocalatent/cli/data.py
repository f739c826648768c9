"""``vocalatent data``: list the public data sets described by manifests and fetch them."""

from __future__ import annotations

from pathlib import Path

import click

from ..data.manifests import fetch, list_manifests

__all__ = ["commands", "data"]


def _size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} GB"  # pragma: no cover - loop always returns


@click.group()
def data() -> None:
    """Public data sets (recordings, count matrices, spike times, images) from the manifests."""


@data.command("list")
def list_command() -> None:
    """One line per data set: name, kind, species, number of files, size, licence."""
    manifests = list_manifests()
    width = max((len(m.name) for m in manifests), default=4)
    for m in manifests:
        files = f"{len(m.files)} file{'' if len(m.files) == 1 else 's'}"
        click.echo(f"{m.name:<{width}}  {m.kind:<11}  {m.species}  |  {files}, "
                   f"{_size(m.total_size)}  |  {m.licence}")


@data.command("fetch")
@click.argument("name")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory to put the files in (default: the cache $VOCALATENT_DATA/NAME).")
@click.option("--force", is_flag=True, help="Download again even if the cached copy verifies.")
def fetch_command(name: str, dest: Path | None, force: bool) -> None:
    """Fetch data set NAME, check the sha256 of every file, and print its directory."""
    click.echo(str(fetch(name, dest=dest, force=force)))


commands = [data]
