"""Real-space projectors: the fast masked splat used in training and a slow reference.

Conventions (see ``hetsiren.geometry``): rotations are RELION matrices A, ``(b, 3, 3)``,
left-multiplying xyz column vectors; a voxel at r (pixels from the box centre D//2) lands at
``(A r)_xy``, i.e. ``image(x, y) = ∫ V(Aᵀ (x, y, z)) dz``. Shifts are RELION origins ``(b, 2)``
(x, y) in pixels: the particle's content sits at **minus** its origin. Images are ``[y, x]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hetsiren.geometry import centered_axis
from hetsiren.physics.fourier import fourier_shift

__all__ = ["SplatPlan", "project_points", "project_volume_reference"]

# SplatPlan: points per chunk (bounds the temporaries: ~16 bytes a point) and the batch size up
# to which the chunks' sampling grids are kept for the backward pass and for the other passes at
# the same poses (8 bytes a point: box 128 x 16 particles = 1.8e7 points, 140 MB, are kept;
# larger batches are recomputed chunk by chunk).
_CHUNK_POINTS = 2**22
_STORED_POINTS = 2**25

# project_volume_reference samples chunk·D³ grid points at a time; this bounds its memory
# (2^24 points ≈ 200 MB of float32 grid + samples).
_REFERENCE_POINTS_PER_CHUNK = 2**24

# ATen's bilinear grid sampler and its adjoint. The splat *is* the adjoint of bilinear
# sampling: its grad_input for output gradients = the values, a vectorised, batch-parallel
# scatter with the bounds handled per corner (no index arithmetic of our own).
_BILINEAR, _ZEROS = 0, 0
_sampler_adjoint = torch.ops.aten.grid_sampler_2d_backward


class SplatPlan:
    """Where each point lands for a batch of poses, as bilinear sampling grids per chunk.

    Built once per batch and reused by every projection at the same poses (the decoupling
    pass projects other particles' values at these poses, :meth:`project` with ``perm``).
    The batch is cut into chunks of at most ``_CHUNK_POINTS`` points so that the temporaries
    stay bounded; the chunks' grids are kept when the whole batch holds at most
    ``_STORED_POINTS`` points, and recomputed chunk by chunk otherwise (box >= 128).

    A point at pixel position (x, y) (``D//2`` = the box centre) is the grid point
    ``(x, y)·2/(D − 1) − 1`` of ``grid_sample(align_corners=True)``; the splat is that
    sampler's adjoint, so a corner outside the image is dropped and a point that lands
    partly outside keeps the weight of its corners inside.
    """

    def __init__(self, coords_px: torch.Tensor, rotations: torch.Tensor,
                 shifts_px: torch.Tensor, box_size: int):
        """
        Args:
            coords_px: ``(n, 3)`` (x, y, z) point coordinates in pixels from the box centre.
            rotations: ``(b, 3, 3)`` RELION matrices A.
            shifts_px: ``(b, 2)`` RELION origins (x, y) in pixels.
            box_size: D.
        """
        d = box_size
        self.box_size = d
        dtype = rotations.dtype if rotations.is_floating_point() else torch.float32
        # Homogeneous coordinates: position (x, y) = pose · (x, y, z, 1) with
        # pose = [A_xy | D//2 − origin], (b, 2, 4); differentiable in A and the origins.
        ones = coords_px.new_ones(len(coords_px), 1)
        self.coords_h = torch.cat([coords_px, ones], 1).to(dtype)  # [n, 4]
        self._coords_h_t = self.coords_h.T.contiguous()  # [4, n]: the fast GEMM layout
        offset = (d // 2 - shifts_px.to(dtype))[:, :, None]  # [b, 2, 1]
        self.pose = torch.cat([rotations[:, :2, :].to(dtype), offset], 2)  # [b, 2, 4]
        # pixel position → grid_sample coordinate (align_corners=True): p·s − 1
        self.scale = 2.0 / max(d - 1, 1)
        self.n_points = len(coords_px)
        b = len(rotations)
        per_chunk = max(1, _CHUNK_POINTS // max(self.n_points, 1))
        self.chunks = [(s, min(s + per_chunk, b)) for s in range(0, b, per_chunk)]
        self._stored = (b * self.n_points <= _STORED_POINTS)
        self._cache: dict[int, torch.Tensor] = {}

    @property
    def batch_size(self) -> int:
        return self.pose.shape[0]

    def grid(self, k: int) -> torch.Tensor:
        """Chunk ``k``'s ``(c, 1, n, 2)`` sampling grid (x, y in grid_sample coordinates)."""
        if k in self._cache:
            return self._cache[k]
        s, e = self.chunks[k]
        pose = self.pose[s:e].detach() * self.scale
        pose[:, :, 3] -= 1.0
        # [c·2, n] rows x0, y0, x1, y1, ... (a GEMM with n columns), seen as (c, 1, n, 2):
        # the sampler reads strided grids as fast as contiguous ones
        c = e - s
        pos = torch.matmul(pose.reshape(2 * c, 4), self._coords_h_t)
        out = pos.view(c, 2, self.n_points).transpose(1, 2).unsqueeze(1)
        if self._stored:
            self._cache[k] = out
        return out

    def project(self, values: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
        """Splat ``(b, n)`` values (or ``(n,)`` shared by all) at the plan's poses.

        With ``perm`` (a ``(b,)`` permutation), image i is particle i's values at the pose of
        particle ``perm[i]``: the plan's grids are reused and the values permuted instead.

        Returns:
            ``(b, D, D)`` images ``[y, x]``, differentiable w.r.t. the values and the poses.
        """
        b = self.batch_size
        if values.ndim == 1:
            values = values.expand(b, -1)
        if perm is None:
            return _Splat.apply(values, self.pose, self)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(b, device=perm.device)
        # image'_j = values[inverse[j]] at pose j, so image'[perm[i]] = values[i] at pose perm[i]
        return _Splat.apply(values.index_select(0, inverse), self.pose, self)[perm]


class _Splat(torch.autograd.Function):
    """Bilinear splat = the adjoint of bilinear sampling. Backward: the value gradient is
    the sampling of the image gradient at the points, the pose gradient the sampler's grid
    gradient with the values as output gradients (the spatial derivative times the value)."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, pose: torch.Tensor, plan: SplatPlan) -> torch.Tensor:
        d, n = plan.box_size, plan.n_points
        b = values.shape[0]
        images = values.new_empty(b, d, d)
        for k, (s, e) in enumerate(plan.chunks):
            canvas = values.new_zeros(e - s, 1, d, d)
            images[s:e] = _sampler_adjoint(values[s:e].reshape(e - s, 1, 1, n), canvas,
                                           plan.grid(k), _BILINEAR, _ZEROS, True,
                                           [True, False])[0][:, 0]
        ctx.plan = plan
        ctx.save_for_backward(values)
        return images

    @staticmethod
    def backward(ctx, grad_images: torch.Tensor):
        plan: SplatPlan = ctx.plan
        (values,) = ctx.saved_tensors
        need_values, need_pose = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = plan.n_points
        grad_values = torch.empty_like(values) if need_values else None
        grad_pose = torch.empty_like(plan.pose) if need_pose else None
        for k, (s, e) in enumerate(plan.chunks):
            grid = plan.grid(k)
            g = grad_images[s:e].unsqueeze(1).contiguous()  # [c, 1, D, D]
            if grad_values is not None:
                grad_values[s:e] = F.grid_sample(g, grid, mode="bilinear", padding_mode="zeros",
                                                 align_corners=True).reshape(e - s, n)
            if grad_pose is not None:
                grad_grid = _sampler_adjoint(values[s:e].reshape(e - s, 1, 1, n), g, grid,
                                             _BILINEAR, _ZEROS, True, [False, True])[1]
                # grid = pose·s·coords_h − 1  ⇒  d/dpose = s · grad_gridᵀ coords_h
                grad_pose[s:e] = torch.matmul(grad_grid[:, 0].transpose(1, 2),
                                              plan.coords_h).mul_(plan.scale)
        return grad_values, grad_pose, None


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
    piecewise linear in the positions). Batched: no Python loop over particles. To project
    several value sets at the same poses, build one :class:`SplatPlan` and call its
    :meth:`~SplatPlan.project`.

    Args:
        values: ``(b, n)`` values per particle, or ``(n,)`` shared by all particles.
        coords_px: ``(n, 3)`` (x, y, z) point coordinates in pixels from the box centre.
        rotations: ``(b, 3, 3)`` RELION matrices A.
        shifts_px: ``(b, 2)`` RELION origins (x, y) in pixels.
        box_size: D.

    Returns:
        ``(b, D, D)`` images ``[y, x]`` in the dtype of ``values``.
    """
    dtype = values.dtype
    plan = SplatPlan(coords_px.to(dtype), rotations.to(dtype), shifts_px.to(dtype), box_size)
    return plan.project(values)


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
    axis = centered_axis(d, dtype=dtype, device=device)
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
