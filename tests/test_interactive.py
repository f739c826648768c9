"""The interactive map (OUT/map.html): what the page holds (audio cut from the recordings,
thumbnails, decoded grid) checked against the data, and the page itself in a real headless
browser (Debian's chromium + chromedriver, driven by selenium; skipped when not installed)."""

import base64
import io
import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import xarray as xr
from click.testing import CliRunner

pytest.importorskip("bokeh", reason="the interactive extra (bokeh) is not installed")

from vocalatent.audio.synthetic import write_synthetic_dataset  # noqa: E402
from vocalatent.cli import main  # noqa: E402
from vocalatent.interactive import MissingExtraError, write_job_map, write_map, write_run_map  # noqa: E402
from vocalatent.interactive import assets  # noqa: E402
from vocalatent.embedding import read_embedding

TINY = dict(model={"max_epochs": 4, "n_lattice": 89, "n_eval_lattice": 233, "n_eval_shifts": 2,
                   "batch_size": 64, "decoder_options": {"base_channels": 8, "hidden": 32}},
            spectrogram={"n_freq": 32, "n_time": 32},
            analysis={"resolution": 24, "geodesic": False})

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny end-to-end job on synthetic songs; the job itself writes OUT/map.html."""
    from vocalatent.workflow import dump_toml

    root = tmp_path_factory.mktemp("map")
    write_synthetic_dataset(root / "rec", n_files=3, n_syllables=16, sr=32000, random_state=0)
    (root / "tiny.toml").write_text(dump_toml(TINY))
    out = root / "out"
    res = CliRunner().invoke(main, ["-q", "embed", str(root / "rec"), "-o", str(out), "--config",
                                    str(root / "tiny.toml")])
    assert res.exit_code == 0, res.output
    return out, root / "rec"


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="vl-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def decode_uri(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def sheet_cell(png: bytes, size: int, cols: int, cell: int) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)))  # palette indices = the uint8 values
    r, c = divmod(cell, cols)
    return img[r * size:(r + 1) * size, c * size:(c + 1) * size]


# ------------------------------------------------------------------------- the page's content
def test_job_writes_a_self_contained_page(run):
    out, _ = run
    ds = read_embedding(out / "embedding.nc")
    page = out / "map.html"
    assert page.exists()
    text = page.read_text(encoding="utf-8")
    # offline: no script or stylesheet from the network, Bokeh's JS inline
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', text)
    assert "cdn.bokeh.org" not in text and "Bokeh.embed" in text
    data = page_data(page)
    assert data["n"] == ds.sizes["item"] == len(data["items"]["onset"])
    assert data["thumbs"]["sheets"][0].startswith("data:image/png;base64,")
    assert data["audio"]["rate"] == 32000 and data["audio"]["slowdown"] == 1
    assert data["audio"]["n_missing"] == 0
    assert data["axes"]["freq_ticks"][0] == "10 kHz" and data["axes"]["freq_ticks"][-1] == "0.4"
    assert set(data["colors"]) >= {"cluster", "source", "log_likelihood", "spread"}
    np.testing.assert_allclose(data["items"]["onset"], ds["onset_s"].values, atol=1e-4)
    ds.close()


def test_each_items_clip_is_its_syllable_cut_from_the_recording(run):
    out, rec = run
    ds = read_embedding(out / "embedding.nc")
    a = page_data(out / "map.html")["audio"]
    sheets = [sf.read(io.BytesIO(decode_uri(u)), dtype="float32") for u in a["sheets"]]
    for i in (0, 7, ds.sizes["item"] - 1):
        y, sr = sheets[a["sheet"][i]]
        clip = y[int(round(a["start"][i] * sr)):int(round(a["end"][i] * sr))]
        src = str(ds["source"].values[i])
        full, sr0 = sf.read(rec / src, dtype="float32")
        assert sr0 == sr == 32000
        lo = int(max(0.0, ds["onset_s"].values[i] - a["margin_s"]) * sr)
        ref = full[lo:lo + len(clip)]
        assert len(clip) >= int((ds["offset_s"].values[i] - ds["onset_s"].values[i]) * sr)
        np.testing.assert_allclose(clip, ref, atol=1.5 / 32768)  # 16-bit WAV
    ds.close()


def test_thumbnails_and_decoded_grid_are_the_data_and_the_model(run):
    from vocalatent.data.store import SyllableStore
    from vocalatent.model import QLVM

    out, _ = run
    data = page_data(out / "map.html")
    th = data["thumbs"]
    store = SyllableStore(out / "syllables.h5")
    expect = assets.thumbnails(store.spectrograms, thumb_size=th["size"])
    per = th["cols"] ** 2
    for i in (0, 5, len(expect) - 1):
        got = sheet_cell(decode_uri(th["sheets"][i // per]), th["size"], th["cols"], i % per)
        np.testing.assert_array_equal(got, expect[i])
    # high frequencies on top: the thumbnail's first row is the spectrogram's last row
    np.testing.assert_array_equal(expect[0][0], assets.thumbnails(np.asarray(store.spectrograms[:1])[:, ::-1], thumb_size=th["size"])[0][-1])
    dec = data["decoded"]
    G = dec["grid"]
    model = QLVM.load(out / "model.pt", device="cpu")
    for node in (0, G + 3, G * G - 1):
        iy, ix = divmod(node, G)
        z = np.array([[(ix + 0.5) / G, (iy + 0.5) / G]])
        ref = assets.thumbnails(np.clip(model.decode(z), 0, 1), thumb_size=dec["size"])[0]
        got = sheet_cell(decode_uri(dec["sheets"][node // dec["cols"] ** 2]), dec["size"], dec["cols"],
                         node % dec["cols"] ** 2)
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_browser_rates_and_time_expansion_of_ultrasound(tmp_path):
    assert assets.browser_rate(44100) == (44100, 1)
    assert assets.browser_rate(32000, f_max=10000) == (32000, 1)
    assert assets.browser_rate(30000) == (48000, 1)
    assert assets.browser_rate(250000, f_max=110000) == (48000, 6)
    # a 60 kHz tone recorded at 250 kHz plays 6x slower: a 10 kHz tone lasting 6x as long
    sr, f0 = 250000, 60000.0
    t = np.arange(int(0.5 * sr)) / sr
    sf.write(tmp_path / "usv.wav", (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr, subtype="PCM_16")
    import pandas as pd

    seg = pd.DataFrame({"source": ["usv.wav"], "onset_s": [0.2], "offset_s": [0.25]})
    a = assets.audio_sheets(seg, tmp_path, margin_s=0.01, f_max=110000)
    assert (a.rate, a.slowdown) == (48000, 6)
    y, rate = sf.read(io.BytesIO(a.wavs[0]), dtype="float32")
    clip = y[int(a.start[0] * rate):int(a.end[0] * rate)]
    assert a.end[0] - a.start[0] == pytest.approx(6 * 0.07, rel=1e-3)
    spec = np.abs(np.fft.rfft(clip * np.hanning(len(clip))))
    peak = np.fft.rfftfreq(len(clip), 1 / rate)[np.argmax(spec)]
    assert peak == pytest.approx(f0 / 6, abs=20)


def test_unreadable_recordings_are_counted_not_dropped(tmp_path, caplog):
    import pandas as pd

    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    seg = pd.DataFrame({"source": ["a.wav", "gone.wav", "a.wav"], "onset_s": [0.1, 0.1, 0.5],
                        "offset_s": [0.2, 0.2, 0.6]})
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        a = assets.audio_sheets(seg, tmp_path)
    assert list(a.sheet) == [0, -1, 0] and "gone.wav" in a.missing
    assert "1 of 3 items have no audio" in caplog.text


def test_folder_mode_writes_sheets_beside_the_page(run, tmp_path):
    out, _ = run
    page = write_run_map(out, path=tmp_path / "big.html", mode="folder")
    files = sorted(p.name for p in (tmp_path / "big_files").iterdir())
    assert page.assets_dir == tmp_path / "big_files"
    assert "thumbs_000.png" in files and "audio_000.wav" in files and "decoded_000.png" in files
    data = page_data(page.path)
    assert data["thumbs"]["sheets"] == ["big_files/thumbs_000.png"]
    assert data["audio"]["sheets"][0] == "big_files/audio_000.wav"
    assert "data:audio" not in page.path.read_text()
    assert page.path.stat().st_size < (out / "map.html").stat().st_size


def test_auto_mode_switches_to_a_folder_above_the_item_limit(run, tmp_path):
    from vocalatent.embedding import read_embedding

    out, _ = run
    ds = read_embedding(out / "embedding.nc")
    page = write_map(ds, tmp_path / "m.html", max_inline_items=10)
    assert page.assets_dir is None  # nothing to put beside it: no thumbnails, audio or model
    from vocalatent.data.store import SyllableStore

    page = write_map(ds, tmp_path / "m.html", spectrograms=SyllableStore(out / "syllables.h5").spectrograms,
                     max_inline_items=10)
    assert page.assets_dir is not None and (page.assets_dir / "thumbs_000.png").exists()


def test_missing_bokeh_is_one_line_and_does_not_fail_the_job(run, monkeypatch, caplog):
    out, _ = run
    monkeypatch.setitem(sys.modules, "bokeh", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'vocalatent\[interactive\]'"):
        write_run_map(out)
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        assert write_job_map(out) is None
    assert "map.html not written: the interactive map needs Bokeh" in caplog.text
    res = CliRunner().invoke(main, ["plot", str(out), "--html"])
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1].startswith("Error: the interactive map needs Bokeh")


def test_plot_html_and_explore(run, tmp_path, monkeypatch):
    import vocalatent.accessor  # noqa: F401
    from vocalatent.embedding import read_embedding

    out, _ = run
    before = (out / "map.html").stat().st_mtime_ns
    res = CliRunner().invoke(main, ["plot", str(out), "--html"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(out / "map.html") and (out / "map.html").stat().st_mtime_ns > before
    monkeypatch.chdir(tmp_path)
    ds = read_embedding(out / "embedding.nc")
    page = ds.vl.explore("nb.html")
    assert page.path == Path("nb.html") and page.n_items == ds.sizes["item"]
    assert '<iframe src="nb.html"' in page._repr_html_()
    assert page_data(page.path)["thumbs"] is None  # no store given: points and metadata only


def test_cells_show_their_top_genes(tmp_path):
    rng = np.random.default_rng(0)
    n, genes = 40, [f"g{k}" for k in range(12)]
    X = rng.poisson(2.0, size=(n, len(genes))).astype(float)
    marker = np.arange(n) % 4
    X[np.arange(n), marker] += 200  # cell i expresses gene i % 4 far above the rest
    ds = xr.Dataset({"embedding": (("item", "latent"), rng.uniform(size=(n, 2))),
                     "log_likelihood": ("item", rng.normal(size=n)),
                     "spread": (("item", "latent"), rng.uniform(size=(n, 2)))},
                    coords={"cell": ("item", [f"cell{i}" for i in range(n)]),
                            "cell_type": ("item", np.array(["A", "B"])[np.arange(n) % 2])},
                    attrs={"domain": "single_cell", "features": json.dumps(genes)})
    page = write_map(ds, tmp_path / "cells.html", features=X)
    data = page_data(page.path)
    assert [t[0] for t in data["items"]["top_features"]] == [genes[m] for m in marker]
    assert "cell_type" in data["colors"] and data["items"]["extra"]["cell"][3] == "cell3"


# ------------------------------------------------------------------------- in a real browser
def _browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no headless browser: /usr/bin/chromium and /usr/bin/chromedriver are not installed "
                    "(run scripts/install_browser.sh)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (test extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='vl-chromium-')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver's path is given: selenium's own driver manager never runs, nothing is downloaded
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)


POINTS_JS = """
let rv = null, pv = null;
for (const v of Bokeh.index.all_views()) {
  if (v.model.name === 'vl-points') rv = v;
  if (v.model.name === 'vl-plot') pv = v;
}
const g = rv.glyph, r = pv.canvas_view.el.getBoundingClientRect(), xs = [], ys = [];
let drawn = 0;
for (let i = 0; i < g.sx.length; i++) {
  if (isFinite(g.sx[i]) && isFinite(g.sy[i])) drawn++;
  xs.push(r.left + g.sx[i]); ys.push(r.top + g.sy[i]);
}
return {n: g.sx.length, drawn: drawn, x: xs, y: ys};
"""


def _open(driver, page: Path):
    driver.get(page.resolve().as_uri())
    for _ in range(100):
        if driver.execute_script("return !!(window.Bokeh && Bokeh.index && Bokeh.index.all_views && "
                                 "[...Bokeh.index.all_views()].some(v => v.model.name === 'vl-points'))"):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    return driver.execute_script(POINTS_JS)


def _move(driver, x, y, click=False):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    a = ActionBuilder(driver)
    a.pointer_action.move_to_location(int(round(x)), int(round(y)))
    if click:
        a.pointer_action.click()
    a.perform()


def _isolated(P, k=3, min_px=14.0):
    xy = np.column_stack([P["x"], P["y"]])
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    ok = np.flatnonzero(d.min(1) > min_px)
    assert len(ok) >= k, "no isolated points to point at"
    return [int(i) for i in ok[:k]]


@pytest.fixture(scope="module")
def browser():
    d = _browser()
    yield d
    d.quit()


def test_page_loads_without_errors_and_draws_every_item(run, browser):
    out, _ = run
    P = _open(browser, out / "map.html")
    n = read_embedding(out / "embedding.nc").sizes["item"]
    assert P["n"] == P["drawn"] == n
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_hover_shows_that_items_thumbnail(run, browser):
    out, _ = run
    P = _open(browser, out / "map.html")
    data = page_data(out / "map.html")
    for i in _isolated(P):
        _move(browser, P["x"][i] + 1, P["y"][i])
        _move(browser, P["x"][i], P["y"][i])
        time.sleep(0.3)
        tip = browser.execute_script("""const t = document.getElementById('vl-tip');
            const img = t.querySelector('.vl-img');
            return {shown: t.style.display, item: t.dataset.item, img_item: img && img.dataset.item,
                    cell: img && img.dataset.cell, bg: img && img.style.backgroundImage.slice(0, 40),
                    text: t.innerText};""")
        assert tip["shown"] == "block" and tip["item"] == tip["img_item"] == str(i)
        assert int(tip["cell"]) == i % data["thumbs"]["cols"] ** 2
        assert tip["bg"].startswith('url("data:image/png;base64')
        src = data["items"]["sources"][data["items"]["source"][i]]
        assert src in tip["text"] and "kHz" in tip["text"] and "ms" in tip["text"]
        assert f"{data['items']['onset'][i]:.3f}" in tip["text"]


def test_click_plays_that_items_clip(run, browser):
    out, _ = run
    P = _open(browser, out / "map.html")
    a = page_data(out / "map.html")["audio"]
    browser.execute_script("const a = document.getElementById('vl-audio'); window.__played = [];"
                           "a.addEventListener('playing', () => window.__played.push(a.dataset.item));")
    i = _isolated(P)[1]
    _move(browser, P["x"][i], P["y"][i], click=True)
    for _ in range(40):
        st = browser.execute_script("const a = document.getElementById('vl-audio'); return {src: a.src, "
                                    "item: a.dataset.item, paused: a.paused, t: a.currentTime, "
                                    "played: window.__played, err: a.error && a.error.message};")
        if st["played"]:
            break
        time.sleep(0.05)
    assert st["err"] is None and st["item"] == str(i)
    assert st["src"].startswith("blob:") and st["src"].endswith(f"#t={a['start'][i]:.3f},{a['end'][i]:.3f}")
    assert st["played"] == [str(i)]  # it left the paused state
    time.sleep(1.0)
    t = browser.execute_script("return document.getElementById('vl-audio').currentTime")
    assert a["start"][i] < t <= a["end"][i] + 0.06  # stopped at the clip's end, not the sheet's
    inspector = browser.execute_script("return document.getElementById('vl-inspector').dataset.item")
    assert inspector == str(i)


def test_click_on_an_empty_place_shows_the_decoded_map(run, browser):
    out, _ = run
    P = _open(browser, out / "map.html")
    G = page_data(out / "map.html")["decoded"]["grid"]
    xy = np.column_stack([P["x"], P["y"]])
    # the empty pixel farthest from every point, inside the unit square
    x0, x1 = min(P["x"]), max(P["x"])
    y0, y1 = min(P["y"]), max(P["y"])
    cand = np.array([(x, y) for x in np.linspace(x0, x1, 25) for y in np.linspace(y0, y1, 25)])
    far = cand[np.argmax(np.min(np.linalg.norm(cand[:, None] - xy[None], axis=-1), axis=1))]
    _move(browser, *far, click=True)
    time.sleep(0.3)
    res = browser.execute_script("""const el = document.getElementById('vl-inspector');
        const img = el.querySelector('.vl-img');
        return {item: el.dataset.item, node: img && img.dataset.node, text: el.innerText};""")
    assert res["item"] == "" and res["node"] is not None and "decoded at z" in res["text"]
    z = [float(v) for v in re.search(r"z = \(([-0-9.]+), ([-0-9.]+)\)", res["text"]).groups()]
    assert int(res["node"]) == min(G - 1, int(z[1] * G)) * G + min(G - 1, int(z[0] * G))


def test_box_selection_lists_the_items_inside(run, browser):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    out, _ = run
    P = _open(browser, out / "map.html")
    x, y = np.array(P["x"]), np.array(P["y"])
    bx0, bx1 = np.percentile(x, [20, 70])
    by0, by1 = np.percentile(y, [25, 80])
    inside = np.flatnonzero((x > bx0) & (x < bx1) & (y > by0) & (y < by1))
    assert 3 <= len(inside) < len(x)
    a = ActionBuilder(browser)
    a.pointer_action.move_to_location(int(bx0), int(by0)).pointer_down()
    a.pointer_action.move_to_location(int((bx0 + bx1) / 2), int((by0 + by1) / 2))
    a.pointer_action.move_to_location(int(bx1), int(by1)).pointer_up()
    a.perform()
    time.sleep(0.5)
    res = browser.execute_script("""const doc = Bokeh.documents[0];
        return {table: doc.get_model_by_name('vl-selection').data.item,
                count: doc.get_model_by_name('vl-count').text, csv: window.vlCsv()};""")
    # pixel rounding may move points on the box's edge: compare away from the edge
    core = set(np.flatnonzero((x > bx0 + 2) & (x < bx1 - 2) & (y > by0 + 2) & (y < by1 - 2)).tolist())
    near = set(np.flatnonzero((x > bx0 - 2) & (x < bx1 + 2) & (y > by0 - 2) & (y < by1 + 2)).tolist())
    got = set(int(v) for v in res["table"])
    assert core <= got <= near
    assert res["count"].startswith(f"{len(got)} item")
    ds = read_embedding(out / "embedding.nc")
    lines = res["csv"].strip().splitlines()
    assert lines[0] == "item,file,onset_s,offset_s,cluster,label" and len(lines) == len(got) + 1
    row = lines[1].split(",")
    i = int(row[0])
    assert row[1] == str(ds["source"].values[i]) and float(row[2]) == pytest.approx(ds["onset_s"].values[i], abs=1e-4)
    assert int(row[4]) == int(ds["cluster"].values[i])


def test_colour_switch_and_tiling_toggle(run, browser):
    out, _ = run
    _open(browser, out / "map.html")
    browser.execute_script("""const doc = Bokeh.documents[0];
        const sel = doc.get_model_by_name('vl-color'); sel.value = 'log_likelihood';
        const pts = doc.get_model_by_name('vl-points');
        const layers = doc.get_model_by_name('vl-layers'); layers.active = [layers.labels.length - 1];""")
    time.sleep(0.5)  # Bokeh runs the change callbacks asynchronously
    res = browser.execute_script("""const doc = Bokeh.documents[0];
        const pts = doc.get_model_by_name('vl-points'), plot = doc.get_model_by_name('vl-plot');
        return {field: pts.glyph.fill_color.field, legend: document.getElementById('vl-legend').innerText,
                x0: plot.x_range.start, tiled: plot.tags[0]};""")
    assert res["field"] == "c_log_likelihood" and "log-likelihood" in res["legend"]
    assert res["x0"] == -0.5 and res["tiled"] == 1


def test_screenshot_is_not_blank(run, browser, tmp_path):
    from PIL import Image

    out, _ = run
    P = _open(browser, out / "map.html")
    i = _isolated(P)[0]
    _move(browser, P["x"][i], P["y"][i])
    time.sleep(0.3)
    shot = tmp_path / "map.png"
    browser.save_screenshot(str(shot))
    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[0] > 500 and img.shape[1] > 1000
    assert img.std() > 20 and len(np.unique(img.reshape(-1, 3), axis=0)) > 200


def test_folder_mode_page_loads_its_sheets(run, browser, tmp_path):
    out, _ = run
    page = write_run_map(out, path=tmp_path / "f.html", mode="folder")
    P = _open(browser, page.path)
    assert P["n"] == P["drawn"] == page.n_items
    i = _isolated(P)[2]
    _move(browser, P["x"][i], P["y"][i], click=True)
    time.sleep(0.5)
    res = browser.execute_async_script("""const done = arguments[arguments.length - 1];
        const img = new Image(); img.onload = () => done({w: img.naturalWidth, src: a.src, item: a.dataset.item});
        img.onerror = () => done({w: -1});
        const a = document.getElementById('vl-audio'); img.src = VL.thumbs.sheets[0];""")
    assert res["w"] > 0 and res["item"] == str(i) and "/f_files/audio_000.wav#t=" in res["src"]
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_cell_job_writes_a_map_with_each_cells_top_genes(tmp_path):
    import pandas as pd

    from vocalatent.data.simulate import simulate_cell_types
    from vocalatent.workflow import embed

    sim = simulate_cell_types(120, 60, 3, n_markers=5, random_state=0)
    cm = sim.matrix
    pd.DataFrame(cm.dense().astype(int), index=cm.cell_names, columns=cm.gene_names).to_csv(tmp_path / "c.csv")
    ds = embed(tmp_path / "c.csv", tmp_path / "out", device="cpu", verbose=False,
               overrides={"model": {"max_epochs": 2, "n_lattice": 89, "n_eval_lattice": 233},
                          "analysis": {"resolution": 24, "geodesic": False}})
    data = page_data(tmp_path / "out" / "map.html")
    top = data["items"]["top_features"]
    assert len(top) == ds.sizes["item"] and data["items"]["top_title"].startswith("top genes")
    # the top gene of a cell is the gene its raw counts put farthest above the mean cell
    X = cm.dense().astype(float)
    genes = json.loads(ds.attrs["features"])
    cols = [list(cm.gene_names).index(g) for g in genes]
    Xm = X[:, cols]
    norm = np.log1p(1e4 * Xm / Xm.sum(1, keepdims=True))
    assert [t[0] for t in top] == [genes[j] for j in np.argmax(norm - norm.mean(0), axis=1)]
    assert data["decoded"]["top_features"] and data["thumbs"] is None and data["audio"] is None
