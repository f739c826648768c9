"""Preprocessing throughput: seconds of audio per second of wall time, per core.

Segmentation (``segment_file``: read + band trace + local floor + splitting, in the
preset's mode and, for comparison, in the old ``mode = "ava"``) and syllable spectrograms
(``syllable_spectrograms``, 128 x 128, calibrated range) on synthetic songs, at 44.1 kHz
(default preset band) and 250 kHz (mouse USV preset), one process (one core). Both wall
time and the process's CPU time are measured: on a shared, loaded machine the CPU figure
(audio seconds per CPU second of this one process) is the per-core throughput.

    python benchmarks/bench_audio.py [--duration 120] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from vocalatent.audio.segment import SegmentParams, segment_file
from vocalatent.audio.spectrogram import SpectrogramParams, syllable_spectrograms
from vocalatent.audio.synthetic import write_long_recording
from vocalatent.config import load_pipeline

CASES = [
    ("44.1 kHz, default preset", 44100, (500.0, 8000.0), "default"),
    ("250 kHz, mouse_usv preset", 250000, (35000.0, 100000.0), "mouse_usv"),
]


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of audio per case")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {_cpu_model()}; one process")
    print(f"{'case':28s} {'stage':22s} {'audio s / wall s':>17s} {'audio s / CPU s':>16s} "
          f"{'syllables':>10s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, sr, band, preset in CASES:
            path = Path(tmp) / f"bench_{sr}.wav"
            write_long_recording(path, duration_s=args.duration, sr=sr, band=band, random_state=0)
            cfg = load_pipeline(preset)
            for label, table in (("segmentation", cfg["segment"]),
                                 ("segmentation (ava)", {**cfg["segment"], "mode": "ava"})):
                seg_p = SegmentParams.from_dict(table)
                wall, cpu = [], []
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    seg = segment_file(path, seg_p)
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                print(f"{name:28s} {label:22s} {args.duration / min(wall):17.0f} "
                      f"{args.duration / min(cpu):16.0f} {len(seg):10d}")
                if label == "segmentation":
                    kept = seg
            seg = kept
            spec_p = SpectrogramParams.from_dict({**cfg["spectrogram"], "spec_min_db": -90.0,
                                                  "spec_max_db": -10.0})
            y, _ = sf.read(str(path), dtype="float32")
            wall, cpu = [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                syllable_spectrograms(y, sr, seg["onset_s"], seg["offset_s"], spec_p)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            print(f"{name:28s} {'spectrograms':22s} {args.duration / min(wall):17.0f} "
                  f"{args.duration / min(cpu):16.0f} {len(seg):10d}"
                  f"  ({len(seg) / min(cpu):.0f} syllables per CPU s)")

if __name__ == "__main__":
    main()
