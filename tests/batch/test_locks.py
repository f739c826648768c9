"""vocalatent.locks: one writer per output folder (filelock's SoftFileLock, no fcntl)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from vocalatent.locks import LOCK_NAME, OutputLockedError, lock_holder, output_lock

_HOLDER = textwrap.dedent("""
    import sys, time
    from vocalatent.locks import output_lock
    with output_lock(sys.argv[1], what="vocalatent test"):
        print("locked", flush=True)
        time.sleep(120)
""")


def _start_holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_refused_with_holder_pid_and_host(tmp_path):
    out = tmp_path / "out"
    proc = _start_holder(out)
    try:
        holder = lock_holder(out)
        assert holder["pid"] == proc.pid and holder["host"] == socket.gethostname()
        with pytest.raises(OutputLockedError) as err:
            with output_lock(out, what="vocalatent batch"):
                pytest.fail("a second writer got the lock")
        msg = str(err.value)
        assert "\n" not in msg
        assert f"pid {proc.pid} on host {socket.gethostname()}" in msg
        assert msg.startswith(f"{out} is being written by another vocalatent batch")
        assert err.value.holder["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_same_process_second_lock_refused_and_released_cleanly(tmp_path):
    with output_lock(tmp_path) as path:
        assert path == tmp_path / LOCK_NAME and path.exists()
        assert lock_holder(tmp_path)["pid"] == os.getpid()
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with output_lock(tmp_path):
                pass
        assert path.exists()  # the refused attempt did not remove the holder's lock
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # lock and side file gone
    with output_lock(tmp_path):  # free again
        pass


def test_waits_for_holder_with_timeout(tmp_path):
    proc = _start_holder(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(OutputLockedError):
        with output_lock(tmp_path, timeout=0.5):
            pass
    assert time.monotonic() - t0 >= 0.45
    proc.kill()
    proc.wait()
    with output_lock(tmp_path, timeout=5):  # reclaimed from the killed holder
        pass


def test_stale_lock_of_killed_process_is_reclaimed_with_warning(tmp_path, caplog):
    proc = _start_holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # left behind
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        with output_lock(tmp_path):
            assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert f"stale lock left by pid {proc.pid} on host {socket.gethostname()}" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_host_is_never_reclaimed(tmp_path):
    # a holder on another node of the cluster: same marker format, another host name
    (tmp_path / LOCK_NAME).write_text("4242\nnode17.cluster.example\n1\n")
    (tmp_path / f"{LOCK_NAME}.json").write_text(json.dumps(
        {"pid": 4242, "host": "node17.cluster.example", "started": "2026-01-01T00:00:00Z"}))
    with pytest.raises(OutputLockedError, match=r"pid 4242 on host node17\.cluster\.example.*"
                       r"if that run is dead, remove"):
        with output_lock(tmp_path):
            pass
    assert (tmp_path / LOCK_NAME).exists()  # never removed by a process that did not own it


def test_does_not_use_fcntl(tmp_path, monkeypatch):
    import fcntl

    def refuse(*a, **k):
        raise OSError(38, "Function not implemented (no byte-range locks on this mount)")

    monkeypatch.setattr(fcntl, "flock", refuse)
    monkeypatch.setattr(fcntl, "lockf", refuse)
    monkeypatch.setattr(fcntl, "fcntl", refuse)
    with output_lock(tmp_path):
        with pytest.raises(OutputLockedError):
            with output_lock(tmp_path):
                pass
