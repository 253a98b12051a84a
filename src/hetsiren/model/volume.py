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

__all__ = ["MaskedVolume"]

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

    def forward_differences(self, values: torch.Tensor) -> torch.Tensor:
        """``(b, n)`` values → ``(b, n, 3)`` V(r + e_k) - V(r) for k = x, y, z (Eq. 9's ∇V)."""
        inside = self.neighbour_pos >= 0  # [n, 3]
        gathered = values[:, self.neighbour_pos.clamp(min=0)]  # [b, n, 3]
        neighbour = torch.where(inside, gathered, self.neighbour_v0.to(values.dtype))
        return neighbour - values.unsqueeze(-1)

    def stats(self, values: torch.Tensor) -> torch.Tensor:
        """``(b, n)`` values → ``(b, 4)`` (max, min, mean, std) inside the decoder mask."""
        return _stats(values)


def _stats(values: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [values.amax(1), values.amin(1), values.mean(1), values.std(1, unbiased=False)], 1
    )
