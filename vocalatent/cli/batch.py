"""``vocalatent batch``: a thin click command over :func:`vocalatent.batch.run_batch`."""

from __future__ import annotations

import click

from ..batch import CLUSTERS, run_batch
from ..jobqueue import load_cluster_config
from .options import config_option, device_option, jobs_option, pipeline_option, seed_option


@click.command("batch")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (sessions/<id>/..., model/, embedding.nc, errors.csv).")
@pipeline_option
@config_option(param="config_file")
@click.option("--scheduler", default=None,
              help="Address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--cluster", type=click.Choice(CLUSTERS), default="local", show_default=True,
              help="Without --scheduler: a local cluster of processes, or SLURM/PBS worker "
                   "jobs (needs dask-jobqueue: pip install 'vocalatent[cluster]').")
@jobs_option(default=None,
             help="Local worker processes (default: one per core), or SLURM/PBS jobs (default 1).")
@click.option("--cluster-config", "cluster_config", type=click.Path(dir_okay=False), default=None,
              help="TOML file of SLURM/PBS job settings (account, queue/partition, cores, "
                   "memory, walltime, job_extra_directives, job_script_prologue, "
                   "start_timeout, ...; see docs/batch.md); the flags below win.")
@click.option("--queue", default=None, help="SLURM partition / PBS queue of the worker jobs.")
@click.option("--cores", type=click.IntRange(min=1), default=None,
              help="Cores per worker job.")
@click.option("--memory", default=None, help="Memory per worker job, e.g. 8GB.")
@click.option("--walltime", default=None, help="Wall time per worker job, e.g. 04:00:00.")
@click.option("--chunk-items", "chunk_items", type=click.IntRange(min=1), default=20480,
              show_default=True,
              help="Sessions with more syllables are embedded in chunks of about this many "
                   "(whole blocks of --block-items), spread over the workers.")
@click.option("--split-file-s", "split_file_s", type=click.FloatRange(min=0, min_open=True),
              default=1800.0, show_default=True,
              help="Recordings longer than this (s) are segmented in time chunks of about this "
                   "length across the workers (same segments as one task).")
@click.option("--block-items", "block_items", type=click.IntRange(min=1), default=4096,
              show_default=True,
              help="Syllables per transform call (the unit of the embedding's arithmetic; "
                   "results do not depend on the chunking, only on this).")
@click.option("-w", "--workers", type=int, default=None, hidden=True,
              help="Old spelling of -j/--jobs.")
@click.option("--reference", "reference", multiple=True,
              help="Train on this session only (repeat for several); default: all sessions.")
@click.option("--model", "model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Project the sessions into this trained model's map instead of training.")
@device_option(help="auto, cpu, cuda, cuda:N or mps (training on the driver, embedding on workers).")
@seed_option(help="Seed (default 0: reruns resume exactly).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "uint8"]), default="float32",
              show_default=True, help="On-disk type of the session stores.")
def batch(manifest, out, pipeline, config_file, scheduler, cluster, jobs, cluster_config, queue,
          cores, memory, walltime, chunk_items, split_file_s, block_items, workers, reference, model, device, seed, dtype):
    """Preprocess every session of MANIFEST on Dask, train one map, embed every syllable.

    MANIFEST is a CSV or TOML session manifest (one row per session: session, path, metadata;
    see docs/batch.md). A rerun skips completed work; the exit status is 1 when any file,
    session or stage failed (listed in OUT/errors.csv).
    """
    if scheduler is not None and cluster != "local":
        raise click.UsageError("give either --scheduler or --cluster, not both")
    if jobs is not None and workers is not None and jobs != workers:
        raise click.UsageError("give -j/--jobs only (-w/--workers is its old spelling)")
    workers = jobs if jobs is not None else workers
    flags = {"queue": queue, "cores": cores, "memory": memory, "walltime": walltime}
    given = [f"--{k}" for k, v in flags.items() if v is not None]
    if cluster == "local" and (given or cluster_config):
        raise click.UsageError(f"{', '.join(given + (['--cluster-config'] if cluster_config else []))}"
                               " only apply to --cluster slurm or pbs")
    options = None
    if cluster != "local":
        options = load_cluster_config(cluster_config) if cluster_config else {}
        options.update({k: v for k, v in flags.items() if v is not None})
    result = run_batch(manifest, out, pipeline=pipeline, config=config_file,
                       scheduler=scheduler, cluster=cluster, workers=workers,
                       cluster_options=options, embed_chunk_items=chunk_items,
                       embed_block_items=block_items, split_file_s=split_file_s,
                       reference_sessions=list(reference) or None, model=model, device=device,
                       seed=seed, dtype=dtype)
    done = result.sessions[result.sessions["status"] == "done"]
    msg = (f"{len(done)}/{len(result.sessions)} session(s), {int(done['n_items'].sum())} "
           f"syllables embedded in {result.embedding_path or '(nothing)'}")
    if not result.ok:
        raise click.ClickException(f"{len(result.errors)} error(s) (see "
                                   f"{result.out / 'errors.csv'}); {msg}")
    click.echo(msg)


commands = [batch]
