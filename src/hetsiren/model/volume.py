"""The real-space volume HetSIREN decodes: V = V0 + ΔV on the voxels of a mask (Eqs. 2, 11).

The decoder emits one value per *decoder voxel* (inside the focus mask, or the sphere inscribed
in the box by default). In a focused run (Eq. 11) the voxels of V0 outside the mask still take
part in every projection as a constant ("static") part. Everything lives in buffers, so the
run's ``model.pt`` carries V0 and the mask and maps can be decoded without the input files.
"""

from __future__ import annotations

import torch
from torch import nn

from hetsiren.geometry import grid_coordinates, sphere_mask

__all__ = ["MaskedVolume", "pad_values"]

# The three forward neighbours (+x, +y, +z) used for the spatial gradient of Eq. 9, as flat
# offsets in a [z, y, x] grid of size D: +x = 1, +y = D, +z = D*D (filled in per box).
_AXES = 3


class MaskedVolume(nn.Module):
    """Geometry and reference values of the decoded volume.

    Buffers:
        decoder_index: ``(n,)`` flat ``[z, y, x]`` indices of the decoder voxels.
        coords_px: ``(n, 3)`` their (x, y, z) coordinates in pixels from the box centre.
        v0: ``(n,)`` reference values there.
        static_coords_px / static_values: ``(m, 3)`` / ``(m,)`` reference voxels outside the
            decoder mask (non-zero, inside the inscribed sphere), projected as they are.
        neighbour_pos: ``(n, 3)`` position in the decoder list of each voxel's +x/+y/+z
            neighbour, -1 where the neighbour is not a decoder voxel.
        neighbour_v0: ``(n, 3)`` the reference value there (used when neighbour_pos is -1).
        v0_grid: ``(D, D, D)`` the whole reference map.
    """

    decoder_index: torch.Tensor
    coords_px: torch.Tensor
    v0: torch.Tensor
    static_coords_px: torch.Tensor
    static_values: torch.Tensor
    neighbour_pos: torch.Tensor
    neighbour_v0: torch.Tensor
    v0_grid: torch.Tensor
    ref_stats: torch.Tensor

    def __init__(self, box_size: int, v0: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None):
        """
        Args:
            box_size: D.
            v0: ``(D, D, D)`` reference map ``[z, y, x]`` or None for V0 = 0.
            mask: ``(D, D, D)`` boolean focus mask or None for the inscribed sphere.
        """
        super().__init__()
        d = box_size
        self.box_size = d
        sphere = sphere_mask(d)
        decoder_mask = sphere if mask is None else (mask.bool() & sphere)
        v0_grid = torch.zeros(d, d, d) if v0 is None else v0.detach().float().clone()
        coords = grid_coordinates(d).reshape(-1, 3)
        flat = decoder_mask.reshape(-1)
        decoder_index = flat.nonzero().squeeze(1)
        static = sphere.reshape(-1) & ~flat & (v0_grid.reshape(-1) != 0)

        # Neighbour tables for the spatial gradient (Eq. 9).
        position = torch.full((d**3,), -1, dtype=torch.long)
        position[decoder_index] = torch.arange(len(decoder_index))
        zyx = torch.stack(torch.unravel_index(decoder_index, (d, d, d)), 1)  # [n, 3] (z, y, x)
        nb_pos, nb_v0 = [], []
        for axis in (2, 1, 0):  # +x, +y, +z
            nb = zyx.clone()
            nb[:, axis] += 1
            inside = nb[:, axis] < d
            nb_flat = (nb[:, 0] * d + nb[:, 1]) * d + nb[:, 2]
            nb_flat = torch.where(inside, nb_flat, torch.zeros_like(nb_flat))
            nb_pos.append(torch.where(inside, position[nb_flat], torch.full_like(nb_flat, -1)))
            nb_v0.append(torch.where(inside, v0_grid.reshape(-1)[nb_flat], torch.zeros(())))

        self.register_buffer("decoder_index", decoder_index)
        self.register_buffer("coords_px", coords[decoder_index].contiguous())
        self.register_buffer("v0", v0_grid.reshape(-1)[decoder_index].contiguous())
        self.register_buffer("static_coords_px", coords[static].contiguous())
        self.register_buffer("static_values", v0_grid.reshape(-1)[static].contiguous())
        self.register_buffer("neighbour_pos", torch.stack(nb_pos, 1))
        self.register_buffer("neighbour_v0", torch.stack(nb_v0, 1))
        # Derived tables (not saved: rebuilt from the two above). Per axis, contiguous, with
        # -1 replaced by n, the position of a zero column appended to the values: the
        # neighbour gather needs no mask. inverse[k][i] = j where neighbour k of voxel j is
        # voxel i (n where none): the adjoint of the gather is another gather.
        n = len(decoder_index)
        inverse = torch.full((n + 1, _AXES), n, dtype=torch.long)
        for k in range(_AXES):
            has = self.neighbour_pos[:, k] >= 0
            inverse[self.neighbour_pos[has, k], k] = has.nonzero().squeeze(1)
        for k in range(_AXES):
            nb = self.neighbour_pos[:, k]
            self.register_buffer(f"_gather_{k}", torch.where(nb >= 0, nb, n).contiguous(),
                                 persistent=False)
            self.register_buffer(f"_adjoint_{k}", inverse[:n, k].contiguous(), persistent=False)
            # V0 of the neighbour where it is not a decoder voxel, 0 where it is
            outer_v0 = torch.where(nb >= 0, 0.0, self.neighbour_v0[:, k])
            self.register_buffer(f"_outer_v0_{k}", outer_v0, persistent=False)
        self.has_outer_neighbours = any(bool((getattr(self, f"_outer_v0_{k}") != 0).any())
                                        for k in range(_AXES))
        self.register_buffer("v0_grid", v0_grid)
        self.register_buffer("ref_stats", _stats(self.v0[None]).squeeze(0))

    @property
    def n_voxels(self) -> int:
        return self.decoder_index.numel()

    @property
    def has_static(self) -> bool:
        return self.static_values.numel() > 0

    def values(self, delta: torch.Tensor) -> torch.Tensor:
        """``(b, n)`` ΔV → ``(b, n)`` V = V0 + ΔV on the decoder voxels (Eq. 2)."""
        return self.v0 + delta

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """``(b, n)`` decoder-voxel values → ``(b, D, D, D)`` full maps (V0 elsewhere)."""
        d = self.box_size
        grid = self.v0_grid.reshape(1, -1).repeat(values.shape[0], 1).to(values.dtype)
        grid[:, self.decoder_index] = values
        return grid.reshape(-1, d, d, d)

    def forward_difference(self, values_padded: torch.Tensor, axis: int) -> torch.Tensor:
        """V(r + e_axis) − V(r) (Eq. 9's ∇V along x, y or z = axis 0, 1, 2).

        Args:
            values_padded: ``(b, n + 1)`` decoder-voxel values with a zero last column
                (:func:`pad_values`).
            axis: 0, 1, 2 for x, y, z.

        Returns:
            ``(b, n)``; a neighbour outside the decoder mask holds V0 there.
        """
        n = values_padded.shape[1] - 1
        diff = values_padded.index_select(1, getattr(self, f"_gather_{axis}"))
        diff.sub_(values_padded[:, :n])
        if self.has_outer_neighbours:
            diff.add_(getattr(self, f"_outer_v0_{axis}").to(diff.dtype))
        return diff

    def forward_difference_adjoint(self, grad_padded: torch.Tensor, axis: int) -> torch.Tensor:
        """Adjoint of :meth:`forward_difference` (without its constant V0 part).

        Args:
            grad_padded: ``(b, n + 1)`` gradient w.r.t. the differences, zero last column.
            axis: 0, 1, 2 for x, y, z.

        Returns:
            ``(b, n)`` gradient w.r.t. the values: Σ over the voxels whose neighbour is this
            one, minus the voxel's own difference gradient.
        """
        n = grad_padded.shape[1] - 1
        out = grad_padded.index_select(1, getattr(self, f"_adjoint_{axis}"))
        return out.sub_(grad_padded[:, :n])

    def stats(self, values: torch.Tensor) -> torch.Tensor:
        """``(b, n)`` values → ``(b, 4)`` (max, min, mean, std) inside the decoder mask."""
        return _stats(values)


def pad_values(values: torch.Tensor) -> torch.Tensor:
    """``(b, n)`` → ``(b, n + 1)`` with a zero last column (the target of missing neighbours)."""
    return torch.nn.functional.pad(values, (0, 1))


def _stats(values: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [values.amax(1), values.amin(1), values.mean(1), values.std(1, unbiased=False)], 1
    )
