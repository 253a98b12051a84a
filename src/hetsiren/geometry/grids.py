"""Grids, masks and length units.

Conventions
-----------
- Volumes are ``[z, y, x]`` arrays as MRC stores them; images ``[y, x]``.
- The centre of a box of size D is index ``D // 2`` along every axis (RELION/FFT convention),
  for even and odd D. Coordinates are in pixels relative to that centre unless a name says Å.
- Coordinate vectors are ordered ``(x, y, z)`` so that rotation matrices (see
  ``geometry.rotations``) act on them directly.
- Shifts: ``shifts_A`` / ``shifts_px`` are ``(..., 2)`` as ``(x, y)``, with the sign of RELION's
  ``rlnOriginX/Y``: the particle's content sits at **minus** its origin relative to the plain
  projection.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "A_to_px",
    "box_center",
    "centered_axis",
    "grid_coordinates",
    "mirror_handedness",
    "shifts_A_to_px",
    "shifts_px_to_A",
    "sphere_mask",
]


def mirror_handedness(volume: np.ndarray) -> np.ndarray:
    """``(D, D, D)`` map ``[z, y, x]`` → its mirror image (z → -z about the centre D//2), the
    flip that corrects a map of the wrong hand (what ``relion_image_handler --flipZ`` and
    cryoDRGN's ``--flip`` do). For odd D the centre plane stays put; for even D the first
    plane (index 0, which has no mirror partner) is kept in place."""
    volume = np.asarray(volume)
    out = volume.copy()
    d = volume.shape[0]
    # index i ↦ 2·(D//2) − i keeps the centre D//2 fixed
    lo = 2 * (d // 2) - (d - 1)
    out[lo:] = volume[lo:][::-1]
    return out


def box_center(box_size: int) -> int:
    """Index of the centre of a box of ``box_size`` pixels (D // 2, even and odd D)."""
    return box_size // 2


def centered_axis(box_size: int, dtype: torch.dtype = torch.float32, device=None
                  ) -> torch.Tensor:
    """``(D,)`` pixel coordinates of one axis relative to the box centre D // 2:
    ``-(D // 2) ... D - 1 - D // 2``. Every grid of hetsiren is built from this."""
    return torch.arange(box_size, dtype=dtype, device=device) - box_center(box_size)


def grid_coordinates(
    box_size: int, ndim: int = 3, dtype: torch.dtype = torch.float32, device=None
) -> torch.Tensor:
    """Pixel coordinates relative to the box centre.

    Returns:
        ``(D, D, D, 3)`` for ndim 3 (indexed ``[z, y, x]``, last axis ``(x, y, z)``) or
        ``(D, D, 2)`` for ndim 2 (indexed ``[y, x]``, last axis ``(x, y)``).
    """
    axis = centered_axis(box_size, dtype, device)
    grids = torch.meshgrid(*([axis] * ndim), indexing="ij")  # [z,y,x] or [y,x] order
    return torch.stack(grids[::-1], dim=-1)  # reverse to (x, y[, z])


def sphere_mask(box_size: int, radius_px: float | None = None, ndim: int = 3) -> torch.Tensor:
    """Boolean mask of the sphere (or disc) inscribed in the box.

    Args:
        box_size: D.
        radius_px: radius in pixels; default the largest inscribed one, ``D // 2 - 1`` so that
            rotated voxels never fall off the grid edge.
        ndim: 3 for ``(D, D, D)`` volumes, 2 for ``(D, D)`` images.
    """
    if radius_px is None:
        radius_px = box_size // 2 - 1
    coords = grid_coordinates(box_size, ndim=ndim, dtype=torch.float64)
    return coords.pow(2).sum(-1) <= radius_px**2


def A_to_px(values_A, pixel_size_A: float):
    """Lengths or coordinates in Å (float, array or tensor) → pixels of ``pixel_size_A``."""
    return values_A / pixel_size_A


def shifts_A_to_px(shifts_A: np.ndarray, pixel_size_A: np.ndarray | float) -> np.ndarray:
    """``(N, 2)`` shifts in Å → pixels, with ``(N,)`` or scalar pixel size in Å/px."""
    return np.asarray(shifts_A) / np.asarray(pixel_size_A).reshape(-1, 1)


def shifts_px_to_A(shifts_px: np.ndarray, pixel_size_A: np.ndarray | float) -> np.ndarray:
    """``(N, 2)`` shifts in pixels → Å, with ``(N,)`` or scalar pixel size in Å/px."""
    return np.asarray(shifts_px) * np.asarray(pixel_size_A).reshape(-1, 1)
