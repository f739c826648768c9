"""Repertoire benchmark: clusters of the old defaults beside the new ones, over many repertoires.

Two parts (docs/analysis.md, "Clusters whose number is chosen by the data"):

* ``--part latents`` (seconds): for each repertoire of
  :func:`vocalatent.data.repertoire.benchmark_repertoires`, latent points on the 2-D torus with
  the repertoire's structure (:func:`~vocalatent.data.repertoire.repertoire_latents`: one blob
  per type, one sub-blob per bird, subtle types next to their sibling, 1 % uniform outliers).
  It measures the cluster criterion alone, on maps whose types are separable by construction.
* ``--part qlvm`` (about a minute per repertoire on 2 loaded cores): the repertoire's songs
  rendered as recordings at different gains and noise floors, 32 x 32 syllable spectrograms
  (per-recording level normalisation), a small QLVM fitted for ``--epochs`` epochs, and the
  clusters of its embedding. It measures map and criterion together.

For each repertoire and setting: number of clusters k, ARI of clusters vs true types, and the
purity of the rarest type's main cluster (1 = the rare type has a cluster of its own; low = it
was merged into a larger type's cluster); per repertoire the torus 5-NN label accuracy of the
map and the rarest type's item count. Outliers are left out of the scores.

Usage::

    python benchmarks/bench_repertoire.py --part latents [--n 12] [--out table.md]
    python benchmarks/bench_repertoire.py --part qlvm --n 4 --epochs 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("VOCALATENT_NO_PROGRESS", "1")

from vocalatent.analysis.agreement import label_agreement  # noqa: E402
from vocalatent.analysis.clusters import find_clusters  # noqa: E402
from vocalatent.analysis.density import select_bandwidth  # noqa: E402
from vocalatent.data.repertoire import (  # noqa: E402
    benchmark_repertoires,
    make_repertoire,
    repertoire_latents,
    repertoire_recordings,
    repertoire_spectrograms,
)

#: The settings compared: the old workflow defaults and the new ones.
SETTINGS = {
    "old (2x LCV bw, persistence 0.5, height 0.1)": dict(
        method="persistence", bandwidth_scale=2.0, min_persistence=0.5, min_relative_height=0.1),
    "new (LCV bw, dip > 2.5 noise sd)": dict(method="significance", bandwidth_scale=1.0, significance=2.5),
}


def cluster(z, setting: dict, resolution: int):
    s = dict(setting)
    scale = s.pop("bandwidth_scale")
    bw = select_bandwidth(z) * scale
    return find_clusters(z, bandwidth=bw, resolution=resolution, **s)


def score(z, types, labels_names, result):
    lab = np.where(types >= 0, np.asarray(labels_names, dtype=object), "")
    rep = label_agreement(z, lab, clusters=result.labels, k=(5,))
    counts = np.bincount(types[types >= 0])
    rare = f"t{int(np.argmin(np.where(counts > 0, counts, 10 ** 9))):02d}"
    row = rep.per_label.set_index("label").loc[rare]
    return {"k": result.n_clusters, "ari": rep.ari, "knn5": rep.knn_accuracy[5],
            "rare_n": int(row["n_items"]), "rare_completeness": float(row["completeness"]),
            "rare_purity": float(row["purity"])}


def run_latents(specs, resolution, settings):
    rows = []
    for i, spec in enumerate(specs):
        rep = make_repertoire(spec)
        z, types, _ = repertoire_latents(rep)
        names = np.array([f"t{t:02d}" if t >= 0 else "" for t in types], dtype=object)
        for name, setting in settings.items():
            res = cluster(z, setting, resolution)
            rows.append({"repertoire": i, "n_types": spec.n_types, "ratio": spec.abundance_ratio,
                         "n_subtle": spec.n_subtle, "n_birds": spec.n_birds, "n_items": len(z),
                         "setting": name, **score(z, types, names, res)})
    return rows


def run_qlvm(specs, resolution, settings, epochs, seed):
    import torch

    from vocalatent import QLVM
    from vocalatent.audio.spectrogram import SpectrogramParams

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    params = SpectrogramParams(n_freq=32, n_time=32, f_min=500.0, f_max=11000.0,
                               time_mode="window", window_dur_s=0.3, level="recording")
    rows = []
    for i, spec in enumerate(specs):
        rep = make_repertoire(spec)
        audio, seg = repertoire_recordings(rep)
        X = repertoire_spectrograms(audio, seg, params, level="recording")
        t0 = time.perf_counter()
        model = QLVM(2, n_lattice=377, n_eval_lattice=2584, max_epochs=epochs, batch_size=128,
                     random_state=seed, verbose=False, device="cpu").fit(X)
        z = np.asarray(model.transform(X))
        fit_s = time.perf_counter() - t0
        types = seg["type"].to_numpy()
        for name, setting in settings.items():
            res = cluster(z, setting, resolution)
            rows.append({"repertoire": i, "n_types": spec.n_types, "ratio": spec.abundance_ratio,
                         "n_subtle": spec.n_subtle, "n_birds": spec.n_birds, "n_items": len(z),
                         "setting": name, "fit_s": round(fit_s, 1),
                         **score(z, types, seg["label"].to_numpy(), res)})
        print(f"repertoire {i}: {spec.n_types} types, fit {fit_s:.0f} s", file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    names = list(dict.fromkeys(r["setting"] for r in rows))
    reps = sorted({r["repertoire"] for r in rows})
    head = "| # | types | ratio | subtle | birds | items | rarest | 5-NN | " + " | ".join(
        f"{n}: k / ARI / rare" for n in names) + " |"
    lines = [head, "|" + "---|" * (8 + len(names))]
    for i in reps:
        rr = [r for r in rows if r["repertoire"] == i]
        r0 = rr[0]
        cells = []
        for n in names:
            r = next(x for x in rr if x["setting"] == n)
            cells.append(f"{r['k']} / {r['ari']:.2f} / {r['rare_purity']:.2f}")
        lines.append(f"| {i} | {r0['n_types']} | 1:{r0['ratio']:g} | {r0['n_subtle']} | {r0['n_birds']} | "
                     f"{r0['n_items']} | {r0['rare_n']} | {r0['knn5']:.2f} | " + " | ".join(cells) + " |")
    summary = []
    for n in names:
        ari = np.array([r["ari"] for r in rows if r["setting"] == n])
        summary.append(f"- {n}: median ARI {np.median(ari):.3f}, min {ari.min():.3f}, "
                       f"repertoires below 0.6: {int(np.sum(ari < 0.6))} of {ari.size}")
    return "\n".join(lines) + "\n\n" + "\n".join(summary) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["latents", "qlvm"], default="latents")
    ap.add_argument("--n", type=int, default=12, help="repertoires (default 12)")
    ap.add_argument("--resolution", type=int, default=128, help="cluster grid (default 128)")
    ap.add_argument("--epochs", type=int, default=60, help="QLVM epochs (qlvm part)")
    ap.add_argument("--seed", type=int, default=0, help="QLVM seed (qlvm part)")
    ap.add_argument("--spec-seed", type=int, default=0,
                    help="seed of the drawn repertoires (benchmark_repertoires)")
    ap.add_argument("--significance", type=float, nargs="*", default=None,
                    help="extra new-rule rows with these noise-sd thresholds")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--json", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    settings = dict(SETTINGS)
    for sig in args.significance or []:
        settings[f"dip > {sig:g} sd"] = dict(method="significance", bandwidth_scale=1.0, significance=sig)
    specs = benchmark_repertoires(args.n, n_syllables=600 if args.part == "latents" else 500,
                                  seed=args.spec_seed)
    t0 = time.perf_counter()
    rows = (run_latents(specs, args.resolution, settings) if args.part == "latents"
            else run_qlvm(specs, args.resolution, settings, args.epochs, args.seed))
    text = table(rows) + f"\n({args.part}; {time.perf_counter() - t0:.0f} s)\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
