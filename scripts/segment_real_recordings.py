"""Segment every real recording of the data manifests with its species' preset.

Prints a markdown table (one row per file: preset, duration, segments found with the default
mode and with the old AVA-style thresholds, time inside segments, what the filters removed)
and writes one figure per file (spectrogram, level trace, local floor and thresholds,
segments) into the figure folder. Used for docs/pipeline.md:

    python scripts/segment_real_recordings.py --figures docs/figures/segmentation > table.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vocalatent.audio.figures import plot_segmentation
from vocalatent.audio.io import audio_info, find_audio
from vocalatent.audio.pipeline import REMOVAL_REASONS
from vocalatent.audio.segment import SegmentParams, segment_file
from vocalatent.config import load_pipeline
from vocalatent.data.manifests import fetch

#: data set -> the preset of its species (default where no preset fits)
DATASETS = [
    ("zebra_finch_song", "zebra_finch"),
    ("zebra_finch_calls", "zebra_finch"),
    ("bengalese_finch_song", "bengalese_finch"),
    ("bengalese_finch_pykanto", "bengalese_finch"),
    ("great_tit", "great_tit"),
    ("field_birds", "default"),
    ("mouse_usv", "mouse_usv"),
    ("deer_mouse_pups", "mouse_usv"),
    ("bat_calls", "bat"),
]


def _shrink(png: Path) -> None:
    """Re-save a figure with a 256-colour palette (a third of the bytes, for the docs)."""
    from PIL import Image

    with Image.open(png) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figures", type=Path, default=None, help="folder for one PNG per file")
    ap.add_argument("--dpi", type=int, default=80)
    ap.add_argument("--relative-to", type=Path, default=Path("docs"),
                    help="figure links in the table are relative to this folder")
    args = ap.parse_args()
    print("| data set | file | preset | s | segments | old thresholds | in segments | removed |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for dataset, preset in DATASETS:
        params = SegmentParams.from_dict(load_pipeline(preset)["segment"])
        old = SegmentParams.from_dict({**load_pipeline(preset)["segment"], "mode": "ava"})
        for f in find_audio(fetch(dataset)):
            info = audio_info(f)
            seg, rep = segment_file(f, params, return_report=True)
            n_old = len(segment_file(f, old))
            removed = ", ".join(f"{r.replace('_', ' ')} {rep.removed[r]['n']} "
                                f"({rep.removed[r]['s']:.2f} s)"
                                for r in REMOVAL_REASONS if r in rep.removed) or "-"
            frac = seg["duration_s"].sum() / info.duration_s
            name = f.name
            if args.figures is not None:
                fig = args.figures / f"{dataset}__{f.stem}.png"
                name = f"[{f.name}]({fig.relative_to(args.relative_to).as_posix()})"
            print(f"| {dataset} | {name} | {preset} | {info.duration_s:.1f} | {len(seg)} | "
                  f"{n_old} | {100 * frac:.0f} % | {removed} |")
            if args.figures is not None:
                png = plot_segmentation(f, params, segments=seg, dpi=args.dpi,
                                        title=f"{dataset}/{f.name} - preset {preset}: "
                                              f"{len(seg)} segments ({n_old} with the old "
                                              "thresholds)",
                                        out=args.figures / f"{dataset}__{f.stem}.png")
                _shrink(png)


if __name__ == "__main__":
    main()
