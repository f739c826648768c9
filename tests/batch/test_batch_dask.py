"""Batch runs on a real Dask LocalCluster (2 worker processes on loopback).

One uninterrupted run over real recordings (zebra finch, Bengalese finch) and synthetic songs
is shared by the tests; others inject a corrupt file and a worker that dies, kill a run with
SIGKILL and resume it, and connect to the running scheduler by address. Every test here
starts processes and trains (tiny) models, so all are marked slow.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from vocalatent.audio.synthetic import write_synthetic_dataset
from vocalatent.batch import run_batch
from vocalatent.cli import main
from vocalatent.data.store import SyllableStore
from vocalatent.embedding import read_embedding

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed")

OVERRIDES = {"model": {"max_epochs": 2, "n_lattice": 144, "n_eval_lattice": 233,
                       "n_eval_shifts": 1, "batch_size": 64, "validation": 0.1},
             "spectrogram": {"n_freq": 32, "n_time": 32}}


class CrashOnKey(distributed.WorkerPlugin):
    """Kill the worker process (os._exit) whenever a task whose key contains ``marker`` starts."""

    def __init__(self, marker):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and self.marker in str(key):
            os._exit(13)


@pytest.fixture(scope="module")
def cluster():
    import dask

    # one death re-schedules the task, the second gives up on it (KilledWorker)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      env={"VOCALATENT_NO_PROGRESS": "1"})
    client = distributed.Client(cl)
    yield cl, client
    client.close()
    cl.close()


@pytest.fixture(scope="module")
def sessions_dir(tmp_path_factory, real_data):
    root = tmp_path_factory.mktemp("recordings")
    write_synthetic_dataset(root / "syn_a", n_files=2, n_syllables=10, random_state=1)
    write_synthetic_dataset(root / "syn_b", n_files=1, n_syllables=12, random_state=2)
    zf, bf = real_data("zebra_finch_song"), real_data("bengalese_finch_song")
    manifest = root / "sessions.csv"
    manifest.write_text("session,path,animal,condition,age\n"
                        "syn_a,syn_a,synth1,baseline,30\n"
                        "zf,%s/samba.wav,zf_sap,baseline,\n"
                        "bf,%s,bl26lb16,baseline,120\n"
                        "syn_b,syn_b/*.wav,synth2,muted,31\n" % (zf, bf))
    return root, manifest


@pytest.fixture(scope="module")
def full_run(cluster, sessions_dir, tmp_path_factory):
    _, client = cluster
    _, manifest = sessions_dir
    out = tmp_path_factory.mktemp("full")
    result = run_batch(manifest, out, overrides=OVERRIDES, scheduler=client, device="cpu", seed=0)
    return result, out


def _spectrograms(path):
    st = SyllableStore(path)
    try:
        return np.asarray(st.spectrograms[:]), st.segments
    finally:
        st.close()


def test_full_run_embeds_every_syllable_with_session_metadata(full_run, sessions_dir, cluster):
    result, out = full_run
    client = cluster[1]
    assert result.ok, result.errors
    assert list(result.sessions["session"]) == ["syn_a", "zf", "bf", "syn_b"]
    assert (result.sessions["status"] == "done").all()
    ds = read_embedding(out / "embedding.nc")
    start = 0
    for sid, animal, age in [("syn_a", "synth1", 30), ("zf", "zf_sap", np.nan),
                             ("bf", "bl26lb16", 120), ("syn_b", "synth2", 31)]:
        x, segs = _spectrograms(out / "sessions" / sid / "syllables.h5")
        n = len(x)
        assert n > 5, sid                                   # real recordings give syllables too
        assert int(result.sessions.set_index("session").loc[sid, "n_items"]) == n
        part = ds.isel(item=slice(start, start + n))
        assert set(part["session"].values) == {sid}
        assert set(part["animal"].values) == {animal}
        np.testing.assert_array_equal(part["age"].values, np.full(n, age, dtype=float))
        np.testing.assert_array_equal(part["source"].values, segs["source"].to_numpy(str))
        np.testing.assert_array_equal(part["onset_s"].values, segs["onset_s"].to_numpy())
        per_session = read_embedding(out / "sessions" / sid / "embedding.nc")
        np.testing.assert_array_equal(per_session["embedding"].values, part["embedding"].values)
        start += n
    assert ds.sizes["item"] == start
    np.testing.assert_array_equal(ds["item"].values, np.arange(start))
    emb = ds["embedding"].values
    assert np.all((emb >= 0) & (emb < 1)) and np.all(np.isfinite(ds["log_likelihood"].values))
    # one shared clipping range: every store was made with the calibrated parameters
    cal = json.loads((out / "calibration.json").read_text())["spectrogram"]
    for sid in result.sessions["session"]:
        st = SyllableStore(out / "sessions" / sid / "syllables.h5")
        assert st.params["spectrogram"] == cal
        st.close()
    # the embedding is the trained model's transform of the store, computed on a worker (one
    # torch thread there; in this process float32 sums in another order differ by ~1e-4)
    from vocalatent.model import QLVM

    x, _ = _spectrograms(out / "sessions" / "zf" / "syllables.h5")
    path = str(out / "model" / "model.pt")
    ref = client.submit(lambda p, a: QLVM.load(p, device="cpu").transform_dataset(a)["embedding"].values,
                        path, x, pure=False).result()
    np.testing.assert_allclose(ref, ds["embedding"].values[ds["session"].values == "zf"],
                               rtol=0, atol=1e-12)
    model = QLVM.load(path, device="cpu")
    assert model.metadata_["spectrogram_resolved"] == cal


def test_rerun_skips_completed_work_and_reproduces_outputs(full_run, sessions_dir, cluster):
    result, out = full_run
    _, manifest = sessions_dir
    files = [out / "model" / "model.pt"] + sorted((out / "sessions").glob("*/syllables.h5")) + \
        sorted((out / "sessions").glob("*/embedding.nc"))
    before = {p: p.stat().st_mtime_ns for p in files}
    emb = read_embedding(out / "embedding.nc")
    again = run_batch(manifest, out, overrides=OVERRIDES, scheduler=cluster[1], device="cpu", seed=0)
    assert again.ok
    assert {p: p.stat().st_mtime_ns for p in files} == before       # nothing recomputed
    xr.testing.assert_identical(read_embedding(out / "embedding.nc"), emb)
    pd.testing.assert_frame_equal(again.sessions, result.sessions)


def test_bad_file_and_crashing_worker_reported_others_finish(full_run, sessions_dir, cluster,
                                                             tmp_path):
    """Through the CLI, projecting into the trained map on the running scheduler."""
    _, out_full = full_run
    root, _ = sessions_dir
    cl, client = cluster
    bad = tmp_path / "bad"
    write_synthetic_dataset(bad, n_files=1, n_syllables=8, random_state=5)
    (bad / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    crash = tmp_path / "crash"
    write_synthetic_dataset(crash, n_files=1, n_syllables=8, random_state=6)
    manifest = tmp_path / "m.csv"
    # the crashing session comes last, so that no other task is queued behind it on its worker
    manifest.write_text(f"session,path\ngood,{root}/syn_b\nbadfile,{bad}\ncrashes,{crash}\n")
    client.register_plugin(CrashOnKey("vl-segment-crashes-"), name="crash")
    try:
        out = tmp_path / "out"
        res = CliRunner().invoke(main, ["-q", "batch", str(manifest), "-o", str(out),
                                        "--scheduler", cl.scheduler_address,
                                        "--model", str(out_full / "model" / "model.pt"),
                                        "--device", "cpu"])
    finally:
        client.unregister_worker_plugin("crash")
    assert res.exit_code == 1, res.output
    assert "error(s)" in res.output
    errors = pd.read_csv(out / "errors.csv", keep_default_na=False)
    assert len(errors) == 2, errors
    row = errors.set_index("session").loc["badfile"]
    assert row["file"] == "broken.wav" and "broken.wav" in row["error"]
    row = errors.set_index("session").loc["crashes"]
    assert row["file"] == "song_000.wav" and "worker process running this task died" in row["error"]
    assert "also when run on its own" in row["error"]
    sessions = pd.read_csv(out / "sessions.csv", keep_default_na=False).set_index("session")
    assert sessions.loc["good", "status"] == "done" and sessions.loc["badfile", "status"] == "done"
    assert sessions.loc["crashes", "status"] == "failed"
    ds = read_embedding(out / "embedding.nc")
    assert set(ds["session"].values) == {"good", "badfile"}
    assert set(ds["source"].values[ds["session"].values == "badfile"]) == {"song_000.wav"}
    # projecting with the trained model gives the full run's embedding of the same session
    full = read_embedding(out_full / "embedding.nc")
    np.testing.assert_allclose(ds["embedding"].values[ds["session"].values == "good"],
                               full["embedding"].values[full["session"].values == "syn_b"],
                               atol=1e-6)


def test_connects_to_running_scheduler_by_address(full_run, sessions_dir, cluster, tmp_path):
    _, out_full = full_run
    root, _ = sessions_dir
    cl, client = cluster
    manifest = tmp_path / "m.toml"
    manifest.write_text(f'[[sessions]]\nsession = "again"\npath = "{root}/syn_a"\nanimal = "x"\n')
    n_before = len(client.run(os.getpid))
    res = run_batch(manifest, tmp_path / "out", scheduler=cl.scheduler_address, device="cpu",
                    model=out_full / "model" / "model.pt", overrides=OVERRIDES)
    assert res.ok
    assert client.status == "running" and len(client.run(os.getpid)) == n_before  # left running
    logs = client.get_worker_logs()
    assert logs  # the workers of the running cluster did the work
    x_new, _ = _spectrograms(tmp_path / "out" / "sessions" / "again" / "syllables.h5")
    x_old, _ = _spectrograms(out_full / "sessions" / "syn_a" / "syllables.h5")
    np.testing.assert_array_equal(x_new, x_old)            # same preprocessing as the model's


_DRIVER = """
import json, sys
from vocalatent.batch import run_batch
if __name__ == "__main__":
    run_batch(sys.argv[1], sys.argv[2], overrides=json.loads(sys.argv[3]), scheduler=sys.argv[4],
              device="cpu", seed=0)
"""


def test_killed_run_resumes_to_identical_outputs(full_run, sessions_dir, cluster, tmp_path, caplog):
    _, out_full = full_run
    _, manifest = sessions_dir
    cl, _ = cluster
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    env = dict(os.environ, VOCALATENT_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(manifest), str(out),
                             json.dumps(OVERRIDES), cl.scheduler_address], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("sessions/*/store.json"))) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "embedding.nc").exists()      # killed mid-run
    assert (out / ".vocalatent.lock").exists()           # left behind by the killed run
    import logging

    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        res = run_batch(manifest, out, overrides=OVERRIDES, scheduler=cl.scheduler_address,
                        device="cpu", seed=0)
    assert "stale lock" in caplog.text
    assert res.ok
    a, b = read_embedding(out / "embedding.nc"), read_embedding(out_full / "embedding.nc")
    xr.testing.assert_equal(a, b)                   # values and coordinates, value for value
    for sid in ["syn_a", "zf", "bf", "syn_b"]:
        xa, sa = _spectrograms(out / "sessions" / sid / "syllables.h5")
        xb, sb = _spectrograms(out_full / "sessions" / sid / "syllables.h5")
        np.testing.assert_array_equal(xa, xb)
        pd.testing.assert_frame_equal(sa, sb)
    wa = torch.load(out / "model" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(out_full / "model" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_session_split_in_item_chunks_gives_the_one_task_embedding(full_run, sessions_dir,
                                                                    cluster, tmp_path):
    """Each session embedded as chunks of 2 blocks of 4 items across the 2 workers == one task
    per session with the same blocks, value for value (aggregate posterior included)."""
    from vocalatent.batch import item_chunks

    _, out_full = full_run
    _, manifest = sessions_dir
    _, client = cluster
    model = out_full / "model" / "model.pt"
    kw = dict(overrides=OVERRIDES, scheduler=client, device="cpu", seed=0, model=model,
              embed_block_items=4)
    one = run_batch(manifest, tmp_path / "one", **kw)
    res = run_batch(manifest, tmp_path / "chunked", embed_chunk_items=8, **kw)
    assert res.ok and one.ok, (res.errors, one.errors)
    for sid in ["syn_a", "zf", "bf", "syn_b"]:
        n = int(res.sessions.set_index("session").loc[sid, "n_items"])
        assert len(item_chunks(n, 8, block=4)) >= 2                   # really split
        a = read_embedding(tmp_path / "chunked" / "sessions" / sid / "embedding.nc")
        b = read_embedding(tmp_path / "one" / "sessions" / sid / "embedding.nc")
        xr.testing.assert_identical(a, b)
        assert not (tmp_path / "chunked" / "sessions" / sid / "embedding_parts").exists()
        # and the per-item values are those of the full run's (one transform per session) up to
        # float32 sums over other row groupings
        full = read_embedding(out_full / "sessions" / sid / "embedding.nc")
        np.testing.assert_allclose(a["log_likelihood"].values, full["log_likelihood"].values,
                                   rtol=1e-5)
    xr.testing.assert_identical(read_embedding(tmp_path / "chunked" / "embedding.nc"),
                                read_embedding(tmp_path / "one" / "embedding.nc"))


def test_long_file_segmented_in_time_chunks_is_bit_identical(cluster, tmp_path):
    """One long recording split into ~3 s time chunks across the workers (band levels per
    chunk, finished on the driver) gives the segments.csv of one task, byte for byte."""
    from distributed import get_task_stream

    from vocalatent.batch import plan_batch, segment_stage, store_stage

    _, client = cluster
    write_synthetic_dataset(tmp_path / "long", n_files=1, n_syllables=80, random_state=7)
    manifest = tmp_path / "m.csv"
    manifest.write_text("session,path\nlong,long\n")
    outs = {}
    for split in (None, 3.0):
        run = plan_batch(manifest, tmp_path / f"out_{split}", overrides=OVERRIDES, device="cpu",
                         split_file_s=split)
        run.client = client
        with get_task_stream(client) as ts:
            segment_stage(run)
        keys = [t["key"] for t in ts.data]
        n_levels = sum("vl-levels-" in str(k) for k in keys)
        assert (n_levels >= 5) if split else (n_levels == 0), keys
        run.spec_params = run.spec_params.__class__.from_dict(
            {**run.spec_params.to_dict(), "spec_min_db": -90.0, "spec_max_db": -10.0})
        store_stage(run)
        outs[split] = run.sessions["long"].dir
    a, b = outs[None], outs[3.0]
    assert (a / "segments.csv").read_bytes() == (b / "segments.csv").read_bytes()
    assert len(pd.read_csv(a / "segments.csv")) > 50
    xa, sa = _spectrograms(a / "syllables.h5")
    xb, sb = _spectrograms(b / "syllables.h5")
    np.testing.assert_array_equal(xa, xb)
    pd.testing.assert_frame_equal(sa, sb)
