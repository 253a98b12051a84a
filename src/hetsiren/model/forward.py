"""The HetSIREN module: networks + masked volume + real-space image formation (Eq. 1).

``HetSIREN`` owns everything that goes into ``model.pt``: the encoders and decoder
(``net``), V0 and the mask (``volume``) and the projector settings. The training step and the
analysis commands call its methods; the losses live in ``hetsiren.train.losses``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hetsiren.errors import UserInputError
from hetsiren.model.network import HetSIRENNet, NetworkConfig
from hetsiren.model.volume import MaskedVolume
from hetsiren.physics import SplatPlan

__all__ = ["HetSIREN", "ProjectionPlan", "build_model", "model_from_state"]


class HetSIREN(nn.Module):
    """Encoder(s) → z → decoder → V = V0 + ΔV → projection at the particle's pose."""

    def __init__(self, net: HetSIRENNet, volume: MaskedVolume):
        super().__init__()
        self.net = net
        self.volume = volume

    @property
    def box_size(self) -> int:
        return self.volume.box_size

    def decode_values(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` latent → ``(b, n)`` V = V0 + ΔV on the decoder voxels (float32).

        V0 enters as part of the output layer's bias, so V is written in one pass over
        ``(b, n)``. Under autocast (the hidden state comes out in bfloat16) V0 is added in
        float32 after the layer instead, so that the reference keeps its precision.
        """
        decoder = self.net.decoder
        hidden = decoder.features(z)
        v0 = self.volume.v0
        if hidden.dtype != v0.dtype:
            return self.volume.values(decoder.out(hidden).float())
        return F.linear(hidden, decoder.out.weight, decoder.out.bias + v0)

    def decode_maps(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` latent → ``(b, D, D, D)`` maps ``[z, y, x]``."""
        return self.volume.to_grid(self.decode_values(z))

    def projection_plan(self, rotations: torch.Tensor, shifts_px: torch.Tensor
                        ) -> ProjectionPlan:
        """Where the decoder voxels (and the static reference voxels) land at these poses;
        build once per batch and pass to :meth:`project`.

        Args:
            rotations: ``(b, 3, 3)`` RELION matrices A.
            shifts_px: ``(b, 2)`` origins in pixels (RELION sign).
        """
        d, vol = self.box_size, self.volume
        dtype = vol.coords_px.dtype
        rotations, shifts_px = rotations.to(dtype), shifts_px.to(dtype)
        static = (SplatPlan(vol.static_coords_px, rotations, shifts_px, d)
                  if vol.has_static else None)
        return ProjectionPlan(SplatPlan(vol.coords_px, rotations, shifts_px, d), static)

    def project(self, values: torch.Tensor, plan: ProjectionPlan,
                perm: torch.Tensor | None = None) -> torch.Tensor:
        """Clean projections (P ∘ T ∘ R)(V) of Eq. 1, before the CTF.

        Args:
            values: ``(b, n)`` V on the decoder voxels.
            plan: the batch's poses (:meth:`projection_plan`).
            perm: ``(b,)`` permutation: project particle i's V at the pose of ``perm[i]``
                (the pose-decoupling pass of Eq. 3) reusing the plan.

        Returns:
            ``(b, D, D)`` images; reference voxels outside a focus mask are included.
        """
        images = plan.decoder.project(values, perm)
        if plan.static is not None:
            static = plan.static.project(self.volume.static_values)
            images = images + (static if perm is None else static[perm])
        return images


class ProjectionPlan(NamedTuple):
    """Splat plans of one batch: decoder voxels and, in a focused run, the static voxels."""

    decoder: SplatPlan
    static: SplatPlan | None


def build_model(network: NetworkConfig, v0: torch.Tensor | None, mask: torch.Tensor | None
                ) -> HetSIREN:
    """A new model: networks of ``network`` over the ``(D, D, D)`` mask (inscribed sphere when
    None), with reference ``(D, D, D)`` V0 (zero when None)."""
    volume = MaskedVolume(network.box_size, v0=v0, mask=mask)
    return HetSIREN(HetSIRENNet(network, n_voxels=volume.n_voxels), volume)


def model_from_state(network: NetworkConfig, state: dict[str, torch.Tensor],
                     source: str | Path = "the checkpoint") -> HetSIREN:
    """Rebuild the module from a checkpoint's state dict (V0 and the mask are in it).

    Raises :class:`UserInputError` naming ``source`` when the weights do not fit ``network``.
    """
    box = network.box_size
    try:
        v0 = state["volume.v0_grid"]
        mask = torch.zeros(box**3, dtype=torch.bool)
        mask[state["volume.decoder_index"]] = True
        model = build_model(network, v0, mask.reshape(box, box, box))
        model.load_state_dict(state)
    except (KeyError, RuntimeError, IndexError, TypeError) as exc:
        detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise UserInputError(f"{source}: the weights do not fit the run's configuration "
                             f"({detail}); is it this run's checkpoint?") from exc
    return model
