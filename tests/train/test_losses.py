"""Properties of the cost function's terms (train/losses.py), each with a control that fails."""

from __future__ import annotations

import math

import pytest
import torch

from hetsiren.errors import UserInputError
from hetsiren.model.volume import MaskedVolume
from hetsiren.physics import downsample
from hetsiren.train import losses as L

D = 16


def _disc(d: int) -> torch.Tensor:
    from hetsiren.geometry import sphere_mask

    return sphere_mask(d, radius_px=d // 2, ndim=2).double()


def test_tv_of_a_constant_map_is_zero():
    # a constant V0 everywhere, decoded on a focus cube away from the box edge (beyond the
    # edge a neighbour counts as 0): every neighbour holds the same value
    mask = torch.zeros(D, D, D, dtype=torch.bool)
    mask[4:12, 4:12, 4:12] = True
    volume = MaskedVolume(D, v0=torch.full((D, D, D), 2.5), mask=mask)
    reg = L.volume_regularizers(volume, volume.v0[None].repeat(2, 1).double())
    assert reg.tv_l1 == 0 and reg.tv_l2 == 0
    assert reg.l1 == pytest.approx(2.5)
    # control: a ramp along x has a gradient everywhere
    ramp = volume.v0 + volume.coords_px[:, 0]
    assert L.volume_regularizers(volume, ramp[None]).tv_l1 > 0.5
    # and a constant ΔV region next to V0 = 0 has its edge at the mask boundary
    sphere = MaskedVolume(D)
    edge = L.volume_regularizers(sphere, torch.ones(1, sphere.n_voxels))
    assert edge.tv_l1 > 0


def test_negativity_of_a_positive_map_is_zero():
    volume = MaskedVolume(D)
    positive = torch.rand(3, volume.n_voxels, dtype=torch.float64) + 0.1
    # (|v| - v) / 2 summed: zero up to rounding
    assert L.volume_regularizers(volume, positive).negativity == pytest.approx(0, abs=1e-12)
    # control: the negative part is penalised by its mean magnitude, like L1
    reg = L.volume_regularizers(volume, -positive)
    assert reg.negativity == pytest.approx(float(positive.mean())) == pytest.approx(
        float(reg.l1))


def test_decoupling_loss_is_zero_for_identical_latents():
    z = torch.randn(8, 4)
    assert L.decoupling_loss(z, z.clone(), z.clone()) == 0
    assert L.decoupling_loss(z, z, z[torch.randperm(8)]) > 0  # control: a shuffled z


@pytest.mark.parametrize("kind", ["mse", "corr"])
def test_multiresolution_with_factor_one_is_the_plain_loss(kind):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(4, D, D, generator=gen, dtype=torch.float64)
    target = pred + 0.3 * torch.randn(4, D, D, generator=gen, dtype=torch.float64)
    masks = {1: _disc(D), 2: _disc(D // 2)}
    plain = L.image_loss(pred, target, masks[1], kind)
    assert L.multires_image_loss(pred, target, (1,), kind, downsample, masks) == plain
    both = L.multires_image_loss(pred, target, (1, 2), kind, downsample, masks)
    half = L.image_loss(downsample(pred, 2), downsample(target, 2), masks[2], kind)
    assert both == pytest.approx(float(plain + half))
    assert half != pytest.approx(float(plain))  # control: the factor-2 term is another term


def test_image_loss_kinds_and_an_unknown_one():
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, D, D, generator=gen, dtype=torch.float64)
    mask = _disc(D)
    assert L.image_loss(images, images, mask, "mse") == 0
    assert L.image_loss(3 * images + 1, images, mask, "corr") == pytest.approx(0, abs=1e-9)
    assert L.image_loss(3 * images + 1, images, mask, "mse") > 0
    with pytest.raises(UserInputError, match="'correlation'"):  # was silently "corr"
        L.image_loss(images, images, mask, "correlation")


def test_kl_loss_is_zero_at_the_prior_and_the_closed_form_elsewhere():
    zeros = torch.zeros(4, 3)
    assert float(L.kl_loss(zeros, zeros)) == 0.0
    # one dimension N(1, e^-1) against N(0, 1): (1 + e^-1 - 1 + 1) / 2; summed over 3 dims
    mean, logvar = torch.ones(4, 3), -torch.ones(4, 3)
    expected = 3 * 0.5 * (1 + math.exp(-1) - 1 + 1)
    assert float(L.kl_loss(mean, logvar)) == pytest.approx(expected)
