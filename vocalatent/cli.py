"""The ``vocalatent`` command line: a thin click layer over the Python API.

Each area of the package defines its subcommands in its own module (a ``commands`` list of
click commands); this module gathers them under one group, sets the verbosity, and turns the
package's own errors into one-line messages (unexpected errors keep their traceback).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

import click

from ._utils import VocalatentError, set_log_level
from ._version import __version__

# Modules that contribute subcommands, in the order --help lists them.
_COMMAND_MODULES = [
    "vocalatent.workflow_cli",   # embed, train, project, evaluate, analyze, plot, pipelines, config
    "vocalatent.audio.cli",      # segment, spectrograms
    "vocalatent.data.cli",       # data list / data fetch
    "vocalatent.batch_cli",      # batch
]


class _Group(click.Group):
    """A group whose package errors become clean one-line messages."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VocalatentError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vocalatent")
@click.option("-v", "--verbose", count=True, help="More messages (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
def main(verbose: int, quiet: bool) -> None:
    """vocalatent: 1-, 2- or 3-D generative maps (QLVM) of vocalizations, cells and neurons."""
    if quiet:
        set_log_level(logging.WARNING)
    elif verbose >= 2:
        set_log_level(logging.DEBUG)
    else:
        set_log_level(logging.INFO)


def _register() -> None:
    for name in _COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        for command in getattr(module, "commands", []):
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
