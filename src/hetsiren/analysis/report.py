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
import functools
import html
import json
import logging
import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hetsiren.analysis.plots import cluster_colours
from hetsiren.rundir import RunRecord, atomic_write
from hetsiren.train.health import training_health

if TYPE_CHECKING:
    from hetsiren.analysis.analyze import AnalysisResult

__all__ = ["MAX_REPORT_POINTS", "build_report_html", "fill_template", "write_report"]

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


def _report_data(run_dir: Path, record: RunRecord, result: AnalysisResult, z: np.ndarray,
                 log_entries: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    n = len(z)
    rng = np.random.default_rng(seed)
    shown = np.arange(n) if n <= MAX_REPORT_POINTS else np.sort(
        rng.choice(n, MAX_REPORT_POINTS, replace=False))
    clustering = result.clustering
    coords = result.pca_coords
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
    surfaces = [{"id": i, "colour": colours[i], "level": m.level, "png": _data_uri(png)}
                for i, m in enumerate(maps) if (png := m.surface_png) is not None]
    trajectories = [{
        "pc": pc, "t": _round(result.pc_coords[pc]),
        "maps": [m.path.relative_to(result.out_dir).as_posix() for m in pc_maps],
        "thumbs": [_data_uri(m.thumbnail_png) for m in pc_maps],
        "ratio": float(ratio[pc - 1]),
    } for pc, pc_maps in result.pc_maps.items()]
    prep, cfg = record.preprocessing, record.train
    figures = {key: _file_uri(result.files.get(key)) for key in
               ("density_pca", "density_umap", "explained_variance", "training_curves")}
    return {
        "run": {"path": str(run_dir.resolve()), "name": run_dir.resolve().name,
                "version": record.version, "created": record.created,
                "particles": cfg.particles, "zdim": int(z.shape[1]),
                "box": prep.box, "box_in": prep.box_in, "pixel_size_A": prep.pixel_size_A,
                "epochs": len(log_entries) or cfg.epochs},
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
    return fill_template(_template("report_page.html"), {
        "TITLE": title, "HEALTH": warning, "CONFIG": config_text,
        "STYLE": _template("report.css"), "SCRIPT": _template("report.js"), "DATA": payload})


# A marker of a template: %%NAME%%.
_MARKER = re.compile(r"%%([A-Z]+)%%")


@functools.cache
def _template(name: str) -> str:
    """A file of the package's ``analysis/templates`` (package data)."""
    folder = resources.files("hetsiren.analysis") / "templates"
    return (folder / name).read_text("utf-8")


def fill_template(template: str, values: dict[str, str]) -> str:
    """Replace every ``%%NAME%%`` marker of ``template`` in one pass: text put in (paths,
    config values chosen by the user) is never scanned for markers again, whatever it
    contains. Every marker must have a value and every value a marker."""
    names = set(_MARKER.findall(template))
    if names != set(values):
        raise ValueError(f"template markers {sorted(names)} do not match the values given "
                         f"{sorted(values)}")
    return _MARKER.sub(lambda m: values[m.group(1)], template)


def write_report(path: str | Path, run_dir: str | Path, record: RunRecord,
                 result: AnalysisResult, z: np.ndarray, log_entries: list[dict[str, Any]]
                 ) -> Path:
    """Write the self-contained HTML report of an analysis."""
    data = _report_data(Path(run_dir), record, result, z, log_entries)
    page = build_report_html(data, record.to_dict())
    log.info("report: %s (%.1f MB, %d of %d particles in the interactive plot)", path,
             len(page) / 1e6, data["n_shown"], data["n_total"])
    return atomic_write(path, lambda p: p.write_text(page, encoding="utf-8"))
