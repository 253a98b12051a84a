"""``RUN/analysis/report.html``: one self-contained page about a run's landscape.

Everything is inline (data as JSON, images as PNG data URIs, a small vanilla-JS canvas plot):
the page opens from a laptop with no network and can be mailed around. It shows the landscape
(PCA, and UMAP when computed) with hover (particle index, cluster), click-to-highlight a
cluster and a lasso whose polygon downloads as a ``--region`` file for ``hetsiren export``;
per-cluster map thumbnails with populations; isosurface renderings of the cluster maps; the
maps sampled along each PC; the explained
variance, density and training-curve figures; and the run's configuration.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hetsiren.analysis.plots import cluster_colours
from hetsiren.rundir import atomic_write
from hetsiren.train.health import training_health

if TYPE_CHECKING:
    from hetsiren.analysis.analyze import AnalysisResult

__all__ = ["MAX_REPORT_POINTS", "build_report_html", "write_report"]

log = logging.getLogger(__name__)

# Points in the interactive plot: beyond this a canvas redraw gets sluggish and the page heavy
# (about 25 bytes per point); a random subsample is shown and the page says so.
MAX_REPORT_POINTS = 20_000


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _file_uri(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return _data_uri(Path(path).read_bytes())


def _round(values: np.ndarray) -> list:
    scale = float(np.abs(values).max()) if values.size else 1.0
    digits = int(np.clip(4 - np.floor(np.log10(scale if scale > 0 else 1.0)), 1, 8))
    return np.round(values.astype(np.float64), digits).tolist()


def _report_data(run_dir: Path, record: dict[str, Any], result: AnalysisResult, z: np.ndarray,
                 log_entries: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    n = len(z)
    rng = np.random.default_rng(seed)
    shown = np.arange(n) if n <= MAX_REPORT_POINTS else np.sort(
        rng.choice(n, MAX_REPORT_POINTS, replace=False))
    clustering = result.clustering
    coords = result.pca.transform(z)
    ratio = result.pca.explained_variance_ratio
    if coords.shape[1] == 1:
        coords = np.c_[coords, np.zeros(n)]
    spaces = {"PCA": {"key": "pca", "x": _round(coords[shown, 0]), "y": _round(coords[shown, 1]),
                      "xlabel": f"PC1 ({100 * ratio[0]:.1f}% of variance)",
                      "ylabel": f"PC2 ({100 * ratio[1]:.1f}%)" if len(ratio) > 1 else "PC2",
                      "reps": _round(coords[clustering.representatives, :2])}}
    if result.umap is not None:
        emb = result.umap
        spaces["UMAP"] = {"key": "umap", "x": _round(emb[shown, 0]), "y": _round(emb[shown, 1]),
                          "xlabel": "UMAP 1", "ylabel": "UMAP 2",
                          "reps": _round(emb[clustering.representatives, :2])}
    colours = cluster_colours(clustering.k)
    maps = result.cluster_maps
    clusters = [{
        "id": i, "colour": colours[i], "population": int(clustering.populations[i]),
        "fraction": float(clustering.populations[i] / n),
        "rep": int(clustering.representatives[i]),
        "map": maps[i].path.relative_to(result.out_dir).as_posix() if maps else None,
        "thumb": _data_uri(maps[i].thumbnail_png) if maps else None,
    } for i in range(clustering.k)]
    surfaces = [{"id": i, "colour": colours[i], "level": maps[i].level,
                 "png": _data_uri(maps[i].surface_png)}
                for i in range(len(maps)) if maps[i].surface_png is not None]
    trajectories = [{
        "pc": pc, "t": _round(result.pc_coords[pc]),
        "maps": [m.path.relative_to(result.out_dir).as_posix() for m in pc_maps],
        "thumbs": [_data_uri(m.thumbnail_png) for m in pc_maps],
        "ratio": float(ratio[pc - 1]),
    } for pc, pc_maps in result.pc_maps.items()]
    prep = record.get("preprocessing", {})
    cfg = record.get("config", {})
    box, box_in = prep.get("box"), prep.get("box_in")
    pixel_in = prep.get("pixel_size_in_A")
    pixel = pixel_in * box_in / box if (pixel_in and box and box_in) else None
    figures = {key: _file_uri(result.files.get(key)) for key in
               ("density_pca", "density_umap", "explained_variance", "training_curves")}
    return {
        "run": {"path": str(run_dir.resolve()), "name": run_dir.resolve().name,
                "version": record.get("hetsiren_version"), "created": record.get("created"),
                "particles": cfg.get("particles"), "zdim": int(z.shape[1]),
                "box": box, "box_in": box_in, "pixel_size_A": pixel,
                "epochs": len(log_entries) or cfg.get("epochs")},
        "n_total": n, "n_shown": int(len(shown)), "index": shown.tolist(),
        "label": clustering.labels[shown].tolist(), "k": clustering.k, "seed": clustering.seed,
        "spaces": spaces, "clusters": clusters, "trajectories": trajectories,
        "surfaces": surfaces,
        "figures": {k: v for k, v in figures.items() if v},
        "has_chimerax": "chimerax" in result.files,
        "health": training_health(log_entries),
    }


def build_report_html(data: dict[str, Any], config_record: dict[str, Any]) -> str:
    """The page for ``data`` (see ``_report_data``) and the run's ``config.json`` record."""
    # "<" as its JSON escape: no user text can close the <script> element or open a comment.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    config_text = html.escape(json.dumps(config_record, indent=2, default=str))
    title = html.escape(f"HetSIREN landscape - {data['run']['name']}")
    health = data.get("health")
    warning = (f'<section class="card" id="health-warning" style="border-left:6px solid #c62828">'
               f"<h2>Training did not find a landscape</h2><p>{html.escape(health)}</p>"
               "</section>" if health else "")
    return _fill_template(_TEMPLATE, {"TITLE": title, "HEALTH": warning, "CONFIG": config_text,
                                      "STYLE": _STYLE, "SCRIPT": _SCRIPT, "DATA": payload})


# A marker of the template: %%NAME%%.
_MARKER = re.compile(r"%%([A-Z]+)%%")


def _fill_template(template: str, values: dict[str, str]) -> str:
    """Replace every marker of ``template`` in one pass: text put in (paths, config values
    chosen by the user) is never scanned for markers again, whatever it contains."""
    return _MARKER.sub(lambda m: values[m.group(1)], template)


def write_report(path: str | Path, run_dir: str | Path, record: dict[str, Any],
                 result: AnalysisResult, z: np.ndarray, log_entries: list[dict[str, Any]]
                 ) -> Path:
    """Write the self-contained HTML report of an analysis."""
    data = _report_data(Path(run_dir), record, result, z, log_entries)
    page = build_report_html(data, record)
    log.info("report: %s (%.1f MB, %d of %d particles in the interactive plot)", path,
             len(page) / 1e6, data["n_shown"], data["n_total"])
    return atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<style>%%STYLE%%</style>
</head>
<body>
<header>
  <h1>HetSIREN conformational landscape <span id="run-name"></span></h1>
  <div id="run-facts" class="facts"></div>
</header>
<main>
%%HEALTH%%
<section class="card" id="landscape-card">
  <div class="card-head">
    <h2>Landscape</h2>
    <div class="controls">
      <span id="space-buttons"></span>
      <button id="clear-btn" type="button">Clear selection</button>
    </div>
  </div>
  <p class="hint">Hover a point for its particle and cluster. Click a point, a cluster card
  or a legend chip to highlight that cluster (click again to remove it). Drag to draw a lasso;
  its polygon downloads as a region file for <code>hetsiren export --region</code>.</p>
  <div class="plot-row">
    <div class="plot-wrap"><canvas id="plot" width="760" height="600"></canvas>
      <div id="tooltip" class="tooltip" hidden></div></div>
    <aside class="side">
      <div id="legend" class="legend"></div>
      <div id="selection" class="selection"></div>
    </aside>
  </div>
  <p id="subsample-note" class="note"></p>
</section>
<section class="card">
  <h2>Cluster representatives</h2>
  <p class="hint">KMeans on the full latent space; each map is decoded at the particle nearest
  the cluster centre. Thumbnails: projections (top) and central sections (bottom) along z, y
  and x.</p>
  <div id="clusters" class="cluster-grid"></div>
</section>
<section class="card" id="surface-card">
  <h2>Map surfaces</h2>
  <p class="hint">Isosurfaces of the cluster maps at the level the ChimeraX script uses
  (enclosing 5% of the box), dust hidden (pieces under 5% of the largest, as ChimeraX's
  <code>surface dust</code>), shaded, seen down z, y and x; right-handed views, so a map of
  the wrong hand looks mirrored (fix it with <code>hetsiren decode --flip</code>).</p>
  <div id="surfaces" class="surface-grid"></div>
</section>
<section class="card" id="traj-card">
  <h2>Principal-component trajectories</h2>
  <p class="hint">Maps decoded at evenly spaced points along each PC (other PCs at the latent
  mean). Drag the slider or press play.</p>
  <div id="trajectories"></div>
</section>
<section class="card">
  <h2>Landscape diagnostics and training</h2>
  <div id="figures" class="figure-grid"></div>
</section>
<section class="card">
  <h2>Using these results</h2>
  <div id="usage"></div>
  <details><summary>Run configuration (config.json)</summary><pre>%%CONFIG%%</pre></details>
</section>
</main>
<footer id="footer"></footer>
<script id="report-data" type="application/json">%%DATA%%</script>
<script>%%SCRIPT%%</script>
</body>
</html>
"""

_STYLE = """
:root { --fg:#1d2330; --muted:#5b6577; --line:#dfe3ea; --bg:#f4f6f9; --accent:#2f6fd6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,
  sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1f2a3c; color:#fff; padding:18px 28px 14px; }
header h1 { margin:0 0 6px; font-size:21px; font-weight:600; }
header h1 span { color:#9fc1ff; font-weight:500; }
.facts { display:flex; flex-wrap:wrap; gap:6px 18px; font-size:13px; color:#cfd8e6; }
.facts b { color:#fff; font-weight:600; }
main { max-width:1320px; margin:0 auto; padding:18px 20px 8px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 18px;
  margin-bottom:18px; box-shadow:0 1px 2px rgba(20,30,50,.04); }
.card h2 { margin:0 0 6px; font-size:17px; }
.card-head { display:flex; align-items:center; justify-content:space-between; gap:12px; }
.hint { color:var(--muted); margin:2px 0 10px; font-size:13px; }
.note { color:var(--muted); font-size:12.5px; margin:8px 0 0; }
button { font:inherit; font-size:13px; padding:4px 11px; border:1px solid #c4cbd6;
  border-radius:6px; background:#fff; cursor:pointer; }
button:hover { border-color:var(--accent); }
button.on { background:var(--accent); color:#fff; border-color:var(--accent); }
.controls { display:flex; gap:8px; align-items:center; }
#space-buttons button { margin-right:4px; }
.plot-row { display:flex; gap:16px; align-items:flex-start; }
.plot-wrap { position:relative; flex:0 0 auto; }
canvas#plot { border:1px solid var(--line); border-radius:6px; cursor:crosshair;
  background:#fff; display:block; }
.tooltip { position:absolute; pointer-events:none; background:rgba(25,32,45,.92); color:#fff;
  padding:5px 8px; border-radius:5px; font-size:12px; white-space:nowrap; }
.side { flex:1 1 260px; min-width:220px; }
.legend { display:flex; flex-wrap:wrap; gap:5px; margin-bottom:12px; }
.chip { display:inline-flex; align-items:center; gap:5px; border:1px solid var(--line);
  border-radius:12px; padding:2px 9px 2px 5px; font-size:12px; cursor:pointer; background:#fff; }
.chip i { width:11px; height:11px; border-radius:50%; display:inline-block; }
.chip.on { border-color:#1d2330; box-shadow:0 0 0 1px #1d2330 inset; font-weight:600; }
.selection { font-size:13px; border-top:1px solid var(--line); padding-top:10px; }
.selection code, .usage code, #usage code { background:#f0f2f6; padding:1px 5px;
  border-radius:4px; font-size:12px; word-break:break-all; }
.selection .actions { display:flex; flex-wrap:wrap; gap:6px; margin-top:8px; }
.surface-grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(480px,1fr));
  gap:12px; }
.surface { margin:0; border:1px solid var(--line); border-left:5px solid var(--c);
  border-radius:8px; padding:6px; background:#fff; }
.surface img { width:100%; display:block; }
.surface figcaption { font-size:12px; color:var(--muted); }
.cluster-grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(250px,1fr));
  gap:12px; }
.cluster { border:1px solid var(--line); border-radius:8px; padding:8px 10px 10px;
  cursor:pointer; border-top:5px solid var(--c); background:#fff; }
.cluster.on { box-shadow:0 0 0 2px var(--c); }
.cluster .top { display:flex; justify-content:space-between; align-items:baseline; }
.cluster .name { font-weight:600; }
.cluster .pop { color:var(--muted); font-size:12px; }
.cluster img { width:100%; image-rendering:auto; margin-top:6px; border-radius:4px;
  background:#fff; }
.cluster .bar { height:5px; background:#edf0f4; border-radius:3px; margin-top:5px; }
.cluster .bar span { display:block; height:100%; border-radius:3px; background:var(--c); }
.cluster .file { font-size:11px; color:var(--muted); margin-top:4px; }
.traj { display:flex; gap:16px; align-items:flex-start; margin:8px 0 16px; flex-wrap:wrap; }
.traj .player { flex:0 0 340px; }
.traj .player img { width:340px; border:1px solid var(--line); border-radius:6px; }
.traj .strip { display:flex; gap:6px; flex-wrap:wrap; flex:1 1 400px; }
.traj .strip figure { margin:0; width:150px; font-size:11px; color:var(--muted);
  text-align:center; cursor:pointer; }
.traj .strip figure.on img { outline:2px solid var(--accent); }
.traj .strip img { width:150px; border:1px solid var(--line); border-radius:4px; }
.traj input[type=range] { width:250px; vertical-align:middle; }
.figure-grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(380px,1fr));
  gap:14px; }
.figure-grid figure { margin:0; }
.figure-grid img { width:100%; border:1px solid var(--line); border-radius:6px; }
.figure-grid figcaption { font-size:12px; color:var(--muted); margin-top:3px; }
table { border-collapse:collapse; font-size:13px; }
td, th { padding:3px 10px 3px 0; text-align:left; }
pre { background:#f7f8fa; border:1px solid var(--line); border-radius:6px; padding:10px;
  overflow:auto; max-height:420px; font-size:12px; }
footer { text-align:center; color:var(--muted); font-size:12px; padding:4px 0 20px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var spaceNames = Object.keys(D.spaces);
  var state = { space: spaceNames[0], highlighted: new Set(), lasso: null, lassoSel: null };
  var canvas = document.getElementById("plot");
  var ctx = canvas.getContext("2d");
  var tooltip = document.getElementById("tooltip");
  var W = canvas.width, H = canvas.height, M = { l: 62, r: 16, t: 14, b: 48 };
  var dpr = window.devicePixelRatio || 1;
  canvas.style.width = W + "px"; canvas.style.height = H + "px";
  canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
  ctx.scale(dpr, dpr);

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); }); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  function pct(f) { return (100 * f).toFixed(f < 0.01 ? 2 : 1) + "%"; }

  // ---- header ---------------------------------------------------------------------------
  var r = D.run;
  document.getElementById("run-name").textContent = "\u2014 " + r.name;
  var facts = [["particles", fmt(D.n_total)], ["latent dim", r.zdim],
    ["training box", r.box ? r.box + " px" : "?"],
    ["pixel", r.pixel_size_A ? r.pixel_size_A.toFixed(3) + " \u00c5" : "?"],
    ["epochs", r.epochs || "?"], ["clusters", D.k], ["input", r.particles || "?"]];
  var factsEl = document.getElementById("run-facts");
  facts.forEach(function (f) {
    var s = el("span"); s.appendChild(document.createTextNode(f[0] + " "));
    s.appendChild(el("b", null, String(f[1]))); factsEl.appendChild(s);
  });
  document.getElementById("footer").textContent = "hetsiren " + (r.version || "") +
    " \u00b7 run " + r.path + (r.created ? " \u00b7 trained " + r.created : "");
  document.getElementById("subsample-note").textContent = D.n_shown < D.n_total ?
    "Showing a random subsample of " + fmt(D.n_shown) + " of " + fmt(D.n_total) +
    " particles for speed; clusters, populations and region exports use all particles." :
    "All " + fmt(D.n_total) + " particles are shown.";

  // ---- scales ---------------------------------------------------------------------------
  var scale;
  function makeScale() {
    var s = D.spaces[state.space], xs = s.x.concat(s.reps.map(function (p) { return p[0]; })),
      ys = s.y.concat(s.reps.map(function (p) { return p[1]; }));
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 - x0 < 1e-12) { x0 -= 1; x1 += 1; }
    if (y1 - y0 < 1e-12) { y0 -= 1; y1 += 1; }
    var px = 0.04 * (x1 - x0), py = 0.04 * (y1 - y0);
    x0 -= px; x1 += px; y0 -= py; y1 += py;
    var pw = W - M.l - M.r, ph = H - M.t - M.b;
    scale = {
      x0: x0, x1: x1, y0: y0, y1: y1,
      sx: function (v) { return M.l + (v - x0) / (x1 - x0) * pw; },
      sy: function (v) { return M.t + (1 - (v - y0) / (y1 - y0)) * ph; },
      ix: function (p) { return x0 + (p - M.l) / pw * (x1 - x0); },
      iy: function (p) { return y0 + (1 - (p - M.t) / ph) * (y1 - y0); }
    };
  }
  function ticks(a, b, n) {
    var step = Math.pow(10, Math.floor(Math.log10((b - a) / n)));
    var err = (b - a) / n / step;
    if (err >= 7.5) { step *= 10; } else if (err >= 3.5) { step *= 5; }
    else if (err >= 1.5) { step *= 2; }
    var out = [];
    for (var v = Math.ceil(a / step) * step; v <= b + 1e-12; v += step) {
      out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return out;
  }

  // ---- selection logic ------------------------------------------------------------------
  function isActive(i) {
    if (state.lassoSel) { return state.lassoSel.has(i); }
    if (state.highlighted.size) { return state.highlighted.has(D.label[i]); }
    return true;
  }
  function inside(poly, x, y) {
    var c = false;
    for (var i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      var xi = poly[i][0], yi = poly[i][1], xj = poly[j][0], yj = poly[j][1];
      if (((yi > y) !== (yj > y)) && (x < (xj - xi) * (y - yi) / (yj - yi) + xi)) { c = !c; }
    }
    return c;
  }

  // ---- drawing --------------------------------------------------------------------------
  function draw() {
    var s = D.spaces[state.space];
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    ctx.strokeStyle = "#eef1f5"; ctx.lineWidth = 1;
    ctx.fillStyle = "#5b6577"; ctx.font = "11px system-ui, sans-serif";
    ticks(scale.x0, scale.x1, 7).forEach(function (v) {
      var x = scale.sx(v); ctx.beginPath(); ctx.moveTo(x, M.t); ctx.lineTo(x, H - M.b);
      ctx.stroke(); ctx.textAlign = "center"; ctx.fillText(+v.toPrecision(4), x, H - M.b + 15);
    });
    ticks(scale.y0, scale.y1, 7).forEach(function (v) {
      var y = scale.sy(v); ctx.beginPath(); ctx.moveTo(M.l, y); ctx.lineTo(W - M.r, y);
      ctx.stroke(); ctx.textAlign = "right"; ctx.fillText(+v.toPrecision(4), M.l - 6, y + 4);
    });
    ctx.strokeStyle = "#9aa3b2"; ctx.strokeRect(M.l, M.t, W - M.l - M.r, H - M.t - M.b);
    ctx.fillStyle = "#1d2330"; ctx.font = "13px system-ui, sans-serif"; ctx.textAlign = "center";
    ctx.fillText(s.xlabel, M.l + (W - M.l - M.r) / 2, H - 10);
    ctx.save(); ctx.translate(16, M.t + (H - M.t - M.b) / 2); ctx.rotate(-Math.PI / 2);
    ctx.fillText(s.ylabel, 0, 0); ctx.restore();

    var n = s.x.length, rad = n > 8000 ? 1.4 : (n > 2000 ? 2.0 : 3.0), drawn = 0;
    var anySel = state.lassoSel || state.highlighted.size;
    ctx.save(); ctx.beginPath(); ctx.rect(M.l, M.t, W - M.l - M.r, H - M.t - M.b); ctx.clip();
    if (anySel) {
      ctx.fillStyle = "rgba(150,158,170,0.25)";
      for (var i = 0; i < n; i++) {
        if (!isActive(i)) {
          ctx.fillRect(scale.sx(s.x[i]) - rad / 2, scale.sy(s.y[i]) - rad / 2, rad, rad);
        }
      }
    }
    ctx.globalAlpha = anySel ? 0.9 : 0.7;
    for (var j = 0; j < n; j++) {
      if (!isActive(j)) { continue; }
      ctx.fillStyle = D.clusters[D.label[j]].colour;
      ctx.beginPath(); ctx.arc(scale.sx(s.x[j]), scale.sy(s.y[j]), rad, 0, 2 * Math.PI);
      ctx.fill(); drawn++;
    }
    ctx.globalAlpha = 1;
    s.reps.forEach(function (p, c) {
      var x = scale.sx(p[0]), y = scale.sy(p[1]);
      var on = !state.highlighted.size || state.highlighted.has(c);
      ctx.beginPath(); ctx.arc(x, y, 6.5, 0, 2 * Math.PI);
      ctx.fillStyle = D.clusters[c].colour; ctx.globalAlpha = on ? 1 : 0.35; ctx.fill();
      ctx.lineWidth = 1.6; ctx.strokeStyle = "#111"; ctx.stroke();
      ctx.font = "bold 11px system-ui, sans-serif"; ctx.textAlign = "left";
      ctx.lineWidth = 3; ctx.strokeStyle = "#fff"; ctx.strokeText(String(c), x + 8, y - 6);
      ctx.fillStyle = "#111"; ctx.fillText(String(c), x + 8, y - 6); ctx.globalAlpha = 1;
    });
    if (state.lasso && state.lasso.length > 1) {
      ctx.beginPath(); ctx.moveTo(state.lasso[0][0], state.lasso[0][1]);
      state.lasso.forEach(function (p) { ctx.lineTo(p[0], p[1]); });
      ctx.closePath(); ctx.fillStyle = "rgba(47,111,214,0.08)"; ctx.fill();
      ctx.setLineDash([5, 4]); ctx.strokeStyle = "#2f6fd6"; ctx.lineWidth = 1.5; ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.restore();
    canvas.dataset.drawn = String(drawn);
  }

  // ---- legend, cluster cards, selection panel --------------------------------------------
  var legend = document.getElementById("legend");
  var chips = D.clusters.map(function (c) {
    var chip = el("span", { "class": "chip", title: "cluster " + c.id + ": " + fmt(c.population) +
      " particles" });
    var dot = el("i"); dot.style.background = c.colour; chip.appendChild(dot);
    chip.appendChild(document.createTextNode(c.id + " \u00b7 " + pct(c.fraction)));
    chip.addEventListener("click", function () { toggleCluster(c.id); });
    legend.appendChild(chip); return chip;
  });
  var surfaceBox = document.getElementById("surfaces");
  if (!D.surfaces || !D.surfaces.length) {
    document.getElementById("surface-card").hidden = true;
  } else {
    D.surfaces.forEach(function (sf) {
      var fig = el("figure", { "class": "surface" });
      fig.style.setProperty("--c", sf.colour);
      fig.appendChild(el("img", { src: sf.png, alt: "cluster " + sf.id + " isosurface" }));
      fig.appendChild(el("figcaption", null, "Cluster " + sf.id + " \u00b7 level " +
        (+sf.level).toPrecision(3)));
      surfaceBox.appendChild(fig);
    });
  }
  var grid = document.getElementById("clusters");
  var cards = D.clusters.map(function (c) {
    var card = el("div", { "class": "cluster", title: "click to highlight in the landscape" });
    card.style.setProperty("--c", c.colour);
    var top = el("div", { "class": "top" });
    top.appendChild(el("span", { "class": "name" }, "Cluster " + c.id));
    top.appendChild(el("span", { "class": "pop" }, fmt(c.population) + " particles \u00b7 " +
      pct(c.fraction)));
    card.appendChild(top);
    var bar = el("div", { "class": "bar" }), fill = el("span");
    var maxFrac = Math.max.apply(null, D.clusters.map(function (q) { return q.fraction; }));
    fill.style.width = (100 * c.fraction / maxFrac).toFixed(1) + "%";
    bar.appendChild(fill); card.appendChild(bar);
    if (c.thumb) {
      card.appendChild(el("img", { src: c.thumb, alt: "cluster " + c.id + " map thumbnail",
        "class": "thumb" }));
    }
    card.appendChild(el("div", { "class": "file" }, "representative particle " + c.rep +
      (c.map ? " \u00b7 " + c.map : " \u00b7 (maps not decoded)")));
    card.addEventListener("click", function () { toggleCluster(c.id); });
    grid.appendChild(card); return card;
  });

  function download(name, text) {
    var a = el("a", { href: URL.createObjectURL(new Blob([text], { type: "text/plain" })),
      download: name });
    document.body.appendChild(a); a.click(); a.remove();
  }
  function selectionPanel() {
    var box = document.getElementById("selection");
    box.textContent = "";
    var run = D.run.path;
    if (state.lassoSel) {
      box.appendChild(el("div", null, "Lasso: " + fmt(state.lassoSel.size) +
        " of the " + fmt(D.n_shown) + " plotted particles."));
      var poly = state.lasso.map(function (p) {
        return [+scale.ix(p[0]).toPrecision(6), +scale.iy(p[1]).toPrecision(6)];
      });
      var region = D.spaces[state.space].key === "pca" ?
        { space: "pca", pcs: [1, 2], polygon: poly } : { space: "umap", polygon: poly };
      var cmd = el("div"); cmd.appendChild(document.createTextNode("Export all particles " +
        "inside it: ")); cmd.appendChild(el("code", null, "hetsiren export " + run +
        " --region region.json -o subset.star")); box.appendChild(cmd);
      var act = el("div", { "class": "actions" });
      var b1 = el("button", { type: "button" }, "Download region.json");
      b1.addEventListener("click", function () {
        download("region.json", JSON.stringify(region, null, 1));
      });
      var b2 = el("button", { type: "button" }, "Download plotted indices");
      b2.addEventListener("click", function () {
        var idx = []; state.lassoSel.forEach(function (i) { idx.push(D.index[i]); });
        download("indices.txt", idx.sort(function (a, b) { return a - b; }).join("\n") + "\n");
      });
      act.appendChild(b1); act.appendChild(b2); box.appendChild(act);
    } else if (state.highlighted.size) {
      var ids = Array.from(state.highlighted).sort(function (a, b) { return a - b; });
      var total = ids.reduce(function (t, i) { return t + D.clusters[i].population; }, 0);
      box.appendChild(el("div", null, "Clusters " + ids.join(", ") + ": " + fmt(total) +
        " particles (" + pct(total / D.n_total) + ")."));
      var c2 = el("div"); c2.appendChild(document.createTextNode("Export them: "));
      c2.appendChild(el("code", null, "hetsiren export " + run + " --clusters " + ids.join(",") +
        " -o subset.star")); box.appendChild(c2);
    } else {
      box.appendChild(el("div", { "class": "hint" }, "Nothing selected."));
    }
    chips.forEach(function (chip, i) { chip.classList.toggle("on", state.highlighted.has(i)); });
    cards.forEach(function (card, i) { card.classList.toggle("on", state.highlighted.has(i)); });
  }
  function toggleCluster(c) {
    state.lasso = null; state.lassoSel = null;
    if (state.highlighted.has(c)) { state.highlighted.delete(c); }
    else { state.highlighted.add(c); }
    draw(); selectionPanel();
  }
  document.getElementById("clear-btn").addEventListener("click", function () {
    state.highlighted.clear(); state.lasso = null; state.lassoSel = null; draw();
    selectionPanel();
  });

  // ---- space buttons --------------------------------------------------------------------
  var sb = document.getElementById("space-buttons");
  var spaceButtons = spaceNames.map(function (name) {
    var b = el("button", { type: "button" }, name);
    b.addEventListener("click", function () {
      state.space = name; state.lasso = null; state.lassoSel = null; makeScale(); draw();
      selectionPanel();
      spaceButtons.forEach(function (o) { o.classList.toggle("on", o === b); });
    });
    sb.appendChild(b); return b;
  });
  spaceButtons[0].classList.add("on");

  // ---- mouse: hover, click, lasso -------------------------------------------------------
  function mouse(ev) {
    var rect = canvas.getBoundingClientRect();
    return [ev.clientX - rect.left, ev.clientY - rect.top];
  }
  function nearest(p) {
    var s = D.spaces[state.space], best = -1, bd = 64;
    for (var i = 0; i < s.x.length; i++) {
      var dx = scale.sx(s.x[i]) - p[0], dy = scale.sy(s.y[i]) - p[1], d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  var drag = null;
  canvas.addEventListener("mousedown", function (ev) { drag = [mouse(ev)]; });
  canvas.addEventListener("mousemove", function (ev) {
    var p = mouse(ev);
    if (drag) {
      drag.push(p);
      if (drag.length > 3) { state.lasso = drag; tooltip.hidden = true; draw(); }
      return;
    }
    var i = nearest(p);
    if (i < 0) { tooltip.hidden = true; return; }
    var s = D.spaces[state.space];
    tooltip.textContent = "particle " + D.index[i] + " \u00b7 cluster " + D.label[i] + " \u00b7 (" +
      (+s.x[i].toPrecision(3)) + ", " + (+s.y[i].toPrecision(3)) + ")";
    tooltip.style.left = (p[0] + 12) + "px"; tooltip.style.top = (p[1] + 12) + "px";
    tooltip.hidden = false;
  });
  canvas.addEventListener("mouseleave", function () { tooltip.hidden = true; });
  window.addEventListener("mouseup", function (ev) {
    if (!drag) { return; }
    var pts = drag; drag = null;
    if (pts.length > 3) {
      var poly = pts.map(function (q) { return [scale.ix(q[0]), scale.iy(q[1])]; });
      var s = D.spaces[state.space], sel = new Set();
      for (var i = 0; i < s.x.length; i++) { if (inside(poly, s.x[i], s.y[i])) { sel.add(i); } }
      state.highlighted.clear(); state.lasso = pts; state.lassoSel = sel;
      draw(); selectionPanel();
    } else if (ev.target === canvas) {
      var hit = nearest(mouse(ev));
      if (hit >= 0) { toggleCluster(D.label[hit]); }
    }
  });

  // ---- trajectories ---------------------------------------------------------------------
  var trajBox = document.getElementById("trajectories");
  if (!D.trajectories.length) {
    document.getElementById("traj-card").hidden = true;
  }
  D.trajectories.forEach(function (tr) {
    var row = el("div", { "class": "traj" });
    var player = el("div", { "class": "player" });
    player.appendChild(el("h3", null, "PC" + tr.pc + " (" + pct(tr.ratio) + " of variance)"));
    var img = el("img", { src: tr.thumbs[0], alt: "PC" + tr.pc + " trajectory frame" });
    player.appendChild(img);
    var ctl = el("div");
    var play = el("button", { type: "button" }, "\u25b6 play");
    var slider = el("input", { type: "range", min: "0", max: String(tr.thumbs.length - 1),
      value: "0", step: "1", "aria-label": "PC" + tr.pc + " frame" });
    var lab = el("span", { "class": "pop" });
    ctl.appendChild(play); ctl.appendChild(document.createTextNode(" "));
    ctl.appendChild(slider); ctl.appendChild(lab); player.appendChild(ctl);
    row.appendChild(player);
    var strip = el("div", { "class": "strip" });
    var figs = tr.thumbs.map(function (t, i) {
      var f = el("figure"); f.appendChild(el("img", { src: t, alt: tr.maps[i] }));
      f.appendChild(el("figcaption", null, tr.maps[i] + "  PC" + tr.pc + " = " +
        (+tr.t[i].toPrecision(3))));
      f.addEventListener("click", function () { show(i); });
      strip.appendChild(f); return f;
    });
    row.appendChild(strip);
    var frame = 0, dir = 1, timer = null;
    function show(i) {
      frame = i; img.src = tr.thumbs[i]; slider.value = String(i);
      lab.textContent = "  PC" + tr.pc + " = " + (+tr.t[i].toPrecision(3));
      figs.forEach(function (f, j) { f.classList.toggle("on", j === i); });
    }
    slider.addEventListener("input", function () { show(+slider.value); });
    play.addEventListener("click", function () {
      if (timer) { clearInterval(timer); timer = null; play.textContent = "\u25b6 play"; return; }
      play.textContent = "\u275a\u275a pause";
      timer = setInterval(function () {
        if (frame + dir < 0 || frame + dir >= tr.thumbs.length) { dir = -dir; }
        show(frame + dir);
      }, 450);
    });
    show(0);
    trajBox.appendChild(row);
  });

  // ---- static figures and usage ---------------------------------------------------------
  var figBox = document.getElementById("figures");
  [["density_pca", "Particle density in PC1-PC2 (log colour scale)"],
   ["density_umap", "Particle density in UMAP (log colour scale)"],
   ["explained_variance", "Latent variance explained by each principal component"],
   ["training_curves", "Loss terms per epoch (log.jsonl)"]].forEach(function (f) {
    if (!D.figures[f[0]]) { return; }
    var fig = el("figure"); fig.appendChild(el("img", { src: D.figures[f[0]], alt: f[1] }));
    fig.appendChild(el("figcaption", null, f[1])); figBox.appendChild(fig);
  });
  var usage = document.getElementById("usage");
  var lines = [
    ["Particles of clusters 0 and 2 back to RELION (all columns and optics kept)",
     "hetsiren export " + r.path + " --clusters 0,2 -o subset.star"],
    ["... or to cryoSPARC, with the latent vector as extra columns",
     "hetsiren export " + r.path + " --clusters 0,2 --add-latent -o subset.cs"],
    ["Check a decoded state against a reconstruction from its nearest particles (paper Fig. 10)",
     "hetsiren validate " + r.path + " --cluster 0"]];
  if (D.has_chimerax) {
    lines.push(["Open every map in ChimeraX (cluster maps tiled, PC trajectories as series)",
      "open " + r.path + "/analysis/chimerax.cxc"]);
  }
  var tbl = el("table");
  lines.forEach(function (l) {
    var tr = el("tr"); tr.appendChild(el("td", null, l[0]));
    var td = el("td"); td.appendChild(el("code", null, l[1])); tr.appendChild(td);
    tbl.appendChild(tr);
  });
  usage.appendChild(tbl);

  makeScale(); draw(); selectionPanel();
  document.body.dataset.ready = "1";
})();
"""
