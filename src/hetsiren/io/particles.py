"""The one internal description of a particle set, whatever file it came from.

Readers (STAR, cryoSPARC ``.cs``, plain ``.mrcs``) build a :class:`ParticleSet`; nothing
downstream knows about file formats. Conventions (see ``hetsiren.geometry``):

- ``rotations``: ``(N, 3, 3)`` float64 RELION matrices A (a voxel at r lands at ``(A r)_xy``).
- ``shifts_A``: ``(N, 2)`` float64 (x, y) in Å with the sign of RELION's ``rlnOriginX/YAngst``
  (the particle's content sits at minus its origin relative to the plain projection).
- ``ctf``: per-particle RELION/CTFFIND parameters, angles in radians.
- ``pixel_size_A``: ``(N,)`` pixel size of the images as stored, in Å.
- ``random_subset``: ``(N,)`` int64 gold-standard half (1 or 2) of each particle, as RELION's
  ``rlnRandomSubset`` (cryoSPARC's 0-based ``alignments3D/split`` + 1), or None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import torch

__all__ = ["CTFParams", "ImageSource", "ParticleSet"]


class ImageSource(Protocol):
    """Lazily read particle images; opening reads no image data."""

    box_size: int

    def __len__(self) -> int: ...

    def read(self, indices: np.ndarray) -> np.ndarray:
        """``(b,)`` particle indices → ``(b, D, D)`` float32 images ``[y, x]``, in that order."""
        ...


@dataclass
class CTFParams:
    """Per-particle CTF parameters in RELION/CTFFIND conventions; every field ``(N,)`` float64."""

    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    astigmatism_angle_rad: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_rad: np.ndarray
    bfactor_A2: np.ndarray

    def __len__(self) -> int:
        return len(self.defocus_u_A)

    def subset(self, indices: np.ndarray) -> CTFParams:
        """The parameters of the particles at ``indices``."""
        return CTFParams(**{f.name: getattr(self, f.name)[indices] for f in fields(self)})

    def to_tensors(self, indices: np.ndarray, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """The parameters of the particles at ``indices`` as ``(b,)`` tensors, keyed by the
        argument names of ``hetsiren.physics.compute_ctf`` (``compute_ctf(**params, ...)``).

        Args:
            indices: ``(b,)`` particle indices.
            device: where the tensors go.
            dtype: float32 for training batches, float64 where the CTF feeds an exact
                reconstruction (``compute_ctf`` computes in float64 either way).
        """
        rows = np.asarray(indices)
        return {f.name: torch.as_tensor(np.asarray(getattr(self, f.name)[rows]), dtype=dtype,
                                        device=device) for f in fields(self)}


@dataclass
class ParticleSet:
    """Particles with poses, shifts, CTF and lazily read images.

    ``metadata`` keeps what a writer needs to give the user back their own file with only our
    columns changed: for STAR, ``{"format": "star", "path", "blocks", "particles_block",
    "optics_block"}``; for cryoSPARC, ``{"format": "cs", "path", "array", "passthrough"}``.
    """

    n_particles: int
    box_size: int
    pixel_size_A: np.ndarray
    images: ImageSource | None = None
    rotations: np.ndarray | None = None
    shifts_A: np.ndarray | None = None
    ctf: CTFParams | None = None
    optics_group: np.ndarray | None = None
    random_subset: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def has_poses(self) -> bool:
        return self.rotations is not None

    @property
    def has_ctf(self) -> bool:
        return self.ctf is not None
