"""One configuration schema: which TOML tables exist, which keys each holds, their types,
defaults and limits — and the one-line errors when a file breaks them.

Every table is a frozen dataclass kept in the module that owns the stage (:data:`TABLES` maps
the table name to ``"module:Class"``; the classes are imported when first needed, so this
module imports none of the stages). A field's default is the only default of that setting;
its limits come from the field's metadata (``range``, ``zero``, ``also``, ``choices``) and from
the dataclass's own ``__post_init__`` checks. A field's help text is its metadata ``help``
or, for classes with numpydoc docstrings, the first sentence of its entry under
``Parameters``.

:func:`check_document` validates one source (a preset, a user TOML file, the overrides
from flags) and names it in every error: ``FILE: [table] key: problem; allowed: ...``.
:func:`check_combined` validates the merged result (cross-field rules such as
``f_min < f_max``). :func:`table` turns a table of a configuration into its dataclass — the
one way from TOML to a typed object.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import re
import typing
from functools import lru_cache
from typing import Any, Mapping

from .._utils import ParameterError

__all__ = ["ConfigError", "TABLES", "canonical", "check_combined", "check_document", "check_limit",
           "defaults", "describe_limits", "field_help", "fields", "table", "table_class"]

#: TOML table -> the dataclass that defines it (``"module:Class"``). To add a table, add a
#: frozen dataclass to the module that owns the stage and one line here.
TABLES: dict[str, str] = {
    "pipeline": "vocalatent.config.tables:PipelineTable",
    "audio": "vocalatent.config.tables:AudioParams",
    "segment": "vocalatent.audio.segment:SegmentParams",
    "spectrogram": "vocalatent.audio.spectrogram:SpectrogramParams",
    "single_cell": "vocalatent.prepare.matrix:SingleCellParams",
    "neural": "vocalatent.prepare.matrix:NeuralParams",
    "model": "vocalatent.config.tables:ModelParams",
    "analysis": "vocalatent.analysis.params:AnalysisParams",
    "run": "vocalatent.config.tables:RunTable",
}

#: Other accepted names of keys, per table (AVA's names for the segmentation thresholds).
ALIASES: dict[str, str] = {"segment": "vocalatent.audio.segment:AVA_ALIASES"}


class ConfigError(ParameterError):
    """A configuration file (or flag) breaks the schema. One line: where, table, key, why."""

    def __init__(self, message: str, *, source: str | None = None, table: str | None = None,
                 key: str | None = None):
        self.source, self.table, self.key = source, table, key
        where = f"[{table}]" if table else ""
        if key:  # "[model] latent_dim must be ..." reads as a sentence
            message = f"{where + ' ' if where else ''}{key} {message}"
            where = ""
        parts = [p for p in (source, where) if p]
        super().__init__(": ".join(parts + [message]))


def _load(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def table_class(name: str) -> type:
    """The dataclass of table ``name`` (a ConfigError with a did-you-mean for others)."""
    if name not in TABLES:
        raise ConfigError(f"unknown table{_did_you_mean(name, TABLES, '[{}]')}; known tables: "
                          f"{', '.join(f'[{t}]' for t in TABLES)}", table=name)
    return _load(TABLES[name])


@lru_cache(maxsize=None)
def _aliases(name: str) -> dict[str, str]:
    return dict(_load(ALIASES[name])) if name in ALIASES else {}


def fields(name: str) -> dict[str, dataclasses.Field]:
    """The fields of table ``name`` by key, in declaration order."""
    return {f.name: f for f in dataclasses.fields(table_class(name))}


def defaults(name: str) -> dict[str, Any]:
    """The default value of every key of table ``name`` (tuples as lists, as TOML has them)."""
    out = {}
    for key, f in fields(name).items():
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:  # pragma: no cover - every table field has a default
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _did_you_mean(word: str, choices, fmt: str = "'{}'") -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    shown = fmt.format(word)
    return f" {shown} (did you mean {fmt.format(close[0])}?)" if close else f" {shown}"


# ----------------------------------------------------------------------------------- types
def _type_of(cls, key: str):
    try:
        hints = _hints(cls)
    except Exception:  # pragma: no cover - an owner annotation that cannot be evaluated
        return Any
    return hints.get(key, Any)


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _kinds(tp) -> tuple[str, ...]:
    """The TOML kinds a Python annotation accepts: int, float, bool, str, list, table, any."""
    if tp is Any or tp is object:
        return ("any",)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        out: list[str] = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            out.extend(k for k in _kinds(arg) if k not in out)
        return tuple(out) or ("any",)
    base = origin or tp
    if base is bool:
        return ("bool",)
    if base is int:
        return ("int",)
    if base is float:
        return ("float",)
    if base is str:
        return ("str",)
    if base in (tuple, list):
        return ("list",)
    if base in (dict, Mapping) or (isinstance(base, type) and issubclass(base, Mapping)):
        return ("table",)
    return ("any",)


_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false",
               "str": "a string", "list": "a list [...]", "table": "a table { ... }"}


def _toml_kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def _shown(value) -> str:
    kind = _toml_kind(value)
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_KIND_WORDS.get(kind, kind)})"


def _type_ok(value, kinds) -> bool:
    if "any" in kinds:
        return True
    kind = _toml_kind(value)
    return kind in kinds or (kind == "int" and "float" in kinds)


# ---------------------------------------------------------------------------------- limits
def _choices(meta) -> tuple | None:
    c = meta.get("choices")
    if c is None:
        return None
    return tuple(_load(c)) if isinstance(c, str) else tuple(c)


def describe_limits(name: str, key: str) -> str:
    """The allowed values of ``[name] key`` in words, e.g. ``"an integer from 1 to 3"``."""
    f = fields(name)[key]
    meta = f.metadata
    choices = _choices(meta)
    if choices is not None:
        return "one of " + ", ".join(_fmt(c) for c in choices)
    kinds = _kinds(_type_of(table_class(name), key))
    words = " or ".join(_KIND_WORDS.get(k, k) for k in kinds if k != "any") or "any value"
    rng = meta.get("range")
    if rng is not None:
        lo, hi = rng
        if lo is not None and hi is not None:
            words += f" from {_fmt(lo)} to {_fmt(hi)}"
        elif lo is not None:
            words += f" >= {_fmt(lo)}"
        elif hi is not None:
            words += f" <= {_fmt(hi)}"
    if rng is None and choices is None:
        spec = _doc_spec(name, key)
        if spec and spec.startswith("{"):
            return "one of " + spec[1:spec.index("}")] if "}" in spec else spec
        m = re.search(r"(>=|<=|>|<)\s*(-?[\d.]+(?:e-?\d+)?)", spec)
        if m:
            words += f" {m.group(1)} {m.group(2)}"
    extra = [_fmt(a) for a in meta.get("also", ())]
    if "zero" in meta:
        extra.append(f"0 ({meta['zero']})")
    if extra:
        words += ", or " + ", ".join(extra)
    return words


def _fmt(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return f"{v:.1f}"
    return str(v)


def check_limit(name: str, key: str, value, *, source: str | None = None):
    """Check one setting against the schema's type and limits; return it or raise a ConfigError.

    The same check runs on a TOML value, a flag and a Python argument (the job calls it on its
    overrides), so that ``latent_dim = 7`` is refused wherever it comes from.
    """
    cls = table_class(name)
    f = fields(name).get(key)
    if f is None:
        raise ConfigError(f"unknown key{_did_you_mean(key, fields(name))}; known keys: "
                          f"{', '.join(fields(name))}", source=source, table=name)
    kinds = _kinds(_type_of(cls, key))
    meta = f.metadata
    if not _type_ok(value, kinds) and value not in meta.get("also", ()):
        raise ConfigError(f"must be {describe_limits(name, key)}; got {_shown(value)}",
                          source=source, table=name, key=key)
    choices = _choices(meta)
    if choices is not None and value not in choices:
        raise ConfigError(f"must be {describe_limits(name, key)}; got "
                          f"{_shown(value)}{_near(value, choices)}",
                          source=source, table=name, key=key)
    rng = meta.get("range")
    if rng is not None and _toml_kind(value) in ("int", "float") \
            and value not in meta.get("also", ()) and not (value == 0 and "zero" in meta):
        lo, hi = rng
        if not math.isfinite(value) or (lo is not None and value < lo) \
                or (hi is not None and value > hi):
            raise ConfigError(f"must be {describe_limits(name, key)}; got {_shown(value)}",
                              source=source, table=name, key=key)
    return value


def _near(value, choices) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean \"{close[0]}\"?)" if close else ""


# ------------------------------------------------------------------------------ documents
def _construct(name: str, values: Mapping[str, Any]):
    cls = table_class(name)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()}
    return cls(**kwargs)


def _owner_message(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_document(doc: Mapping[str, Any], *, source: str) -> None:
    """Validate one configuration source (a parsed TOML file, or the overrides of the flags).

    Every table must be known and be a table; every key must be a field of it (or an alias),
    of the right type, inside the limits of its field metadata. The first problem raises a
    :class:`ConfigError` naming ``source``, the table, the key and what is allowed. The
    dataclasses' own rules (``f_min < f_max``) run on the merged result, :func:`check_combined`.
    """
    for name, value in doc.items():
        if name not in TABLES:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"unknown top-level key{_did_you_mean(name, TABLES)} = {_shown(value)}; "
                    f"settings belong in tables: {', '.join(f'[{t}]' for t in TABLES)}",
                    source=source)
            raise ConfigError(f"unknown table{_did_you_mean(name, TABLES, '[{}]')}; known "
                              f"tables: {', '.join(f'[{t}]' for t in TABLES)}", source=source)
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a table ([{name}] with key = value lines), not "
                              f"{name} = {_shown(value)}", source=source, table=name)
        aliases = _aliases(name)
        known = fields(name)
        for key, v in value.items():
            field_name = aliases.get(key, key)
            if field_name not in known:
                raise ConfigError(
                    f"unknown key{_did_you_mean(key, list(known) + list(aliases))}; known keys: "
                    f"{', '.join(known)}", source=source, table=name)
            check_limit(name, field_name, v, source=source)


def canonical(doc: Mapping[str, Any]) -> dict:
    """``doc`` with every alias key renamed to its field (``th_1`` -> ``th1``), so that merging
    sources overrides the right key."""
    out = {}
    for name, value in doc.items():
        if isinstance(value, Mapping) and name in ALIASES:
            aliases = _aliases(name)
            renamed = {}
            for k, v in value.items():
                field_name = aliases.get(k, k)
                if field_name in renamed and renamed[field_name] != v:
                    raise ConfigError(f"{k!r} is another name for {field_name!r}; both are given "
                                      "with different values", table=name)
                renamed[field_name] = v
            out[name] = renamed
        else:
            out[name] = value
    return out


def check_combined(cfg: Mapping[str, Any], *, source: str) -> None:
    """Validate a merged configuration: each table's dataclass must accept all its keys
    together (its own rules, e.g. a user's ``f_min`` above the preset's ``f_max``). The error
    names ``source``, the source whose merge made the configuration invalid."""
    for name, value in canonical(cfg).items():
        if name not in TABLES or not isinstance(value, Mapping):
            continue
        try:
            _construct(name, value)
        except ParameterError as exc:
            raise ConfigError(_owner_message(exc), source=source, table=name) from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid values ({_owner_message(exc)})", source=source,
                              table=name) from None


def table(cfg: Mapping[str, Any], name: str):
    """The dataclass of table ``name`` built from ``cfg[name]`` (absent keys take the
    defaults): the one way from a configuration to a typed object.

    Raises
    ------
    ConfigError
        Unknown table or key, wrong type, a value out of its limits.
    """
    section = dict((cfg or {}).get(name) or {})
    meta = (cfg or {}).get("pipeline")
    source = meta.get("file") if isinstance(meta, Mapping) else None
    check_document({name: section}, source=source or "configuration")
    section = canonical({name: section})[name]
    try:
        return _construct(name, section)
    except ParameterError as exc:
        raise ConfigError(_owner_message(exc), source=source or "configuration",
                          table=name) from None


# ----------------------------------------------------------------------------------- help
_PARAM_LINE = re.compile(r"^    ([A-Za-z_][\w, ]*?)\s*:\s*(.*)$")


@lru_cache(maxsize=None)
def _docstring_entries(cls) -> dict[str, tuple[str, str]]:
    """``key -> (type text, first sentence)`` from ``Parameters`` of a numpydoc docstring."""
    lines = (cls.__doc__ or "").expandtabs().splitlines()
    out: dict[str, tuple[str, str]] = {}
    in_params, names, spec, buf = False, [], "", []

    def flush():
        text = " ".join(buf).strip()
        first = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0].rstrip(".;") if text else ""
        for n in names:
            out.setdefault(n, (spec, first))

    for line in lines:
        stripped = line.strip()
        if stripped == "Parameters":
            in_params = True
            continue
        if not in_params or (stripped and set(stripped) == {"-"}):
            continue
        if stripped in ("Attributes", "Returns", "Raises", "Notes", "Examples", "See Also"):
            break
        m = _PARAM_LINE.match(line)
        if m and not line.startswith("        "):
            flush()
            names = [n.strip() for n in m.group(1).split(",")]
            spec = re.sub(r",?\s*default\s*=.*$", "", m.group(2)).strip()
            buf = []
        elif stripped:
            buf.append(stripped)
    flush()
    return out


def field_help(name: str, key: str) -> str:
    """One line on what ``[name] key`` does (metadata ``help`` or the class's docstring)."""
    f = fields(name)[key]
    text = f.metadata.get("help") or _docstring_entries(table_class(name)).get(key, ("", ""))[1]
    text = re.sub(r":\w+:`~?([\w.]*?)([\w]+)`", r"\2", text)   # :func:`~a.b` -> b
    return text.replace("``", "`")


def _doc_spec(name: str, key: str) -> str:
    """The type text of ``[name] key`` in the owner's docstring (e.g. ``float > 0``)."""
    return _docstring_entries(table_class(name)).get(key, ("", ""))[0]
