"""Trajectories and the convergence measures, on made-up latents."""

from __future__ import annotations

import numpy as np
import pytest

from hetsiren.analysis.convergence import _map_change, _neighbours_kept, _unexplained
from hetsiren.analysis.trajectory import graph_path, interpolate
from hetsiren.errors import UserInputError


def _arc(n: int = 200, seed: int = 0) -> np.ndarray:
    """Particles on a half circle of radius 10 (a curved landscape), little noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, np.pi, n)
    return (np.c_[10 * np.cos(t), 10 * np.sin(t)] + 0.05 * rng.standard_normal((n, 2))
            ).astype(np.float32)


def test_interpolation_is_even_and_includes_the_ends():
    traj = interpolate(np.array([0.0, 0.0]), np.array([3.0, -3.0]), 4)
    np.testing.assert_allclose(traj.z, [[0, 0], [1, -1], [2, -2], [3, -3]], atol=1e-6)
    with pytest.raises(UserInputError, match="same number"):
        interpolate(np.zeros(2), np.zeros(3), 4)


def test_graph_path_follows_the_data_not_the_chord():
    z = _arc()
    traj = graph_path(z, 0, len(z) - 1, knn=5)
    assert traj.particles[0] == 0 and traj.particles[-1] == len(z) - 1
    radius = np.linalg.norm(traj.z, axis=1)
    assert radius.min() > 9.5  # the straight line between the ends passes through radius 0
    assert traj.length == pytest.approx(np.pi * 10, rel=0.1)
    # every step is between near neighbours
    steps = np.linalg.norm(np.diff(traj.z, axis=0), axis=1)
    assert steps.max() < 1.0
    short = graph_path(z, 0, len(z) - 1, knn=5, n=6)
    assert len(short.particles) <= 6 and short.particles[0] == 0
    assert short.particles[-1] == len(z) - 1
    assert set(short.particles) <= set(traj.particles)


def test_graph_path_between_unconnected_regions_says_what_to_do():
    z = np.r_[_arc(50), _arc(50, seed=1) + 100]
    with pytest.raises(UserInputError, match="larger --knn"):
        graph_path(z, 0, 99, knn=3)
    with pytest.raises(UserInputError, match="numbered 0..99"):
        graph_path(z, 0, 100)


def test_convergence_measures_see_through_rotation_and_catch_shuffles():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((500, 3))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    moved = 2 * z @ q + 5  # rotated, scaled, shifted: the same landscape
    assert _unexplained(z, moved) < 1e-10
    assert _neighbours_kept(z, moved, 10) == pytest.approx(1.0)
    shuffled = z[rng.permutation(500)]
    assert _unexplained(z, shuffled) > 0.9
    assert _neighbours_kept(z, shuffled, 10) < 0.1
    maps = rng.standard_normal((2, 4, 4, 4))
    assert _map_change(maps, maps) == pytest.approx((0.0, 0.0), abs=1e-12)
    rel, decor = _map_change(maps, 2 * maps)
    assert rel == pytest.approx(0.5) and decor == pytest.approx(0.0, abs=1e-12)
