"""The volume terms (Eqs. 7-9) as plain autograd, as they were before the fused
``volume_regularizers`` (issue 11): the reference the fused terms are checked against."""

from __future__ import annotations

import torch


def dense_forward_differences(volume, values: torch.Tensor) -> torch.Tensor:
    """``(b, n)`` → ``(b, n, 3)`` V(r + e_k) − V(r) from the saved neighbour tables, with
    V0 where the neighbour is not a decoder voxel."""
    inside = volume.neighbour_pos >= 0  # [n, 3]
    gathered = values[:, volume.neighbour_pos.clamp(min=0)]  # [b, n, 3]
    neighbour = torch.where(inside, gathered, volume.neighbour_v0.to(values.dtype))
    return neighbour - values.unsqueeze(-1)


def l1_loss(values: torch.Tensor) -> torch.Tensor:
    return values.abs().mean()


def negativity_loss(values: torch.Tensor) -> torch.Tensor:
    return values.clamp(max=0).abs().mean()


def tv_losses(volume, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    grad = dense_forward_differences(volume, values)
    return grad.abs().mean(), grad.pow(2).mean()
