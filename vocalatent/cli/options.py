"""The flags every ``vocalatent`` subcommand shares, defined once so that one flag means one thing.

==================  =========================================================================
flag                meaning (on every subcommand that has it)
==================  =========================================================================
``-p/--pipeline``   preset name (``vocalatent pipelines``) or a pipeline TOML file
``--config``        user TOML file overriding the preset (``vocalatent config`` writes one)
``-j/--jobs``       worker processes (``-1``: all cores)
``--device``        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; checked when parsed
``--seed``          the run's seed
``-o/--out``        output folder
``-v/-q``           more / fewer messages; accepted before or after the subcommand
==================  =========================================================================

A new command module uses these decorators rather than declaring its own spelling.
"""

from __future__ import annotations

import logging

import click

from .._utils import ParameterError, resolve_device, set_log_level

__all__ = ["FlagError", "SchemaOption", "schema_option", "PIPELINE_HELP", "CONFIG_HELP", "DEVICE_HELP", "config_option", "device_option",
           "jobs_option", "pipeline_option", "seed_option", "set_verbosity", "verbosity_params"]

PIPELINE_HELP = ("Preset name (see `vocalatent pipelines`) or a pipeline TOML file. "
                 "Default: 'default' (songbird range, 400 Hz-10 kHz).")
CONFIG_HELP = "User TOML file overriding the preset (write a template with `vocalatent config`)."
DEVICE_HELP = "Where the model runs: auto (CUDA when present), cpu, cuda, cuda:N or mps."


def pipeline_option(f=None, *, help: str = PIPELINE_HELP):
    """``-p/--pipeline``: preset name or pipeline TOML file (default None: the preset default)."""
    deco = click.option("-p", "--pipeline", default=None, help=help)
    return deco if f is None else deco(f)


def config_option(f=None, *, param: str = "config"):
    """``--config``: the user TOML file (passed to the command as ``param``)."""
    deco = click.option("--config", param, type=click.Path(dir_okay=False), default=None,
                        help=CONFIG_HELP)
    return deco if f is None else deco(f)


def jobs_option(f=None, *, default: int | None = 1, help: str | None = None):
    """``-j/--jobs``: worker processes (-1: all cores)."""
    deco = click.option("-j", "--jobs", type=int, default=default, show_default=default is not None,
                        help=help or "Worker processes (-1: all cores).")
    return deco if f is None else deco(f)


class FlagError(click.BadParameter):
    """A bad flag value reported on one line (``Error: --flag: why``), exit status 2."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)


def _check_device(ctx, param, value):
    if value is None or value == "auto":
        return value
    if value == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise FlagError("'mps' was requested but this machine has no MPS device; "
                                     "use auto or cpu", ctx=ctx, param=param)
        return value
    try:
        resolve_device(value)
    except ParameterError as exc:
        raise FlagError(str(exc), ctx=ctx, param=param) from None
    return value


def device_option(f=None, *, help: str = DEVICE_HELP):
    """``--device``: free text (auto, cpu, cuda, cuda:N, mps), validated when the flag is parsed
    so a machine without the device fails before any preprocessing."""
    deco = click.option("--device", default="auto", show_default=True, callback=_check_device,
                        help=help)
    return deco if f is None else deco(f)


def seed_option(f=None, *, help: str = "Seed for the held-out split, initialisation, shuffling "
                                       "and lattice shifts (default 0)."):
    """``--seed``: the run's seed (default None: the library default, 0)."""
    deco = click.option("--seed", type=int, default=None, help=help)
    return deco if f is None else deco(f)


def set_verbosity(*, verbose: int = 0, quiet: bool = False) -> None:
    """Set the package log level from -v (count) and -q; nothing given keeps INFO."""
    if quiet:
        set_log_level(logging.WARNING)
    elif verbose >= 2:
        set_log_level(logging.DEBUG)
    else:
        set_log_level(logging.INFO)


def _verbose_cb(ctx, param, value):
    if value:
        set_verbosity(verbose=value)
    return value


def _quiet_cb(ctx, param, value):
    if value:
        set_verbosity(quiet=True)
    return value


def verbosity_params() -> list[click.Option]:
    """Fresh ``-v/--verbose`` and ``-q/--quiet`` options for a subcommand (the registry adds
    them to every command, so ``vocalatent embed DIR -q`` works like ``vocalatent -q embed DIR``)."""
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True,
                     callback=_verbose_cb, help="More messages (-vv for debug)."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_quiet_cb, help="Only warnings and errors; no progress bars."),
    ]


class SchemaOption(click.Option):
    """A flag that sets one TOML key: its type, limits and help come from the configuration
    schema (:mod:`vocalatent.config.schema`), so the flag and the TOML key cannot drift. The
    help text is built when ``--help`` asks for it (the schema of ``[model]`` reads the
    estimator, which imports torch)."""

    def __init__(self, *args, table: str, key: str, text: str | None = None, **kwargs):
        self.schema_table, self.schema_key, self.schema_text = table, key, text
        kwargs.setdefault("type", int)
        kwargs.setdefault("default", None)
        super().__init__(*args, **kwargs)

    def get_help_record(self, ctx):
        if not self.help:
            from ..config.docs import flag_help

            self.help = flag_help(self.schema_table, self.schema_key, self.schema_text)
        return super().get_help_record(ctx)

    def process_value(self, ctx, value):
        value = super().process_value(ctx, value)
        if value is not None:
            from ..config.schema import ConfigError, check_limit

            try:
                check_limit(self.schema_table, self.schema_key, value,
                            source=f"option {self.opts[-1]}")
            except ConfigError as exc:
                raise FlagError(str(exc).split(": ", 1)[-1], ctx=ctx, param=self) from None
        return value


def schema_option(*decls: str, table: str, key: str, text: str | None = None, **kwargs):
    """A click option that sets ``[table] key`` (see :class:`SchemaOption`)."""
    return click.option(*decls, cls=SchemaOption, table=table, key=key, text=text, **kwargs)
