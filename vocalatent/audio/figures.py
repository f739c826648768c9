"""The picture a person needs to judge a segmentation: spectrogram, level trace, thresholds,
predicted and annotated segments, one figure per recording (or per window of one).

    from vocalatent.audio.figures import plot_segmentation
    fig = plot_segmentation("song.wav", params, annotations="song.wav.csv", window=(2.0, 6.0))
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import ParameterError
from .annotations import read_annotation
from .io import audio_info, load_audio
from .segment import SegmentParams, segment_file

__all__ = ["plot_segmentation"]

_MAX_PLOT_S = 30.0  # a figure without an explicit window shows at most this much


def _spectrogram_db(y: np.ndarray, sr: int, params: SegmentParams, max_cols: int = 2400):
    from scipy.signal import spectrogram

    nperseg, hop = params.frame_geometry(sr)
    hop = max(hop, int(np.ceil((y.size - nperseg) / max_cols)) if y.size > nperseg else hop)
    f, t, S = spectrogram(y.astype(np.float64), fs=sr, window="hann", nperseg=nperseg,
                          noverlap=max(0, nperseg - hop), mode="psd", scaling="spectrum")
    band = (f >= params.f_min) & (f <= params.f_max)
    return f[band], t, 10 * np.log10(S[band] * 2 + 1e-20)


def _bars(ax, segs: pd.DataFrame, y0: float, h: float, color: str, t0: float, t1: float):
    sel = segs[(segs["offset_s"] > t0) & (segs["onset_s"] < t1)]
    ax.broken_barh(list(zip(sel["onset_s"], sel["offset_s"] - sel["onset_s"])), (y0, h),
                   facecolors=color, edgecolors="k", linewidth=0.3)
    return len(sel)


def plot_segmentation(path: str | os.PathLike, params: SegmentParams | None = None, *,
                      annotations: str | os.PathLike | pd.DataFrame | None = None,
                      window: tuple[float, float] | None = None, channel: int = 0,
                      segments: pd.DataFrame | None = None, title: str | None = None,
                      out: str | os.PathLike | None = None, dpi: int = 150):
    """Draw one recording's segmentation.

    Top: the spectrogram of the band (dBFS) with the predicted segments (orange bars) and, when
    given, the annotated ones (blue bars) above it. Bottom: the smoothed band level (dBFS) with
    the thresholds of ``params.mode`` — the local noise floor, the boundary and the peak
    thresholds (``"prominence"``), or th1..th3 as levels (``"ava"``) — and the segments shaded.

    Parameters
    ----------
    path : path-like
        The recording.
    params : SegmentParams, optional
    annotations : path-like or DataFrame, optional
        Annotated segments (``onset_s``, ``offset_s``) to draw for comparison.
    window : (float, float), optional
        Start and end (s) of the part shown; default the whole file, at most 30 s of it.
    channel : int, default=0
    segments : DataFrame, optional
        Predicted segments to draw instead of segmenting again.
    title : str, optional
    out : path-like, optional
        Write the figure there as PNG (atomically) and close it.
    dpi : int, default=150
        Resolution of the written PNG.

    Returns
    -------
    matplotlib.figure.Figure or pathlib.Path
        The figure, or the written path when ``out`` is given.
    """
    import matplotlib

    if out is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plot import save_figure

    params = SegmentParams() if params is None else params
    info = audio_info(path)
    seg, trace = segment_file(path, params, channel=channel, return_trace=True)
    if segments is not None:
        seg = segments
    t0, t1 = (0.0, min(info.duration_s, _MAX_PLOT_S)) if window is None else map(float, window)
    if not 0 <= t0 < t1:
        raise ParameterError(f"window must be (start, end) with 0 <= start < end; got {window!r}")
    t1 = min(t1, info.duration_s)
    ann = None
    if annotations is not None:
        ann = annotations if isinstance(annotations, pd.DataFrame) else read_annotation(annotations)
    y, sr = load_audio(path, channel=channel, offset_s=t0, duration_s=t1 - t0)
    f, ts, S = _spectrogram_db(y, sr, params)
    fig, (ax_s, ax_t) = plt.subplots(2, 1, figsize=(11, 5.2), sharex=True, layout="constrained",
                                     gridspec_kw={"height_ratios": [1.35, 1]})
    hi = np.percentile(S, 99.8)
    ax_s.pcolormesh(ts + t0, f / 1000, S, shading="auto", cmap="magma", vmin=hi - 70, vmax=hi,
                    rasterized=True)
    top = f[-1] / 1000
    band_h = 0.07 * (top - f[0] / 1000)
    n_pred = _bars(ax_s, seg, top + 0.2 * band_h, band_h, "tab:orange", t0, t1)
    n_ann = 0
    if ann is not None:
        n_ann = _bars(ax_s, ann, top + 1.4 * band_h, band_h, "tab:blue", t0, t1)
    ax_s.set_ylim(f[0] / 1000, top + (2.6 if ann is not None else 1.4) * band_h)
    ax_s.set_ylabel("kHz")
    label = f"predicted ({n_pred})" + (f", annotated ({n_ann}) above" if ann is not None else "")
    ax_s.set_title(title or f"{Path(path).name} - mode {params.mode!r}: {label}", fontsize=10,
                   loc="left")
    sel = (trace.times >= t0) & (trace.times <= t1)
    tt = trace.times[sel]
    ax_t.plot(tt, trace.smoothed_db[sel], color="k", lw=0.7, label="band level (smoothed)")
    thr = trace.thresholds(params)
    if params.mode == "prominence":
        ax_t.plot(tt, thr["floor"][sel], color="tab:green", lw=1.0, label="local noise floor")
        ax_t.plot(tt, thr["boundary"][sel], color="tab:green", lw=0.8, ls="--",
                  label=f"boundary (+{params.boundary_db:g} dB)")
        ax_t.plot(tt, thr["peak"][sel], color="tab:red", lw=0.8, ls="--",
                  label=f"peak (+{params.peak_db:g} dB)")
    else:
        for k, ls in (("th1", ":"), ("th2", "-."), ("th3", "--")):
            ax_t.axhline(thr[k], color="tab:red", lw=0.8, ls=ls, label=f"{k} = {getattr(params, k):g}")
    lo = np.percentile(trace.smoothed_db[sel], 0.5) - 5
    ax_t.set_ylim(lo, trace.smoothed_db[sel].max() + 5)
    for on, off in zip(seg["onset_s"], seg["offset_s"]):
        if off > t0 and on < t1:
            ax_t.axvspan(on, off, color="tab:orange", alpha=0.25, lw=0)
    if ann is not None:
        for on in ann["onset_s"]:
            if t0 <= on <= t1:
                ax_t.axvline(on, color="tab:blue", lw=0.6, alpha=0.7)
    ax_t.set_xlim(t0, t1)
    ax_t.set_xlabel("time (s)")
    ax_t.set_ylabel("dBFS in band")
    ax_t.legend(loc="upper right", fontsize=7, ncol=4, framealpha=0.8)
    if out is not None:
        return save_figure(fig, out, dpi=dpi)
    return fig
