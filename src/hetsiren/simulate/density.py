"""Densities from point models: atomic models (PDB/mmCIF) and the built-in pseudo-atomic phantoms.

A point model is ``(n, 3)`` positions in Å (x, y, z) relative to the box centre (index D//2)
with ``(n,)`` weights (atomic number for atoms). The density is the weights splatted
trilinearly onto the grid and blurred with a Gaussian of σ = 0.187 × resolution, the width
ChimeraX's ``molmap`` uses for a map at that resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from hetsiren.errors import UserInputError
from hetsiren.geometry import A_to_px, box_center

__all__ = ["density_from_points", "read_atomic_models"]

# σ of the Gaussian standing for one atom at a given resolution (ChimeraX molmap's default).
_SIGMA_PER_RESOLUTION = 0.187


def density_from_points(
    points_A: np.ndarray,
    weights: np.ndarray,
    box_size: int,
    pixel_size_A: float,
    resolution_A: float,
) -> np.ndarray:
    """Point model → ``(D, D, D)`` float32 density ``[z, y, x]``.

    Args:
        points_A: ``(n, 3)`` (x, y, z) in Å relative to the box centre.
        weights: ``(n,)`` point weights.
        box_size: D.
        pixel_size_A: voxel size in Å.
        resolution_A: resolution of the blur (σ = 0.187 × resolution).
    """
    d = box_size
    pos = A_to_px(np.asarray(points_A, dtype=np.float64), pixel_size_A) + box_center(d)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    grid = np.zeros(d**3, dtype=np.float64)
    for corner in range(8):
        offset = np.array([(corner >> k) & 1 for k in range(3)])  # x, y, z bits
        idx = lo + offset
        w = np.prod(np.where(offset, frac, 1 - frac), axis=1) * weights
        inside = np.all((idx >= 0) & (idx < d), axis=1)
        flat = (idx[inside, 2] * d + idx[inside, 1]) * d + idx[inside, 0]
        np.add.at(grid, flat, w[inside])
    sigma_px = A_to_px(_SIGMA_PER_RESOLUTION * resolution_A, pixel_size_A)
    return gaussian_filter(grid.reshape(d, d, d), sigma_px, mode="constant").astype(np.float32)


def read_atomic_models(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read every model of a PDB/mmCIF file as ``(positions_A (n, 3), atomic numbers (n,))``.

    Raises:
        UserInputError: the file is missing, unreadable or has no atoms.
    """
    try:
        import gemmi
    except ImportError as exc:
        raise UserInputError(
            "reading atomic models needs gemmi: pip install 'hetsiren[sim]'"
        ) from exc
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: atomic model file not found")
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read as PDB/mmCIF ({exc})") from exc
    structure.remove_hydrogens()
    models = []
    for model in structure:
        atoms = [a for ch in model for res in ch for a in res]
        if not atoms:
            continue
        pos = np.array([[a.pos.x, a.pos.y, a.pos.z] for a in atoms])
        z = np.array([a.element.atomic_number for a in atoms], dtype=np.float64)
        models.append((pos, z))
    if not models:
        raise UserInputError(f"{path}: no atoms found (expected ATOM/HETATM records)")
    return models
