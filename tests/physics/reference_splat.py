"""The masked bilinear splat as it was before the fast projector (issue 11), kept as the
reference that ``hetsiren.physics.project_points`` is checked against: plain autograd, one
``index_add`` of the four corners, no plan reuse."""

from __future__ import annotations

import torch


def reference_project_points(
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
