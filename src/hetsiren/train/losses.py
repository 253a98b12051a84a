"""HetSIREN's cost function (Methods, Eqs. 3-12), as pure functions of tensors.

Normalisation follows the authors' implementation so that the paper's λ values keep their
meaning: the image term is a mean over pixels, the volume terms are means over voxels, the
decoupling terms mean squared differences over latent dimensions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from hetsiren.errors import check_choice
from hetsiren.geometry import sphere_mask
from hetsiren.model.volume import MaskedVolume, pad_values
from hetsiren.train.config import DataLoss

__all__ = [
    "correlation_loss",
    "decoupling_loss",
    "focus_stats_loss",
    "image_loss",
    "kl_loss",
    "loss_masks",
    "mse_loss",
    "multires_image_loss",
    "volume_regularizers",
    "VolumeRegularizers",
]


def loss_masks(box: int, multires: tuple[int, ...], device: torch.device | str
               ) -> dict[int, torch.Tensor]:
    """The data term's masks: per downsampling factor f, the ``(box // f, box // f)`` float
    disc of radius ``box // f // 2`` about the centre."""
    return {f: sphere_mask(box // f, radius_px=box // f // 2, ndim=2).float().to(device)
            for f in multires}


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


def image_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: DataLoss
               ) -> torch.Tensor:
    """Data term by name: ``"mse"`` (default, Eq. 5) or ``"corr"``."""
    if check_choice("data loss", kind, DataLoss) == "mse":
        return mse_loss(pred, target, mask)
    return correlation_loss(pred, target, mask)


def multires_image_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    factors: tuple[int, ...],
    kind: DataLoss,
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


class VolumeRegularizers(NamedTuple):
    """The unweighted volume terms of Eqs. 7-9, each a scalar tensor."""

    l1: torch.Tensor
    """Eq. 7: mean |V| over the decoded voxels."""
    negativity: torch.Tensor
    """Eq. 8: mean |min(V, 0)|."""
    tv_l1: torch.Tensor
    """Eq. 9: mean |∇V| over voxels and the three axes."""
    tv_l2: torch.Tensor
    """Eq. 9: mean |∇V|² over voxels and the three axes."""


def volume_regularizers(volume: MaskedVolume, values: torch.Tensor) -> VolumeRegularizers:
    """Eqs. 7-9 on ``(b, n)`` decoder-voxel values, in one pass with a hand-written gradient.

    The backward pass recomputes the spatial differences axis by axis instead of keeping
    ``(b, n, 3)`` of them, and scatters their gradient back as a gather through the inverse
    neighbour table (no accumulating index_put).
    """
    return VolumeRegularizers(*_Regularizers.apply(values, volume))


class _Regularizers(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: torch.Tensor, volume: MaskedVolume):
        n_values = values.numel()
        abs_sum = torch.linalg.vector_norm(values, 1)
        l1 = abs_sum / n_values
        negativity = (abs_sum - values.sum()) / (2 * n_values)  # |v| - v = 2 |min(v, 0)|
        padded = pad_values(values)
        tv1 = values.new_zeros(())
        tv2 = values.new_zeros(())
        for axis in range(3):
            diff = volume.forward_difference(padded, axis).reshape(-1)
            tv1 = tv1 + torch.linalg.vector_norm(diff, 1)
            tv2 = tv2 + torch.dot(diff, diff)
        ctx.volume = volume
        ctx.save_for_backward(padded)
        return l1, negativity, tv1 / (3 * n_values), tv2 / (3 * n_values)

    @staticmethod
    def backward(ctx, g_l1, g_neg, g_tv1, g_tv2):
        (padded,) = ctx.saved_tensors
        volume: MaskedVolume = ctx.volume
        n = padded.shape[1] - 1
        values = padded[:, :n]
        n_values = values.numel()
        a, c = g_l1 / n_values, g_neg / n_values
        # d/dv: a·sign(v) for L1; -c where v < 0 for the negativity; 0 at v = 0 for both.
        # With s = sign(v): s·((a + c/2) − (c/2)·s) is a, −(a + c), 0 for s = 1, −1, 0.
        sign = torch.sign(values)
        grad = sign * (a + c / 2) - sign.square().mul_(c / 2)
        t1, t2 = g_tv1 / (3 * n_values), g_tv2 / (3 * n_values)
        g_padded = padded.new_zeros(padded.shape)  # last column stays 0
        g_diff = g_padded[:, :n]
        for axis in range(3):
            diff = volume.forward_difference(padded, axis)
            torch.sign(diff, out=g_diff).mul_(t1).addcmul_(diff, 2 * t2)
            grad.add_(volume.forward_difference_adjoint(g_padded, axis))
        return grad, None


def focus_stats_loss(volume: MaskedVolume, values: torch.Tensor) -> torch.Tensor:
    """Eq. 12: squared differences of (max, min, mean, std) inside the mask vs the reference."""
    return (volume.stats(values) - volume.ref_stats).pow(2).sum(1).mean()


def decoupling_loss(z: torch.Tensor, z_same: torch.Tensor, z_shuffled: torch.Tensor
                    ) -> torch.Tensor:
    """Eqs. 3-4: |z - z_t|² + |z - z_p,t|², as mean squared differences over dimensions."""
    return (z - z_same).pow(2).mean() + (z - z_shuffled).pow(2).mean()


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(mean, exp(logvar))`` from ``N(0, 1)``, summed over the ``(b, zdim)``
    latent's dimensions and averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean()
