"""Dask workers as SLURM (or PBS) jobs, through dask-jobqueue: configuration and a bounded start.

:func:`load_cluster_config` reads a ``--cluster-config`` TOML file and checks it (unknown
keys rejected with a did-you-mean, wrong types named, one line each);
:func:`jobqueue_cluster` submits the worker jobs and waits — for a bounded time — until the
first worker connects. Before submitting, the job script is checked with
``sbatch --test-only``, so a request the cluster can never satisfy (more cores or memory than
any node has, an unknown partition or account) fails at once with SLURM's reason and the
request; a job that is accepted but stays pending past ``start_timeout`` seconds fails with
its SLURM state and pending reason instead of waiting forever.

A cluster configuration file (every key optional; the command-line flags win)::

    # vocalatent batch ... --cluster slurm --cluster-config slurm.toml
    queue = "normal"                 # the partition (also accepted as `partition`)
    account = "mylab"
    cores = 4                        # cores per job
    processes = 4                    # Dask worker processes per job (one thread each)
    memory = "16GB"                  # per job
    walltime = "04:00:00"
    job_extra_directives = ["--qos=long", "--constraint=avx2"]
    job_script_prologue = ["source ~/venvs/vocalatent/bin/activate"]
    interface = "ib0"
    local_directory = "$TMPDIR"
    log_directory = "~/dask-logs"
    name = "vocalatent-worker"       # the jobs' name (sbatch -J)
    start_timeout = 900              # seconds to wait for the first worker

Everything else dask-jobqueue reads from ``~/.config/dask/jobqueue.yaml`` still applies.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from ._utils import DataError, ParameterError, logger

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CLUSTER_KEYS", "ClusterStartError", "jobqueue_cluster", "load_cluster_config",
           "check_cluster_options"]

_STR, _INT, _LIST, _NUM = "a string", "an integer", "a list of strings", "a number"
#: The keys a cluster configuration may hold, with their types (dask-jobqueue's keyword
#: arguments of SLURMCluster/PBSCluster, plus ``start_timeout``).
CLUSTER_KEYS: dict[str, str] = {
    "queue": _STR, "account": _STR, "cores": _INT, "processes": _INT, "memory": _STR,
    "walltime": _STR, "job_extra_directives": _LIST, "job_directives_skip": _LIST,
    "job_script_prologue": _LIST, "worker_extra_args": _LIST, "interface": _STR,
    "local_directory": _STR, "log_directory": _STR, "python": _STR, "shebang": _STR,
    "name": _STR, "job_name": _STR,  # the job name (sbatch -J); both spellings
    "death_timeout": _NUM, "job_cpu": _INT, "job_mem": _STR,
    "resource_spec": _STR, "start_timeout": _NUM,
}
_ALIASES = {"partition": "queue"}
DEFAULT_START_TIMEOUT = 900.0


class ClusterStartError(ParameterError):
    """The worker jobs cannot start (refused by the scheduler, or pending past the timeout)."""


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_cluster_options(options: Mapping[str, Any], *, where: str = "cluster options") -> dict:
    """Validate cluster options (keys of :data:`CLUSTER_KEYS`; ``partition`` means ``queue``).

    Parameters
    ----------
    options : mapping
        Key → value.
    where : str
        What the options came from, for the messages (a file name).

    Returns
    -------
    dict
        The options with aliases resolved.

    Raises
    ------
    ParameterError
        An unknown key (with the closest known one) or a value of the wrong type, one line.
    """
    out: dict = {}
    for key, value in options.items():
        name = _ALIASES.get(key, key)
        if name not in CLUSTER_KEYS:
            near = difflib.get_close_matches(key, list(CLUSTER_KEYS) + list(_ALIASES), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ParameterError(f"{where}: unknown key {key!r}{hint} (known keys: "
                                 f"{', '.join(sorted(list(CLUSTER_KEYS) + list(_ALIASES)))})")
        if not _type_ok(value, CLUSTER_KEYS[name]):
            raise ParameterError(f"{where}: {key} must be {CLUSTER_KEYS[name]}"
                                 f"{' > 0' if CLUSTER_KEYS[name] == _INT else ''}; got {value!r}")
        if name in out:
            raise ParameterError(f"{where}: {key!r} and {name!r} both set the partition; give one")
        out[name] = value
    if "name" in out:  # jobqueue.yaml's `name`: the job name (sbatch -J)
        if "job_name" in out:
            raise ParameterError(f"{where}: 'name' and 'job_name' both set the job name; give one")
        out["job_name"] = out.pop("name")
    return out


def load_cluster_config(path: str | os.PathLike) -> dict:
    """Read and check a cluster configuration TOML file (see the module docstring).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    dict
        Keyword arguments for the dask-jobqueue cluster, plus ``start_timeout``.

    Raises
    ------
    DataError
        The file is missing or not TOML.
    ParameterError
        An unknown key or a wrong type; the message names the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise DataError(f"cannot read the cluster configuration ({exc.strerror or exc})",
                        path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"invalid TOML ({exc})", path=path) from None
    return check_cluster_options(doc, where=str(path))


def describe_request(options: Mapping[str, Any], n_jobs: int) -> str:
    """The resource request in words (for messages)."""
    keys = ("queue", "account", "cores", "processes", "memory", "walltime",
            "job_extra_directives")
    parts = [f"{k}={options[k]!r}" for k in keys if options.get(k) not in (None, [], "")]
    return f"{n_jobs} job(s) of {', '.join(parts) or 'the dask-jobqueue defaults'}"


def _sbatch_test_only(script: str) -> str | None:
    """``sbatch --test-only`` on the job script: None when SLURM would accept it, else why not."""
    if shutil.which("sbatch") is None:
        return None  # dask-jobqueue reports the missing command itself
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(script)
    try:
        res = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        return "sbatch --test-only did not answer within 60 s (is slurmctld up?)"
    finally:
        os.unlink(fh.name)
    if res.returncode == 0:
        return None
    msg = " ".join((res.stderr or res.stdout).split())
    return msg.replace("sbatch: error: ", "") or f"sbatch exited with status {res.returncode}"


def _job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} from squeue for the given jobs (missing: finished/unknown)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        res = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return {}
    out = {}
    for line in res.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


@contextmanager
def jobqueue_cluster(kind: str, n_jobs: int, options: Mapping[str, Any] | None = None
                     ) -> Iterator[Any]:
    """Start a dask-jobqueue cluster of ``n_jobs`` worker jobs; yield a connected Client.

    Parameters
    ----------
    kind : {"slurm", "pbs"}
    n_jobs : int
        Worker jobs to submit.
    options : mapping, optional
        Checked by :func:`check_cluster_options`; ``start_timeout`` (seconds, default 900; 0:
        no limit) bounds the wait for the first worker, the rest goes to the cluster class.

    Raises
    ------
    ParameterError
        dask-jobqueue is not installed.
    ClusterStartError
        SLURM refuses the job script (``sbatch --test-only``), or no worker connected within
        ``start_timeout``: the message names the request and the jobs' state and reason.
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise ParameterError(f"cluster={kind!r} needs the dask-jobqueue package (pip install "
                             "'vocalatent[cluster]'); see docs/batch.md") from None
    from distributed import Client

    opts = check_cluster_options(dict(options or {}))
    timeout = float(opts.pop("start_timeout", DEFAULT_START_TIMEOUT))
    # progress bars of many worker processes would go to the job logs; keep them quiet
    prologue = list(opts.pop("job_script_prologue", []))
    prologue = ["export VOCALATENT_NO_PROGRESS=1"] + prologue
    opts["job_script_prologue"] = prologue
    if kind == "slurm":
        cls = dask_jobqueue.SLURMCluster
    elif kind == "pbs":
        cls = dask_jobqueue.PBSCluster
    else:
        raise ParameterError(f"kind must be 'slurm' or 'pbs'; got {kind!r}")
    request = describe_request(opts, n_jobs)
    cluster = cls(**opts)
    client = None
    try:
        if kind == "slurm":
            why = _sbatch_test_only(cluster.job_script())
            if why is not None:
                raise ClusterStartError(f"SLURM refuses the worker jobs ({request}): {why}")
        cluster.scale(jobs=n_jobs)
        client = Client(cluster)
        _wait_for_first_worker(client, cluster, request, timeout)
        logger.info("%d worker(s) connected (%s)", len(client.nthreads()), request)
        yield client
    finally:
        if client is not None:
            client.close()
        cluster.close()


def _wait_for_first_worker(client, cluster, request: str, timeout: float) -> None:
    t0 = time.monotonic()
    while not client.nthreads():
        elapsed = time.monotonic() - t0
        if timeout and elapsed > timeout:
            ids = [str(j.job_id) for j in cluster.workers.values()
                   if getattr(j, "job_id", None)]
            states = _job_states(ids)
            if states:
                what = "; ".join(f"job {i} {s} ({r})" for i, (s, r) in states.items())
            elif ids:
                what = f"jobs {', '.join(ids)} are no longer queued (see their logs)"
            else:
                what = "no job was submitted (sbatch/qsub failed; see the warnings above)"
            raise ClusterStartError(f"no worker connected within {timeout:g} s ({request}): "
                                    f"{what}")
        time.sleep(0.5)
