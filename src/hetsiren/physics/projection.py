"""Real-space projectors: the fast masked splat used in training and a slow reference.

Conventions (see ``hetsiren.geometry``): rotations are RELION matrices A, ``(b, 3, 3)``,
left-multiplying xyz column vectors; a voxel at r (pixels from the box centre D//2) lands at
``(A r)_xy``, i.e. ``image(x, y) = ∫ V(Aᵀ (x, y, z)) dz``. Shifts are RELION origins ``(b, 2)``
(x, y) in pixels: the particle's content sits at **minus** its origin. Images are ``[y, x]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetsiren.physics.fourier import fourier_shift

__all__ = ["project_points", "project_volume_reference"]

# project_volume_reference samples chunk·D³ grid points at a time; this bounds its memory
# (2^24 points ≈ 200 MB of float32 grid + samples).
_REFERENCE_POINTS_PER_CHUNK = 2**24


def project_points(
    values: torch.Tensor,
    coords_px: torch.Tensor,
    rotations: torch.Tensor,
    shifts_px: torch.Tensor,
    box_size: int,
) -> torch.Tensor:
    """Project point masses (voxel values) with bilinear splatting.

    Each point r is moved to ``(A r)_xy − origin + D//2`` and its value spread over the four
    surrounding pixels with bilinear weights; contributions falling outside the box are
    dropped. Differentiable w.r.t. ``values``, ``rotations`` and ``shifts_px`` (the splat is
    piecewise linear in the positions). Batched: no Python loop over particles.

    Args:
        values: ``(b, n)`` values per particle, or ``(n,)`` shared by all particles.
        coords_px: ``(n, 3)`` (x, y, z) point coordinates in pixels from the box centre.
        rotations: ``(b, 3, 3)`` RELION matrices A.
        shifts_px: ``(b, 2)`` RELION origins (x, y) in pixels.
        box_size: D.

    Returns:
        ``(b, D, D)`` images ``[y, x]`` in the dtype of ``values``.
    """
    d = box_size
    b = rotations.shape[0]
    dtype = values.dtype
    if values.ndim == 1:
        values = values.expand(b, -1)
    # [b, 2, n] positions in pixel indices (x, y)
    xy = torch.matmul(rotations[:, :2, :].to(dtype), coords_px.to(dtype).T)
    xy = xy - (shifts_px.to(dtype)[:, :, None] - d // 2)
    corner = torch.floor(xy.detach())
    frac = xy - corner  # [b, 2, n], differentiable in the positions
    # Splat onto a canvas with a one-pixel border, so that a point whose lower-left corner is
    # in [-1, D-1] needs no bounds checks; farther points are zeroed and clamped. The four
    # bilinear corners go to four channels at the *same* index (one index_add of rows of 4),
    # then the channels are shifted into place on the small images.
    dp = d + 2
    clamped = corner.clamp(-1, d - 1)
    inside = (clamped == corner).all(1)  # [b, n]
    base = (clamped[:, 1] + 1) * dp + (clamped[:, 0] + 1)  # [b, n] exact small integers
    base = base.long() + (torch.arange(b, device=values.device) * (dp * dp))[:, None]
    v = torch.where(inside, values, 0)
    fx, fy = frac[:, 0], frac[:, 1]
    v_y1 = v * fy
    v_y0 = v - v_y1
    v_y0_x1, v_y1_x1 = v_y0 * fx, v_y1 * fx
    src = torch.stack([v_y0 - v_y0_x1, v_y0_x1, v_y1 - v_y1_x1, v_y1_x1], -1)  # [b, n, 4]
    canvas = values.new_zeros(b * dp * dp, 4).index_add(0, base.reshape(-1), src.reshape(-1, 4))
    c = canvas.reshape(b, dp, dp, 4)  # channel k holds corner (x0 + k % 2, y0 + k // 2)
    return (c[:, 1:-1, 1:-1, 0] + c[:, 1:-1, :-2, 1] + c[:, :-2, 1:-1, 2] + c[:, :-2, :-2, 3])


def project_volume_reference(
    volume: torch.Tensor, rotations: torch.Tensor, shifts_px: torch.Tensor
) -> torch.Tensor:
    """Slow reference projector: trilinear resampling of the rotated grid, summed along z.

    ``image(x, y) = Σ_z V(Aᵀ (x, y, z))`` with V sampled trilinearly (zero outside the box),
    then a Fourier sub-pixel shift by minus the origin.

    Args:
        volume: ``(D, D, D)`` map ``[z, y, x]``.
        rotations: ``(b, 3, 3)`` RELION matrices A.
        shifts_px: ``(b, 2)`` RELION origins (x, y) in pixels.

    Returns:
        ``(b, D, D)`` images ``[y, x]`` in the dtype of ``volume`` (float32 for integer maps).
    """
    if not volume.is_floating_point():
        volume = volume.float()
    dtype, device = volume.dtype, volume.device
    d = volume.shape[-1]
    axis = torch.arange(d, dtype=dtype, device=device) - d // 2
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = torch.stack([xx, yy, zz], -1).reshape(-1, 3)  # [D³, 3] (x, y, z) image-frame points
    rotations = rotations.to(dtype=dtype, device=device)
    chunk = max(1, _REFERENCE_POINTS_PER_CHUNK // d**3)
    inp = volume[None, None].expand(min(chunk, rotations.shape[0]), 1, d, d, d)
    images = []
    for start in range(0, rotations.shape[0], chunk):
        rot = rotations[start:start + chunk]
        # Aᵀ r for each point: [c, D³, 3]; row vectors times A gives (Aᵀ r)ᵀ
        src = torch.matmul(r, rot)
        grid = (src + d // 2) * (2.0 / (d - 1)) - 1.0  # align_corners=True: index → [-1, 1]
        grid = grid.reshape(len(rot), d, d, d, 3)
        sampled = F.grid_sample(inp[: len(rot)], grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)  # [c, 1, z, y, x]
        images.append(sampled[:, 0].sum(1))
    proj = torch.cat(images)
    return fourier_shift(proj, -shifts_px.to(dtype=dtype, device=device))
