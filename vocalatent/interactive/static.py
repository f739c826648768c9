"""The page's own CSS and JavaScript (what Bokeh does not do: the spectrogram tooltip with
kHz/ms axes, the audio player, the decoded-map inspector and the CSV download).

Bokeh draws the points and layers, does hit testing, box/lasso selection, the colour switch
and the selection table; its CustomJS callbacks call the ``vl*`` functions below, which work
on the item table parsed from the page's ``vl-data`` JSON block.
"""

PAGE_CSS = r"""
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; }
#vl-header { padding: 6px 12px; border-bottom: 1px solid #ddd; font-size: 14px; }
#vl-header b { font-size: 16px; }
#vl-header .vl-hint { color: #555; margin-left: 1em; }
#vl-main { display: flex; align-items: flex-start; gap: 8px; padding: 6px; }
#vl-side { width: 270px; min-width: 270px; font-size: 13px; }
#vl-inspector { border: 1px solid #ddd; border-radius: 4px; padding: 6px; min-height: 120px; }
#vl-inspector h4 { margin: 0 0 4px 0; font-size: 13px; }
#vl-tip { position: fixed; z-index: 1000; display: none; pointer-events: none; background: #fff;
          border: 1px solid #888; border-radius: 4px; padding: 6px; font-size: 12px;
          box-shadow: 0 2px 6px rgba(0,0,0,.25); }
.vl-spec { display: grid; grid-template-columns: auto auto; grid-template-rows: auto auto;
           column-gap: 3px; }
.vl-yax { display: flex; flex-direction: column; justify-content: space-between; text-align: right;
          font-size: 10px; color: #333; }
.vl-xax { display: flex; justify-content: space-between; font-size: 10px; color: #333;
          grid-column: 2; }
.vl-img { image-rendering: pixelated; border: 1px solid #444; background-repeat: no-repeat; }
.vl-axtitle { font-size: 10px; color: #666; text-align: center; grid-column: 2; }
.vl-meta td { padding: 0 6px 0 0; vertical-align: top; }
.vl-meta td:first-child { color: #666; }
.vl-genes { margin: 2px 0 0 0; padding-left: 18px; }
#vl-audio { width: 100%; margin-top: 6px; }
"""

PAGE_JS = r"""
(function () {
  "use strict";
  var VL = null, tipEl = null, mouse = {x: 0, y: 0}, audioSheets = [], selection = [];

  function el(tag, attrs, html) {
    var e = document.createElement(tag);
    for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (html !== undefined) e.innerHTML = html;
    return e;
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function fmt(v, d) { return (v === null || v === undefined || isNaN(v)) ? "–" : Number(v).toFixed(d); }

  function dataUriToBlobUrl(uri) {
    var comma = uri.indexOf(","), mime = uri.slice(5, uri.indexOf(";"));
    var bin = atob(uri.slice(comma + 1)), buf = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
    return URL.createObjectURL(new Blob([buf], {type: mime}));
  }

  function init() {
    if (VL) return VL;
    VL = JSON.parse(document.getElementById("vl-data").textContent);
    tipEl = document.getElementById("vl-tip");
    if (VL.audio) {
      audioSheets = VL.audio.sheets.map(function (u) {
        return u.indexOf("data:") === 0 ? dataUriToBlobUrl(u) : u;
      });
      var audio = document.getElementById("vl-audio"), timer = null;
      function check() {
        var end = parseFloat(audio.dataset.end);
        if (!isNaN(end) && audio.currentTime >= end) audio.pause();
      }
      // stop at the clip's end (the #t= fragment asks for it; timeupdate alone is too coarse)
      audio.addEventListener("playing", function () { clearInterval(timer); timer = setInterval(check, 10); });
      audio.addEventListener("pause", function () { clearInterval(timer); });
      audio.addEventListener("timeupdate", check);
    }
    document.addEventListener("mousemove", function (e) { mouse.x = e.clientX; mouse.y = e.clientY; },
                              true);
    window.VL = VL;
    return VL;
  }

  // ------------------------------------------------------------------ spectrogram thumbnails
  function specHtml(sheets, spec, index, timeLabels, scale, extraAttrs) {
    var s = spec.size, cols = spec.cols, per = cols * cols;
    var sheet = Math.floor(index / per), cell = index % per;
    var r = Math.floor(cell / cols), c = cell % cols, d = s * scale;
    var style = "width:" + d + "px;height:" + d + "px;background-image:url(" + sheets[sheet] + ");" +
      "background-size:" + (spec.sheet_width[sheet] * scale) + "px auto;" +
      "background-position:" + (-c * d) + "px " + (-r * d) + "px;";
    var yl = VL.axes.freq_ticks.map(function (t) { return "<span>" + t + "</span>"; }).join("");
    var xl = timeLabels.map(function (t) { return "<span>" + t + "</span>"; }).join("");
    return '<div class="vl-spec"><div class="vl-yax" style="height:' + d + 'px">' + yl + '</div>' +
      '<div class="vl-img" ' + (extraAttrs || "") + ' data-sheet="' + sheet + '" data-cell="' + cell +
      '" style="' + style + '"></div><div></div><div class="vl-xax">' + xl + '</div>' +
      '</div>';
  }
  function itemTimeLabels(i) {
    var ax = VL.axes;
    if (ax.time_mode === "window") return ["0", fmt(ax.window_ms / 2, 0), fmt(ax.window_ms, 0) + " ms"];
    var dur = 1000 * (VL.items.offset[i] - VL.items.onset[i]);
    return ["0", fmt(dur / 2, 0), fmt(dur, 0) + " ms"];
  }

  function metaRows(i) {
    var it = VL.items, rows = [];
    if (it.source) rows.push(["file", esc(it.sources[it.source[i]])]);
    if (it.onset) rows.push(["onset – offset", fmt(it.onset[i], 3) + " – " + fmt(it.offset[i], 3) + " s"]);
    for (var k in (it.extra || {})) rows.push([esc(k), esc(it.extra[k][i])]);
    rows.push(["cluster", it.cluster ? (it.cluster[i] < 0 ? "none" : it.cluster[i]) : "–"]);
    if (it.label && it.label[i]) rows.push(["label", esc(it.label[i])]);
    rows.push(["log-likelihood", fmt(it.loglik[i], 1) + " nats"]);
    return '<table class="vl-meta">' + rows.map(function (r) {
      return "<tr><td>" + r[0] + "</td><td>" + r[1] + "</td></tr>"; }).join("") + "</table>";
  }
  function itemHtml(i, scale) {
    var h = "<h4>item " + i + "</h4>";
    if (VL.thumbs) h += specHtml(VL.thumbs.sheets, VL.thumbs, i, itemTimeLabels(i), scale,
                                 'data-item="' + i + '"');
    return h + metaRows(i);
  }

  // ------------------------------------------------------------------ hover
  window.vlHover = function (cb, src) {
    init();
    var idx = cb.index.indices;
    if (!idx || idx.length === 0) { tipEl.style.display = "none"; tipEl.dataset.item = ""; return; }
    var g = cb.geometry, x = src.data.x, y = src.data.y, best = idx[0], bd = Infinity;
    for (var k = 0; k < idx.length; k++) {
      var dx = x[idx[k]] - g.x, dy = y[idx[k]] - g.y, dd = dx * dx + dy * dy;
      if (dd < bd) { bd = dd; best = idx[k]; }
    }
    if (tipEl.dataset.item !== String(best)) {
      tipEl.innerHTML = itemHtml(best, VL.thumbs ? VL.thumbs.scale : 1);
      tipEl.dataset.item = String(best);
    }
    tipEl.style.display = "block";
    var w = tipEl.offsetWidth, h = tipEl.offsetHeight;
    var left = mouse.x + 16, top = mouse.y + 16;
    if (left + w > window.innerWidth) left = Math.max(0, mouse.x - w - 16);
    if (top + h > window.innerHeight) top = Math.max(0, mouse.y - h - 16);
    tipEl.style.left = left + "px"; tipEl.style.top = top + "px";
  };

  // ------------------------------------------------------------------ click: play / decode
  function inspector(html) { document.getElementById("vl-inspector").innerHTML = html; }

  window.vlPlay = function (i) {
    init();
    var audio = document.getElementById("vl-audio");
    if (!VL.audio || VL.audio.sheet[i] < 0) {
      audio.removeAttribute("src"); audio.dataset.item = "";
      return false;
    }
    var a = VL.audio, t0 = a.start[i], t1 = a.end[i];
    audio.dataset.item = String(i);
    audio.dataset.end = String(t1);
    audio.src = audioSheets[a.sheet[i]] + "#t=" + t0.toFixed(3) + "," + t1.toFixed(3);
    var p = audio.play();
    if (p && p.catch) p.catch(function (e) { console.warn("vocalatent: audio did not start: " + e); });
    return true;
  };

  function showItem(i) {
    var h = itemHtml(i, VL.thumbs ? VL.thumbs.scale : 1);
    if (VL.items.top_features) {
      h += "<div><b>" + esc(VL.items.top_title) + "</b><ol class='vl-genes'>" +
        VL.items.top_features[i].map(function (g) { return "<li>" + esc(g) + "</li>"; }).join("") +
        "</ol></div>";
    }
    if (VL.audio) {
      h += VL.audio.sheet[i] >= 0 ? "<div>playing the syllable ± " + fmt(1000 * VL.audio.margin_s, 0) +
        " ms" + (VL.audio.slowdown > 1 ? ", " + VL.audio.slowdown + "× slower (time expansion)" : "") +
        "</div>" : "<div>no audio for this item (recording not found)</div>";
    }
    inspector(h);
  }

  function showDecoded(zx, zy) {
    var dec = VL.decoded;
    if (!dec) { inspector("<h4>z = (" + fmt(zx, 3) + ", " + fmt(zy, 3) + ")</h4>no model: nothing to decode"); return; }
    var G = dec.grid, ix = Math.min(G - 1, Math.floor(zx * G)), iy = Math.min(G - 1, Math.floor(zy * G));
    var node = iy * G + ix, h = "<h4>decoded at z = (" + fmt(zx, 3) + ", " + fmt(zy, 3) + ")</h4>" +
      "<div style='color:#666'>grid node (" + fmt((ix + 0.5) / G, 3) + ", " + fmt((iy + 0.5) / G, 3) +
      ") of a " + G + "×" + G + " grid</div>";
    if (dec.sheets) {
      var tl = VL.axes.time_mode === "window" ? ["0", fmt(VL.axes.window_ms / 2, 0), fmt(VL.axes.window_ms, 0) + " ms"]
                                              : ["0", "0.5", "1 (syllable length)"];
      h += specHtml(dec.sheets, dec, node, tl, dec.scale, 'data-node="' + node + '"');
    }
    if (dec.top_features) {
      h += "<div><b>" + esc(dec.top_title) + "</b><ol class='vl-genes'>" +
        dec.top_features[node].map(function (g) { return "<li>" + esc(g) + "</li>"; }).join("") + "</ol></div>";
    }
    inspector(h);
  }

  window.vlTap = function (ev, src, plot, tiled) {
    init();
    var x = src.data.x, y = src.data.y, n = x.length;
    var sx = (plot.x_range.end - plot.x_range.start) / plot.inner_width;
    var sy = (plot.y_range.end - plot.y_range.start) / plot.inner_height;
    var ex = ev.x, ey = ev.y, best = -1, bd = 49;  // within 7 px
    if (tiled) { ex = ex - Math.floor(ex); ey = ey - Math.floor(ey); }
    for (var i = 0; i < n; i++) {
      var dx = (x[i] - ex) / sx, dy = (y[i] - ey) / sy;
      if (tiled) {
        dx = Math.abs(x[i] - ex); dx = Math.min(dx, 1 - dx) / sx;
        dy = Math.abs(y[i] - ey); dy = Math.min(dy, 1 - dy) / sy;
      }
      var dd = dx * dx + dy * dy;
      if (dd < bd) { bd = dd; best = i; }
    }
    if (best >= 0) {
      showItem(best);
      window.vlPlay(best);
      document.getElementById("vl-inspector").dataset.item = String(best);
    } else {
      document.getElementById("vl-inspector").dataset.item = "";
      showDecoded(ev.x - Math.floor(ev.x), ev.y - Math.floor(ev.y));
    }
  };

  // ------------------------------------------------------------------ selection
  window.vlSelect = function (indices, table, count, maxRows) {
    init();
    selection = Array.prototype.slice.call(indices).sort(function (a, b) { return a - b; });
    var it = VL.items, rows = selection.slice(0, maxRows);
    var d = {item: [], file: [], onset_s: [], offset_s: [], cluster: [], label: []};
    rows.forEach(function (i) {
      d.item.push(i);
      d.file.push(it.source ? it.sources[it.source[i]] : "");
      d.onset_s.push(it.onset ? it.onset[i] : NaN);
      d.offset_s.push(it.offset ? it.offset[i] : NaN);
      d.cluster.push(it.cluster ? it.cluster[i] : -1);
      d.label.push(it.label ? it.label[i] : "");
    });
    table.data = d;
    count.text = selection.length + " item" + (selection.length === 1 ? "" : "s") + " selected" +
      (selection.length > maxRows ? " (the table shows the first " + maxRows + "; the CSV has all)" : "");
    window.vlSelection = selection;
  };

  window.vlCsv = function () {
    init();
    var it = VL.items, lines = ["item,file,onset_s,offset_s,cluster,label"];
    function q(s) { s = String(s); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
    selection.forEach(function (i) {
      lines.push([i, q(it.source ? it.sources[it.source[i]] : ""), it.onset ? it.onset[i] : "",
                  it.offset ? it.offset[i] : "", it.cluster ? it.cluster[i] : "",
                  q(it.label ? it.label[i] : "")].join(","));
    });
    return lines.join("\n") + "\n";
  };

  window.vlDownload = function () {
    var blob = new Blob([window.vlCsv()], {type: "text/csv"});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "selection.csv";
    document.body.appendChild(a); a.click(); document.body.removeChild(a);
  };

  window.vlLegend = function (name) {
    init();
    var leg = VL.colors[name];
    document.getElementById("vl-legend").innerHTML = leg ? leg.html : "";
  };
  document.addEventListener("DOMContentLoaded", function () { init(); window.vlLegend(VL.default_color); });
})();
"""
