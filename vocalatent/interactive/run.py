"""The map page of a run's output folder (what ``vocalatent embed`` / ``plot --html`` write)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._utils import DataError
from .page import MapPage, require_bokeh, write_map

logger = logging.getLogger(__name__)

__all__ = ["write_job_map", "write_run_map"]


def write_run_map(out, *, path=None, mode: str = "auto", audio_root=None, thumb_size: int = 64,
                  decoded_grid: int | None = None, margin_s: float = 0.05, ds=None, model=None,
                  features=None) -> MapPage:
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
    features : array-like [shape=(n_items, D)], optional
        Counts of a cell / neural run (the job passes them): clicking an item lists its top
        features. Without them the page lists the top features of the decoded profile at the
        item's place.

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
    spectrograms = spec_params = None
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
    if root is not None and not Path(root).exists():
        logger.warning("recordings not found at %s: the map has no audio", root)
        root = None
    title = f"vocalatent map · {Path(str(ds.attrs.get('input', out))).name}"
    return write_map(ds, path if path is not None else out / "map.html", model=model,
                     spectrograms=spectrograms, spectrogram_params=spec_params, audio_root=root,
                     features=features, mode=mode, thumb_size=thumb_size, decoded_grid=decoded_grid,
                     margin_s=margin_s, title=title)


def write_job_map(out, *, ds=None, model=None, features=None):
    """The end-to-end job's page: :func:`write_run_map`, but never failing the job.

    A missing ``interactive`` extra gives a one-line notice; any other failure a warning (like
    a broken figure). Returns the :class:`MapPage`, or None when no page was written.
    """
    from .page import MissingExtraError

    try:
        return write_run_map(out, ds=ds, model=model, features=features)
    except MissingExtraError as exc:
        logger.warning("%s not written: %s", Path(out) / "map.html", exc)
    except Exception as exc:  # noqa: BLE001 - the page must not lose the job's other outputs
        logger.warning("%s not written: %s: %s", Path(out) / "map.html", type(exc).__name__, exc)
    return None
