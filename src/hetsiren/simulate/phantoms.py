"""Built-in phantoms with known heterogeneity, for the demo, tests and benchmarks.

A two-domain pseudo-atomic "protein": an ellipsoidal body and an arm on a hinge. The arm swings
about the z axis through the hinge by up to ``max_swing_deg`` (continuous heterogeneity, like
the open-to-closed adenylate kinase motion of the paper's Fig. 1) and can be absent
(compositional heterogeneity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hetsiren.simulate.density import density_from_points

__all__ = ["Phantom", "discrete_phantom_maps"]

# Geometry of the phantom in Å: a body of ~60 x 44 x 36 Å and a 28 Å arm on a hinge at its
# +x end, so that the whole molecule fits in a 64 px box at 2.5 Å/px with the arm's tip at
# most ~55 Å from the centre.
_BODY_SEMI_AXES_A = np.array([30.0, 22.0, 18.0])
_ARM_SEMI_AXES_A = np.array([14.0, 7.0, 7.0])
_HINGE_A = np.array([24.0, 0.0, 0.0])
_BODY_POINTS, _ARM_POINTS = 400, 70


def _points_in_ellipsoid(rng: np.random.Generator, n: int, semi_axes: np.ndarray) -> np.ndarray:
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = rng.uniform(size=(n, 1)) ** (1 / 3)
    return direction * radius * semi_axes


@dataclass(frozen=True)
class Phantom:
    """A seeded two-domain pseudo-atomic model."""

    seed: int = 0
    max_swing_deg: float = 60.0

    def points(self, swing: float, arm: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Pseudo-atoms at a swing coordinate in [0, 1] (0 = closed, 1 = fully open).

        Returns:
            ``(n, 3)`` positions in Å relative to the box centre and ``(n,)`` weights.
        """
        rng = np.random.default_rng(self.seed)
        body = _points_in_ellipsoid(rng, _BODY_POINTS, _BODY_SEMI_AXES_A) - [4.0, 0.0, 0.0]
        arm_pts = _points_in_ellipsoid(rng, _ARM_POINTS, _ARM_SEMI_AXES_A)
        arm_pts = arm_pts + _HINGE_A + [_ARM_SEMI_AXES_A[0], 0.0, 0.0]
        if not arm:
            return body, np.ones(len(body))
        angle = np.deg2rad(self.max_swing_deg * swing)
        c, s = np.cos(angle), np.sin(angle)
        rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        arm_pts = (arm_pts - _HINGE_A) @ rz.T + _HINGE_A
        pts = np.concatenate([body, arm_pts])
        return pts, np.ones(len(pts))

    def density(self, swing: float, box_size: int, pixel_size_A: float,
                resolution_A: float | None = None, arm: bool = True) -> np.ndarray:
        """``(D, D, D)`` float32 map of the phantom; resolution defaults to 2.5 pixels."""
        resolution_A = resolution_A or 2.5 * pixel_size_A
        pts, w = self.points(swing, arm=arm)
        return density_from_points(pts, w, box_size, pixel_size_A, resolution_A)


def discrete_phantom_maps(box_size: int, pixel_size_A: float, seed: int = 0) -> np.ndarray:
    """Three discrete states: arm closed, arm open, arm absent → ``(3, D, D, D)`` float32."""
    phantom = Phantom(seed=seed)
    return np.stack([
        phantom.density(0.0, box_size, pixel_size_A),
        phantom.density(1.0, box_size, pixel_size_A),
        phantom.density(0.0, box_size, pixel_size_A, arm=False),
    ])
