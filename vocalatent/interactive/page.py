"""The interactive map page (``OUT/map.html``), drawn with Bokeh.

Layout: the torus (the unit square with its 0/1 seams) with every item a point; a colour
switch; optional layers (density, Jacobian boundaries, log ‖J‖ map, periodic tiling); box and
lasso selection with a table and a CSV download; a side panel that shows what was clicked.
See docs/interactive.md.
"""

from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .._utils import ParameterError, VocalatentError, atomic_path, check_option, check_positive
from . import assets
from .static import PAGE_CSS, PAGE_JS

logger = logging.getLogger(__name__)

__all__ = ["MAX_INLINE_ITEMS", "MapPage", "MissingExtraError", "require_bokeh", "write_map"]

#: Largest item count written as one self-contained file in ``mode="auto"``.
MAX_INLINE_ITEMS = 5000
#: Largest total of inlined assets (bytes) in ``mode="auto"``; above it the assets go beside.
MAX_INLINE_BYTES = 96 * 2 ** 20
#: Rows shown in the selection table (the CSV download has every selected item).
MAX_TABLE_ROWS = 2000
#: Colour options, in the order of the switch (those the Dataset has).
COLOR_OPTIONS = ("cluster", "source", "session", "animal", "label", "log_likelihood", "spread")
_NUMERIC = {"log_likelihood": "log-likelihood (nats)", "spread": "posterior spread (1 − R)"}
_CATEGORY_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
_NONE_COLOR = "#bbbbbb"


class MissingExtraError(VocalatentError, ImportError):
    """An optional dependency (a pip extra) is not installed."""


def require_bokeh():
    """Import Bokeh or raise a one-line :class:`MissingExtraError` naming the extra."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        raise MissingExtraError("the interactive map needs Bokeh: pip install 'vocalatent[interactive]'"
                                ) from None
    major = int(bokeh.__version__.split(".")[0])
    if major < 3:
        raise MissingExtraError(f"the interactive map needs Bokeh >= 3 (found {bokeh.__version__}): "
                                "pip install 'vocalatent[interactive]'")
    return bokeh


@dataclass
class MapPage:
    """A written map page: ``path`` (the HTML file), ``assets_dir`` (None when self-contained),
    ``n_items``, ``nbytes`` (page plus assets). In a notebook it shows itself in an iframe."""

    path: Path
    assets_dir: Path | None
    n_items: int
    nbytes: int

    def _repr_html_(self) -> str:
        try:
            src = self.path.resolve().relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            src = self.path.resolve().as_uri()
        return (f'<iframe src="{html.escape(src)}" width="100%" height="820" '
                'style="border:1px solid #ddd"></iframe>')

    def __str__(self) -> str:
        return str(self.path)


# ----------------------------------------------------------------------------- colours
def _category_codes(values) -> tuple[np.ndarray, list[str]]:
    vals = pd.Series(np.asarray(values)).astype(str).fillna("")
    cats = sorted(pd.unique(vals), key=lambda s: (len(s) == 0, _natural(s)))
    lookup = {c: k for k, c in enumerate(cats)}
    return vals.map(lookup).to_numpy(np.float32), cats


def _natural(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)


def _color_options(ds: xr.Dataset) -> dict:
    """name -> dict(kind, codes/values, palette, low, high, legend html)."""
    opts = {}
    n = ds.sizes["item"]
    names = list(COLOR_OPTIONS)
    # categorical item metadata of other domains (cell types, conditions): 2..40 values
    for name, var in ds.coords.items():
        if (var.dims == ("item",) and name not in names and name not in ("item",)
                and (var.dtype.kind in "USO" or var.dtype.kind in "iub")):
            k = len(pd.unique(np.asarray(var.values).astype(str)))
            if 2 <= k <= 40 and k < n:
                names.append(str(name))
    for name in names:
        if name == "spread":
            if "spread" not in ds:
                continue
            sp = ds["spread"]
            values = sp.mean("latent").values if "latent" in sp.dims else sp.values
        elif name in ds.variables and ds[name].dims == ("item",):
            values = ds[name].values
        else:
            continue
        if name in _NUMERIC:
            v = np.asarray(values, dtype=float)
            finite = v[np.isfinite(v)]
            if finite.size == 0:
                continue
            lo, hi = (float(x) for x in np.percentile(finite, [1, 99]))
            if hi <= lo:
                hi = lo + 1.0
            opts[name] = {"kind": "num", "values": v.astype(np.float32), "low": lo, "high": hi,
                          "title": _NUMERIC[name]}
            continue
        if name == "label" and not any(str(x) for x in np.asarray(values)):
            continue
        if name == "cluster":
            v = np.asarray(values, dtype=int)
            k = int(v.max()) + 1 if v.size and v.max() >= 0 else 0
            cats = [str(c) for c in range(k)] + ["none"]
            codes = np.where(v < 0, k, v).astype(np.float32)
        else:
            codes, cats = _category_codes(values)
        if len(cats) < 1:
            continue
        palette = [_CATEGORY_PALETTE[k % len(_CATEGORY_PALETTE)] for k in range(len(cats))]
        if name == "cluster":
            palette[-1] = _NONE_COLOR
        counts = np.bincount(codes.astype(int), minlength=len(cats))
        opts[name] = {"kind": "cat", "values": codes, "cats": cats, "palette": palette,
                      "counts": counts, "title": name}
    for o in opts.values():
        o["html"] = _legend_html(o)
    return opts


def _legend_html(o: dict) -> str:
    title = f"<b>{html.escape(o['title'])}</b>"
    if o["kind"] == "num":
        return (f"{title}<div style='height:10px;background:linear-gradient(to right,"
                f"#440154,#3b528b,#21918c,#5ec962,#fde725);margin:3px 0'></div>"
                f"<div style='display:flex;justify-content:space-between'><span>{o['low']:.3g}</span>"
                f"<span>{o['high']:.3g}</span></div>")
    rows = []
    for k, (c, col) in enumerate(zip(o["cats"], o["palette"])):
        if o["counts"][k] == 0:
            continue
        if k >= 30:
            rows.append(f"<div>… and {len(o['cats']) - 30} more</div>")
            break
        name = html.escape(c) if c else "(empty)"
        rows.append(f"<div><span style='display:inline-block;width:10px;height:10px;background:{col};"
                    f"margin-right:4px'></span>{name} <span style='color:#888'>({o['counts'][k]})</span></div>")
    return title + "<div style='max-height:220px;overflow:auto'>" + "".join(rows) + "</div>"


# ----------------------------------------------------------------------------- grids
def _rgba(mask_or_values: np.ndarray, *, cmap: str | None = None, color=(214, 39, 40), alpha=0.85,
          log: bool = False) -> np.ndarray:
    """(res_x, res_y) grid -> (res_y, res_x) uint32 RGBA image for Bokeh's image_rgba."""
    import matplotlib

    g = np.asarray(mask_or_values, dtype=float).T
    out = np.zeros(g.shape + (4,), dtype=np.uint8)
    if cmap is None:
        on = g > 0
        out[on, 0], out[on, 1], out[on, 2], out[on, 3] = color[0], color[1], color[2], int(255 * alpha)
    else:
        v = np.log10(np.maximum(g, 1e-12)) if log else g
        lo, hi = np.nanpercentile(v, [1, 99.5])
        u = np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        rgba = (matplotlib.colormaps[cmap](u) * 255).round().astype(np.uint8)
        rgba[..., 3] = int(255 * alpha)
        out = rgba
    return out.view(np.uint32).reshape(g.shape)


def _grid_layers(ds: xr.Dataset) -> dict:
    layers = {}
    if "density" in ds and ds["density"].ndim == 2:
        layers["density"] = _rgba(ds["density"].values, cmap="Greys", alpha=0.55)
    if "boundary" in ds and ds["boundary"].ndim == 2:
        layers["Jacobian boundaries"] = _rgba(ds["boundary"].values)
    if "jacobian_norm" in ds and ds["jacobian_norm"].ndim == 2:
        layers["log ‖J‖ map"] = _rgba(ds["jacobian_norm"].values, cmap="viridis", alpha=0.55, log=True)
    return layers


# ----------------------------------------------------------------------------- axes
def _axes(spec_params: dict | None) -> dict:
    sp = dict(spec_params or {})
    f_min, f_max = float(sp.get("f_min", 0.0)), float(sp.get("f_max", 0.0))
    scale = sp.get("freq_scale", "linear")
    if f_max > 0:
        if scale == "mel":
            import librosa

            mid = float(librosa.mel_frequencies(n_mels=3, fmin=f_min, fmax=f_max)[1])
        else:
            mid = 0.5 * (f_min + f_max)
        ticks = [f"{f_max / 1000:.3g} kHz", f"{mid / 1000:.3g}", f"{f_min / 1000:.3g}"]
        title = "kHz" + (" (mel)" if scale == "mel" else "")
    else:
        ticks, title = ["", "", ""], "frequency"
    return {"freq_ticks": ticks, "freq_title": title, "time_title": "ms",
            "time_mode": sp.get("time_mode", "stretch"),
            "window_ms": 1000.0 * float(sp.get("window_dur_s", 0.2))}


# ----------------------------------------------------------------------------- the page
def _coords_2d(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, str]:
    emb = np.asarray(ds["embedding"].values, dtype=float)
    if emb.ndim != 2:
        raise ParameterError(f"'embedding' must have dims ('item', 'latent'); got {ds['embedding'].dims}")
    d = emb.shape[1]
    if d >= 2:
        note = "" if d == 2 else f"the first two of {d} latent axes (z1, z2)"
        return emb[:, 0], emb[:, 1], note
    rng = np.random.default_rng(0)
    return emb[:, 0], rng.uniform(0.05, 0.95, emb.shape[0]), "1-D ring: z1 across, random jitter up"


def _sheet_entry(sheets: assets.SpriteSheets, urls: list[str], scale: int) -> dict:
    widths = []
    for k in range(len(sheets.pngs)):
        n_in = int((sheets.sheet == k).sum())
        widths.append(sheets.size * (sheets.cols if n_in > sheets.cols else max(n_in, 1)))
    return {"size": sheets.size, "cols": sheets.cols, "sheets": urls, "sheet_width": widths,
            "scale": scale}


def _top_features(X, names, *, k: int = 8, batch: int = 4096) -> list[list[str]]:
    """Per row: the ``k`` features most above their mean (log1p of size-normalised counts)."""
    names = np.asarray([str(x) for x in names])
    n = X.shape[0]

    def norm(rows):
        rows = np.asarray(rows, dtype=np.float64)
        lib = rows.sum(axis=1, keepdims=True)
        return np.log1p(1e4 * rows / np.where(lib > 0, lib, 1.0))

    total = np.zeros(X.shape[1])
    for s in range(0, n, batch):
        total += norm(X[s:s + batch]).sum(axis=0)
    mean = total / max(n, 1)
    out = []
    for s in range(0, n, batch):
        z = norm(X[s:s + batch]) - mean
        top = np.argsort(-z, axis=1)[:, :k]
        out.extend([list(names[t]) for t in top])
    return out


def _top_decoded(model, z: np.ndarray, names, *, k: int = 8, batch: int = 4096) -> list[list[str]]:
    """Per item: the ``k`` features of the decoded mean at its embedding most above their mean."""
    names = np.asarray([str(x) for x in names]) if len(names) else None
    parts = [np.log1p(np.maximum(np.asarray(model.decode(z[s:s + batch])), 0)) for s in range(0, len(z), batch)]
    dec = np.concatenate(parts) if parts else np.zeros((0, 0))
    if names is None or len(names) != dec.shape[1]:
        names = np.asarray([f"feature {j}" for j in range(dec.shape[1])])
    top = np.argsort(-(dec - dec.mean(axis=0)), axis=1)[:, :k]
    return [list(names[t]) for t in top]


def write_map(ds: xr.Dataset, path, *, model=None, spectrograms=None, spectrogram_params: dict | None = None,
              audio_root=None, features=None, feature_names=None, mode: str = "auto",
              thumb_size: int = 64, decoded_grid: int | None = None, margin_s: float = 0.05,
              title: str | None = None, max_inline_items: int = MAX_INLINE_ITEMS) -> MapPage:
    """Write the interactive map of an embedding as an HTML page.

    Parameters
    ----------
    ds : xarray.Dataset
        An embedding (``embedding`` on ``item``; ``cluster``, ``log_likelihood``, ``spread``,
        ``density``, ``boundary``, ``jacobian_norm`` and item metadata when present).
    path : path-like
        The HTML file to write (atomically). In folder mode the assets go to
        ``<stem>_files/`` beside it.
    model : fitted QLVM, optional
        Decodes a ``decoded_grid x decoded_grid`` grid: clicking an empty place shows the
        decoded item at the nearest grid node.
    spectrograms : array-like [shape=(n_items, F, T)], optional
        The items' spectrograms (a store's lazy view is fine) for the hover thumbnails; row
        ``i`` must be item ``i``.
    spectrogram_params : dict, optional
        The spectrogram settings (``f_min``, ``f_max``, ``freq_scale``, ``time_mode``,
        ``window_dur_s``) that label the thumbnails' axes in kHz and ms and decide time
        expansion of ultrasonic audio.
    audio_root : path-like, optional
        Folder the items' ``source`` paths are relative to: clicking an item plays its
        syllable cut from the recording (see :mod:`vocalatent.interactive.assets`).
    features : array-like [shape=(n_items, D)], optional
        Counts of cells / neurons: clicking an item lists its top features (genes, units).
    feature_names : sequence of str, optional
        Names of the D features (default: ``ds.attrs["features"]``).
    mode : {"auto", "inline", "folder"}
        ``"inline"``: one self-contained file (assets as base64). ``"folder"``: thumbnails and
        audio as sprite/audio sheets in ``<stem>_files/``, loaded on demand. ``"auto"``:
        inline up to ``max_inline_items`` items and 96 MiB of assets, else folder.
    thumb_size : int
        Thumbnail side (pixels); shown at 2x.
    decoded_grid : int, optional
        Grid nodes per axis for the decoded map (default 40 for spectrograms, 24 otherwise).
    margin_s : float
        Audio played before the onset and after the offset (s).
    title : str, optional
    max_inline_items : int

    Returns
    -------
    MapPage
    """
    require_bokeh()
    from bokeh.core.templates import FILE
    from bokeh.embed import file_html
    from bokeh.events import Tap
    from bokeh.layouts import column, row
    from bokeh.models import (Button, CheckboxGroup, ColumnDataSource, CustomJS, DataTable, Div, Dodge,
                              HoverTool, LinearColorMapper, NumberFormatter, Select, TableColumn)
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    from jinja2 import Template

    check_option("mode", mode, ["auto", "inline", "folder"])
    check_positive("thumb_size", thumb_size, integer=True)
    if "embedding" not in ds:
        raise ParameterError(f"the Dataset has no 'embedding' variable (it has {sorted(map(str, ds.data_vars))})")
    path = Path(path)
    n = int(ds.sizes["item"])
    x, y, axis_note = _coords_2d(ds)
    domain = ds.attrs.get("domain", "vocal")

    # ---------------------------------------------------------------- item table for the page
    items: dict = {"loglik": _round(ds["log_likelihood"].values, 2) if "log_likelihood" in ds else [None] * n}
    if "cluster" in ds:
        items["cluster"] = np.asarray(ds["cluster"].values, dtype=int).tolist()
    if "source" in ds.variables:
        codes, cats = _category_codes(ds["source"].values)
        items["source"], items["sources"] = codes.astype(int).tolist(), cats
    if "onset_s" in ds.variables and "offset_s" in ds.variables:
        items["onset"] = _round(ds["onset_s"].values, 4)
        items["offset"] = _round(ds["offset_s"].values, 4)
    if "label" in ds.variables and any(str(v) for v in ds["label"].values):
        items["label"] = [str(v) for v in ds["label"].values]
    extra = {}
    for name in ("session", "animal", "cell", "time_s", "n_spikes"):
        if name in ds.variables and ds[name].dims == ("item",):
            vals = ds[name].values
            extra[name] = _round(vals, 3) if vals.dtype.kind == "f" else [str(v) for v in vals]
    if extra:
        items["extra"] = extra
    if features is not None:
        names = feature_names if feature_names is not None else json.loads(ds.attrs.get("features", "[]"))
        if len(names) != features.shape[1]:
            raise ParameterError(f"features have {features.shape[1]} columns but {len(names)} names")
        if features.shape[0] != n:
            raise ParameterError(f"features have {features.shape[0]} rows but the Dataset has {n} items")
        items["top_features"] = _top_features(features, names)
        items["top_title"] = "top genes (vs. the mean cell)" if domain == "single_cell" else \
            "most active units (vs. their mean)"
    elif model is not None and domain in ("single_cell", "neural") and len(tuple(model.output_shape_)) == 1:
        names = json.loads(ds.attrs.get("features", "[]"))
        items["top_features"] = _top_decoded(model, np.asarray(ds["embedding"].values), names)
        items["top_title"] = ("top genes of the decoded profile at this cell's place" if domain == "single_cell"
                              else "most active units decoded at this place")

    # ---------------------------------------------------------------- assets
    spec_params = dict(spectrogram_params or {})
    payloads: list[tuple[str, bytes, str]] = []  # (file name, bytes, mime)
    thumbs = audio = decoded = None
    if spectrograms is not None:
        if int(spectrograms.shape[0]) != n:
            raise ParameterError(f"spectrograms have {spectrograms.shape[0]} items but the Dataset has {n}")
        sheets = assets.sprite_sheets(assets.thumbnails(spectrograms, thumb_size=thumb_size))
        thumbs = (sheets, [(f"thumbs_{k:03d}.png", p, "image/png") for k, p in enumerate(sheets.pngs)])
    if audio_root is not None and {"source", "onset_s", "offset_s"} <= set(map(str, ds.variables)):
        seg = pd.DataFrame({"source": ds["source"].values.astype(str), "onset_s": ds["onset_s"].values,
                            "offset_s": ds["offset_s"].values})
        if "channel" in ds.variables:
            seg["channel"] = ds["channel"].values
        audio = assets.audio_sheets(seg, audio_root, margin_s=margin_s, f_max=spec_params.get("f_max"))
        audio = (audio, [(f"audio_{k:03d}.wav", w, "audio/wav") for k, w in enumerate(audio.wavs)])
    if model is not None:
        decoded = _decoded_assets(model, ds, decoded_grid=decoded_grid, thumb_size=thumb_size)
    total = sum(len(p[1]) for grp in (thumbs, audio) if grp for p in grp[1])
    total += sum(len(p[1]) for p in decoded[1]) if decoded else 0
    if mode == "auto":
        fits = n <= max_inline_items and total <= MAX_INLINE_BYTES
        mode = "inline" if fits or total == 0 else "folder"
    assets_dir = path.parent / f"{path.stem}_files" if mode == "folder" else None

    def urls(group):
        out = []
        for name, payload, mime in group:
            if assets_dir is None:
                out.append(assets.data_uri(payload, mime))
            else:
                assets.write_asset(assets_dir / name, payload)
                out.append(f"{assets_dir.name}/{name}")
        return out

    page_data: dict = {"n": n, "domain": domain, "items": items, "axes": _axes(spec_params),
                       "thumbs": None, "audio": None, "decoded": None}
    if thumbs is not None:
        page_data["thumbs"] = _sheet_entry(thumbs[0], urls(thumbs[1]), 2)
    if audio is not None:
        a = audio[0]
        page_data["audio"] = {"rate": a.rate, "slowdown": a.slowdown, "margin_s": a.margin_s,
                              "sheet": a.sheet.tolist(), "start": _round(a.start, 6),
                              "end": _round(a.end, 6), "sheets": urls(audio[1]),
                              "n_missing": int((a.sheet < 0).sum())}
    if decoded is not None:
        entry, group = decoded
        if group:
            entry.update(_sheet_entry(entry.pop("_sheets"), urls(group), 3))
        page_data["decoded"] = entry

    # ---------------------------------------------------------------- the Bokeh figure
    colors = _color_options(ds)
    default = "cluster" if "cluster" in colors else next(iter(colors), None)
    page_data["colors"] = {k: {"html": v["html"]} for k, v in colors.items()}
    page_data["default_color"] = default
    data = {"x": x.astype(np.float64), "y": y.astype(np.float64)}
    mappers = {}
    for name, o in colors.items():
        data[f"c_{name}"] = o["values"]
        if o["kind"] == "num":
            from bokeh.palettes import Viridis256

            mappers[name] = LinearColorMapper(palette=Viridis256, low=o["low"], high=o["high"],
                                              nan_color=_NONE_COLOR)
        else:
            mappers[name] = LinearColorMapper(palette=o["palette"], low=-0.5, high=len(o["cats"]) - 0.5)
    src = ColumnDataSource(data=data, name="vl-items")
    big = n > 5000
    p = figure(width=620, height=620, x_range=(-0.02, 1.02), y_range=(-0.02, 1.02), match_aspect=True,
               tools="pan,wheel_zoom,box_select,lasso_select,reset,save", active_drag="box_select",
               active_scroll="wheel_zoom", output_backend="webgl" if big else "canvas",
               title=title or "vocalatent map", name="vl-plot", toolbar_location="above")
    p.xaxis.axis_label = "z1 (turns)"
    p.yaxis.axis_label = "z2 (turns)" if ds["embedding"].shape[1] >= 2 else ""
    layer_renderers = {}
    for name, img in _grid_layers(ds).items():
        layer_renderers[name] = p.image_rgba(image=[img], x=0, y=0, dw=1, dh=1, level="image",
                                             visible=(name == "density"), name=f"vl-layer-{name}")
    size = 6 if n <= 2000 else (4 if n <= 20000 else 3)
    color = {"field": f"c_{default}", "transform": mappers[default]} if default else "#1f77b4"
    tiles = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            r = p.scatter(x={"field": "x", "transform": Dodge(value=dx)},
                          y={"field": "y", "transform": Dodge(value=dy)}, source=src, size=size,
                          fill_color=color, line_color=None, fill_alpha=0.35, visible=False, name="vl-tile")
            r.selection_glyph = None
            r.nonselection_glyph = None
            tiles.append(r)
    main = p.scatter("x", "y", source=src, size=size, fill_color=color, line_color=None, fill_alpha=0.85,
                     name="vl-points")
    main.nonselection_glyph.fill_alpha = 0.15
    # the seams: 0 and 1 are the same place on the torus
    p.multi_line(xs=[[0, 0], [1, 1], [-1, 2], [-1, 2]], ys=[[-1, 2], [-1, 2], [0, 0], [1, 1]],
                 line_color="#555555", line_dash="dashed", line_width=1.2, name="vl-seams")
    p.rect(x=0.5, y=0.5, width=1, height=1, fill_alpha=0, line_color="#555555", line_width=1.2)
    p.select_one({"type": type(p.tools[2])}).renderers = [main]
    p.select_one({"type": type(p.tools[3])}).renderers = [main]

    hover = HoverTool(renderers=[main], tooltips=None, mode="mouse",
                      callback=CustomJS(args={"src": src}, code="window.vlHover(cb_data, src);"))
    p.add_tools(hover)
    layers = list(layer_renderers) + ["periodic tiling"]
    toggles = CheckboxGroup(labels=layers, active=[0] if "density" in layer_renderers else [],
                            name="vl-layers")
    toggles.js_on_change("active", CustomJS(
        args={"layers": [layer_renderers[k] for k in layer_renderers], "tiles": tiles, "plot": p}, code="""
        const on = new Set(cb_obj.active);
        layers.forEach((r, k) => { r.visible = on.has(k); });
        const tiled = on.has(layers.length);
        tiles.forEach(r => { r.visible = tiled; });
        plot.tags = [tiled ? 1 : 0];
        const lo = tiled ? -0.5 : -0.02, hi = tiled ? 1.5 : 1.02;
        plot.x_range.setv({start: lo, end: hi}); plot.y_range.setv({start: lo, end: hi});
    """))
    p.tags = [0]
    p.js_on_event(Tap, CustomJS(args={"src": src, "plot": p},
                                code="window.vlTap(cb_obj, src, plot, plot.tags[0] === 1);"))
    labels = {k: v["title"] for k, v in colors.items()}
    select = Select(title="colour by", value=default or "", name="vl-color",
                    options=[(k, labels[k]) for k in colors])
    select.js_on_change("value", CustomJS(args={"rs": [main] + tiles, "mappers": mappers}, code="""
        const name = cb_obj.value, spec = {field: "c_" + name, transform: mappers[name]};
        rs.forEach(r => { r.glyph.fill_color = spec; });
        window.vlLegend(name);
    """))
    sel = ColumnDataSource(data={"item": [], "file": [], "onset_s": [], "offset_s": [], "cluster": [],
                                 "label": []}, name="vl-selection")
    t3 = NumberFormatter(format="0.000")
    table = DataTable(source=sel, width=280, height=260, index_position=None, reorderable=False, name="vl-table", columns=[
        TableColumn(field="item", title="item", width=45), TableColumn(field="file", title="file", width=110),
        TableColumn(field="onset_s", title="onset", formatter=t3, width=55),
        TableColumn(field="offset_s", title="offset", formatter=t3, width=55),
        TableColumn(field="cluster", title="cl.", width=35)])
    count = Div(text="0 items selected (drag a box, or use the lasso)", name="vl-count", width=280)
    src.selected.js_on_change("indices", CustomJS(
        args={"table": sel, "count": count, "maxRows": MAX_TABLE_ROWS},
        code="window.vlSelect(cb_obj.indices, table, count, maxRows);"))
    button = Button(label="Download selection (CSV)", name="vl-download", width=280)
    button.js_on_event("button_click", CustomJS(code="window.vlDownload();"))
    layout = row(p, column(select, toggles, count, table, button, width=290), name="vl-root")

    info = [f"{n} items"]
    if "cluster" in colors:
        info.append(f"{len(colors['cluster']['cats']) - 1} clusters")
    if page_data["audio"]:
        a = page_data["audio"]
        info.append(f"audio {a['rate'] / 1000:g} kHz" + (f", {a['slowdown']}× slower" if a["slowdown"] > 1 else ""))
    if axis_note:
        info.append(axis_note)
    hint = ("hover: the item · click a point: play it"
            + (" / its top features" if features is not None else "")
            + " · click an empty place: the decoded map there · drag: box select")
    template = Template(_TEMPLATE)
    doc = file_html(layout, resources=INLINE, title=title or "vocalatent map", template=template,
                    template_variables={
                        "base": FILE, "vl_css": PAGE_CSS, "vl_js": PAGE_JS,
                        "vl_title": html.escape(title or "vocalatent map"),
                        "vl_info": html.escape(" · ".join(info)), "vl_hint": html.escape(hint),
                        "vl_data": json.dumps(page_data, separators=(",", ":"), allow_nan=False,
                                              default=_json_default).replace("</", "<\\/")})
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(doc, encoding="utf-8")
    nbytes = path.stat().st_size + (sum(f.stat().st_size for f in assets_dir.iterdir())
                                    if assets_dir is not None and assets_dir.exists() else 0)
    logger.info("wrote %s (%d items, %.1f MB%s)", path, n, nbytes / 1e6,
                f", assets in {assets_dir}" if assets_dir is not None else ", self-contained")
    return MapPage(path=path, assets_dir=assets_dir, n_items=n, nbytes=nbytes)


def _round(values, digits: int) -> list:
    v = np.asarray(values, dtype=float)
    return [None if not math.isfinite(t) else round(float(t), digits) for t in v]


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _decoded_assets(model, ds: xr.Dataset, *, decoded_grid: int | None, thumb_size: int):
    """The decoded grid: sprite sheets (image items) or top-feature lists (vectors)."""
    d = int(getattr(model, "latent_dim", ds["embedding"].shape[1]))
    shape = tuple(model.output_shape_)
    image = len(shape) == 2
    G = int(decoded_grid or (40 if image else 24))
    check_positive("decoded_grid", G, integer=True)
    centres = (np.arange(G) + 0.5) / G
    gx, gy = np.meshgrid(centres, centres)  # node iy * G + ix is (centres[ix], centres[iy])
    z = np.column_stack([gx.ravel(), gy.ravel()])
    if d == 1:
        z = z[:, :1]
    elif d > 2:
        z = np.column_stack([z, np.full((len(z), d - 2), 0.5)])
    dec = np.asarray(model.decode(z))
    entry = {"grid": G, "latent_dim": d}
    if image:
        # 48 px (shown at 3x): the decoded grid has 1,600 nodes, more than most runs have items
        sheets = assets.sprite_sheets(assets.thumbnails(np.clip(dec, 0, 1), thumb_size=min(thumb_size, 48)))
        entry["_sheets"] = sheets
        return entry, [(f"decoded_{k:03d}.png", p, "image/png") for k, p in enumerate(sheets.pngs)]
    names = json.loads(ds.attrs.get("features", "[]")) or [f"feature {k}" for k in range(dec.shape[1])]
    mean = np.log1p(np.maximum(dec, 0)).mean(axis=0)
    top = np.argsort(-(np.log1p(np.maximum(dec, 0)) - mean), axis=1)[:, :8]
    entry["top_features"] = [[str(names[t]) for t in row] for row in top]
    entry["top_title"] = ("decoded: top genes (vs. the map's mean)"
                          if ds.attrs.get("domain") == "single_cell" else "decoded: most active features")
    return entry, []


_TEMPLATE = """{% extends base %}
{% block postamble %}
<style>{{ vl_css }}</style>
<script>{{ vl_js }}</script>
{% endblock %}
{% block inner_body %}
<div id="vl-header"><b>{{ vl_title }}</b> <span>{{ vl_info }}</span><span class="vl-hint">{{ vl_hint }}</span></div>
<script type="application/json" id="vl-data">{{ vl_data }}</script>
<div id="vl-main">
  <div id="vl-plotbox">{{ super() }}</div>
  <div id="vl-side">
    <div id="vl-legend"></div>
    <div id="vl-inspector"><h4>Click a point or an empty place</h4>A point plays its syllable; an
    empty place shows what the model decodes there.</div>
    <audio id="vl-audio" controls preload="none"></audio>
  </div>
</div>
<div id="vl-tip"></div>
{% endblock %}
"""
