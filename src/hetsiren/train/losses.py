"""HetSIREN's cost function (Methods, Eqs. 3-12), as pure functions of tensors.

Normalisation follows the authors' implementation so that the paper's λ values keep their
meaning: the image term is a mean over pixels, the volume terms are means over voxels, the
decoupling terms mean squared differences over latent dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hetsiren.model.volume import MaskedVolume

__all__ = [
    "correlation_loss",
    "decoupling_loss",
    "focus_stats_loss",
    "image_loss",
    "l1_loss",
    "mse_loss",
    "multires_image_loss",
    "negativity_loss",
    "tv_losses",
]


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``(b, d, d)`` predictions vs images, mean squared error inside a ``(d, d)`` mask."""
    diff = (pred - target) * mask
    return diff.pow(2).sum((-1, -2)).mean() / mask.sum()


def correlation_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                     ) -> torch.Tensor:
    """1 - Pearson correlation per image inside a ``(d, d)`` mask, averaged over the batch."""
    m = mask.bool()
    p, t = pred[:, m], target[:, m]  # [b, n_pix]
    p = p - p.mean(1, keepdim=True)
    t = t - t.mean(1, keepdim=True)
    corr = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-8)
    return (1 - corr).mean()


def image_loss(pred, target, mask, kind: str) -> torch.Tensor:
    """Data term by name: ``"mse"`` (default, Eq. 5) or ``"corr"``."""
    return mse_loss(pred, target, mask) if kind == "mse" else correlation_loss(pred, target, mask)


def multires_image_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    factors: tuple[int, ...],
    kind: str,
    downsample: Callable[[torch.Tensor, int], torch.Tensor],
    masks: dict[int, torch.Tensor],
) -> torch.Tensor:
    """Eq. 10: sum over ω of the image loss between L_ω(images) and L_ω(predictions).

    Args:
        pred, target: ``(b, d, d)``.
        factors: downsampling factors (1 = full resolution, 2 = half resolution...).
        downsample: ``(b, d, d), factor -> (b, d/f, d/f)`` low-pass + downsampling L_ω.
        masks: factor → ``(d/f, d/f)`` circular mask of the compared region.
    """
    total = pred.new_zeros(())
    for f in factors:
        p = pred if f == 1 else downsample(pred, f)
        t = target if f == 1 else downsample(target, f)
        total = total + image_loss(p, t, masks[f], kind)
    return total


def l1_loss(values: torch.Tensor) -> torch.Tensor:
    """Eq. 7: mean |V| over the decoded voxels, ``(b, n)`` → scalar."""
    return values.abs().mean()


def negativity_loss(values: torch.Tensor) -> torch.Tensor:
    """Eq. 8: mean |min(V, 0)| over the decoded voxels."""
    return values.clamp(max=0).abs().mean()


def tv_losses(volume: MaskedVolume, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9: (mean |∇V|₁, mean |∇V|₂²) over decoder voxels and the three axes."""
    grad = volume.forward_differences(values)  # [b, n, 3]
    return grad.abs().mean(), grad.pow(2).mean()


def focus_stats_loss(volume: MaskedVolume, values: torch.Tensor) -> torch.Tensor:
    """Eq. 12: squared differences of (max, min, mean, std) inside the mask vs the reference."""
    return (volume.stats(values) - volume.ref_stats).pow(2).sum(1).mean()


def decoupling_loss(z: torch.Tensor, z_same: torch.Tensor, z_shuffled: torch.Tensor
                    ) -> torch.Tensor:
    """Eqs. 3-4: |z - z_t|² + |z - z_p,t|², as mean squared differences over dimensions."""
    return (z - z_same).pow(2).mean() + (z - z_shuffled).pow(2).mean()
