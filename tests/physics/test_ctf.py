"""CTF against an independent implementation of RELION's formula, and the corrections."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.constants as const
import torch

from conftest import relion_ctf_numpy
from hetsiren.physics import (
    apply_ctf,
    compute_ctf,
    electron_wavelength_A,
    phase_flip,
    wiener_filter,
)

PARAMS = [  # U, V (Å), angle (rad), kV, Cs (mm), w, phase (rad), B (Å²)
    (15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1, 0.0, 0.0),
    (21000.0, 18500.0, 0.7, 300.0, 2.7, 0.07, 0.0, 0.0),
    (9000.0, 12000.0, -1.2, 200.0, 2.0, 0.1, math.pi / 2, 50.0),
    (30000.0, 29000.0, 2.5, 120.0, 1.4, 0.15, 0.3, 120.0),
]


@pytest.mark.parametrize("box,pixel_size_A", [(64, 1.3), (33, 2.1)])
def test_compute_ctf_matches_relion_formula(box, pixel_size_A):
    cols = [torch.tensor(c, dtype=torch.float32) for c in zip(*PARAMS, strict=True)]
    ctf = compute_ctf(*cols, box_size=box, pixel_size_A=pixel_size_A)
    assert ctf.shape == (len(PARAMS), box, box // 2 + 1) and ctf.dtype == torch.float32
    # rfft layout built by hand: rows fftfreq, columns rfftfreq, in 1/Å
    fy = np.fft.fftfreq(box, d=pixel_size_A)
    fx = np.fft.rfftfreq(box, d=pixel_size_A)
    sy, sx = np.meshgrid(fy, fx, indexing="ij")
    for i, p in enumerate(PARAMS):
        expected = relion_ctf_numpy(sx, sy, *p)
        np.testing.assert_allclose(ctf[i].numpy(), expected, atol=1e-5)


def test_ctf_zero_frequency_is_plus_amplitude_contrast():
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*PARAMS, strict=True)]
    ctf = compute_ctf(*cols, box_size=32, pixel_size_A=1.0)
    w, phase = cols[5], cols[6]
    # without a phase plate CTF(0) = +w (RELION sign: first lobe positive)
    assert ctf[0, 0, 0].item() == pytest.approx(w[0].item(), abs=1e-12)
    assert ctf[1, 0, 0].item() == pytest.approx(w[1].item(), abs=1e-12)
    assert ctf[0, 0, 1] > ctf[0, 0, 0] > 0  # rises into the first (positive) lobe
    # with a phase shift φ: CTF(0) = sin(φ + asin w)
    assert ctf[2, 0, 0].item() == pytest.approx(
        math.sin(phase[2].item() + math.asin(w[2].item())), abs=1e-12)


def test_wavelength_matches_codata():
    for kv in (120.0, 200.0, 300.0):
        v = kv * 1e3
        lam_m = const.h / math.sqrt(2 * const.m_e * const.e * v
                                    * (1 + const.e * v / (2 * const.m_e * const.c**2)))
        assert electron_wavelength_A(kv) == pytest.approx(lam_m * 1e10, rel=1e-5)


def test_astigmatism_axis():
    """U along the given angle: the defocus along that direction is U."""
    box, px = 64, 1.0
    angle = 0.5
    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    astig = compute_ctf(t(20000.0), t(10000.0), t(angle), t(300.0), t(0.0), t(0.1), t(0.0),
                        t(0.0), box, px)
    round_u = compute_ctf(t(20000.0), t(20000.0), t(0.0), t(300.0), t(0.0), t(0.1), t(0.0),
                          t(0.0), box, px)
    # frequency along the U axis: (kx, ky) ∝ (cos, sin) of the angle, here (7, 4) ≈ 0.519 rad
    kx, ky = 7, 4
    assert abs(math.atan2(ky, kx) - angle) < 0.03
    assert astig[0, ky, kx].item() == pytest.approx(round_u[0, ky, kx].item(), abs=0.05)


def test_apply_phase_flip_wiener():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(3, 16, 16, generator=gen, dtype=torch.float64)
    ones = torch.ones(3, 16, 9, dtype=torch.float64)
    torch.testing.assert_close(apply_ctf(images, ones), images)
    torch.testing.assert_close(phase_flip(images, -ones), -images)
    cols = [torch.tensor(c, dtype=torch.float64) for c in zip(*PARAMS[:3], strict=True)]
    ctf = compute_ctf(*cols, box_size=16, pixel_size_A=2.0)
    # Wiener with a huge SNR undoes the CTF where it is not small
    corrupted = apply_ctf(images, ctf)
    restored = wiener_filter(corrupted, ctf, snr=1e8)
    good = ctf.abs() > 0.2
    # an astigmatic CTF is not Hermitian-consistent on the even box's Nyquist row/column
    good[:, 8, :] = False
    good[:, :, 8] = False
    err = torch.fft.rfft2(restored - images).abs()[good].max()
    assert err < 1e-3 * torch.fft.rfft2(images).abs().max()
    # phase flipping makes the CTF non-negative
    flipped = torch.fft.rfft2(phase_flip(corrupted, ctf))
    ratio = (flipped / torch.fft.rfft2(images)).real[good]
    assert ratio.min() > 0.19
    # differentiable through apply_ctf
    x = images.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda im: apply_ctf(im, ctf), (x,))
