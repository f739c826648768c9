"""100,000 syllables at 128 x 128 from a lazily read store: epoch time and memory on this CPU.

1. Writes a syllable store of N spectrogram-like items (``uint8``, gzip, chunks of 8 items —
   the store's own layout) and times the write.
2. Measures the cost model's parts on in-memory data: the step time at two batch sizes gives
   ``t_step(B) = a + b·B`` (``a``: the m decoder passes shared by the batch; ``b``: the kernel
   and the per-item work), and the time to read one sorted random batch from the store, ``r``.
   Prediction: ``epoch(N) = ceil(N/B) · (a + b·B + r)``.
3. Measures training on the store itself (read lazily, batch by batch, never loaded whole):
   ``--measure-items`` items of the 100k store (default 5,120: 20 steps of 256; a block of
   whole chunks with ``--order chunks``, the default, random items with ``--order items``),
   two epochs, the second timed; the 100k epoch is that step time × ceil(N/B). Peak resident
   memory of the process is reported with it (the model never holds more than a batch of items).

Usage::

    python benchmarks/bench_scale.py --json out/scale.json         # N = 100,000
    python benchmarks/bench_scale.py --n-items 20000 --measure-items 2560   # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import measure_fit, spectrogram_like  # noqa: E402

logger = logging.getLogger("bench_scale")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_store(path: Path, n: int, *, block: int = 2000) -> float:
    from vocalatent.data.store import SyllableStore

    t0 = time.perf_counter()
    with SyllableStore.create(path, params={"bench": "scale"}, shape=(128, 128), dtype="uint8") as st:
        for start in range(0, n, block):
            k = min(block, n - start)
            x = spectrogram_like(k, seed=start)
            seg = pd.DataFrame({"source": [f"f{(start + i) // 500:04d}.wav" for i in range(k)],
                                "onset_s": np.arange(k, dtype=float) * 0.2,
                                "offset_s": np.arange(k, dtype=float) * 0.2 + 0.1,
                                "sample_rate": 32000})
            st.append(x, seg)
    return time.perf_counter() - t0


def read_time(store, batch: int, rng, repeats: int = 5, *, chunk: int = 1) -> float:
    """Best of ``repeats`` reads of one sorted random batch: ``batch`` random items
    (``chunk=1``), or ``batch // chunk`` random whole chunks (the epoch order of a chunked
    store, ``ItemData.permutation``)."""
    n = store.shape[0]
    best = math.inf
    for _ in range(repeats):
        if chunk > 1:
            ch = np.sort(rng.choice(n // chunk, max(1, batch // chunk), replace=False))
            idx = (ch[:, None] * chunk + np.arange(chunk)).ravel()
        else:
            idx = np.sort(rng.choice(n, batch, replace=False))
        t0 = time.perf_counter()
        np.asarray(store[idx])
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-items", type=int, default=100_000)
    ap.add_argument("--measure-items", type=int, default=5120)
    ap.add_argument("--n-lattice", type=int, default=377)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--order", choices=("chunks", "items"), default="chunks",
                    help="measure the epoch order of a chunked store (whole chunks, the default) "
                         "or random single items")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from vocalatent.data.rows import RowSubset
    from vocalatent.data.store import SyllableStore

    B, m, N = args.batch_size, args.n_lattice, args.n_items
    rng = np.random.default_rng(0)
    out = {"n_items": N, "n_lattice": m, "batch_size": B}
    # cost-model parts on in-memory items
    X_small = spectrogram_like(4 * B, seed=1)
    fit_lo = measure_fit(X_small[: 4 * (B // 4)], decoder="conv", n_lattice=m, batch_size=B // 4, epochs=3)
    fit_hi = measure_fit(X_small, decoder="conv", n_lattice=m, batch_size=B, epochs=3)
    b = (fit_hi["step_s"] - fit_lo["step_s"]) / (B - B // 4)
    a = fit_hi["step_s"] - b * B
    out.update(step_s_B_small=fit_lo["step_s"], step_s_B=fit_hi["step_s"], a_s=a, b_s_per_item=b)
    logger.info("in memory: step %.3f s at B=%d, %.3f s at B=%d -> a=%.3f s, b=%.2e s/item",
                fit_lo["step_s"], B // 4, fit_hi["step_s"], B, a, b)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "syllables.h5"
        out["write_s"] = write_store(path, N)
        out["store_bytes"] = path.stat().st_size
        logger.info("store of %d items written in %.1f s (%.2f GB on disk)", N, out["write_s"],
                    out["store_bytes"] / 1e9)
        store = SyllableStore(path)
        spec = store.spectrograms
        chunk = int(spec.chunked_source.chunks[0])
        r_items = read_time(spec, B, rng)
        r = read_time(spec, B, rng, chunk=chunk) if args.order == "chunks" else r_items
        out.update(read_batch_random_items_s=r_items, read_batch_s=r, order=args.order, chunk=chunk)
        steps = math.ceil(N / B)
        out["predicted_epoch_s"] = steps * (a + b * B + r)
        logger.info("read of a sorted batch of %d: %.3f s as random items, %.3f s in the epoch "
                    "order (%s); predicted epoch of %d items: %.0f s",
                    B, r_items, r, args.order, N, out["predicted_epoch_s"])
        # training on the store, lazily read
        from vocalatent import QLVM

        # "chunks": a contiguous block of whole chunks, so the fit's epoch order
        # (ItemData.permutation) draws whole chunks at random as it does on the full store;
        # "items": random items (the order before chunk grouping; about one item per chunk)
        if args.order == "chunks":
            idx = np.arange(args.measure_items)
        else:
            idx = np.sort(rng.choice(N, args.measure_items, replace=False))
        sub = RowSubset(spec, idx)
        model = QLVM(2, decoder="conv", n_lattice=m, batch_size=B, max_epochs=2, random_state=0,
                     verbose=False)
        model.fit(sub)
        cum = np.asarray(model.history_["seconds"])
        epoch2 = float(cum[1] - cum[0])
        step = epoch2 / math.ceil(args.measure_items / B)
        out.update(measured_step_s=step, measured_epoch_s=step * steps,
                   measured_from_items=args.measure_items, peak_rss_gib=peak_rss_gib())
        logger.info("measured on the lazy store: %.3f s per step -> %.0f s per epoch of %d items "
                    "(%.2fx the prediction); peak RSS %.2f GiB", step, step * steps, N,
                    step * steps / out["predicted_epoch_s"], out["peak_rss_gib"])
        store.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
