"""The map page of a run's output folder (what ``vocalatent embed`` / ``plot --html`` write)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .._utils import DataError
from .page import MapPage, require_bokeh, write_map

logger = logging.getLogger(__name__)

__all__ = ["write_run_map"]


def write_run_map(out, *, path=None, mode: str = "auto", audio_root=None, thumb_size: int = 64,
                  decoded_grid: int | None = None, margin_s: float = 0.05, ds=None, model=None) -> MapPage:
    """Write ``OUT/map.html`` from a run's ``embedding.nc``, ``model.pt`` and ``syllables.h5``.

    Parameters
    ----------
    out : path-like
        A run's output folder.
    path : path-like, optional
        The page to write (default ``OUT/map.html``).
    mode : {"auto", "inline", "folder"}
        See :func:`vocalatent.interactive.write_map`.
    audio_root : path-like, optional
        Where the recordings are (default: the store's root, else the run's input).
    ds, model : optional
        The run's embedding and model when the caller has them in memory (else read from OUT).

    Returns
    -------
    MapPage
    """
    require_bokeh()
    from ..embedding import read_embedding

    out = Path(out)
    ds = read_embedding(out / "embedding.nc") if ds is None else ds
    if model is None and (out / "model.pt").exists():
        from ..model import QLVM

        model = QLVM.load(out / "model.pt", device="cpu")
    spectrograms = spec_params = features = None
    root = audio_root
    store_path = out / "syllables.h5"
    if store_path.exists():
        from ..data.store import SyllableStore

        store = SyllableStore(store_path)
        segs = store.segments
        same = (len(segs) == ds.sizes["item"] and "onset_s" in ds.variables
                and np.allclose(segs["onset_s"].to_numpy(float), ds["onset_s"].values.astype(float))
                and (segs["source"].astype(str).to_numpy() == ds["source"].values.astype(str)).all())
        if not same:
            raise DataError(f"the store's {len(segs)} segments do not match the embedding's "
                            f"{ds.sizes['item']} items (rerun the job)", path=store_path)
        spectrograms = store.spectrograms
        spec_params = store.info.get("spectrogram_resolved") or store.params.get("spectrogram")
        if root is None:
            root = store.info.get("root") or ds.attrs.get("input")
    elif ds.attrs.get("domain") in ("single_cell", "neural") and ds.attrs.get("input"):
        features = _features_of(ds)
    if root is not None and not Path(root).exists():
        logger.warning("recordings not found at %s: the map has no audio", root)
        root = None
    title = f"vocalatent map · {Path(str(ds.attrs.get('input', out))).name}"
    return write_map(ds, path if path is not None else out / "map.html", model=model,
                     spectrograms=spectrograms, spectrogram_params=spec_params, audio_root=root,
                     features=features, mode=mode, thumb_size=thumb_size, decoded_grid=decoded_grid,
                     margin_s=margin_s, title=title)


def _features_of(ds):
    """The counts of a cell / neural run, read again from its input (None when that fails)."""
    from .. import domains

    try:
        cfg = json.loads(ds.attrs.get("config", "{}"))
        prepared = domains.prepare(ds.attrs["input"], None, cfg, domain=ds.attrs["domain"])
    except Exception as exc:  # noqa: BLE001 - the page is still useful without top features
        logger.warning("top features left out of the map: reading %s failed (%s: %s)",
                       ds.attrs.get("input"), type(exc).__name__, exc)
        return None
    if prepared.X.shape[0] != ds.sizes["item"]:
        logger.warning("top features left out of the map: %s now has %d items, the embedding %d",
                       ds.attrs["input"], prepared.X.shape[0], ds.sizes["item"])
        return None
    return prepared.X
