"""What the job promises (docs/reliability.md): content-keyed caches, unreadable caches
rebuilt, one guarded writer per output folder, --force that replaces, temporary files of
killed runs removed, one-line early errors, exit statuses that count failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from vocalatent.audio.synthetic import write_synthetic_dataset
from vocalatent.cli import main
from vocalatent.workflow import dump_toml
from vocalatent.embedding import read_embedding

TINY = dict(model={"max_epochs": 2, "n_lattice": 89, "n_eval_lattice": 233, "n_eval_shifts": 2,
                   "batch_size": 64, "decoder_options": {"base_channels": 8, "hidden": 32}},
            spectrogram={"n_freq": 32, "n_time": 32},
            analysis={"resolution": 16, "jacobian": False, "geodesic": False})
REPO = Path(__file__).resolve().parents[2]


def _cli(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)])


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Two synthetic songs, a tiny config, and one finished run (no figures)."""
    root = tmp_path_factory.mktemp("rel")
    rec = root / "rec"
    write_synthetic_dataset(rec, n_files=2, n_syllables=10, sr=32000, random_state=0)
    cfg = root / "tiny.toml"
    cfg.write_text(dump_toml(TINY))
    out = root / "out"
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    return rec, cfg, out


@pytest.fixture
def copy(base, tmp_path):
    """A private copy of the base recordings and run (tests edit them)."""
    rec, cfg, out = base
    shutil.copytree(rec, tmp_path / "rec")
    shutil.copytree(out, tmp_path / "out")
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    run["input"] = str((tmp_path / "rec").resolve())          # the copy is this input's run
    (tmp_path / "out" / "run.json").write_text(json.dumps(run))
    return tmp_path / "rec", cfg, tmp_path / "out"


def _keys(out: Path):
    from vocalatent.workflow import load_model

    ds = read_embedding(out / "embedding.nc")
    stage = ds.attrs["stage_key"]
    ds.close()
    return load_model(out / "model.pt").metadata_["train_key"], stage, \
        json.loads((out / "inputs.json").read_text())["key"]


# ------------------------------------------------------------------ content-keyed caches
def test_unchanged_inputs_are_not_reread_and_a_same_size_edit_with_old_mtime_is_seen(copy, monkeypatch):
    import vocalatent.prepare.vocal as vocal

    rec, cfg, out = copy
    monkeypatch.setattr(vocal, "RACY_NS", 0)      # the test's files are only seconds old
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    before = _keys(out)
    hashed = []
    real = vocal.file_sha256
    monkeypatch.setattr(vocal, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    assert hashed == [] and _keys(out) == before          # nothing re-read, nothing rebuilt
    # same size, other bytes, modification time put back: the change time still moves
    path = rec / "song_000.wav"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    assert hashed == ["song_000.wav"]
    assert _keys(out)[2] != before[2]


def test_embedding_scored_by_another_rule_is_recomputed_but_the_model_kept(copy, monkeypatch):
    """The per-item log p(x) depends on the refinement ladder: an embedding.nc scored by
    another ladder (an older version of the package) is not served from the cache."""
    import vocalatent.workflow as workflow

    rec, cfg, out = copy
    model_before, stage_before, inputs_before = _keys(out)
    monkeypatch.setattr(workflow, "REFINE_SIZES", {**workflow.REFINE_SIZES, 2: (89, 377)})
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    model_after, stage_after, inputs_after = _keys(out)
    assert stage_after != stage_before
    assert (model_after, inputs_after) == (model_before, inputs_before)


def test_digest_reuse_rule(tmp_path):
    """A recorded digest is reused only for the same size, times and inode, taken more than
    RACY_NS after the file last changed."""
    import time

    from vocalatent._utils import file_sha256
    from vocalatent.prepare.vocal import _digests

    f = tmp_path / "a.wav"
    f.write_bytes(b"abc")
    ident = [f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ctime_ns, f.stat().st_ino]
    rec = {"files": {"a.wav": "recorded"}, "stat": {"a.wav": ident}}
    late = dict(rec, written_ns=time.time_ns() + 10**10)
    assert _digests([f], tmp_path, late) == ({"a.wav": "recorded"}, {"a.wav": ident}, 1)
    racy = dict(rec, written_ns=time.time_ns())            # taken right after the last change
    assert _digests([f], tmp_path, racy)[0] == {"a.wav": file_sha256(f)}
    other = dict(late, stat={"a.wav": [ident[0] + 1] + ident[1:]})
    assert _digests([f], tmp_path, other)[0] == {"a.wav": file_sha256(f)}
    assert _digests([f], tmp_path, None)[2] == 0


def test_gain_edit_and_replaced_annotated_audio_rebuild_everything(copy, caplog):
    rec, cfg, out = copy
    before = _keys(out)
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")     # nothing changed
    assert r.exit_code == 0, r.output
    assert _keys(out) == before
    # -12 dB on one recording: same segments (relative thresholds), other audio
    y, sr = sf.read(rec / "song_000.wav", dtype="float64")
    sf.write(rec / "song_000.wav", y * 10 ** (-12 / 20), sr, subtype="FLOAT")
    caplog.clear()
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    assert "input file(s) changed" in caplog.text and "song_000.wav" in caplog.text
    after_gain = _keys(out)
    assert all(a != b for a, b in zip(after_gain, before))       # store, model and embedding
    # an annotated file whose audio is replaced (same length, other content)
    segs = [(0.10, 0.20), (0.30, 0.45)]
    (rec / "song_001.txt").write_text("".join(f"{a}\t{b}\tx\n" for a, b in segs))
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    annotated = _keys(out)
    y, sr = sf.read(rec / "song_001.wav")
    sf.write(rec / "song_001.wav", np.random.default_rng(1).standard_normal(len(y)) * 0.1, sr)
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    assert all(a != b for a, b in zip(_keys(out), annotated))


@pytest.mark.parametrize("name", ["embedding.nc", "model.pt", "syllables.h5", "inputs.json"])
def test_truncated_cache_files_are_rebuilt_with_a_notice(name, copy, caplog):
    rec, cfg, out = copy
    data = (out / name).read_bytes()
    (out / name).write_bytes(data[: len(data) // 3])
    caplog.clear()
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert name in caplog.text                                   # the one-line notice names it
    ds = read_embedding(out / "embedding.nc")
    assert ds.sizes["item"] > 0
    ds.close()


def test_truncated_embedding_in_plot_and_analyze_is_one_line(copy):
    _, _, out = copy
    data = (out / "embedding.nc").read_bytes()
    (out / "embedding.nc").write_bytes(data[:200])
    for cmd in ("plot", "analyze"):
        r = _cli(cmd, out)
        assert r.exit_code == 1 and "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) == 1 and "embedding.nc" in r.output, r.output


# ------------------------------------------------------------------ output-folder guard
def test_concurrent_embeds_one_is_refused_and_the_survivor_is_consistent(base, tmp_path):
    rec, cfg, _ = base
    other = tmp_path / "other"
    write_synthetic_dataset(other, n_files=1, n_syllables=10, sr=32000, random_state=5)
    out = tmp_path / "shared_out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "VOCALATENT_NO_PROGRESS": "1"}
    cmds = [[sys.executable, "-m", "vocalatent", "-q", "embed", str(src), "-o", str(out),
             "--config", str(cfg), "--no-figures", "--latent-dim", str(d)]
            for src, d in ((rec, 2), (other, 1))]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], outs
    loser = outs[codes.index(1)]
    assert "being written by another" in loser and "pid" in loser and "Traceback" not in loser
    won = codes.index(0)
    src, d = ((rec, 2), (other, 1))[won]
    from vocalatent.workflow import load_model

    run = json.loads((out / "run.json").read_text())
    ds = read_embedding(out / "embedding.nc")
    model = load_model(out / "model.pt")
    assert run["input"] == str(src.resolve()) == ds.attrs["input"] == model.metadata_["input"]
    assert ds.sizes["latent"] == d == model.latent_dim
    assert ds.sizes["item"] == len((out / "segments.csv").read_text().strip().splitlines()) - 1
    ds.close()
    assert not any(".vltmp." in p.name for p in out.iterdir())


def test_train_and_project_refuse_another_runs_folder_unless_forced(copy, tmp_path):
    rec, cfg, out = copy
    other = tmp_path / "other"
    write_synthetic_dataset(other, n_files=1, n_syllables=8, sr=32000, random_state=3)
    r = _cli("train", other, "-o", out, "--config", cfg)
    assert r.exit_code == 1 and "another run" in r.output, r.output
    shutil.copy(out / "model.pt", tmp_path / "model.pt")
    r = _cli("project", tmp_path / "model.pt", other, "-o", out)
    assert r.exit_code == 1 and "another run" in r.output, r.output
    r = _cli("project", tmp_path / "model.pt", other, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["kind"] == "project" and run["input"] == str(other.resolve())
    assert not (out / "model.pt").exists()        # the replaced run's files are gone


def test_force_clears_the_previous_runs_files_but_not_the_users(copy, tmp_path):
    from vocalatent.data.simulate import head_direction_cells

    rec, cfg, out = copy
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "old.png").write_bytes(b"png")
    (out / "my_notes.txt").write_text("mine")
    sim = head_direction_cells(6, 200, bin_s=0.1, random_state=0)
    np.savez(tmp_path / "hd.npz", counts=sim.counts.T, time=sim.time)
    ncfg = tmp_path / "neural.toml"
    ncfg.write_text(dump_toml({"model": {k: TINY["model"][k] for k in
                                         ("max_epochs", "n_lattice", "n_eval_lattice", "n_eval_shifts")},
                               "analysis": TINY["analysis"]}))
    r = _cli("embed", tmp_path / "hd.npz", "-o", out, "--config", ncfg, "--no-figures")
    assert r.exit_code == 1 and "another run" in r.output
    r = _cli("embed", tmp_path / "hd.npz", "-o", out, "--config", ncfg, "--no-figures", "--force")
    assert r.exit_code == 0, r.output
    for gone in ("syllables.h5", "segments.csv", "errors.csv", "inputs.json", "figures/old.png"):
        assert not (out / gone).exists(), gone
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "units.csv").is_file()
    ds = read_embedding(out / "embedding.nc")
    assert ds.attrs["domain"] == "neural" and ds.sizes["item"] == 200
    ds.close()


def test_temp_files_of_a_killed_run_are_removed_on_the_next_start(copy):
    rec, cfg, out = copy
    (out / "figures").mkdir(exist_ok=True)
    left = [out / ".embedding.nc.vltmp.ab12cd34.nc", out / ".syllables.h5.k2j3h4g5.tmp",
            out / "figures" / ".density.png.vltmp.zz99yy88.png"]
    for p in left:
        p.write_bytes(b"half")
    (out / ".my_hidden_notes").write_text("mine")
    r = _cli("plot", out)
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in left)
    assert (out / ".my_hidden_notes").exists()


def test_a_killed_embed_leaves_nothing_that_blocks_the_next(base, tmp_path):
    """SIGKILL in the middle of a run: the next run starts (the lock is reclaimed) and ends
    with the same result as an uninterrupted one."""
    import signal
    import time

    rec, cfg, ref = base
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "VOCALATENT_NO_PROGRESS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "vocalatent", "-q", "embed", str(rec), "-o", str(out),
                          "--config", str(cfg), "--no-figures"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "syllables.h5").exists() and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = _cli("embed", rec, "-o", out, "--config", cfg, "--no-figures")
    assert r.exit_code == 0, r.output
    a = read_embedding(out / "embedding.nc").load()
    b = read_embedding(ref / "embedding.nc").load()
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    assert not any(".vltmp." in q.name for q in out.iterdir())


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/sys/kernel").is_dir(),
                    reason="needs a read-only folder (root ignores permissions; /sys is read-only)")
def test_read_only_out_is_one_line_naming_the_folder(base, tmp_path):
    rec, cfg, _ = base
    if os.geteuid() == 0:
        targets = [Path("/sys/kernel"), Path("/sys/kernel/vocalatent_out")]
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        targets = [ro, ro / "out"]
    for out in targets:
        r = _cli("embed", rec, "-o", out, "--config", cfg)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
        assert str(out) in r.output and "cannot write the output folder" in r.output


def test_default_out_beside_read_only_data_is_one_line(base, tmp_path, monkeypatch):
    """No -o: the default folder <data>_vocalatent sits beside the data; when that place is
    read-only the error names the folder and the flag that moves it."""
    import pathlib

    rec, cfg, _ = base
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(rec, ro / "rec")
    if os.geteuid() == 0:       # root ignores permissions: refuse like a read-only file system
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.resolve().parent == ro.resolve():
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    else:
        ro.chmod(0o555)
    try:
        r = _cli("embed", ro / "rec", "--config", cfg, "--no-figures")
    finally:
        ro.chmod(0o755)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    default = (ro / "rec_vocalatent").resolve()
    assert str(default) in r.output and "cannot write the output folder" in r.output
    assert "-o/--out" in r.output and not default.exists()


def test_syllable_store_has_ordinary_permissions(base):
    _, _, out = base
    old = os.umask(0o022)
    os.umask(old)
    if old != 0o022:
        pytest.skip(f"umask is {old:o}")
    for name in ("syllables.h5", "embedding.nc", "model.pt", "run.json", "segments.csv"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


# ------------------------------------------------------------------ exit statuses and early errors
def test_failed_inputs_make_embed_exit_1_with_the_count_last(base, tmp_path):
    rec, cfg, _ = base
    shutil.copytree(rec, tmp_path / "rec")
    (tmp_path / "rec" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    r = _cli("embed", tmp_path / "rec", "-o", tmp_path / "out", "--config", cfg, "--no-figures")
    assert r.exit_code == 1, r.output
    assert _last_line(r.output).startswith("1 of 3 input file(s) failed"), r.output
    assert (tmp_path / "out" / "embedding.nc").is_file()


def test_a_failed_figure_makes_plot_exit_1(copy, monkeypatch):
    _, _, out = copy
    import vocalatent.plot

    def broken(*a, **k):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(vocalatent.plot, "plot_density", broken)
    r = _cli("plot", out)
    assert r.exit_code == 1
    assert "1 figure(s) failed (density.png)" in _last_line(r.output), r.output
    assert (out / "figures" / "embedding_cluster.png").is_file()   # the others are drawn


@pytest.mark.parametrize("table, message", [
    ({"model": {"max_epochs": "many"}}, "[model] max_epochs must be an integer"),
    ({"model": {"likelihood": "gausian"}}, "[model] likelihood must be one of"),
    ({"analysis": {"clusters": "yes"}}, "[analysis] clusters must be true or false"),
])
def test_wrong_model_values_fail_before_preprocessing(table, message, base, tmp_path):
    rec, _, _ = base
    bad = tmp_path / "bad.toml"
    bad.write_text(dump_toml(table))
    r = _cli("embed", rec, "-o", tmp_path / "out", "--config", bad)
    assert r.exit_code != 0 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()          # nothing was prepared


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_fails_before_preprocessing(base, tmp_path):
    from vocalatent.workflow import embed

    rec, cfg, _ = base
    r = _cli("embed", rec, "-o", tmp_path / "out", "--config", cfg, "--device", "cuda")
    assert r.exit_code != 0 and "CUDA is not available" in r.output
    with pytest.raises(ValueError, match="CUDA is not available"):
        embed(rec, tmp_path / "out2", config=cfg, device="cuda")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_project_with_a_model_of_another_domain_fails_first(base, tmp_path):
    from vocalatent.data.simulate import head_direction_cells

    _, _, out = base
    sim = head_direction_cells(6, 100, bin_s=0.1, random_state=0)
    np.savez(tmp_path / "hd.npz", counts=sim.counts.T, time=sim.time)
    r = _cli("project", out / "model.pt", tmp_path / "hd.npz", "-o", tmp_path / "p")
    assert r.exit_code == 1 and "models vocal data" in r.output and "neural" in r.output, r.output
    assert not (tmp_path / "p").exists()


def _broken_checkpoint(src: Path, dst: Path, how: str) -> Path:
    state = torch.load(src, weights_only=True)
    if how == "json":
        state["params"] = state["params"][:-5]
    elif how == "keys":
        state["state_dict"] = {k: v for i, (k, v) in enumerate(state["state_dict"].items()) if i}
    elif how == "shapes":
        k = next(k for k, v in state["state_dict"].items() if v.ndim >= 1 and v.shape[0] > 1)
        state["state_dict"][k] = state["state_dict"][k][:1]
    elif how == "no_params":
        del state["params"]
    torch.save(state, dst)
    return dst


@pytest.mark.parametrize("how", ["json", "keys", "shapes", "no_params"])
def test_broken_checkpoints_are_one_line_in_project_and_evaluate(how, base, tmp_path):
    rec, _, out = base
    bad = _broken_checkpoint(out / "model.pt", tmp_path / f"{how}.pt", how)
    for args in (["project", bad, rec, "-o", tmp_path / "p"], ["evaluate", bad, out / "syllables.h5"]):
        r = _cli(*args)
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1 and str(bad) in r.output, r.output
    assert not (tmp_path / "p").exists()
