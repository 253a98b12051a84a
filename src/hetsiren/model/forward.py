"""The HetSIREN module: networks + masked volume + real-space image formation (Eq. 1).

``HetSIREN`` owns everything that goes into ``model.pt``: the encoders and decoder
(``net``), V0 and the mask (``volume``) and the projector settings. The training step and the
analysis commands call its methods; the losses live in ``hetsiren.train.losses``.
"""

from __future__ import annotations

import torch
from torch import nn

from hetsiren.model.volume import MaskedVolume
from hetsiren.physics import project_points

__all__ = ["HetSIREN"]


class HetSIREN(nn.Module):
    """Encoder(s) → z → decoder → V = V0 + ΔV → projection at the particle's pose."""

    def __init__(self, net: nn.Module, volume: MaskedVolume):
        super().__init__()
        self.net = net
        self.volume = volume

    @property
    def box_size(self) -> int:
        return self.volume.box_size

    def decode_values(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` latent → ``(b, n)`` V = V0 + ΔV on the decoder voxels (float32)."""
        return self.volume.values(self.net.decode(z).float())

    def decode_maps(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` latent → ``(b, D, D, D)`` maps ``[z, y, x]``."""
        return self.volume.to_grid(self.decode_values(z))

    def project(self, values: torch.Tensor, rotations: torch.Tensor, shifts_px: torch.Tensor
                ) -> torch.Tensor:
        """Clean projections (P ∘ T ∘ R)(V) of Eq. 1, before the CTF.

        Args:
            values: ``(b, n)`` V on the decoder voxels.
            rotations: ``(b, 3, 3)`` RELION matrices A.
            shifts_px: ``(b, 2)`` origins in pixels (RELION sign).

        Returns:
            ``(b, D, D)`` images; reference voxels outside a focus mask are included.
        """
        d = self.box_size
        images = project_points(values, self.volume.coords_px, rotations, shifts_px, d)
        if self.volume.has_static:
            images = images + project_points(self.volume.static_values,
                                             self.volume.static_coords_px, rotations,
                                             shifts_px, d)
        return images
