"""scanpy-style tools: a QLVM map of the cells of an in-memory ``AnnData``.

:func:`qlvm` is to vocalatent what ``sc.tl.umap`` is to scanpy: it takes the ``AnnData`` a
scanpy user already has, trains a QLVM on its counts (or applies a fitted one) and writes the
map back into the same object, keeping everything the user had::

    import scanpy as sc, vocalatent
    model = vocalatent.tl.qlvm(adata, layer="counts")     # adata annotated in place
    sc.pl.embedding(adata, basis="qlvm", color="qlvm_cluster")
    sc.pp.neighbors(adata, use_rep="X_qlvm_torus")        # distances that respect the seam

What it writes (``key_added="qlvm"``):

- ``obsm["X_qlvm"]`` — the posterior circular mean on the latent torus, in turns ``[0, 1)``
  (n_obs x d). Plot it as it is: the square is the torus opened along its seams.
- ``obsm["X_qlvm_torus"]`` — ``[cos 2πz₁, sin 2πz₁, …, cos 2πz_d, sin 2πz_d]`` (n_obs x 2d):
  Euclidean distances in this space grow monotonically with the distance on the torus, so
  ``sc.pp.neighbors(use_rep="X_qlvm_torus")`` does not cut clusters at the 0/1 seam.
- ``obs["qlvm_log_likelihood"]`` (nats per cell), ``obs["qlvm_spread"]`` (posterior spread,
  mean over latent dimensions, 0 = certain), ``obs["qlvm_cluster"]`` (string categories, the
  way scanpy stores clusters) and ``uns["qlvm_cluster_colors"]``.
- ``uns["qlvm"]`` — ``params`` (the model's parameters), ``genes`` (the genes modelled),
  ``n_cells_modelled`` and, when a validation split was used, the held-out log-likelihood.

Cells that cannot be modelled (no counts in the selected genes) keep their row and get NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ._utils import DataError, ParameterError, logger
from ._version import __version__
from .embedding import to_jsonable

__all__ = ["annotate", "qlvm", "torus_coordinates"]

#: likelihoods that need non-negative integer counts
_COUNT_LIKELIHOODS = ("multinomial", "poisson", "poisson_offset", "negbin", "bernoulli")


def torus_coordinates(z) -> np.ndarray:
    """``[cos 2πz₁, sin 2πz₁, …]`` for points ``z`` on the torus (NaN rows stay NaN).

    Parameters
    ----------
    z : array-like [shape=(n, d)], in turns

    Returns
    -------
    np.ndarray [shape=(n, 2d)]
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    ang = 2 * np.pi * z
    out = np.empty((z.shape[0], 2 * z.shape[1]))
    out[:, 0::2] = np.cos(ang)
    out[:, 1::2] = np.sin(ang)
    return out


def _cluster_colors(n: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [to_hex(cmap(k % cmap.N)) for k in range(n)]


def annotate(adata, ds, *, rows=None, key_added: str = "qlvm", uns: dict | None = None) -> None:
    """Write a QLVM embedding Dataset into ``adata`` (in place), scanpy style.

    Parameters
    ----------
    adata : anndata.AnnData
    ds : xarray.Dataset
        The model's per-item Dataset (``transform_dataset``), optionally with ``cluster``.
    rows : array-like of int or None
        The ``adata`` row of each item of ``ds`` (None: item i is row i and ``ds`` covers every
        row). Rows without an item get NaN (and no cluster).
    key_added : str
        Prefix of every key written (``obsm["X_<key>"]``, ``obs["<key>_cluster"]``, ...).
    uns : dict or None
        Extra entries for ``uns[key_added]``.
    """
    n = adata.n_obs
    rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.shape != (ds.sizes["item"],):
        raise ParameterError(f"rows has {rows.size} entries but the embedding has "
                             f"{ds.sizes['item']} items")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ParameterError(f"rows must lie in [0, {n}); got {rows.min()}..{rows.max()}")
    d = int(ds.sizes["latent"])
    emb = np.full((n, d), np.nan)
    emb[rows] = ds["embedding"].values
    adata.obsm[f"X_{key_added}"] = emb
    adata.obsm[f"X_{key_added}_torus"] = torus_coordinates(emb)
    for name, values in (("log_likelihood", ds["log_likelihood"].values),
                         ("spread", ds["spread"].values.reshape(ds.sizes["item"], -1).mean(axis=1))):
        col = np.full(n, np.nan)
        col[rows] = values
        adata.obs[f"{key_added}_{name}"] = col
    if "cluster" in ds:
        labels = np.asarray(ds["cluster"].values, dtype=np.int64)
        k = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
        cats = [str(c) for c in range(k)]
        codes = np.full(n, -1, dtype=np.int64)
        codes[rows] = np.where(labels >= 0, labels, -1)
        adata.obs[f"{key_added}_cluster"] = pd.Categorical.from_codes(codes, categories=cats)
        adata.uns[f"{key_added}_cluster_colors"] = _cluster_colors(k)
    info = {"n_cells_modelled": int(rows.size), "vocalatent_version": __version__,
            "embedding": f"obsm['X_{key_added}']: posterior circular mean on the latent torus, "
                         f"in turns [0, 1); obsm['X_{key_added}_torus']: cos/sin per dimension"}
    for attr in ("heldout_log_likelihood", "heldout_stderr", "lattice", "model"):
        if attr in ds.attrs:
            v = ds.attrs[attr]
            info[attr] = float(v) if isinstance(v, (float, np.floating)) else str(v)
    info.update(uns or {})
    adata.uns[key_added] = info


def _model_genes(model, gene_names: np.ndarray) -> np.ndarray | None:
    feats = (getattr(model, "metadata_", None) or {}).get("features")
    if feats is None:
        return None
    first = {}
    for k, g in enumerate(np.asarray(gene_names, dtype=str)):
        first.setdefault(g, k)      # a duplicated name: its first column
    pos = np.asarray([first.get(str(f), -1) for f in feats], dtype=np.int64)
    missing = [str(f) for f, p in zip(feats, pos) if p < 0]
    if missing:
        raise DataError(f"the model was trained on {len(feats)} genes; {len(missing)} of them are "
                        f"not in this AnnData's var_names (e.g. {', '.join(missing[:5])})")
    return pos


def qlvm(adata, *, layer: str | None = None, model=None, key_added: str = "qlvm",
         n_top_genes: int = 2000, hvg_method: str = "poisson_deviance", latent_dim: int = 2,
         likelihood: str = "multinomial", validation: float | None = 0.1, clusters: bool = True,
         random_state: int = 0, device: str = "auto", verbose: bool = True,
         **model_params: Any):
    """Train a QLVM on an AnnData's counts (or apply a fitted one) and annotate it in place.

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x genes. Modified in place (pass ``adata.copy()`` to keep the original).
    layer : str or None
        Where the counts are: ``None`` → ``X``, ``"raw"`` → ``raw.X``, or ``layers[layer]``
        (e.g. ``"counts"`` after ``sc.pp.normalize_total`` changed ``X``).
    model : QLVM or None
        A fitted model to apply (its genes are taken by name when it recorded them, see
        ``model.metadata_["features"]``); None trains a new one.
    key_added : str
        Prefix of the keys written (see the module docstring).
    n_top_genes : int >= 0
        Highly variable genes modelled when training (0: all genes).
    hvg_method : {"poisson_deviance", "seurat_v3_like"}
    latent_dim : {1, 2, 3}
    likelihood : str
        ``"multinomial"`` (UMI counts given each cell's total; the default of the
        ``single_cell`` preset), ``"poisson"``, ``"negbin"``, or ``"gaussian"`` for normalised
        values.
    validation : float or None
        Fraction of cells held out for early stopping and the held-out log-likelihood.
    clusters : bool
        Find clusters on the map (``obs["<key>_cluster"]``).
    random_state : int
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
    verbose : bool
        Progress bars.
    **model_params
        Further :class:`~vocalatent.model.QLVM` parameters (``max_epochs``, ``n_lattice``,
        ``decoder_options``, ...); the ``single_cell`` preset's ``[model]`` table supplies the
        rest.

    Returns
    -------
    QLVM
        The fitted model (the one given, or the new one with ``metadata_["features"]`` set to
        the genes it models).
    """
    from .config import load_pipeline
    from .data.single_cell import from_anndata, gene_variability
    from .model import QLVM

    if not hasattr(adata, "obsm") or not hasattr(adata, "var_names"):
        raise ParameterError(f"adata must be an anndata.AnnData; got {type(adata).__name__}")
    cm = from_anndata(adata, layer=layer, allow_non_integer=likelihood not in _COUNT_LIKELIHOODS)
    if model is None:
        sel_genes = np.arange(cm.n_genes)
        if n_top_genes and n_top_genes < cm.n_genes:
            score = gene_variability(cm, method=hvg_method)
            sel_genes = np.sort(np.argsort(-score, kind="stable")[: int(n_top_genes)])
    else:
        sel_genes = _model_genes(model, cm.gene_names)
        if sel_genes is None:
            sel_genes = np.arange(cm.n_genes)
    X = cm.X[:, sel_genes] if sparse.issparse(cm.X) else cm.X[:, sel_genes]
    totals = np.asarray(X.sum(axis=1)).ravel()
    rows = np.flatnonzero(totals > 0) if likelihood in _COUNT_LIKELIHOODS else np.arange(cm.n_cells)
    if rows.size < cm.n_cells:
        logger.info("tl.qlvm: %d of %d cells have no counts in the %d modelled genes; they get NaN",
                    cm.n_cells - rows.size, cm.n_cells, len(sel_genes))
    if rows.size == 0:
        raise DataError(f"no cell has counts in the {len(sel_genes)} modelled genes")
    X = X[rows]
    X = (X.tocsr() if sparse.issparse(X) else np.asarray(X)).astype(np.float32)
    genes = [str(g) for g in cm.gene_names[sel_genes]]
    if model is None:
        preset = dict(load_pipeline("single_cell").get("model", {}))
        allowed = set(QLVM().get_params())
        params = {k: v for k, v in preset.items() if k in allowed}
        params.update(latent_dim=int(latent_dim), likelihood=likelihood, random_state=random_state,
                      device=device, verbose=verbose)
        params.pop("validation", None)
        unknown = set(model_params) - allowed
        if unknown:
            raise ParameterError(f"unknown QLVM parameter(s) {sorted(unknown)}; "
                                 f"known: {sorted(allowed)}")
        params.update(model_params)
        model = QLVM(**params)
        heldout = None
        if validation:
            if not 0 < float(validation) < 1:
                raise ParameterError(f"validation must be a fraction in (0, 1) or None; got {validation!r}")
            perm = np.random.default_rng(random_state).permutation(X.shape[0])
            n_val = max(1, int(round(float(validation) * X.shape[0])))
            val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            model.fit(X[train], validation=X[val])
            heldout = model.evaluate(X[val])
        else:
            model.fit(X)
        model.metadata_ = {**(getattr(model, "metadata_", None) or {}), "features": genes,
                           "domain": "single_cell", "heldout": to_jsonable(heldout) if heldout else None}
    ds = model.transform_dataset(X)
    heldout = (getattr(model, "metadata_", None) or {}).get("heldout")
    if heldout:
        ds.attrs["heldout_log_likelihood"] = float(heldout["log_likelihood"])
        ds.attrs["heldout_stderr"] = float(heldout["stderr"])
    if clusters:
        import vocalatent.accessor  # noqa: F401  (registers ds.vl)

        ds = ds.vl.clusters()
    annotate(adata, ds, rows=rows, key_added=key_added,
             uns={"params": to_jsonable(model.get_params()), "genes": genes, "layer": layer or "X"})
    return model
