"""Batch benchmark: preprocessing scaling with Dask workers, and embedding throughput.

Run from the repository root::

    python benchmarks/bench_batch.py --sessions 8 --files 2 --syllables 60 --workers 1 2

1. Writes synthetic sessions (``--sessions`` x ``--files`` songs of ``--syllables`` syllables
   at 32 kHz), trains a small map on one session with ``run_batch`` (2 epochs).
2. For each worker count, runs ``run_batch`` into a fresh folder with that model (projection
   mode: no training) on a LocalCluster of that many single-threaded processes and reports
   the wall time of the segment and spectrogram stages (per-file / per-session tasks) and
   of the embedding stage.
3. Embedding throughput of the trained model in one process (``QLVM.transform`` on a store's
   lazily read spectrograms), items per second, with the evaluation lattice used.

Prints a Markdown table; docs/bench_batch.md records the numbers with machine and command.

Large-session mode (one session too big for one task, embedded in item chunks across workers)::

    python benchmarks/bench_batch.py --large-session 200000 --size 16 --workers 1 2

writes a synthetic store of that many ``size`` x ``size`` spectrograms (smooth random
prototypes plus noise), trains a tiny map on 2,000 of them, then for each worker count runs
the batch run's real embedding stage (:func:`vocalatent.batch.embed_stage`: chunks of
``--chunk-items`` items in blocks of 4096 on a LocalCluster of single-threaded workers) and
reports items/s and each worker's peak resident memory (``ru_maxrss``, the worker's whole
life: imports, model, blocks), and checks that the outputs of all worker counts are equal.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--syllables", type=int, default=60)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=64, help="spectrogram n_freq = n_time")
    ap.add_argument("--n-eval-lattice", type=int, default=987)
    ap.add_argument("--repeat", type=int, default=1, help="runs per worker count (best is kept)")
    ap.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--large-session", type=int, default=None, metavar="N",
                    help="only the large-session benchmark: one session of N items")
    ap.add_argument("--chunk-items", type=int, default=20480)
    args = ap.parse_args()
    if args.large_session:
        return large_session(args)

    import numpy as np
    import torch

    from vocalatent._utils import set_log_level
    from vocalatent.audio.synthetic import write_synthetic_dataset
    from vocalatent.batch import run_batch
    from vocalatent.data.store import SyllableStore
    from vocalatent.model import QLVM

    set_log_level(logging.WARNING)
    os.environ.setdefault("VOCALATENT_NO_PROGRESS", "1")
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_batch_"))
    rec = work / "recordings"
    if not rec.exists():
        for i in range(args.sessions):
            write_synthetic_dataset(rec / f"s{i:02d}", n_files=args.files,
                                    n_syllables=args.syllables, random_state=i)
    manifest = work / "sessions.csv"
    manifest.write_text("session,path,animal\n" + "".join(
        f"s{i:02d},recordings/s{i:02d},a{i % 3}\n" for i in range(args.sessions)))
    overrides = {"spectrogram": {"n_freq": args.size, "n_time": args.size},
                 "model": {"max_epochs": 2, "n_lattice": 233, "batch_size": 128,
                           "n_eval_lattice": args.n_eval_lattice, "n_eval_shifts": 1}}

    t0 = time.perf_counter()
    trained = run_batch(manifest, work / "train", overrides=overrides, workers=2,
                        reference_sessions=["s00"], device="cpu", seed=0)
    print(f"training run (2 workers, all stages): {time.perf_counter() - t0:.1f} s; "
          f"stages {({k: round(v, 1) for k, v in trained.timings.items()})}")
    model_path = trained.model_path
    n_items = int(trained.sessions["n_items"].sum())

    rows = []
    for w in args.workers:
        best = None
        for r in range(args.repeat):
            out = work / f"project_w{w}_r{r}"
            t0 = time.perf_counter()
            res = run_batch(manifest, out, model=model_path, workers=w, device="cpu",
                            overrides=overrides)
            total = time.perf_counter() - t0
            t = res.timings
            cand = (t["segment"] + t["calibrate"] + t["spectrograms"], t["embed"], total)
            best = cand if best is None or cand[0] < best[0] else best
        rows.append((w, *best))
    print(f"\n{args.sessions} sessions x {args.files} files x {args.syllables} syllables "
          f"= {args.sessions * args.files} files, {n_items} syllables; {args.size}x{args.size} "
          f"spectrograms; n_eval_lattice {args.n_eval_lattice}, 1 shift\n")
    print("| workers | preprocessing (s) | speed-up | embedding stage (s) | whole run (s) |")
    print("|---|---|---|---|---|")
    for w, pre, emb, total in rows:
        print(f"| {w} | {pre:.1f} | {rows[0][1] / pre:.2f} | {emb:.1f} | {total:.1f} |")

    # embedding throughput in one process
    model = QLVM.load(model_path, device="cpu")
    model.verbose = False
    st = SyllableStore(work / "train" / "sessions" / "s01" / "syllables.h5")
    x = st.spectrograms
    model.transform_dataset(x[np.arange(16)])  # warm-up
    t0 = time.perf_counter()
    ds = model.transform_dataset(x)
    dt = time.perf_counter() - t0
    st.close()
    print(f"\nembedding throughput (one process, torch threads {torch.get_num_threads()}): "
          f"{ds.sizes['item']} items in {dt:.2f} s = {ds.sizes['item'] / dt:.0f} items/s "
          f"(m = {args.n_eval_lattice} lattice points x 1 shift, D = {args.size ** 2})")
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPU(s), torch {torch.__version__}")
    print(f"work folder: {work}")


def _synthetic_store(path: Path, n: int, size: int, seed: int = 0) -> None:
    """n smooth random spectrogram-like images in [0, 1]: 12 prototypes, shifted, plus noise."""
    import numpy as np
    import pandas as pd

    from vocalatent.data.store import SyllableStore

    rng = np.random.default_rng(seed)
    f = np.linspace(0, 1, size)[:, None]
    t = np.linspace(0, 1, size)[None, :]
    protos = []
    for _ in range(12):
        c, w, slope = rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.15), rng.uniform(-0.5, 0.5)
        protos.append(np.exp(-((f - c - slope * (t - 0.5)) ** 2) / (2 * w * w)))
    protos = np.stack(protos).astype(np.float32)
    with SyllableStore.create(path, params={"bench": "synthetic", "n": n, "size": size},
                              shape=(size, size)) as store:
        for a in range(0, n, 10000):
            b = min(n, a + 10000)
            k = rng.integers(0, len(protos), size=b - a)
            x = protos[k] * rng.uniform(0.6, 1.0, size=(b - a, 1, 1)).astype(np.float32)
            x = np.clip(x + rng.normal(0, 0.05, size=x.shape).astype(np.float32), 0, 1)
            seg = pd.DataFrame({"source": "synthetic.wav", "onset_s": np.arange(a, b) * 0.1,
                                "offset_s": np.arange(a, b) * 0.1 + 0.08, "sample_rate": 32000,
                                "label": k.astype(str)})
            store.append(x, seg)


def large_session(args) -> None:
    import resource
    import shutil

    import distributed
    import numpy as np
    import torch
    import xarray as xr

    from vocalatent._utils import set_log_level
    from vocalatent.audio.synthetic import write_synthetic_dataset
    from vocalatent.batch import embed_stage, item_chunks, plan_batch
    from vocalatent.data.store import SyllableStore
    from vocalatent.embedding import read_embedding
    from vocalatent.workflow import resolve, train

    set_log_level(logging.WARNING)
    os.environ.setdefault("VOCALATENT_NO_PROGRESS", "1")
    n, size = args.large_session, args.size
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_large_"))
    store_path = work / "big.h5"
    t0 = time.perf_counter()
    if not store_path.exists():
        _synthetic_store(store_path, n, size)
    print(f"store: {n} items of {size}x{size} float32 in {time.perf_counter() - t0:.1f} s "
          f"({store_path.stat().st_size / 2**20:.0f} MiB on disk)")
    overrides = {"model": {"max_epochs": 2, "n_lattice": 233, "batch_size": 128,
                           "n_eval_lattice": args.n_eval_lattice, "n_eval_shifts": 1,
                           "validation": 0.1},
                 # a fixed range: the store is synthetic, nothing to calibrate
                 "spectrogram": {"n_freq": size, "n_time": size, "spec_min_db": -80.0,
                                 "spec_max_db": 0.0}}
    cfg = resolve(overrides=overrides)
    st = SyllableStore(store_path)
    x_train = np.asarray(st.spectrograms[np.arange(0, n, max(1, n // 2000))])
    st.close()
    t0 = time.perf_counter()
    train(x_train, cfg, out_dir=work / "model", device="cpu", seed=0, verbose=False)
    print(f"model: trained on {len(x_train)} items in {time.perf_counter() - t0:.1f} s")
    write_synthetic_dataset(work / "rec", n_files=1, n_syllables=2, random_state=0)
    (work / "m.csv").write_text("session,path\nbig,rec\n")
    ranges = item_chunks(n, args.chunk_items, block=4096)
    rows, outs = [], []
    for w in args.workers:
        out = work / f"embed_w{w}"
        shutil.rmtree(out, ignore_errors=True)
        run = plan_batch(work / "m.csv", out, overrides=overrides, device="cpu",
                         model=work / "model" / "model.pt", embed_chunk_items=args.chunk_items)
        big = run.sessions["big"]
        big.dir.mkdir(parents=True)
        shutil.copy(store_path, big.dir / "syllables.h5")
        big.n_items, big.store_key = n, "synthetic"
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                      dashboard_address=None,
                                      env={"VOCALATENT_NO_PROGRESS": "1"}) as cl, \
                distributed.Client(cl) as client:
            client.run(lambda: __import__("vocalatent.batch") and __import__("torch"))
            base = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            run.client = client
            t0 = time.perf_counter()
            embed_stage(run)
            dt = time.perf_counter() - t0
            peak = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        rows.append((w, dt, n / dt, sorted(v / 1024 for v in base.values()),
                     sorted(v / 1024 for v in peak.values())))
        outs.append(big.dir / "embedding.nc")
    ref = read_embedding(outs[0])
    for p in outs[1:]:
        xr.testing.assert_identical(read_embedding(p), ref)
    print(f"\nlarge session: {n} items, {size}x{size} spectrograms (D = {size * size}), "
          f"m = {args.n_eval_lattice} lattice points x 1 shift; {len(ranges)} chunks of "
          f"<= {args.chunk_items} items (blocks of 4096); outputs of every worker count "
          "identical (xarray assert_identical)\n")
    print("| workers | embedding stage (s) | items/s | speed-up | worker RSS after imports (MiB) "
          "| peak RSS per worker (MiB) |")
    print("|---|---|---|---|---|---|")
    for w, dt, ips, base, peak in rows:
        print(f"| {w} | {dt:.1f} | {ips:.0f} | {ips / rows[0][2]:.2f} | "
              f"{', '.join(f'{v:.0f}' for v in base)} | {', '.join(f'{v:.0f}' for v in peak)} |")
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
