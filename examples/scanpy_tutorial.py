"""A QLVM map inside a scanpy workflow (notebook style: each ``# %%`` block is a cell).

The data are the real 10,000 mouse brain cells that scanpy ships for its own tests (fetched
and checked through vocalatent's data manifest ``scanpy_10x_subset``)::

    python examples/scanpy_tutorial.py                        # 3,000 cells, about 5 min on 2 cores
    python examples/scanpy_tutorial.py --n-cells 400 --max-epochs 4   # a quick check

What it shows: the counts stay in ``layers["counts"]`` while ``X`` is normalised the scanpy
way; ``vocalatent.tl.qlvm`` trains on the counts and writes the map back into the same
AnnData (``obsm["X_qlvm"]``, ``obsm["X_qlvm_torus"]``, ``obs["qlvm_cluster"]``, ...); scanpy's
own plotting and neighbour graph then use it. scanpy is optional: without it the example
stops after writing the annotated ``.h5ad`` and a matplotlib figure.
"""

from __future__ import annotations

import argparse
import glob
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger("scanpy_tutorial")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("scanpy_tutorial_out"))
    ap.add_argument("--n-cells", type=int, default=3000)
    ap.add_argument("--n-top-genes", type=int, default=500)
    ap.add_argument("--max-epochs", type=int, default=60)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # %% Load the real cells (an AnnData zarr store shipped by scanpy) through the manifest
    import anndata

    from vocalatent.data.manifests import fetch

    folder = fetch("scanpy_10x_subset")
    adata = anndata.read_zarr(glob.glob(str(Path(folder) / "*.zarr"))[0])
    adata = adata[: args.n_cells].copy()
    adata.var_names_make_unique()

    # %% The usual scanpy preprocessing: counts kept in a layer, X normalised, a PCA
    try:
        import scanpy as sc
    except ImportError:
        sc = None
    adata.layers["counts"] = adata.X.copy()
    if sc is not None:
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        sc.pp.pca(adata, n_comps=20)

    # %% The QLVM map, trained on the counts, written into the same AnnData
    import vocalatent

    model = vocalatent.tl.qlvm(adata, layer="counts", n_top_genes=args.n_top_genes,
                               max_epochs=args.max_epochs, random_state=0, verbose=False)
    summary = {"n_cells": int(adata.n_obs),
               "n_clusters": int(adata.obs["qlvm_cluster"].cat.categories.size),
               "heldout_log_likelihood": adata.uns["qlvm"].get("heldout_log_likelihood"),
               "n_epochs": int(getattr(model, "n_epochs_", 0))}
    logger.info("map of %(n_cells)d cells, %(n_clusters)d clusters", summary)

    # %% scanpy's own tools on the map: the neighbour graph on torus coordinates (no seam),
    # and the embedding plot of the latent square
    import matplotlib

    matplotlib.use("Agg")
    if sc is not None:
        sc.pp.neighbors(adata, use_rep="X_qlvm_torus", n_neighbors=15, key_added="qlvm_neighbors")
        fig = sc.pl.embedding(adata, basis="qlvm", color="qlvm_cluster", show=False,
                              return_fig=True, title="QLVM map (latent torus)")
        summary["neighbors"] = "qlvm_neighbors"
    else:
        import matplotlib.pyplot as plt

        z = adata.obsm["X_qlvm"]
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(z[:, 0], z[:, 1], s=4, c=adata.obs["qlvm_cluster"].cat.codes, cmap="tab10")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="z1 (turns)", ylabel="z2 (turns)")
    fig.savefig(args.out / "qlvm_map.png", dpi=120)
    summary["figure"] = str(args.out / "qlvm_map.png")

    # %% Everything the user had is still there; save for later
    adata.write_h5ad(args.out / "annotated.h5ad")
    summary["h5ad"] = str(args.out / "annotated.h5ad")
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(main())  # noqa: T201  (a script's result)
