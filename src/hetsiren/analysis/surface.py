"""Isosurface pictures of maps: what users look at in ChimeraX, as PNGs for reports.

The surface at a contour level is extracted with marching cubes (scikit-image) after hiding
dust (regions smaller than 5% of the largest, as ChimeraX's ``surface dust``), shaded with a
fixed headlight (Lambert, plus ambient), and drawn orthographically, back to front, from
several directions. Maps larger than ``_MAX_RENDER_BOX`` are Fourier-cropped first: a
thumbnail shows no detail finer than its pixels, and the triangle count grows with D².

Views look down the map's axes from their positive end, each a right-handed view (horizontal
× vertical points at the viewer), so a mirror-image map looks mirrored: ``z`` shows x right
and y up (as the thumbnails' projections do), ``y`` shows z right and x up, ``x`` shows y
right and z up.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["hide_dust", "render_surface", "surface_mesh"]

# Render at most this box; 64³ gives ~2e4 triangles for a typical particle, drawn in < 1 s.
_MAX_RENDER_BOX = 64
# Drawing cost grows with the triangles; a noisy map at 64³ gives ~1e5 (10 s to draw). Beyond
# this many the surface is re-extracted on a coarser grid (marching cubes' step).
_MAX_TRIANGLES = 30_000
# Hide "dust": pieces of the surface enclosing fewer voxels than this share of the largest
# piece (what ChimeraX's `surface dust` does); noise specks otherwise bury the particle.
_DUST_FRACTION = 0.05
# Headlight shading: ambient share and the light's direction in view coordinates.
_AMBIENT = 0.25
_VIEWS = {"z": (0, 1, 2), "y": (2, 0, 1), "x": (1, 2, 0)}
"""View name → (horizontal, vertical, depth) axes in (x, y, z) vertex coordinates."""


def surface_mesh(volume: np.ndarray, level: float, step: int = 1
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(D, D, D)`` map ``[z, y, x]`` → ``(V, 3)`` vertices as (x, y, z) voxel coordinates and
    ``(F, 3)`` triangle indices of its isosurface at ``level`` (empty when the map never
    crosses it); ``step`` > 1 samples every ``step``-th voxel (a coarser mesh)."""
    from skimage.measure import marching_cubes

    volume = np.asarray(volume, dtype=np.float32)
    if not (volume.min() < level < volume.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    verts_zyx, faces, _, _ = marching_cubes(volume, level=level, step_size=step)
    return verts_zyx[:, ::-1].astype(np.float64), faces.astype(np.int64)


def hide_dust(volume: np.ndarray, level: float, fraction: float = _DUST_FRACTION
              ) -> np.ndarray:
    """``(D, D, D)`` map with every connected region above ``level`` smaller than ``fraction``
    of the largest one lowered below the level (its surface disappears, the rest is
    unchanged)."""
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float32)
    labels, count = ndimage.label(volume > level)
    if count <= 1:
        return volume
    sizes = np.bincount(labels.ravel())[1:]
    small = np.flatnonzero(sizes < fraction * sizes.max()) + 1
    if len(small) == 0:
        return volume
    dust = np.isin(labels, small)
    out = volume.copy()
    out[dust] = min(float(volume.min()), level) - 1.0
    return out


def _render_size(volume: np.ndarray) -> np.ndarray:
    from hetsiren.physics import resample_map

    d = volume.shape[0]
    if d <= _MAX_RENDER_BOX:
        return np.asarray(volume, dtype=np.float32)
    small = resample_map(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)),
                         1.0, d / _MAX_RENDER_BOX, _MAX_RENDER_BOX)
    return small.numpy()


def render_surface(volume: np.ndarray, level: float, views: Sequence[str] = ("z", "y", "x"),
                   colour: str = "#8fb3e8", panel_px: int = 160) -> bytes:
    """PNG of the isosurface of a ``(D, D, D)`` map at ``level``, one panel per view.

    Args:
        volume: ``(D, D, D)`` map ``[z, y, x]``.
        level: contour level (e.g. ``chimerax.contour_level``).
        views: axes to look down, from ``z``, ``y``, ``x``.
        colour: surface colour.
        panel_px: width and height of each panel in pixels.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure

    d_in = volume.shape[0]
    small = _render_size(volume)
    # a map shrunk by resample_map keeps its values, so the level carries over
    small = hide_dust(small, level)
    verts, faces = surface_mesh(small, level)
    step = 1
    while len(faces) > _MAX_TRIANGLES and step < 4:
        step += 1
        verts, faces = surface_mesh(small, level, step)
    d = small.shape[0]
    dpi = 100
    fig = Figure(figsize=(panel_px * len(views) / dpi, panel_px / dpi), dpi=dpi)
    base = np.asarray(to_rgb(colour))
    for i, view in enumerate(views):
        ax = fig.add_axes((i / len(views), 0, 1 / len(views), 1))
        ax.set_xlim(0, d - 1)
        ax.set_ylim(0, d - 1)
        ax.set_aspect("equal")
        ax.axis("off")
        if len(faces) == 0:
            ax.text(0.5, 0.5, "no surface\nat this level", ha="center", va="center",
                    transform=ax.transAxes, fontsize=7, color="#5b6577")
            continue
        h, v, depth = _VIEWS[view]
        tri = verts[faces]  # [F, 3 corners, 3 xyz]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        # the viewer sits at +depth: light from the viewer's side, either face lit
        # (marching cubes' winding differs between the two sides of a thin sheet)
        lambert = np.abs(normals[:, depth])
        shade = _AMBIENT + (1 - _AMBIENT) * lambert
        order = np.argsort(tri[:, :, depth].mean(axis=1))  # far (low depth) first
        polys = tri[order][:, :, [h, v]]
        colours = np.clip(shade[order, None] * base[None, :], 0, 1)
        ax.add_collection(PolyCollection(polys, facecolors=colours, edgecolors=colours,
                                         linewidths=0.2))
        ax.text(0.02, 0.02, f"down {view}", transform=ax.transAxes, fontsize=6,
                color="#5b6577")
    if d != d_in:
        fig.text(0.99, 0.98, f"rendered at {d}³", ha="right", va="top", fontsize=5,
                 color="#5b6577")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()
