"""Configuration: the TOML presets in ``pipelines/``, how they merge with user settings, and
the one schema every setting is checked against (:mod:`vocalatent.config.schema`).

A pipeline file has a ``[pipeline]`` table (``name``, ``domain`` = "vocal" | "single_cell" |
"neural", ``description``, ``source`` — where its numbers come from — and optionally
``extends`` = the name of another pipeline it starts from) and one table per stage
(``[audio]``, ``[segment]``, ``[spectrogram]``, ``[model]``, ``[analysis]``, ...; the list is
:data:`~vocalatent.config.schema.TABLES`). Every source is validated when it is read: an
unknown table or key (with a did-you-mean), a wrong type or a value out of its limits is a
one-line :class:`~vocalatent.config.schema.ConfigError` naming the file, the table, the key and
what is allowed.

Precedence (:func:`resolve_config`): preset ← user TOML file ← explicit overrides (flags);
an override whose value is None does not override anything. :func:`table` turns a table of
the result into its typed dataclass, with the schema's defaults for absent keys.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from .._utils import DataError, ParameterError
from ..resources import pipelines_dir
from .schema import (TABLES, ConfigError, canonical, check_combined, check_document, check_limit,
                     defaults, table)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PIPELINES_DIR", "TABLES", "ConfigError", "check_limit", "deep_merge", "defaults",
           "list_pipelines", "load_pipeline", "resolve_config", "table"]

#: Directory of the shipped pipeline presets (package data; see :mod:`vocalatent.resources`).
PIPELINES_DIR = pipelines_dir()
DOMAINS = ("vocal", "single_cell", "neural")
DEFAULT_PIPELINE = "default"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """Merge ``override`` into a copy of ``base``: nested tables merge key by key, other values
    (including lists) are replaced. Neither input is modified."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise DataError(f"cannot read pipeline file ({exc})", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"invalid TOML ({exc})", path=path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"invalid TOML (not UTF-8 text: {exc})", path=path) from None


def _known_names() -> list[str]:
    return sorted(p.stem for p in PIPELINES_DIR.glob("*.toml"))


def _locate(name_or_path: str | os.PathLike) -> Path:
    s = str(name_or_path)
    p = Path(s)
    if s.endswith(".toml") or os.sep in s or "/" in s:
        if not p.is_file():
            raise DataError("no such pipeline file", path=p)
        return p
    cand = PIPELINES_DIR / f"{s}.toml"
    if not cand.is_file():
        raise ParameterError(f"unknown pipeline {s!r}; known pipelines: {', '.join(_known_names())}"
                             f" (or give a path to a .toml file)")
    return cand


def load_pipeline(name_or_path: str | os.PathLike, *, _seen: tuple[str, ...] = ()) -> dict:
    """Load a pipeline by preset name or TOML path, resolving ``extends`` (deep-merged).

    Parameters
    ----------
    name_or_path : str or path-like
        A name in ``pipelines/`` (e.g. ``"zebra_finch"``) or a path to a ``.toml`` file.

    Returns
    -------
    dict
        The merged configuration. ``[pipeline]`` keeps the child's own ``name``/``source``
        and records the chain in ``extends``.

    Raises
    ------
    ParameterError
        Unknown name (the message lists the known ones), a cycle in ``extends``, or a domain
        not in ("vocal", "single_cell", "neural").
    """
    path = _locate(name_or_path)
    key = str(path.resolve())
    if key in _seen:
        raise ParameterError(f"pipeline 'extends' chain has a cycle through {path}")
    cfg = _read_toml(path)
    check_document(cfg, source=str(path))
    cfg = canonical(cfg)
    meta = cfg.setdefault("pipeline", {})
    meta.setdefault("name", path.stem)
    parent = meta.get("extends")
    if parent:
        base = load_pipeline(parent if "/" in str(parent) or str(parent).endswith(".toml")
                             else str(parent), _seen=_seen + (key,))
        base_meta = base.get("pipeline", {})
        cfg = deep_merge(base, cfg)
        # a child without its own source/description inherits them, marked as inherited
        for k in ("description", "source", "domain"):
            if k not in meta and k in base_meta:
                cfg["pipeline"][k] = base_meta[k]
    domain = cfg["pipeline"].get("domain", "vocal")
    if domain not in DOMAINS:
        raise ParameterError(f"pipeline domain must be one of {DOMAINS}; got {domain!r} in {path}")
    cfg["pipeline"]["domain"] = domain
    cfg["pipeline"]["file"] = str(path)
    check_combined(cfg, source=str(path))
    return cfg


def list_pipelines() -> list[dict]:
    """The shipped presets: one dict per file with ``name``, ``domain``, ``description``,
    ``source`` (citation of its numbers) and ``extends``, sorted by name."""
    out = []
    for name in _known_names():
        meta = load_pipeline(name)["pipeline"]
        out.append({"name": name, "domain": meta.get("domain", "vocal"),
                    "description": meta.get("description", ""), "source": meta.get("source", ""),
                    "extends": meta.get("extends")})
    return out


def _drop_none(d: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            sub = _drop_none(v)
            if sub:
                out[k] = sub
        elif v is not None:
            out[k] = v
    return out


def resolve_config(pipeline: str | os.PathLike | None = None,
                   config_file: str | os.PathLike | None = None,
                   overrides: Mapping[str, Any] | None = None) -> dict:
    """The effective configuration: preset ← user TOML file ← overrides.

    Parameters
    ----------
    pipeline : str or path-like, optional
        Preset name or file; default ``"default"`` (or the user file's ``[pipeline] extends``).
    config_file : path-like, optional
        A user TOML file with the same tables; it may itself ``extends`` a preset.
    overrides : mapping, optional
        Nested tables of explicit settings (e.g. from command-line flags); None values are
        ignored, so unset flags never override the preset.

    Returns
    -------
    dict
    """
    if config_file is not None and not Path(config_file).is_file():
        raise DataError("no such config file", path=config_file)
    user = _read_toml(Path(config_file)) if config_file is not None else {}
    if user:
        check_document(user, source=str(config_file))
    if pipeline is None:
        pipeline = user.get("pipeline", {}).get("extends") or DEFAULT_PIPELINE
    cfg = load_pipeline(pipeline)
    if user:
        user = canonical(copy.deepcopy(user))
        user.get("pipeline", {}).pop("extends", None)
        cfg = deep_merge(cfg, user)
        check_combined(cfg, source=str(config_file))
    if overrides:
        flags = _drop_none(overrides)
        check_document(flags, source="overrides")
        cfg = deep_merge(cfg, canonical(flags))
        check_combined(cfg, source="overrides")
    return cfg
