from __future__ import annotations

import numpy as np
import pytest

from hetsiren.geometry import grid_coordinates, shifts_A_to_px, shifts_px_to_A, sphere_mask


@pytest.mark.parametrize("box", [5, 6, 64, 65])
def test_centre_is_d_over_2(box):
    c = grid_coordinates(box)
    assert c.shape == (box, box, box, 3)
    z = y = x = box // 2
    assert c[z, y, x].abs().sum() == 0
    # last axis is (x, y, z) while indexing is [z, y, x]
    assert c[0, 0, box - 1, 0] == box - 1 - box // 2
    assert c[box - 1, 0, 0, 2] == box - 1 - box // 2


def test_sphere_mask_inscribed():
    m = sphere_mask(16)
    # default radius D//2 - 1 = 7 px: x = +7 is inside, x = -8 (index 0) is not
    assert m[8, 8, 8] and not m[0, 0, 0] and m[8, 8, 15] and not m[8, 8, 0] and not m[8, 0, 0]
    assert sphere_mask(16, ndim=2).shape == (16, 16)


def test_shift_units_round_trip():
    s = np.array([[1.0, -2.0], [0.5, 3.0]])
    px = np.array([2.0, 0.5])
    np.testing.assert_allclose(shifts_A_to_px(s, px), [[0.5, -1.0], [1.0, 6.0]])
    np.testing.assert_allclose(shifts_px_to_A(shifts_A_to_px(s, px), px), s)
    np.testing.assert_allclose(shifts_A_to_px(s, 2.0), s / 2)
