"""Session manifests: the list of experiment sessions a batch run processes.

A session manifest is a CSV or TOML file with one entry per session:

- ``session``: the session id (letters, digits, ``.``, ``_``, ``-``; it names the session's
  output folder ``OUT/sessions/<id>/``), unique in the manifest;
- ``path``: the session's recordings — one audio file, a folder (searched recursively) or a
  glob pattern (``day1/*.wav``, ``bird3/**/*.flac``); relative paths are relative to the
  manifest's folder; ``~`` and environment variables (``${VAR}``, ``${VAR:-default}``) are
  expanded;
- any other column is free metadata (``animal``, ``date``, ``condition``, ``age``, ...) that
  ends up as a coordinate of every item of the session in the embedding.

CSV::

    session,path,animal,date,condition
    b1_d1,recordings/bird1/day1,bird1,2024-03-01,baseline
    b1_d2,recordings/bird1/day2/*.wav,bird1,2024-03-02,muted

TOML (an optional ``[defaults]`` table gives metadata shared by every session; a session's own
value wins)::

    [defaults]
    species = "Taeniopygia guttata"

    [[sessions]]
    session = "b1_d1"
    path = "recordings/bird1/day1"
    animal = "bird1"
    date = 2024-03-01

Validation happens on load; every message names the manifest file, the row (CSV: the row
number and its line; TOML: ``sessions[i]``) and the column.
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ._utils import DataError, ParameterError
from .audio.io import AUDIO_EXTENSIONS, find_audio

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RESERVED_COLUMNS", "Session", "SessionManifest", "check_reference", "load_sessions"]

#: Column names that the segment table or the embedding already uses; metadata may not take them.
RESERVED_COLUMNS = frozenset({"item", "latent", "source", "channel", "onset_s", "offset_s",
                              "duration_s", "sample_rate", "label", "peak", "segmented_by",
                              "embedding", "map_point", "spread", "posterior_entropy",
                              "log_likelihood"})
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Session:
    """One session of a manifest, with its recordings resolved.

    Attributes
    ----------
    id : str
        The session id (safe as a folder name).
    path : str
        The ``path`` entry as written in the manifest.
    base : pathlib.Path
        The folder that the session's ``source`` paths are relative to (the folder itself, a
        file's parent, or the deepest folder holding every file a glob matched).
    files : tuple of pathlib.Path
        The session's audio files, absolute, sorted.
    metadata : dict
        Metadata columns (str, int, float or bool values; dates as ISO strings).
    """

    id: str
    path: str
    base: Path
    files: tuple[Path, ...]
    metadata: dict = field(default_factory=dict)

    def sources(self) -> list[str]:
        """The files as POSIX paths relative to :attr:`base` (the ``source`` of their items)."""
        return [f.relative_to(self.base).as_posix() for f in self.files]

    def file_state(self) -> list[list]:
        """``[source, size in bytes, mtime in ns]`` of every file: what a cache keys on."""
        out = []
        for f, s in zip(self.files, self.sources()):
            st = f.stat()
            out.append([s, int(st.st_size), int(st.st_mtime_ns)])
        return out


@dataclass(frozen=True)
class SessionManifest:
    """A loaded, validated session manifest.

    Attributes
    ----------
    path : pathlib.Path
        The manifest file.
    sessions : tuple of Session
        In manifest order (the order every batch output follows).
    """

    path: Path
    sessions: tuple[Session, ...]

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self):
        return iter(self.sessions)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.sessions]

    def __getitem__(self, session_id: str) -> Session:
        for s in self.sessions:
            if s.id == session_id:
                return s
        raise ParameterError(f"no session {session_id!r} in {self.path}; sessions: "
                             f"{', '.join(self.ids)}")

    @property
    def metadata_columns(self) -> list[str]:
        """Metadata column names, in order of first appearance."""
        cols: list[str] = []
        for s in self.sessions:
            cols.extend(c for c in s.metadata if c not in cols)
        return cols

    def metadata(self) -> pd.DataFrame:
        """Per-session metadata indexed by session id, one column per metadata name.

        A column whose values are all numbers (in a CSV: all parse as numbers) is float64 (NaN
        where a session leaves it unset); any other column is str ("" where unset). Every
        session has every column, so per-session embeddings concatenate.
        """
        frame = pd.DataFrame([{c: s.metadata.get(c) for c in self.metadata_columns}
                              for s in self.sessions], columns=self.metadata_columns,
                             index=pd.Index(self.ids, name="session"))
        for col in self.metadata_columns:
            vals = frame[col]
            given = vals[vals.notna() & (vals.astype(str) != "")]
            numeric = pd.to_numeric(given, errors="coerce") if len(given) else given
            if len(given) and numeric.notna().all() and not any(isinstance(v, bool) for v in given):
                frame[col] = pd.to_numeric(vals.replace("", None), errors="coerce").astype("float64")
            else:
                frame[col] = vals.map(lambda v: "" if v is None or (isinstance(v, float) and v != v)
                                      else str(v)).astype(object)
        return frame

    def table(self) -> pd.DataFrame:
        """One row per session: ``session``, ``path``, ``n_files`` and the metadata columns."""
        rows = [{"session": s.id, "path": s.path, "n_files": len(s.files), **s.metadata}
                for s in self.sessions]
        return pd.DataFrame(rows, columns=["session", "path", "n_files"] + self.metadata_columns)


def _value(value: Any, where: str, column: str, manifest: Path):
    if isinstance(value, bool) or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    raise DataError(f"{where}, column {column!r}: metadata must be a string, number, boolean or "
                    f"date; got {type(value).__name__} {value!r}", path=manifest)


_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _expand(raw: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (the default when VAR is unset or empty),
    then a leading ``~``."""
    def sub(m: re.Match) -> str:
        value = os.environ.get(m.group("name"), "")
        if value == "" and m.group("default") is not None:
            return m.group("default")
        return value

    return os.path.expanduser(_VAR.sub(sub, raw))


def _resolve_files(raw: str, manifest: Path, where: str) -> tuple[Path, tuple[Path, ...]]:
    folder = manifest.parent
    expanded = _expand(raw)
    p = Path(expanded)
    if not p.is_absolute():
        p = folder / p
    if _GLOB_CHARS & set(expanded):
        matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
        files = [m for m in matches if m.is_file() and m.suffix.lower() in AUDIO_EXTENSIONS
                 and not m.name.startswith(".")]
        if not files:
            raise DataError(f"{where}, column 'path': the pattern {raw!r} matches no audio file "
                            f"(searched {p})", path=manifest)
        base = Path(os.path.commonpath([str(f.parent) for f in files]))
        return base.resolve(), tuple(f.resolve() for f in files)
    if not p.exists():
        raise DataError(f"{where}, column 'path': {raw!r} does not exist (looked for {p})",
                        path=manifest)
    try:
        files = find_audio(p)
    except DataError as exc:
        raise DataError(f"{where}, column 'path': {exc}", path=manifest) from None
    if p.is_file() and p.suffix.lower() not in AUDIO_EXTENSIONS:
        raise DataError(f"{where}, column 'path': {raw!r} is not an audio file (known "
                        f"extensions: {', '.join(sorted(AUDIO_EXTENSIONS))})", path=manifest)
    if not files:
        raise DataError(f"{where}, column 'path': the folder {raw!r} holds no audio file",
                        path=manifest)
    base = p.parent if p.is_file() else p
    return base.resolve(), tuple(sorted(f.resolve() for f in files))


def _rows_from_csv(path: Path) -> list[tuple[str, dict]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = []
            for i, row in enumerate(reader, start=1):
                if None in row:
                    raise DataError(f"row {i} (line {reader.line_num}) has more fields than the "
                                    f"header's {len(header)}", path=path)
                if all((v or "").strip() == "" for v in row.values()):
                    continue
                rows.append((f"row {i} (line {reader.line_num})",
                             {k.strip(): (v.strip() if v is not None else "") for k, v in row.items()}))
    except OSError as exc:
        raise DataError(f"cannot read session manifest ({exc})", path=path) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"not a readable CSV file ({exc})", path=path) from None
    header = [h.strip() for h in header]
    for required in ("session", "path"):
        if required not in header:
            raise DataError(f"the header has no {required!r} column; it has {header}", path=path)
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(f"the header repeats column(s) {dup}", path=path)
    return rows


def _rows_from_toml(path: Path) -> list[tuple[str, dict]]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise DataError(f"cannot read session manifest ({exc})", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"invalid TOML ({exc})", path=path) from None
    unknown = sorted(set(doc) - {"sessions", "defaults", "name", "description"})
    if unknown:
        raise DataError(f"unknown top-level key(s) {unknown}; a session manifest has "
                        "[[sessions]] tables, an optional [defaults] table, name and description",
                        path=path)
    sessions = doc.get("sessions")
    if not isinstance(sessions, list) or not sessions or not all(isinstance(s, dict) for s in sessions):
        raise DataError("a TOML session manifest needs one or more [[sessions]] tables", path=path)
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise DataError("[defaults] must be a table of metadata values", path=path)
    for key in ("session", "path"):
        if key in defaults:
            raise DataError(f"[defaults] may not set {key!r} (it is per session)", path=path)
    return [(f"sessions[{i}]", {**defaults, **s}) for i, s in enumerate(sessions)]


def load_sessions(path: str | os.PathLike) -> SessionManifest:
    """Load and validate a session manifest (CSV or TOML; see the module docstring).

    Parameters
    ----------
    path : path-like
        A ``.csv`` or ``.toml`` file.

    Returns
    -------
    SessionManifest
        Sessions in file order, each with its audio files resolved.

    Raises
    ------
    DataError
        The file is unreadable, or an entry is invalid: missing or malformed id, duplicate id,
        missing path, a path that matches no audio file, a metadata column that clashes with
        an item column. The message names the file, the row and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such session manifest", path=path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _rows_from_csv(path)
    elif suffix == ".toml":
        rows = _rows_from_toml(path)
    else:
        raise DataError(f"a session manifest must be a .csv or .toml file; got {path.suffix!r}",
                        path=path)
    if not rows:
        raise DataError("the manifest lists no sessions", path=path)
    seen: dict[str, str] = {}
    sessions = []
    for where, row in rows:
        sid = row.get("session")
        if sid is None or (isinstance(sid, str) and sid.strip() == ""):
            raise DataError(f"{where}, column 'session': the session id is missing", path=path)
        sid = str(sid).strip()
        if not _ID_PATTERN.match(sid):
            raise DataError(f"{where}, column 'session': {sid!r} is not a valid session id (use "
                            "letters, digits, '.', '_' and '-', not starting with '.' or '-', "
                            "at most 128 characters)", path=path)
        if sid in seen:
            raise DataError(f"{where}, column 'session': duplicate session id {sid!r} (first in "
                            f"{seen[sid]})", path=path)
        seen[sid] = where
        raw = row.get("path")
        if raw is None or not isinstance(raw, str) or raw.strip() == "":
            raise DataError(f"{where}, column 'path': the path of session {sid!r} is missing",
                            path=path)
        base, files = _resolve_files(raw.strip(), path, where)
        meta = {}
        for key, value in row.items():
            if key in ("session", "path"):
                continue
            if key in RESERVED_COLUMNS:
                raise DataError(f"{where}, column {key!r}: this name is reserved for item "
                                f"columns ({', '.join(sorted(RESERVED_COLUMNS))})", path=path)
            if not isinstance(key, str) or not key or key != key.strip():
                raise DataError(f"{where}: metadata column name {key!r} is empty or padded",
                                path=path)
            meta[key] = _value(value, where, key, path)
        sessions.append(Session(id=sid, path=raw.strip(), base=base, files=files, metadata=meta))
    return SessionManifest(path=path.resolve(), sessions=tuple(sessions))


def check_reference(manifest: SessionManifest, reference: Mapping | list | tuple | None) -> list[str]:
    """Validate a list of reference session ids against the manifest; None means all sessions."""
    if reference is None:
        return manifest.ids
    if isinstance(reference, str):
        reference = [reference]
    ids = list(dict.fromkeys(str(r) for r in reference))
    unknown = [r for r in ids if r not in manifest.ids]
    if unknown:
        raise ParameterError(f"reference_sessions {unknown} are not in {manifest.path}; sessions: "
                             f"{', '.join(manifest.ids)}")
    if not ids:
        raise ParameterError("reference_sessions is empty; give at least one session id or None")
    return ids
