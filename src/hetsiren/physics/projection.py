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

# SplatPlan: points per chunk (bounds the temporaries: ~40 bytes a point), the batch size up to
# which the chunks' corners and weights are kept for the backward pass (16 bytes a point:
# box 64 x 16 particles = 2.0e6 points; box 128 x 16 = 1.7e7 points are recomputed), and the
# largest canvas index kept exact in float32.
_CHUNK_POINTS = 2**22
_STORED_POINTS = 2**23
_INDEX_EXACT = 2**24

# project_volume_reference samples chunk·D³ grid points at a time; this bounds its memory
# (2^24 points ≈ 200 MB of float32 grid + samples).
_REFERENCE_POINTS_PER_CHUNK = 2**24


class SplatPlan:
    """Where each point lands for a batch of poses: the bilinear corner and weights, per chunk.

    Built once per batch and reused by every projection at the same poses (the decoupling
    pass projects other particles' values at these poses, :meth:`project` with ``perm``).
    The batch is cut into chunks of at most ``_CHUNK_POINTS`` points so that the index
    arithmetic is exact in the positions' float dtype and the temporaries stay bounded; the
    chunks' corners and weights are kept for the backward pass when the whole batch holds at
    most ``_STORED_POINTS`` points, and recomputed chunk by chunk otherwise (box >= 128).

    Canvas: each particle owns a ``(D + 3, D + 3)`` canvas whose pixel (Y, X) is image pixel
    (Y - 1, X - 1). Positions are clamped to [-1, D] first, so that a point outside the box
    lands with all its weight on the one-pixel border that is dropped: no bounds mask, and the
    gather of the backward pass reads zeros there.
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
        self.canvas = d + 3
        dtype = rotations.dtype if rotations.is_floating_point() else torch.float32
        # Homogeneous coordinates: position (x, y) = pose · (x, y, z, 1) with
        # pose = [A_xy | D//2 − origin], (b, 2, 4); differentiable in A and the origins.
        ones = coords_px.new_ones(len(coords_px), 1)
        self.coords_h = torch.cat([coords_px, ones], 1).to(dtype)  # [n, 4]
        offset = (d // 2 - shifts_px.to(dtype))[:, :, None]  # [b, 2, 1]
        self.pose = torch.cat([rotations[:, :2, :].to(dtype), offset], 2)  # [b, 2, 4]
        self.n_points = len(coords_px)
        b = len(rotations)
        per_chunk = max(1, min(_CHUNK_POINTS // max(self.n_points, 1),
                               _INDEX_EXACT // self.canvas**2))
        self.chunks = [(s, min(s + per_chunk, b)) for s in range(0, b, per_chunk)]
        self._stored = (b * self.n_points <= _STORED_POINTS)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def batch_size(self) -> int:
        return self.pose.shape[0]

    def corners(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chunk ``k``: ``(c·n,)`` flat canvas index of each point's lower-left corner, and
        its ``(c, n)`` fractional offsets fx, fy within the pixel."""
        if k in self._cache:
            return self._cache[k]
        s, e = self.chunks[k]
        c, dp = e - s, self.canvas
        pose = self.pose[s:e].detach()
        # [c·2, n] positions in pixel indices: rows x0, y0, x1, y1, ...
        pos = torch.matmul(pose.reshape(-1, 4), self.coords_h.T)
        pos.clamp_(-1, self.box_size)
        corner = torch.floor(pos)
        frac = pos.sub_(corner).view(c, 2, -1)
        corner = corner.view(c, 2, -1)
        # canvas index (cy + 1)·dp + (cx + 1) + particle offset: exact small integers
        base = torch.arange(c, dtype=corner.dtype, device=corner.device) * (dp * dp) + dp + 1
        flat = torch.add(corner[:, 0], corner[:, 1], alpha=dp).add_(base[:, None])
        out = (flat.reshape(-1).long(), frac[:, 0], frac[:, 1])
        if self._stored:
            self._cache[k] = out
        return out

    def project(self, values: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
        """Splat ``(b, n)`` values (or ``(n,)`` shared by all) at the plan's poses.

        With ``perm`` (a ``(b,)`` permutation), image i is particle i's values at the pose of
        particle ``perm[i]``: the plan's corners are reused and the values permuted instead.

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
    """Bilinear splat with a hand-written adjoint: the value gradient is the bilinear
    interpolation of the image gradient at the points (a gather), the pose gradient its
    spatial derivative times the values."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, pose: torch.Tensor, plan: SplatPlan) -> torch.Tensor:
        d, dp = plan.box_size, plan.canvas
        b = values.shape[0]
        images = values.new_empty(b, d, d)
        for k, (s, e) in enumerate(plan.chunks):
            index, fx, fy = plan.corners(k)
            v = values[s:e]
            vy1 = v * fy
            vy0 = v - vy1
            w10 = vy0 * fx
            w11 = vy1 * fx
            canvas = values.new_zeros(4, (e - s) * dp * dp)
            # channel: corner (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)
            for ch, w in enumerate((vy0.sub_(w10), w10, vy1.sub_(w11), w11)):
                canvas[ch].scatter_add_(0, index, w.reshape(-1))
            c = canvas.view(4, e - s, dp, dp)
            images[s:e] = (c[0, :, 1:d + 1, 1:d + 1] + c[1, :, 1:d + 1, :d]
                           + c[2, :, :d, 1:d + 1] + c[3, :, :d, :d])
        ctx.plan = plan
        ctx.save_for_backward(values)
        return images

    @staticmethod
    def backward(ctx, grad_images: torch.Tensor):
        plan: SplatPlan = ctx.plan
        (values,) = ctx.saved_tensors
        need_values, need_pose = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        d, dp = plan.box_size, plan.canvas
        grad_values = torch.empty_like(values) if need_values else None
        grad_pose = torch.zeros_like(plan.pose) if need_pose else None
        fill_values = grad_values if grad_values is not None else values.new_empty(0)
        fill_pose = grad_pose if grad_pose is not None else values.new_empty(0)
        for k, (s, e) in enumerate(plan.chunks):
            index, fx, fy = plan.corners(k)
            padded = grad_images.new_zeros(e - s, dp, dp)
            padded[:, 1:d + 1, 1:d + 1] = grad_images[s:e]
            flat = padded.reshape(-1)
            # gradient at the four corners; offsets stay inside each particle's canvas
            g00, g10, g01, g11 = (flat[o:].index_select(0, index).view_as(fx)
                                  for o in (0, 1, dp, dp + 1))
            # bilinear interpolation (addcmul: torch.lerp with a tensor weight is ~2x slower)
            d_low, d_high = g10 - g00, g11 - g01
            low = torch.addcmul(g00, fx, d_low)
            rise = torch.addcmul(g01, fx, d_high).sub_(low)
            if need_values:
                fill_values[s:e] = torch.addcmul(low, fy, rise)
            if need_pose:
                v = values[s:e]
                gx = torch.addcmul(d_low, fy, d_high.sub_(d_low)).mul_(v)
                gy = rise.mul_(v)
                # clamped coordinates (outside [-1, D]) do not move with the pose
                pos = torch.matmul(plan.pose[s:e].detach(), plan.coords_h.T)  # [c, 2, n]
                gxy = torch.stack([gx, gy], 1)
                gxy = gxy.masked_fill_((pos < -1) | (pos > d), 0)
                fill_pose[s:e] = torch.matmul(gxy, plan.coords_h)
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
