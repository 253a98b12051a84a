"""Isosurface pictures: the mesh sits where the map crosses the level; views keep the hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hetsiren.analysis.surface import render_surface, surface_mesh
from hetsiren.geometry import mirror_handedness


def _sphere(d: int, radius: float, centre=None) -> np.ndarray:
    c = np.asarray(centre if centre is not None else (d // 2,) * 3, dtype=float)  # (z, y, x)
    zz, yy, xx = np.meshgrid(*(np.arange(d),) * 3, indexing="ij")
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    return (radius - r).astype(np.float32)  # level 0 is the sphere's surface


def test_mesh_vertices_lie_on_the_level_set():
    verts, faces = surface_mesh(_sphere(24, 7.0, (12, 10, 14)), 0.0)
    assert len(faces) > 100
    r = np.linalg.norm(verts - np.array([14, 10, 12]), axis=1)  # vertices are (x, y, z)
    np.testing.assert_allclose(r, 7.0, atol=0.15)
    assert surface_mesh(np.zeros((8, 8, 8)), 1.0)[1].shape == (0, 3)


def _dark_centroid(png: bytes, panel: int) -> tuple[float, float]:
    im = np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(float)
    w = im.shape[0]
    part = im[:, panel * w:(panel + 1) * w]
    ys, xs = np.nonzero(part < 200)
    return xs.mean() / w, ys.mean() / w  # (right, down) in [0, 1]


def test_views_place_features_and_keep_the_hand():
    d = 32
    # a blob at high x, high y (z centre): seen down z it is right and up
    vol = np.maximum(_sphere(d, 9.0), _sphere(d, 4.0, (16, 26, 26)) + 0.0)
    png = render_surface(vol, 0.0, views=("z", "y", "x"), panel_px=96)
    x, y = _dark_centroid(png, 0)
    assert x > 0.5 and y < 0.5
    # a mirrored map gives a mirrored picture (not the same one)
    flipped = render_surface(mirror_handedness(np.maximum(
        _sphere(d, 9.0), _sphere(d, 4.0, (26, 16, 26)))), 0.0, views=("y",), panel_px=96)
    unflipped = render_surface(np.maximum(_sphere(d, 9.0), _sphere(d, 4.0, (26, 16, 26))), 0.0,
                               views=("y",), panel_px=96)
    assert _dark_centroid(flipped, 0)[0] < 0.5 < _dark_centroid(unflipped, 0)[0]


@pytest.mark.parametrize("d", [24, 80])
def test_render_gives_one_panel_per_view(d):
    png = render_surface(_sphere(d, d / 4), 0.0, views=("z", "x"), panel_px=64)
    im = Image.open(io.BytesIO(png))
    assert im.size == (128, 64)
    blank = render_surface(np.zeros((8, 8, 8), dtype=np.float32), 1.0, panel_px=64)
    assert Image.open(io.BytesIO(blank)).size == (192, 64)


def test_dust_is_hidden_and_the_particle_kept():
    from hetsiren.analysis.surface import hide_dust

    vol = np.maximum(_sphere(32, 8.0), _sphere(32, 1.5, (3, 3, 3)))  # particle + a speck
    clean = hide_dust(vol, 0.0)
    assert (clean > 0).sum() == (_sphere(32, 8.0) > 0).sum()
    np.testing.assert_array_equal(clean[_sphere(32, 8.0) > 0], vol[_sphere(32, 8.0) > 0])
