"""Batch runs on a real SLURM cluster (dask-jobqueue workers started by sbatch).

Run by scripts/slurm_check.sh, which starts a one-node SLURM on this machine (munged,
slurmctld, slurmd) and runs ``pytest -m slurm tests/batch/test_slurm.py``. Without a SLURM
controller that answers with an idle node, every test here is skipped with the reason.

The reference is an uninterrupted run of the same manifest on a Dask LocalCluster; the SLURM
runs — through the CLI, with a worker job cancelled (scancel) mid-run, and killed (SIGKILL)
and restarted — must reproduce its outputs value for value. A request SLURM cannot satisfy
and a job that never starts must fail with a clear error, not hang.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import torch
import xarray as xr

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CONFIG = """
[model]
max_epochs = 2
n_lattice = 144
n_eval_lattice = 233
n_eval_shifts = 1
batch_size = 64
validation = 0.1

[spectrogram]
n_freq = 32
n_time = 32
"""
CHUNK, BLOCK = 40, 20  # the big session (~120 syllables) is embedded as 3 chunks of 2 blocks
SESSIONS = ["s1", "s2", "big", "s4"]


def _slurm_reason() -> str | None:
    """Why the SLURM tests cannot run here (None when they can)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client commands (sinfo/sbatch) on PATH; scripts/slurm_check.sh sets up a cluster"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed (pip install 'vocalatent[cluster]')"
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if res.returncode != 0:
        return f"no SLURM controller answers (sinfo: {' '.join(res.stderr.split())[:200]})"
    states = set(res.stdout.split())
    if not states & {"idle", "mixed", "allocated"}:
        return f"no usable SLURM node (node states: {sorted(states) or 'none'})"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _slurm_reason()
    if reason:
        pytest.skip(reason)
    return True


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from vocalatent.audio.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("slurm_rec")
    write_synthetic_dataset(root / "s1", n_files=2, n_syllables=10, random_state=1)
    write_synthetic_dataset(root / "s2", n_files=1, n_syllables=12, random_state=2)
    write_synthetic_dataset(root / "big", n_files=4, n_syllables=30, random_state=3)
    write_synthetic_dataset(root / "s4", n_files=1, n_syllables=9, random_state=4)
    manifest = root / "sessions.csv"
    manifest.write_text("session,path,animal,age\n"
                        "s1,s1,a1,30\ns2,s2,a2,31\nbig,big,a3,\ns4,s4/*.wav,a1,33\n")
    config = root / "tiny.toml"
    config.write_text(CONFIG)
    return root, manifest, config


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory):
    """The reference: one uninterrupted run on a LocalCluster of 2 single-thread workers."""
    from vocalatent.batch import run_batch

    _, manifest, config = data
    out = tmp_path_factory.mktemp("local")
    res = run_batch(manifest, out, config=config, cluster="local", workers=2, device="cpu",
                    seed=0, embed_chunk_items=CHUNK, embed_block_items=BLOCK)
    assert res.ok, res.errors
    return out


def _options(tmp_path, name, **extra):
    logs = tmp_path / "job-logs"
    logs.mkdir(exist_ok=True)
    return {"cores": 1, "processes": 1, "memory": "2GB", "walltime": "00:20:00",
            "log_directory": str(logs), "name": name, "start_timeout": 120,
            "death_timeout": 30, **extra}


def _assert_same_outputs(out, ref):
    """Every output equal to the reference run's, value for value."""
    from vocalatent.data.store import SyllableStore
    from vocalatent.embedding import read_embedding

    a, b = read_embedding(out / "embedding.nc"), read_embedding(ref / "embedding.nc")
    xr.testing.assert_equal(a, b)
    for sid in SESSIONS:
        sa, sb = SyllableStore(out / "sessions" / sid / "syllables.h5"), \
            SyllableStore(ref / "sessions" / sid / "syllables.h5")
        try:
            np.testing.assert_array_equal(np.asarray(sa.spectrograms[:]),
                                          np.asarray(sb.spectrograms[:]))
        finally:
            sa.close()
            sb.close()
        xr.testing.assert_equal(read_embedding(out / "sessions" / sid / "embedding.nc"),
                                read_embedding(ref / "sessions" / sid / "embedding.nc"))
    wa = torch.load(out / "model" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(ref / "model" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def _squeue(name):
    res = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True,
                         text=True, timeout=30)
    return [line.split() for line in res.stdout.splitlines() if line.strip()]


def _wait_gone(name, timeout=60):
    t0 = time.monotonic()
    while _squeue(name) and time.monotonic() - t0 < timeout:
        time.sleep(0.5)
    return not _squeue(name)


def test_cli_on_slurm_matches_local_run(slurm, data, local_run, tmp_path):
    from click.testing import CliRunner

    from vocalatent.cli import main
    from vocalatent.embedding import read_embedding

    _, manifest, config = data
    name = f"vl-cli-{uuid.uuid4().hex[:6]}"
    opts = _options(tmp_path, name, job_extra_directives=["--comment=vocalatent-test"])
    cfg = tmp_path / "cluster.toml"
    cfg.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in opts.items()
                             if k not in ("cores", "memory", "walltime")) + "\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["batch", str(manifest), "-o", str(out), "--config", str(config),
                                    "--cluster", "slurm", "--jobs", "2", "--cores", "1",
                                    "--memory", "2GB", "--walltime", "00:20:00",
                                    "--cluster-config", str(cfg), "--chunk-items", str(CHUNK),
                                    "--block-items", str(BLOCK),
                                    "--device", "cpu", "--seed", "0"])
    assert res.exit_code == 0, res.output
    _assert_same_outputs(out, local_run)
    ds = read_embedding(out / "embedding.nc")
    assert list(dict.fromkeys(ds["session"].values)) == SESSIONS
    # the work was done by SLURM jobs: one log per worker job, each a Dask worker that connected
    logs = sorted((tmp_path / "job-logs").glob("*.err"))
    assert len(logs) >= 1
    assert any("Registered to" in p.read_text() for p in logs), [p.read_text()[-500:] for p in logs]
    assert _wait_gone(name), "the worker jobs were not cancelled at the end of the run"


def test_worker_job_cancelled_mid_run_tasks_rerun_elsewhere(slurm, data, local_run, tmp_path):
    """scancel one of the two worker jobs while it holds embedding tasks."""
    from vocalatent.batch import run_batch
    from vocalatent.jobqueue import jobqueue_cluster

    _, manifest, config = data
    name = f"vl-cancel-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "out"
    with jobqueue_cluster("slurm", 2, _options(tmp_path, name)) as client:
        client.wait_for_workers(2, timeout=120)
        job_of = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
        assert all(job_of.values()) and len(set(job_of.values())) == 2
        box = {}
        runner = threading.Thread(target=lambda: box.update(res=run_batch(
            manifest, out, config=config, scheduler=client, device="cpu", seed=0,
            embed_chunk_items=CHUNK, embed_block_items=BLOCK)))
        runner.start()
        cancelled = None
        t0 = time.monotonic()
        while runner.is_alive() and time.monotonic() - t0 < 300:
            busy = {w: [k for k in keys if "vl-embed-" in str(k)]
                    for w, keys in client.processing().items()}
            victim = next((w for w, keys in busy.items() if keys), None)
            if victim is not None:
                cancelled = (job_of[victim], busy[victim])
                subprocess.run(["scancel", job_of[victim]], check=True, timeout=30)
                break
            time.sleep(0.05)
        runner.join(timeout=600)
        assert not runner.is_alive()
    assert cancelled is not None, "no worker was ever seen holding an embedding task"
    res = box["res"]
    assert res.ok, res.errors
    assert (res.sessions["status"] == "done").all()
    _assert_same_outputs(out, local_run)
    assert _wait_gone(name)


_DRIVER = """
import json, sys
from vocalatent.batch import run_batch
if __name__ == "__main__":
    run_batch(sys.argv[1], sys.argv[2], config=sys.argv[3], cluster="slurm", workers=2,
              cluster_options=json.loads(sys.argv[4]), device="cpu", seed=0,
              embed_chunk_items=int(sys.argv[5]), embed_block_items=int(sys.argv[6]))
"""


def test_killed_run_restarted_on_slurm_resumes_from_markers(slurm, data, local_run, tmp_path,
                                                            caplog):
    import logging

    from vocalatent.batch import run_batch

    _, manifest, config = data
    name = f"vl-kill-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    opts = _options(tmp_path, name)
    proc = subprocess.Popen([sys.executable, str(script), str(manifest), str(out), str(config),
                             json.dumps(opts), str(CHUNK), str(BLOCK)],
                            env=dict(os.environ, VOCALATENT_NO_PROGRESS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(out.glob("sessions/*/store.json"))) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "embedding.nc").exists()          # killed mid-run
    done = {p: p.stat().st_mtime_ns for p in out.glob("sessions/*/segments.csv")}
    done.update({p.parent / "syllables.h5": (p.parent / "syllables.h5").stat().st_mtime_ns
                 for p in out.glob("sessions/*/store.json")})
    assert len(done) >= 2
    # the killed driver's worker jobs are orphans: a user cancels them (or they time out)
    assert _squeue(name), "the killed run's worker jobs are not in the queue under their name"
    subprocess.run(["scancel", "-n", name], timeout=30)
    assert _wait_gone(name)
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        res = run_batch(manifest, out, config=config, cluster="slurm", workers=2,
                        cluster_options=opts, device="cpu", seed=0, embed_chunk_items=CHUNK,
                        embed_block_items=BLOCK)
    assert "stale lock" in caplog.text
    assert res.ok, res.errors
    # what was complete before the kill was not redone
    assert {p: p.stat().st_mtime_ns for p in done} == done
    _assert_same_outputs(out, local_run)
    assert _wait_gone(name)


def test_impossible_request_is_refused_at_once_naming_it(slurm, data, tmp_path):
    from click.testing import CliRunner

    from vocalatent.cli import main

    _, manifest, config = data
    t0 = time.monotonic()
    res = CliRunner().invoke(main, ["batch", str(manifest), "-o", str(tmp_path / "out"),
                                    "--config", str(config), "--cluster", "slurm",
                                    "--cores", "512", "--memory", "2GB", "--device", "cpu"])
    assert time.monotonic() - t0 < 60
    assert res.exit_code == 1, res.output
    line = res.output.strip()
    assert "\n" not in line and line.startswith("Error: SLURM refuses the worker jobs")
    assert "cores=512" in line and "Requested node configuration is not available" in line
    assert not list((tmp_path / "out").glob("sessions/*/segments.json"))  # nothing ran


def test_job_that_never_starts_fails_after_bounded_wait(slurm, data, tmp_path):
    from vocalatent.batch import run_batch
    from vocalatent.jobqueue import ClusterStartError

    _, manifest, config = data
    name = f"vl-never-{uuid.uuid4().hex[:6]}"
    opts = _options(tmp_path, name, start_timeout=8,
                    job_extra_directives=["--begin=now+1hour"])  # accepted, never eligible
    t0 = time.monotonic()
    with pytest.raises(ClusterStartError, match=r"no worker connected within 8 s \(1 job\(s\) "
                       r"of cores=1.*--begin=now\+1hour.*\): job \d+ PENDING \(BeginTime\)"):
        run_batch(manifest, tmp_path / "out", config=config, cluster="slurm", workers=1,
                  cluster_options=opts, device="cpu")
    assert time.monotonic() - t0 < 60
    assert _wait_gone(name, timeout=30), "the pending job was left in the queue"
