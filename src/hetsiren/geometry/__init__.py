"""Conventions: rotations, grids, masks, units. The only place conventions are converted."""

from hetsiren.geometry.grids import (
    A_to_px,
    box_center,
    centered_axis,
    grid_coordinates,
    mirror_handedness,
    shifts_A_to_px,
    shifts_px_to_A,
    sphere_mask,
)
from hetsiren.geometry.rotations import (
    euler_deg_to_matrix,
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_euler_deg,
    matrix_to_rotvec_cryosparc,
    rotvec_cryosparc_to_matrix,
)

__all__ = [
    "A_to_px",
    "box_center",
    "centered_axis",
    "euler_deg_to_matrix",
    "euler_to_matrix",
    "grid_coordinates",
    "matrix_to_euler",
    "mirror_handedness",
    "matrix_to_euler_deg",
    "matrix_to_rotvec_cryosparc",
    "rotvec_cryosparc_to_matrix",
    "shifts_A_to_px",
    "shifts_px_to_A",
    "sphere_mask",
]
