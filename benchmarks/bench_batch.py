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
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
