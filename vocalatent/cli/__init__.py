"""The ``vocalatent`` command line: one thin click layer over the Python API.

Layout
------
- :mod:`vocalatent.cli.options` — the shared flags (``-p/--pipeline``, ``--config``,
  ``-j/--jobs``, ``--device``, ``--seed``, ``-v/-q``), defined once.
- one module per area, each ending in a ``commands`` list of click commands:
  :mod:`~vocalatent.cli.job` (embed, train, project, evaluate, analyze, plot, pipelines,
  config), :mod:`~vocalatent.cli.audio` (segment, spectrograms), :mod:`~vocalatent.cli.data`
  (data list / fetch), :mod:`~vocalatent.cli.batch` (batch).
- :data:`COMMAND_MODULES` below, the registry: a new area adds a file ``cli/<area>.py`` with a
  ``commands`` list and one line here.

This module gathers the commands under one group, gives every command the ``-v/-q`` flags (so
they work after the subcommand too), and turns the package's own errors into one-line messages
(unexpected errors keep their traceback).
"""

from __future__ import annotations

import importlib
import sys

import click

from .._utils import VocalatentError
from .._version import __version__
from .options import set_verbosity, verbosity_params

__all__ = ["COMMAND_MODULES", "main"]

#: Modules that contribute subcommands, in the order ``--help`` lists them. One line per area.
COMMAND_MODULES = [
    "vocalatent.cli.job",     # embed, train, project, evaluate, analyze, plot, pipelines, config
    "vocalatent.cli.audio",   # segment, spectrograms
    "vocalatent.cli.data",    # data list / data fetch
    "vocalatent.cli.batch",   # batch
    "vocalatent.cli.export",  # export (annotation files for Audacity, Raven, crowsetta)
]


#: other names a command answers to (scikit-learn's words for applying a fitted model)
ALIASES = {"predict": "project", "transform": "project"}


class _Group(click.Group):
    """A group whose package errors become clean one-line messages, with command aliases."""

    def get_command(self, ctx, cmd_name):
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))

    def resolve_command(self, ctx, args):
        # report the canonical name (so `predict --help` shows `project`'s usage line)
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd else None), cmd, rest

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
    set_verbosity(verbose=verbose, quiet=quiet)


def _add_verbosity(command: click.Command) -> None:
    names = {o for p in command.params for o in getattr(p, "opts", [])}
    if "-v" not in names and "-q" not in names:
        command.params.extend(verbosity_params())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_verbosity(sub)


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in getattr(module, "commands", []):
            _add_verbosity(command)
            main.add_command(command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
