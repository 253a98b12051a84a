"""Post-processing: phase randomisation, the mask-corrected FSC, Guinier B-factor, masks, local
resolution. Expectations come from constructions with a known answer (white noise with a
known B-factor, signal limited to known shells, halves whose noise differs by region)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import blob_map
from hetsiren.physics import fsc, resolution_at
from hetsiren.physics.postprocess import (
    apply_bfactor,
    auto_mask,
    fit_guinier,
    local_resolution,
    lowpass_map,
    masked_fsc,
    randomise_phases,
    sharpen_map,
)

D, PIXEL_A = 32, 2.0


def _shells_numpy(d: int) -> np.ndarray:
    k = np.arange(d) - d // 2
    return np.round(np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2
                            + k[None, None, :] ** 2)).astype(int)


def _numpy_lowpass(vol: np.ndarray, last_shell: int) -> np.ndarray:
    """Ideal low-pass keeping shells ≤ last_shell, written with numpy alone."""
    spec = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(vol)))
    spec[_shells_numpy(vol.shape[-1]) > last_shell] = 0
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(spec))).real


def test_randomise_phases_keeps_amplitudes_and_low_shells():
    vol = blob_map(D, seed=1) + 0.05 * torch.randn(D, D, D, dtype=torch.float64,
                                                   generator=torch.Generator().manual_seed(0))
    out = randomise_phases(vol, 5, torch.Generator().manual_seed(1))
    assert out.dtype == vol.dtype and out.shape == vol.shape
    fa = np.fft.fftn(vol.numpy())
    fb = np.fft.fftn(out.numpy())
    np.testing.assert_allclose(np.abs(fb), np.abs(fa), rtol=1e-6, atol=1e-9)
    curve = fsc(vol, out, PIXEL_A).fsc
    np.testing.assert_allclose(curve[:5], 1.0, atol=1e-9)  # shells 1..5 untouched
    assert np.abs(curve[6:]).max() < 0.2  # beyond: unrelated phases


def test_tight_mask_inflates_fsc_and_the_correction_does_not():
    """Halves share signal only up to shell 6; a sharp-edged tight mask makes their masked FSC
    high far beyond it (the mask's own edges), the corrected curve drops where the signal
    ends."""
    gen = np.random.default_rng(3)
    truth = _numpy_lowpass(blob_map(D, n_blobs=10, sigma_px=1.0, seed=2).numpy(), 6)
    noise = 0.02 * truth.std()
    h1 = truth + noise * gen.standard_normal(truth.shape)
    h2 = truth + noise * gen.standard_normal(truth.shape)
    # tight binary mask: the top 3% voxels of the truth, no soft edge
    mask = (truth > np.quantile(truth, 0.97)).astype(np.float64)
    curves = masked_fsc(torch.from_numpy(h1), torch.from_numpy(h2), torch.from_numpy(mask),
                        PIXEL_A)
    beyond = slice(8, None)  # shells 9 … 16: no shared signal
    print("unmasked ", np.round(curves.unmasked.fsc, 2))
    print("masked   ", np.round(curves.masked.fsc, 2))
    print("random   ", np.round(curves.randomised.fsc, 2))
    print("corrected", np.round(curves.corrected.fsc, 2))
    assert curves.masked.fsc[beyond].mean() > 0.3  # inflated by the mask
    assert curves.randomised.fsc[beyond].mean() > 0.3  # ... which phase randomisation sees
    assert np.abs(curves.corrected.fsc[beyond]).mean() < 0.1
    assert resolution_at(curves.masked, 0.143) < resolution_at(curves.corrected, 0.143)
    # the corrected curve crosses 0.143 within one shell of where the shared signal stops
    shell = D * PIXEL_A / resolution_at(curves.corrected, 0.143)
    assert 6 <= shell <= 8
    assert curves.randomise_shell <= 6


def test_guinier_fit_recovers_a_known_bfactor():
    """White noise (flat mean amplitude) times exp(−B s²/4) in numpy: the fit returns B."""
    rng = np.random.default_rng(0)
    d = 48
    vol = rng.standard_normal((d, d, d))
    f = np.fft.fftfreq(d) / PIXEL_A
    s2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2
    for b in (80.0, 200.0):
        blurred = np.fft.ifftn(np.fft.fftn(vol) * np.exp(-b * s2 / 4)).real
        fit = fit_guinier(torch.from_numpy(blurred), PIXEL_A, high_resolution_A=2.2 * PIXEL_A)
        print(f"B {b}: fitted {fit.bfactor_A2:.1f}")
        assert fit.bfactor_A2 == pytest.approx(-b, rel=0.05)
        # and apply_bfactor with the opposite B flattens it again
        flat = apply_bfactor(torch.from_numpy(blurred), fit.bfactor_A2, PIXEL_A)
        assert abs(fit_guinier(flat, PIXEL_A, 2.2 * PIXEL_A).bfactor_A2) < 0.05 * b
    with pytest.raises(ValueError, match="shells"):
        fit_guinier(torch.from_numpy(vol), PIXEL_A, high_resolution_A=9.0)


def test_lowpass_map_halves_the_amplitude_at_the_cutoff():
    vol = torch.from_numpy(np.random.default_rng(1).standard_normal((D, D, D)))
    out = lowpass_map(vol, resolution_A=D * PIXEL_A / 8, pixel_size_A=PIXEL_A)
    ratio = np.abs(np.fft.fftshift(np.fft.fftn(out.numpy()))) / np.abs(
        np.fft.fftshift(np.fft.fftn(vol.numpy())))
    shells = _shells_numpy(D)
    assert np.allclose(ratio[shells <= 6], 1.0)
    assert np.allclose(ratio[shells == 8], 0.5)
    assert np.allclose(ratio[(shells >= 10) & (shells <= D // 2)], 0.0, atol=1e-9)


def test_auto_mask_covers_the_molecule_with_a_soft_edge():
    vol = blob_map(D, n_blobs=6, sigma_px=2.0, seed=4)
    mask = auto_mask(vol, PIXEL_A, lowpass_A=8.0, extend_px=2, soft_width_px=3)
    assert mask.shape == vol.shape and float(mask.min()) >= 0 and float(mask.max()) <= 1
    core = vol > 0.5 * vol.max()
    assert bool((mask[core] == 1).all())
    assert float(mask[0, 0, 0]) == 0.0  # the corners stay out
    soft = (mask > 0) & (mask < 1)
    assert int(soft.sum()) > 0
    with pytest.raises(ValueError, match="threshold"):
        auto_mask(vol, PIXEL_A, threshold=1e9)


def test_local_resolution_follows_where_the_halves_agree():
    """Same signal in both halves; weak noise in the x < D/2 half of the box, strong noise in
    the other: the local resolution is finer on the weak-noise side."""
    rng = np.random.default_rng(5)
    truth = blob_map(D, n_blobs=30, sigma_px=0.8, seed=6).numpy()
    truth = truth + 0.5 * rng.standard_normal(truth.shape)  # detail at every frequency
    x = np.arange(D)[None, None, :]
    sigma = np.where(x < D // 2, 0.05, 3.0)
    h1 = truth + sigma * rng.standard_normal(truth.shape)
    h2 = truth + sigma * rng.standard_normal(truth.shape)
    locres = local_resolution(torch.from_numpy(h1), torch.from_numpy(h2), PIXEL_A,
                              window_px=12, step_px=2).numpy()
    inside = locres > 0
    good = np.median(locres[inside & (x < D // 2 - 6)])
    bad = np.median(locres[inside & (x >= D // 2 + 6)])
    print(f"local resolution: weak-noise side {good:.2f} Å, strong-noise side {bad:.2f} Å")
    assert good <= 2.5 * PIXEL_A  # near Nyquist (2 × pixel)
    assert bad > good + 1.0
    assert locres.shape == (D, D, D) and float(locres[0, 0, 0]) == 0.0  # outside the sphere


def test_sharpen_map_applies_bfactor_then_lowpass():
    vol = torch.from_numpy(np.random.default_rng(2).standard_normal((D, D, D)))
    out = sharpen_map(vol, PIXEL_A, resolution_A=D * PIXEL_A / 8, bfactor_A2=-50.0)
    spec_in = np.abs(np.fft.fftshift(np.fft.fftn(vol.numpy())))
    spec_out = np.abs(np.fft.fftshift(np.fft.fftn(out.numpy())))
    shells = _shells_numpy(D)
    s = shells / (D * PIXEL_A)
    low = (shells >= 1) & (shells <= 6)
    np.testing.assert_allclose(spec_out[low] / spec_in[low], np.exp(50.0 * s[low] ** 2 / 4),
                               rtol=1e-6)
    assert np.allclose(spec_out[(shells >= 10) & (shells <= D // 2)], 0.0, atol=1e-9)
    assert torch.equal(sharpen_map(vol, PIXEL_A), vol)  # nothing asked, nothing done
