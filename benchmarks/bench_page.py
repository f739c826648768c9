"""The interactive map at scale: page size, write time and load time in headless chromium.

For N items (default 1k, 10k, 100k) it builds an embedding Dataset (points in 8 blobs on the
torus, clusters, log-likelihoods, spreads, a density grid), 128 x 128 synthetic spectrograms
(thumbnails), a tiny fitted QLVM (the decoded grid), and, up to ``--audio-max`` items, real
audio: synthetic songs written to disk, each item a syllable of them. It writes the page with
``mode="auto"`` (self-contained up to 5,000 items, sheets beside it beyond), then opens it in
Debian's chromium (selenium, driver path given) and times:

- load: from navigation to every point drawn (Bokeh's glyph view holds N screen positions);
- hover: from the pointer move to the thumbnail tooltip showing that item;
- select: a box over the middle of the map until the selection table is filled.

    python benchmarks/bench_page.py [--sizes 1000 10000 100000] [--audio-max 10000]

Prints a Markdown table (docs/interactive.md records it).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import vocalatent.accessor  # noqa: F401
from vocalatent.interactive import write_map


class SyntheticSpectrograms:
    """A lazily made (n, 128, 128) array of song-like images (harmonic stacks, sweeps)."""

    def __init__(self, n: int, size: int = 128, seed: int = 0):
        self.shape = (n, size, size)
        self.seed = seed

    def __getitem__(self, idx):
        rows = np.arange(self.shape[0])[idx]
        rng = np.random.default_rng(self.seed + int(rows[0]) if len(rows) else self.seed)
        f = np.arange(self.shape[1], dtype=np.float32)[None, :, None]
        t = np.linspace(0, 1, self.shape[2], dtype=np.float32)[None, None, :]
        f0 = (rng.uniform(8, 30, (len(rows), 1, 1)) + rng.uniform(-6, 6, (len(rows), 1, 1)) * t).astype(np.float32)
        img = sum(np.exp(-0.5 * ((f - h * f0) / 1.5) ** 2) / h for h in (1, 2, 3, 4))
        img = img * (0.3 + 0.7 * np.sin(np.pi * t)) + 0.05 * rng.random(img.shape, dtype=np.float32)
        return np.clip(img, 0, 1).astype(np.float32)


def make_dataset(n: int, segments: pd.DataFrame | None, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(size=(8, 2))
    lab = rng.integers(0, 8, n)
    emb = np.mod(centres[lab] + 0.05 * rng.standard_normal((n, 2)), 1.0)
    coords = {"source": ("item", [f"rec_{i // 50:05d}.wav" for i in range(n)]),
              "onset_s": ("item", np.zeros(n)), "offset_s": ("item", np.full(n, 0.1))}
    if segments is not None:
        coords = {"source": ("item", segments["source"].astype(str).to_numpy()[:n]),
                  "onset_s": ("item", segments["onset_s"].to_numpy()[:n]),
                  "offset_s": ("item", segments["offset_s"].to_numpy()[:n])}
    ds = xr.Dataset({"embedding": (("item", "latent"), emb),
                     "log_likelihood": ("item", rng.normal(300, 20, n)),
                     "spread": (("item", "latent"), rng.uniform(0, 0.2, (n, 2))),
                     "cluster": ("item", lab)}, coords=coords)
    return ds.vl.density(bandwidth=0.03, resolution=64)


def make_songs(root: Path, n: int) -> pd.DataFrame:
    from vocalatent.audio.synthetic import write_synthetic_dataset

    per_file = 50
    truth = write_synthetic_dataset(root, n_files=int(np.ceil(n / per_file)), n_syllables=per_file,
                                    sr=32000, random_state=0)
    return truth.iloc[:n].reset_index(drop=True)


def tiny_model():
    from vocalatent.model import QLVM

    X = SyntheticSpectrograms(256, size=32)[:]
    return QLVM(latent_dim=2, n_lattice=89, max_epochs=1, n_eval_lattice=233, verbose=False,
                random_state=0).fit(X)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    o.binary_location = "/usr/bin/chromium"
    for f in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900",
              f"--user-data-dir={tempfile.mkdtemp(prefix='vl-bench-')}"):
        o.add_argument(f)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=o)


READY = """let rv = null, pv = null;
for (const v of (window.Bokeh && Bokeh.index && Bokeh.index.all_views ? Bokeh.index.all_views() : [])) {
  if (v.model.name === 'vl-points') rv = v; if (v.model.name === 'vl-plot') pv = v; }
if (!rv || !rv.glyph.sx) return null;
const r = pv.canvas_view.el.getBoundingClientRect();
return {n: rv.glyph.sx.length, x: Array.from(rv.glyph.sx.slice(0, 2000)).map(v => v + r.left),
        y: Array.from(rv.glyph.sy.slice(0, 2000)).map(v => v + r.top),
        fx: [pv.frame.bbox.left + r.left, pv.frame.bbox.right + r.left],
        fy: [pv.frame.bbox.top + r.top, pv.frame.bbox.bottom + r.top]};"""


def time_page(driver, path: Path, n: int) -> dict:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    t0 = time.perf_counter()
    driver.get(path.resolve().as_uri())
    while True:
        st = driver.execute_script(READY)
        if st and st["n"] == n:
            break
        if time.perf_counter() - t0 > 300:
            raise RuntimeError("page did not draw its points in 300 s")
        time.sleep(0.02)
    load = time.perf_counter() - t0
    # hover: an item the tooltip must show
    i = 0
    a = ActionBuilder(driver)
    a.pointer_action.move_to_location(int(st["x"][i]) + 1, int(st["y"][i]))
    a.perform()
    t1 = time.perf_counter()
    a = ActionBuilder(driver)
    a.pointer_action.move_to_location(int(st["x"][i]), int(st["y"][i]))
    a.perform()
    while not driver.execute_script("const t = document.getElementById('vl-tip');"
                                    "return t.style.display === 'block' && !!t.querySelector('.vl-img');"):
        if time.perf_counter() - t1 > 30:
            break
        time.sleep(0.01)
    hover = time.perf_counter() - t1
    # box selection over the middle third
    (x0, x1), (y0, y1) = st["fx"], st["fy"]
    bx = (x0 + (x1 - x0) / 3, x0 + 2 * (x1 - x0) / 3)
    by = (y0 + (y1 - y0) / 3, y0 + 2 * (y1 - y0) / 3)
    t2 = time.perf_counter()
    a = ActionBuilder(driver)
    a.pointer_action.move_to_location(int(bx[0]), int(by[0])).pointer_down()
    a.pointer_action.move_to_location(int(bx[1]), int(by[1])).pointer_up()
    a.perform()
    sel = 0
    while time.perf_counter() - t2 < 60:
        sel = driver.execute_script("return (window.vlSelection || []).length")
        if sel:
            break
        time.sleep(0.01)
    select = time.perf_counter() - t2
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return {"load_s": load, "hover_s": hover, "select_s": select, "n_selected": sel, "errors": errors}


def _machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor()
    try:
        load = open("/proc/loadavg").read().split()[0]
    except OSError:
        load = "?"
    return f"{model}, load average {load}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--audio-max", type=int, default=10000, help="largest N with real audio")
    ap.add_argument("--out", default=None, help="keep the pages here (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="vl-bench-page-"))
    work.mkdir(parents=True, exist_ok=True)
    model = tiny_model()
    driver = browser()
    rows = []
    try:
        for n in args.sizes:
            segs = None
            if n <= args.audio_max:
                segs = make_songs(work / f"rec_{n}", n)
            ds = make_dataset(n, segs)
            t = time.perf_counter()
            page = write_map(ds, work / f"map_{n}.html", model=model, spectrograms=SyntheticSpectrograms(n),
                             spectrogram_params={"f_min": 400, "f_max": 10000},
                             audio_root=(work / f"rec_{n}") if segs is not None else None)
            write_s = time.perf_counter() - t
            html_mb = page.path.stat().st_size / 1e6
            side_mb = (page.nbytes - page.path.stat().st_size) / 1e6
            res = time_page(driver, page.path, n)
            rows.append((n, "yes" if segs is not None else "no", "one file" if page.assets_dir is None else "folder",
                         html_mb, side_mb, write_s, res))
            print(f"N={n}: {res}", flush=True)
    finally:
        driver.quit()
    print(f"\nmachine: {_machine()}; chromium headless, software rendering (--disable-gpu)\n")
    print("| items | audio | layout | page (MB) | beside it (MB) | write (s) | load (s) | hover (s) | box select (s) |")
    print("|---:|:---:|:---|---:|---:|---:|---:|---:|---:|")
    for n, audio, layout, html_mb, side_mb, write_s, r in rows:
        print(f"| {n:,} | {audio} | {layout} | {html_mb:.1f} | {side_mb:.1f} | {write_s:.1f} | {r['load_s']:.2f} | "
              f"{r['hover_s']:.2f} | {r['select_s']:.2f} ({r['n_selected']:,} items) |")
        if r["errors"]:
            print(f"  console errors: {r['errors'][:3]}")


if __name__ == "__main__":
    main()
