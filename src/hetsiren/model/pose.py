"""Pose refinement: apply the encoder's Δangles and Δshifts to the input poses
(Supplementary Fig. 4, the Δe and Δs bottlenecks).

The correction is a rotation composed on the left of the particle's matrix, ``A' = R(Δ) · A``:
it turns the projection about the axes of the image frame, equally well for every particle
(adding Δ to the particle's own Euler angles, as Flexutils-Toolkit does, loses one degree of
freedom for particles near tilt 0 or 180°).

``R(Δ)`` comes from ``euler_to_matrix``, but not as ``euler_to_matrix(Δ)``: RELION ZYZ Euler
angles are gimbal-locked at (0, 0, 0), where rot and psi both turn about z and no small triple
turns about x, so a bounded Δ could not correct one of the three rotations. The triple is
therefore taken relative to the non-degenerate point ``e0 = (0, π/2, 0)``::

    R(Δ) = E(e0 + Δ) · E(e0)ᵀ

which is the identity at Δ = 0 and, to first order, turns about the image-frame x, y and z
axes by Δrot, -Δtilt and -Δpsi (radians): all three directions are reachable and the
Jacobian at Δ = 0 is orthonormal.
"""

from __future__ import annotations

import math

import torch

from hetsiren.geometry import euler_to_matrix

__all__ = ["correction_matrix", "refine_pose"]

_EULER_ORIGIN = (0.0, math.pi / 2, 0.0)
"""(rot, tilt, psi) in radians around which Δ is measured: tilt = 90° is far from gimbal lock."""


def correction_matrix(delta_euler: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` Δ (radians) → ``(..., 3, 3)`` rotation R(Δ) = E(e0 + Δ) · E(e0)ᵀ."""
    origin = torch.tensor(_EULER_ORIGIN, dtype=delta_euler.dtype, device=delta_euler.device)
    return euler_to_matrix(origin + delta_euler) @ euler_to_matrix(origin).transpose(-1, -2)


def refine_pose(rotations: torch.Tensor, shifts_px: torch.Tensor, delta_euler: torch.Tensor,
                delta_shift_px: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply pose corrections (differentiable in the corrections).

    Args:
        rotations: ``(b, 3, 3)`` RELION matrices A (see ``hetsiren.geometry.rotations``).
        shifts_px: ``(b, 2)`` in-plane shifts in pixels, the convention of the input poses.
        delta_euler: ``(b, 3)`` rotation correction in radians (see module docstring: measured
            from e0, not an offset to the particle's own Euler angles).
        delta_shift_px: ``(b, 2)`` shift correction in pixels, added to ``shifts_px``.

    Returns:
        ``(b, 3, 3)`` A' = R(Δ) · A and ``(b, 2)`` shifts + Δshift, in the dtype of the poses.
    """
    correction = correction_matrix(delta_euler.to(rotations.dtype))
    return correction @ rotations, shifts_px + delta_shift_px.to(shifts_px.dtype)
