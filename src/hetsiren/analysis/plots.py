"""PNG figures of a run: landscape, density, explained variance, training curves, FSC, maps.

Figures are drawn on ``matplotlib.figure.Figure`` objects (no pyplot state, no display needed)
and written atomically. ``map_thumbnail`` makes the per-map picture used by the HTML report:
projections (top row) and central sections (bottom row) along z, y and x.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from hetsiren.rundir import atomic_write

__all__ = [
    "cluster_colours",
    "map_thumbnail",
    "plot_convergence",
    "plot_density",
    "plot_explained_variance",
    "plot_fsc",
    "plot_guinier",
    "plot_histograms",
    "plot_landscape",
    "plot_map_landscape",
    "plot_training_curves",
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


def plot_convergence(result: Any, path: str | Path) -> Path:
    """Change between consecutive snapshots against the later epoch: latent (left) and maps
    (right); ``result`` is an ``analysis.convergence.ConvergenceResult``."""
    fig = Figure(figsize=(9.6, 3.6))
    epochs = np.asarray(result.epochs[1:])
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.plot(epochs, 100 * np.asarray(result.latent_unexplained), "o-", color="#4c72b0",
              label="variance unexplained by an affine map of the previous latent")
    left.plot(epochs, 100 * (1 - np.asarray(result.neighbours_kept)), "s-", color="#dd8452",
              label="nearest neighbours lost")
    left.set_title("Latent change since the previous snapshot", fontsize=10)
    right.plot(epochs, 100 * np.asarray(result.map_relative_change), "o-", color="#55a868",
               label="relative RMS difference")
    right.plot(epochs, 100 * np.asarray(result.map_decorrelation), "s-", color="#c44e52",
               label="1 - correlation")
    right.set_title(f"Map change at {len(result.anchors)} fixed particles", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.set_ylim(bottom=0)
        ax.set_xticks(epochs)
        ax.legend(frameon=False, fontsize=7)
    fig.suptitle(result.verdict, fontsize=8)
    return save_figure(fig, path)


def plot_map_landscape(coords: np.ndarray, populations: np.ndarray, states: np.ndarray,
                       ratio: np.ndarray, path: str | Path) -> Path:
    """Map-space PC1/PC2 of ``(n, p)`` centre coordinates, marker area ∝ ``(n,)`` population,
    colour = ``(n,)`` state; the explained variance of the first PCs beside it."""
    k = int(states.max()) + 1
    colours = np.array(cluster_colours(k))
    fig = Figure(figsize=(10.4, 4.6))
    ax = fig.add_subplot(1, 2, 1)
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros(len(coords))
    area = 200 * populations / max(float(populations.max()), 1.0) + 4
    ax.scatter(coords[:, 0], y, s=area, c=colours[states], alpha=0.7, edgecolors="white",
               linewidths=0.4)
    for s in range(k):
        ax.scatter([], [], c=colours[s], label=f"state {s}")
    ax.legend(frameon=False, fontsize=7, loc="best")
    ax.set_xlabel(f"map PC1 ({100 * ratio[0]:.0f}%)")
    ax.set_ylabel(f"map PC2 ({100 * ratio[1]:.0f}%)" if len(ratio) > 1 else "map PC2")
    ax.set_title(f"{len(coords)} maps decoded over the landscape (area = particles)",
                 fontsize=10)
    bar = fig.add_subplot(1, 2, 2)
    shown = ratio[:10]
    pcs = np.arange(1, len(shown) + 1)
    bar.bar(pcs, 100 * shown, color="#4c72b0", label="per PC")
    bar.plot(pcs, 100 * np.cumsum(shown), "o-", color="#dd8452", label="cumulative")
    bar.set_xticks(pcs)
    bar.set_xlabel("map-space principal component")
    bar.set_ylabel("map variance explained (%)")
    bar.set_ylim(0, 105)
    bar.legend(frameon=False, fontsize=8)
    return save_figure(fig, path)


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
