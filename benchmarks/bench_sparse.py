"""Peak memory of fit + score_samples on a scipy.sparse count matrix against the same matrix dense.

Each case runs in a fresh subprocess; the peak resident memory of fit + score_samples is sampled
every 2 ms above the resident memory with the input loaded. Usage:
    python3 benchmarks/bench_sparse.py [--n 40000] [--d 2000] [--density 0.05] [--kinds sparse,dense]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time
import numpy as np, scipy.sparse as sp
from vocalatent import QLVM

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

peak = [0.0]

def watch():  # peak resident memory, sampled every 2 ms
    while True:
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)

path, kind = sys.argv[1], sys.argv[2]
X = sp.load_npz(path).tocsr()
if kind == "dense":
    X = X.toarray()
input_mib = (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes if kind == "sparse" else X.nbytes) / 2**20
time.sleep(0.1)
base = rss()
peak[0] = base
threading.Thread(target=watch, daemon=True).start()
t0 = time.perf_counter()
m = QLVM(likelihood="poisson", n_lattice=34, max_epochs=1, batch_size=512, memory_budget_mb=64,
         decoder_options={"hidden": [32]}, random_state=0, device="cpu", verbose=False).fit(X)
ll = m.score_samples(X, n_lattice=89, n_shifts=1)
time.sleep(0.05)
print(json.dumps({"kind": kind, "input_mib": round(input_mib, 1), "rss_with_input_mib": round(base, 1),
                  "peak_rss_mib": round(peak[0], 1), "fit_score_extra_mib": round(peak[0] - base, 1),
                  "seconds": round(time.perf_counter() - t0, 1), "mean_ll": float(ll.mean())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--d", type=int, default=2000)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--kinds", default="sparse,dense", help="comma-separated: sparse, dense")
    a = ap.parse_args()
    import tempfile
    from pathlib import Path

    import numpy as np
    import scipy.sparse as sp

    C = sp.random(a.n, a.d, density=a.density, format="csr", random_state=0, dtype=np.float32)
    C.data = np.ceil(C.data * 5)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "counts.npz"
        sp.save_npz(path, C)
        del C
        for kind in a.kinds.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), kind],
                                 check=True, capture_output=True, text=True).stdout
            print(json.dumps({"n": a.n, "d": a.d, "density": a.density,
                              **json.loads(out.strip().splitlines()[-1])}))


if __name__ == "__main__":
    main()
