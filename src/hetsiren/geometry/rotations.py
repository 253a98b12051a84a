"""Rotation conventions: the only place where file conventions become matrices.

Convention used everywhere inside hetsiren
------------------------------------------
A pose is RELION's 3x3 matrix ``A`` (float, ``(..., 3, 3)``), left-multiplying xyz column
vectors. A voxel at position ``r = (x, y, z)`` (relative to the box centre, index D//2) lands
in the image at ``(A @ r)[:2]``: the image is the projection along z of the volume rotated by
``A``, i.e. ``image(x, y) = ∫ V(Aᵀ (x, y, z)) dz``.

RELION (``rlnAngleRot/Tilt/Psi``, degrees, intrinsic ZYZ)::

    A = Rz(psi) · Ry(tilt) · Rz(rot)   with RELION's Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]

which equals ``scipy.spatial.transform.Rotation.from_euler('ZYZ', [rot, tilt, psi],
degrees=True).inv().as_matrix()``.

cryoSPARC (``alignments3D/pose``, axis-angle vector in radians)::

    Rotation.from_rotvec(pose).as_matrix() == Aᵀ   ⇒   A = exp([-pose]×)

Angles are radians inside; degrees only at file boundaries (``*_deg`` names).
"""

from __future__ import annotations

import numpy as np
import roma
import torch

__all__ = [
    "euler_deg_to_matrix",
    "euler_to_matrix",
    "matrix_to_euler",
    "matrix_to_euler_deg",
    "matrix_to_rotvec_cryosparc",
    "rotvec_cryosparc_to_matrix",
]

# Below this many machine epsilons of |sin(tilt)| the rot and psi axes coincide (gimbal
# lock): put all in-plane rotation into psi (RELION's Euler_matrix2angles uses 16 float eps).
_GIMBAL_EPS_UNITS = 16
# Rows per block of the file-boundary conversions (bounded temporaries for 1e6 particles).
_BLOCK_ROWS = 1 << 16


def euler_to_matrix(euler: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles to rotation matrices (differentiable).

    Args:
        euler: ``(..., 3)`` angles (rot, tilt, psi) in radians, RELION intrinsic ZYZ.

    Returns:
        ``(..., 3, 3)`` matrices ``A`` (see module docstring), same dtype/device.
    """
    rot, tilt, psi = euler.unbind(-1)
    ca, sa = torch.cos(rot), torch.sin(rot)
    cb, sb = torch.cos(tilt), torch.sin(tilt)
    cg, sg = torch.cos(psi), torch.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1),
        torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1),
        torch.stack([sc, ss, cb], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_euler(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to RELION Euler angles, tilt in [0, π].

    Stable at tilt 0 and π, where rot is set to 0 and the in-plane angle goes into psi.

    Args:
        matrix: ``(..., 3, 3)`` matrices ``A``.

    Returns:
        ``(..., 3)`` (rot, tilt, psi) in radians, rot and psi in (-π, π].
    """
    a = matrix
    sin2_tilt = a[..., 0, 2] ** 2 + a[..., 1, 2] ** 2
    gimbal_eps = _GIMBAL_EPS_UNITS * torch.finfo(a.dtype).eps
    regular = sin2_tilt > gimbal_eps**2
    # Feed the locked branch harmless values so that its gradients stay finite under where().
    one, zero = torch.ones_like(sin2_tilt), torch.zeros_like(sin2_tilt)
    sin_tilt = torch.sqrt(torch.where(regular, sin2_tilt, one))
    rot = torch.atan2(torch.where(regular, a[..., 2, 1], zero),
                      torch.where(regular, a[..., 2, 0], one))
    tilt = torch.atan2(sin_tilt, a[..., 2, 2])
    psi = torch.atan2(torch.where(regular, a[..., 1, 2], zero),
                      torch.where(regular, -a[..., 0, 2], one))
    # Gimbal lock: tilt = 0 gives A = Rz(psi + rot); tilt = π gives A00 = -cos(psi - rot),
    # A01 = sin(psi - rot). With rot = 0 both reduce to the expressions below.
    up = a[..., 2, 2] > 0
    psi_locked = torch.where(
        up, torch.atan2(a[..., 0, 1], a[..., 0, 0]), torch.atan2(a[..., 0, 1], -a[..., 0, 0])
    )
    tilt_locked = torch.where(up, torch.zeros_like(tilt), torch.full_like(tilt, torch.pi))
    rot = torch.where(regular, rot, torch.zeros_like(rot))
    tilt = torch.where(regular, tilt, tilt_locked)
    psi = torch.where(regular, psi, psi_locked)
    return torch.stack([rot, tilt, psi], -1)


def euler_deg_to_matrix(euler_deg: np.ndarray) -> np.ndarray:
    """File boundary: ``(N, 3)`` RELION (rot, tilt, psi) in degrees → ``(N, 3, 3)`` float64 A.

    Converted in blocks of rows, so that 1e6 particles need no more than the result's memory
    (the temporaries of one pass over all rows would be ~4x the result)."""
    euler_deg = np.asarray(euler_deg, dtype=np.float64)
    flat = euler_deg.reshape(-1, 3)
    out = np.empty((len(flat), 3, 3))
    for i in range(0, len(flat), _BLOCK_ROWS):
        euler = torch.deg2rad(torch.from_numpy(np.ascontiguousarray(flat[i:i + _BLOCK_ROWS])))
        out[i:i + _BLOCK_ROWS] = euler_to_matrix(euler).numpy()
    return out.reshape(*euler_deg.shape[:-1], 3, 3)


def matrix_to_euler_deg(matrix: np.ndarray) -> np.ndarray:
    """File boundary: ``(N, 3, 3)`` A → ``(N, 3)`` RELION (rot, tilt, psi) in degrees."""
    euler = matrix_to_euler(torch.as_tensor(np.asarray(matrix, dtype=np.float64)))
    return torch.rad2deg(euler).numpy()


def rotvec_cryosparc_to_matrix(pose: np.ndarray) -> np.ndarray:
    """File boundary: ``(N, 3)`` cryoSPARC ``alignments3D/pose`` (radians) → ``(N, 3, 3)`` A.

    cryoSPARC's rotation vector describes Aᵀ, so A is the rotation about the same axis by the
    opposite angle.
    """
    rotvec = torch.as_tensor(np.asarray(pose, dtype=np.float64))
    return roma.rotvec_to_rotmat(-rotvec).numpy()


def matrix_to_rotvec_cryosparc(matrix: np.ndarray) -> np.ndarray:
    """File boundary: ``(N, 3, 3)`` A → ``(N, 3)`` cryoSPARC ``alignments3D/pose`` (radians)."""
    rotmat = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
    return (-roma.rotmat_to_rotvec(rotmat)).numpy()
