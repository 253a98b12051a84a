"""Fourier cropping/padding, shifts and map resampling."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import blob_map
from hetsiren.physics import (
    downsample,
    fourier_crop,
    fourier_pad,
    fourier_shift,
    lowpass,
    resample_map,
)


@pytest.mark.parametrize("d,box", [(64, 32), (64, 48), (65, 33), (64, 31), (33, 20)])
def test_crop_preserves_constant_and_low_frequency_sine(d, box):
    const = torch.full((2, d, d), 3.5, dtype=torch.float64)
    torch.testing.assert_close(fourier_crop(const, box), torch.full((2, box, box), 3.5,
                                                                     dtype=torch.float64))
    # a sine with 3 periods across the field of view, phase zero at the centre pixel
    def sine(n):
        x = (torch.arange(n, dtype=torch.float64) - n // 2) / n
        return torch.sin(2 * math.pi * 3 * x)[None, None, :].expand(1, n, n)

    cropped = fourier_crop(sine(d), box)
    if d % 2 == box % 2:  # same sampling phase: exactly the sine on the new grid
        torch.testing.assert_close(cropped, sine(box), atol=1e-10, rtol=0)
    assert cropped.abs().amax().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("d,box", [(32, 48), (32, 33), (33, 64), (31, 32), (16, 16)])
def test_crop_of_pad_is_identity(d, box):
    x = torch.randn(3, d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    padded = fourier_pad(x, box)
    assert padded.shape == (3, box, box)
    torch.testing.assert_close(fourier_crop(padded, d), x)
    # padding interpolates: the mean is kept
    torch.testing.assert_close(padded.mean((1, 2)), x.mean((1, 2)))


def test_centre_stays_at_centre():
    for d, box in ((64, 32), (65, 33), (64, 33)):
        # a single blob at the exact centre
        axis = torch.arange(d, dtype=torch.float64) - d // 2
        img = torch.exp(-(axis[None, :] ** 2 + axis[:, None] ** 2) / 50)[None]
        small = fourier_crop(img, box)[0]
        assert divmod(int(small.argmax()), box) == (box // 2, box // 2)


def test_downsample_shape_and_values():
    x = torch.randn(2, 64, 64)
    assert downsample(x, 2).shape == (2, 32, 32)
    assert downsample(x, 1) is x
    torch.testing.assert_close(downsample(x, 2).mean((1, 2)), x.mean((1, 2)), atol=1e-6,
                               rtol=0)
    # differentiable (used inside the multiresolution loss)
    xd = torch.randn(1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: downsample(t, 2), (xd,))


def test_fourier_shift_integer_equals_roll_and_moves_by_plus_shift():
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    shifted = fourier_shift(x, torch.tensor([[2.0, -3.0], [0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(shifted[0], torch.roll(x[0], shifts=(-3, 2), dims=(0, 1)))
    torch.testing.assert_close(shifted[1], torch.roll(x[1], shifts=(1, 0), dims=(0, 1)))
    back = fourier_shift(fourier_shift(x, torch.full((2, 2), 0.37, dtype=torch.float64)),
                         torch.full((2, 2), -0.37, dtype=torch.float64))
    # sub-pixel round trip is exact except at the (unpaired) Nyquist frequency
    assert (back - x).abs().max() < 0.5 * x.abs().max()
    smooth = lowpass(x, cutoff_A=4.0, pixel_size_A=1.0)
    s = torch.full((2, 2), 0.37, dtype=torch.float64)
    torch.testing.assert_close(fourier_shift(fourier_shift(smooth, s), -s), smooth)


def test_lowpass_keeps_low_and_removes_high():
    d = 32
    x = (torch.arange(d, dtype=torch.float64) - d // 2) / d
    low = torch.cos(2 * math.pi * 2 * x)[None, None, :].expand(1, d, d)
    high = torch.cos(2 * math.pi * 12 * x)[None, None, :].expand(1, d, d)
    # cutoff 8 Å at 1 Å/px: frequency 2/32 = 1/16 Å⁻¹ kept, 12/32 removed
    torch.testing.assert_close(lowpass(low, 8.0, 1.0), low)
    assert lowpass(high, 8.0, 1.0).abs().max() < 1e-12


def test_resample_map_voxel_size_and_box():
    vol = blob_map(32, sigma_px=3.0).float()
    # 2 Å → 4 Å voxels, same field of view in a 16 box: values are preserved (smooth map)
    out = resample_map(vol, 2.0, 4.0, 16)
    assert out.shape == (16, 16, 16) and out.dtype == torch.float32
    assert out.sum().item() == pytest.approx(vol.sum().item() / 8, rel=1e-4)
    # same voxel size, bigger box: zero padding in real space, centre kept
    big = resample_map(vol, 2.0, 2.0, 40)
    torch.testing.assert_close(big[4:36, 4:36, 4:36], vol)
    assert big.sum().item() == pytest.approx(vol.sum().item(), rel=1e-6)
    # finer voxels: 2 Å → 1 Å, box 64 covers the same field of view
    fine = resample_map(vol, 2.0, 1.0, 64)
    assert fine.sum().item() == pytest.approx(vol.sum().item() * 8, rel=1e-4)
    torch.testing.assert_close(resample_map(fine, 1.0, 2.0, 32), vol, atol=1e-4, rtol=0)
    # a constant map stays that constant
    ones = torch.ones(20, 20, 20)
    torch.testing.assert_close(resample_map(ones, 1.5, 3.0, 10), torch.ones(10, 10, 10))
