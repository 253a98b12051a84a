"""PNG figures of a run: landscape, density, explained variance, training curves, FSC, maps.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no display needed)
and written atomically. ``map_thumbnail`` makes the per-map picture used by the HTML report:
projections (top row) and central sections (bottom row) along z, y and x.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from hetsiren.train.runio import LOG, atomic_write

__all__ = [
    "cluster_colours",
    "map_thumbnail",
    "plot_density",
    "plot_explained_variance",
    "plot_fsc",
    "plot_guinier",
    "plot_histograms",
    "plot_landscape",
    "plot_training_curves",
    "read_training_log",
    "save_figure",
]

log = logging.getLogger(__name__)

# Loss terms drawn in the training-curve figure, in this order (DESIGN.md log.jsonl keys).
LOSS_KEYS = ("total", "data", "l1", "negativity", "tv_l1", "tv_l2", "pose_decoupling",
             "ctf_decoupling", "focus")
# Points drawn in a scatter plot: more only slows the figure without showing more.
_MAX_SCATTER = 50_000
# Thumbnail panel size in pixels (small boxes are enlarged to this).
_PANEL_PX = 96
_DPI = 120


def cluster_colours(k: int) -> list[str]:
    """``k`` distinct hex colours (tab10/tab20, then evenly spaced hues)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if k <= 10:
        cmap = colormaps["tab10"]
        return [to_hex(cmap(i)) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        order = [*range(0, 20, 2), *range(1, 20, 2)]  # strong colours first
        return [to_hex(cmap(order[i])) for i in range(k)]
    cmap = colormaps["hsv"]
    return [to_hex(cmap(i / k)) for i in range(k)]


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically."""
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=_DPI,
                                                    bbox_inches="tight"))


def _subsample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def plot_landscape(coords: np.ndarray, labels: np.ndarray, path: str | Path,
                   axis_names: Sequence[str] = ("PC1", "PC2"),
                   representatives: np.ndarray | None = None, title: str = "") -> Path:
    """Scatter of ``(N, 2)`` landscape coordinates coloured by ``(N,)`` cluster labels.

    Representatives (``(k,)`` particle indices) are drawn as numbered black-edged markers.
    """
    k = int(labels.max()) + 1 if len(labels) else 0
    if representatives is not None:
        k = max(k, len(representatives))
    colours = np.array(cluster_colours(max(k, 1)))
    keep = _subsample(len(coords), _MAX_SCATTER)
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot()
    size = float(np.clip(2e4 / max(len(keep), 1), 1.0, 12.0))
    ax.scatter(coords[keep, 0], coords[keep, 1], c=colours[labels[keep]], s=size, alpha=0.6,
               linewidths=0, rasterized=True)
    if representatives is not None:
        for i, r in enumerate(representatives):
            ax.scatter(coords[r, 0], coords[r, 1], s=90, c=colours[i], edgecolors="black",
                       linewidths=1.2, zorder=3)
            ax.annotate(str(i), (coords[r, 0], coords[r, 1]), xytext=(5, 5),
                        textcoords="offset points", fontsize=8, weight="bold", zorder=4)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    shown = "" if len(keep) == len(coords) else f" ({len(keep):,} of {len(coords):,} shown)"
    ax.set_title((title or "Latent landscape") + shown, fontsize=10)
    return save_figure(fig, path)


def plot_density(coords: np.ndarray, path: str | Path,
                 axis_names: Sequence[str] = ("PC1", "PC2"), title: str = "") -> Path:
    """Hexbin particle density of ``(N, 2)`` landscape coordinates (log colour scale)."""
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot()
    grid = int(np.clip(np.sqrt(len(coords)) / 2, 10, 80))
    hb = ax.hexbin(coords[:, 0], coords[:, 1], gridsize=grid, bins="log", cmap="viridis",
                   mincnt=1)
    fig.colorbar(hb, ax=ax, label="particles (log)")
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title or "Particle density", fontsize=10)
    return save_figure(fig, path)


def plot_explained_variance(ratio: np.ndarray, path: str | Path) -> Path:
    """Bar chart of the ``(p,)`` explained-variance ratios with their cumulative sum."""
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    pcs = np.arange(1, len(ratio) + 1)
    ax.bar(pcs, 100 * ratio, color="#4c72b0", label="per PC")
    ax.plot(pcs, 100 * np.cumsum(ratio), "o-", color="#dd8452", label="cumulative")
    ax.set_xticks(pcs)
    ax.set_xlabel("principal component")
    ax.set_ylabel("latent variance explained (%)")
    ax.set_ylim(0, 105)
    ax.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


def read_training_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Entries of ``RUN/log.jsonl`` (empty when missing; a torn last line is skipped)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON, skipped", path, n)
    return entries


def plot_training_curves(entries: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """Loss terms per epoch (log scale) from ``log.jsonl`` entries; None when there are none."""
    if not entries:
        return None
    epochs = [e.get("epoch", i + 1) for i, e in enumerate(entries)]
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    for key in LOSS_KEYS:
        values = [e.get(key) for e in entries]
        if all(v is None for v in values):
            continue
        ys = np.array([np.nan if v is None else float(v) for v in values])
        positive = np.where(ys > 0, ys, np.nan)
        if np.isnan(positive).all():
            continue
        ax.plot(epochs, positive, "o-" if len(epochs) < 30 else "-", ms=3, label=key,
                lw=2.2 if key == "total" else 1.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (weighted term)")
    ax.legend(frameon=False, fontsize=7, ncols=3)
    ax.set_title("Training curves", fontsize=10)
    return save_figure(fig, path)


def plot_fsc(curves: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """FSC curves, each ``{"label", "frequency_per_A", "fsc"}``, with the 0.5/0.143 lines."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    for curve in curves:
        ax.plot(curve["frequency_per_A"], curve["fsc"], lw=1.6, label=curve["label"])
    for level in (0.5, 0.143):
        ax.axhline(level, color="grey", lw=0.8, ls="--")
        ax.text(0.0, level + 0.015, f" {level}", color="grey", fontsize=7)
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title or "Fourier shell correlation", fontsize=10)
    return save_figure(fig, path)


def plot_guinier(s2_per_A2: np.ndarray, log_amplitude: np.ndarray, fitted: np.ndarray,
                 intercept: float, slope_A2: float, path: str | Path, title: str = "") -> Path:
    """Guinier plot: ln(mean amplitude) against s² per shell, the fitted shells and the line."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.plot(s2_per_A2, log_amplitude, lw=1.4, color="C0", label="ln |F| (masked, FSC-weighted)")
    ax.plot(s2_per_A2[fitted], log_amplitude[fitted], "o", ms=3, color="C1",
            label="shells fitted")
    x = s2_per_A2[fitted]
    ax.plot(x, intercept + slope_A2 * x, color="C3", lw=1.2,
            label=f"fit, B = {4 * slope_A2:.0f} Å²")
    ax.set_xlabel("s² (1/Å²)")
    ax.set_ylabel("ln amplitude")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title or "Guinier plot", fontsize=10)
    return save_figure(fig, path)


def plot_histograms(values: dict[str, np.ndarray], path: str | Path, xlabel: str,
                    title: str = "", bins: int = 40) -> Path:
    """Overlaid histograms (fraction of values per bin) on common bins, with each median."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    finite = [np.asarray(v, dtype=np.float64) for v in values.values()]
    finite = [v[np.isfinite(v)] for v in finite]
    everything = np.concatenate(finite) if finite else np.zeros(0)
    edges = (np.linspace(everything.min(), everything.max() + 1e-9, bins + 1)
             if everything.size else np.linspace(0, 1, bins + 1))
    for i, (label, v) in enumerate(zip(values, finite, strict=True)):
        if not v.size:
            continue
        ax.hist(v, bins=edges, weights=np.full(v.size, 1.0 / v.size), alpha=0.55,
                color=f"C{i}", label=f"{label} (median {np.median(v):.2f})")
        ax.axvline(float(np.median(v)), color=f"C{i}", lw=1.0, ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of voxels")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return (255 * np.clip((image - lo) / (hi - lo), 0, 1)).astype(np.uint8)


def map_thumbnail(volume: np.ndarray) -> bytes:
    """PNG of a ``(D, D, D)`` map ``[z, y, x]``: projections (top) and central sections (bottom).

    Columns: along z (an x-y view), along y (x-z), along x (y-z). Rows are flipped so that the
    second axis of each view points up, as in ChimeraX's default orientation.
    """
    volume = np.asarray(volume, dtype=np.float32)
    c = volume.shape[0] // 2
    views = [volume.sum(0), volume.sum(1), volume.sum(2),
             volume[c], volume[:, c], volume[:, :, c]]
    panel = max(_PANEL_PX, volume.shape[0])
    gap = 4
    sheet = np.full((2 * panel + gap, 3 * panel + 2 * gap), 255, dtype=np.uint8)
    for i, view in enumerate(views):
        img = Image.fromarray(_to_uint8(np.flipud(view))).resize((panel, panel),
                                                                 Image.Resampling.BILINEAR)
        r, col = divmod(i, 3)
        sheet[r * (panel + gap):r * (panel + gap) + panel,
              col * (panel + gap):col * (panel + gap) + panel] = np.asarray(img)
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
