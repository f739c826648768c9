"""Onset/offset F1 on hard synthetic bouts: the default mode against the old AVA-style thresholds.

Bouts from ``vocalatent.audio.synthetic.synthetic_bout`` (44.1 kHz; 40 syllables of 20-300 ms,
gaps 5-150 ms, levels over 15 dB, reverberation RT60 0.1 s at -12 dB, 2 s of silence either
side) with in-bout noise 10-30 dB above the file's silence and gains 0.01-2.0; segmented with
the ``bengalese_finch`` preset as shipped (mode "prominence") and with ``mode = "ava"`` (the
thresholds the preset used before), scored at 10 and 20 ms.

    python benchmarks/bench_hard_bouts.py [--seeds 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from vocalatent.audio.evaluate import boundary_scores
from vocalatent.audio.segment import SegmentParams, segment_signal
from vocalatent.audio.synthetic import synthetic_bout
from vocalatent.config import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    table = load_pipeline("bengalese_finch")["segment"]
    modes = {"prominence (default)": SegmentParams.from_dict(table),
             "ava (old)": SegmentParams.from_dict({**table, "mode": "ava"})}
    print("| in-bout noise | gain | mode | segments / true | onset F1 10 ms | onset F1 20 ms | offset F1 10 ms |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for noise in (10.0, 20.0, 30.0):
        for gain in (0.01, 1.0, 2.0):
            res = {m: [] for m in modes}
            for seed in range(args.seeds):
                y, sr, truth = synthetic_bout(in_bout_noise_db=noise, scale=gain,
                                              random_state=1000 + seed)
                for m, p in modes.items():
                    found = segment_signal(y, sr, p)
                    s10 = boundary_scores(truth, found, tol_s=0.010)
                    s20 = boundary_scores(truth, found, tol_s=0.020)
                    res[m].append((len(found), len(truth), s10["onset_f1"], s20["onset_f1"],
                                   s10["offset_f1"]))
            for m, rows in res.items():
                r = np.array(rows, dtype=float)
                print(f"| {noise:.0f} dB | {gain:g} | {m} | {r[:, 0].sum():.0f} / {r[:, 1].sum():.0f} | "
                      f"{r[:, 2].mean():.2f} | {r[:, 3].mean():.2f} | {r[:, 4].mean():.2f} |")


if __name__ == "__main__":
    main()
