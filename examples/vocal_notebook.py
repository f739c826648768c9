"""The lab-notebook workflow on real song: embed, compare files on the map, density, clusters,
boundaries and a geodesic with its decoded frames.

Fetches the Bengalese finch session of the data manifests (two songs of one bird, 44 s,
32 kHz) and the zebra finch songs, embeds all their syllables in one 2-D map, and writes the
figures a scientist would look at into OUT/notebook/::

    python examples/vocal_notebook.py                       # default settings (minutes on 2 cores)
    python examples/vocal_notebook.py --quick --out /tmp/nb  # small and fast (what the tests run)

Each step is a few lines of the public Python API, as one would write them in a notebook.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import vocalatent.accessor  # noqa: E402,F401  (registers ds.vl)
from vocalatent import plot as vplot  # noqa: E402
from vocalatent.data.manifests import fetch  # noqa: E402
from vocalatent.model import QLVM  # noqa: E402
from vocalatent.workflow import embed  # noqa: E402

QUICK = {"model": {"max_epochs": 8, "n_lattice": 144, "n_eval_lattice": 610, "n_eval_shifts": 2,
                   "decoder_options": {"base_channels": 8, "hidden": 64}},
         "spectrogram": {"n_freq": 48, "n_time": 48}, "analysis": {"resolution": 32}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("vocal_notebook_out"))
    ap.add_argument("--quick", action="store_true", help="tiny model and images (a smoke run)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    # 1. Real recordings through the data manifests (sha256-verified), one folder per bird.
    rec = args.out / "recordings"
    for name in ("bengalese_finch_pykanto", "zebra_finch_song"):
        if not (rec / name).exists():
            shutil.copytree(fetch(name), rec / name)

    # 2. Embed every syllable: segments -> spectrograms -> 2-D QLVM -> analysis.
    ds = embed(rec, args.out / "run", pipeline="bengalese_finch", device=args.device, seed=0,
               overrides=QUICK if args.quick else None, figures=False, force=True)
    model = QLVM.load(args.out / "run" / "model.pt", device=args.device)
    figs = args.out / "notebook"
    figs.mkdir(parents=True, exist_ok=True)
    print(f"{ds.sizes['item']} syllables; held-out log p(x) = "
          f"{ds.attrs['heldout_log_likelihood']:.1f} ± {ds.attrs['heldout_stderr']:.1f} nats/syllable")

    # 3. Compare birds / files on the map: which species each syllable came from.
    bird = np.array([s.split("/")[0] for s in ds["source"].values])
    ds = ds.assign_coords(bird=("item", bird))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    ds.vl.plot_embedding(color="bird", ax=axes[0])
    ds.vl.plot_embedding(color="cluster", ax=axes[1])
    vplot.save_figure(fig, figs / "map_by_bird_and_cluster.png")
    share = {b: float(np.mean(bird == b)) for b in np.unique(bird)}
    print("items per bird:", {b: int(np.sum(bird == b)) for b in share})

    # 4. Density, clusters and boundaries from the Jacobian map.
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    ds.vl.plot_density(ax=axes[0])
    ds.vl.plot_jacobian(ax=axes[1])
    vplot.save_figure(fig, figs / "density_and_boundaries.png")
    n_clusters = int(ds["cluster"].max()) + 1
    print(f"{n_clusters} clusters")
    if n_clusters >= 2:
        print(ds.vl.boundary_strength().head().to_string())

    # 5. A geodesic between the two largest clusters, with its decoded spectrograms.
    if n_clusters >= 2:
        sizes = np.bincount(ds["cluster"].values[ds["cluster"].values >= 0])
        a, b = (int(i) for i in np.argsort(sizes)[::-1][:2])
        geo = ds.vl.geodesic_between_clusters(model, a, b)
        fig = plt.figure(figsize=(11, 7))
        vplot.plot_geodesic(geo, output_shape=model.output_shape_, ax=fig.add_subplot(2, 1, 1),
                            strip_ax=fig.add_subplot(2, 1, 2), jacobian=ds["jacobian_norm"].values)
        vplot.save_figure(fig, figs / "geodesic.png")
        print(f"geodesic {a} -> {b}: length {geo.length:.2f} vs straight path {geo.straight_length:.2f}")

    # 6. The whole map decoded: what each region of the torus sounds like.
    fig, ax = plt.subplots(figsize=(9, 8))
    ds.vl.plot_latent_map(model, ax=ax)
    vplot.save_figure(fig, figs / "latent_map.png")
    return ds


if __name__ == "__main__":
    main()
