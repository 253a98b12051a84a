"""Contrast transfer function in RELION's convention, and CTF corrections.

RELION (``ctf.h``), with s the spatial frequency in 1/Å and θ its azimuth::

    Δf(θ) = (U + V)/2 + (U − V)/2 · cos(2(θ − angle))        (defocus, Å; underfocus > 0)
    χ(s)  = −π λ Δf s² + (π/2) Cs λ³ s⁴ − phase_shift − atan(w / √(1 − w²))
    CTF   = −sin(χ) · exp(−B s² / 4)

so CTF(0) = +w (amplitude contrast) and the first lobe is positive. A positive density,
projected and multiplied by this CTF, matches particles extracted the RELION way (inverted
contrast, protein bright). λ is the relativistic electron wavelength, RELION's
``12.2643247 / √(V (1 + 0.978466e-6 V))`` Å with V in volts.

CTFs are ``(b, D, D // 2 + 1)`` in the rfft layout of :mod:`hetsiren.physics.fourier`.
"""

from __future__ import annotations

import math

import torch

from hetsiren.physics.fourier import filter_images, rfft2_frequencies_per_A

__all__ = [
    "DEFAULT_WIENER_SNR",
    "apply_ctf",
    "compute_ctf",
    "electron_wavelength_A",
    "phase_flip",
    "wiener_filter",
]

# RELION's wavelength constants (ctf.h): h / √(2 m e) in Å·V^½ and e / (2 m c²) in 1/V.
_WAVELENGTH_NUMERATOR_A = 12.2643247
_RELATIVISTIC_PER_V = 0.978466e-6
_MM_TO_A = 1e7

# Default Wiener constant 1/SNR = 0.1: a CTF correction rather than a statistically optimal
# filter. The gain c/(c² + 0.1) is 0.91 at |CTF| = 1 and at most 1.58 (near |CTF| = 0.32), so
# CTF zeros are not blown up while the phases are corrected everywhere.
DEFAULT_WIENER_SNR = 10.0


def electron_wavelength_A(voltage_kv: torch.Tensor | float) -> torch.Tensor | float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV (RELION)."""
    volts = voltage_kv * 1e3
    if isinstance(volts, torch.Tensor):
        return _WAVELENGTH_NUMERATOR_A / torch.sqrt(volts * (1 + _RELATIVISTIC_PER_V * volts))
    return _WAVELENGTH_NUMERATOR_A / math.sqrt(volts * (1 + _RELATIVISTIC_PER_V * volts))


def compute_ctf(
    defocus_u_A: torch.Tensor,
    defocus_v_A: torch.Tensor,
    astigmatism_angle_rad: torch.Tensor,
    voltage_kv: torch.Tensor,
    cs_mm: torch.Tensor,
    amplitude_contrast: torch.Tensor,
    phase_shift_rad: torch.Tensor,
    bfactor_A2: torch.Tensor,
    box_size: int,
    pixel_size_A: float | torch.Tensor,
) -> torch.Tensor:
    """RELION CTF of each particle on the rfft grid.

    Args:
        defocus_u_A, defocus_v_A: ``(b,)`` defoci in Å (underfocus positive, RELION/CTFFIND).
        astigmatism_angle_rad: ``(b,)`` angle of the U axis from x, radians.
        voltage_kv: ``(b,)`` acceleration voltage, kV.
        cs_mm: ``(b,)`` spherical aberration, mm.
        amplitude_contrast: ``(b,)`` fraction w in [0, 1).
        phase_shift_rad: ``(b,)`` phase-plate shift, radians.
        bfactor_A2: ``(b,)`` envelope B-factor in Å² (positive damps).
        box_size: D.
        pixel_size_A: Å/pixel, scalar or ``(b,)``.

    Returns:
        ``(b, D, D // 2 + 1)`` real CTF, rfft layout, in the dtype of ``defocus_u_A`` (float32
        for integer input). Computed in float64 internally (χ reaches hundreds of radians).
    """
    out_dtype = defocus_u_A.dtype if defocus_u_A.is_floating_point() else torch.float32
    device = defocus_u_A.device

    def col(t: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64, device=device).reshape(-1, 1, 1)

    sx, sy = rfft2_frequencies_per_A(box_size, 1.0, dtype=torch.float64, device=device)
    px = col(pixel_size_A)
    sx, sy = sx / px, sy / px  # (1 or b, D, D//2+1) cycles/Å
    s2 = sx**2 + sy**2
    u, v = col(defocus_u_A), col(defocus_v_A)
    azimuth = torch.atan2(sy, sx)
    defocus = 0.5 * (u + v) + 0.5 * (u - v) * torch.cos(2 * (azimuth - col(astigmatism_angle_rad)))
    lam = electron_wavelength_A(col(voltage_kv))
    cs_A = col(cs_mm) * _MM_TO_A
    w = col(amplitude_contrast)
    chi = (-math.pi * lam * defocus * s2 + 0.5 * math.pi * cs_A * lam**3 * s2**2
           - col(phase_shift_rad) - torch.atan(w / torch.sqrt(1 - w**2)))
    ctf = -torch.sin(chi) * torch.exp(-col(bfactor_A2) * s2 / 4)
    return ctf.to(out_dtype)


def apply_ctf(images: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
    """``(b, D, D)`` images × ``(b, D, D//2+1)`` CTF in Fourier space → ``(b, D, D)``."""
    return filter_images(images, ctf)


def phase_flip(images: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
    """Multiply each Fourier component by sign(CTF): ``(b, D, D)`` → ``(b, D, D)``."""
    return filter_images(images, torch.sign(ctf))


def wiener_filter(images: torch.Tensor, ctf: torch.Tensor,
                  snr: float = DEFAULT_WIENER_SNR) -> torch.Tensor:
    """CTF-corrected images: ``F · CTF / (CTF² + 1/snr)``.

    Args:
        images: ``(b, D, D)`` observed images.
        ctf: ``(b, D, D // 2 + 1)`` their CTF (rfft layout).
        snr: Wiener SNR; default :data:`DEFAULT_WIENER_SNR` (see its note).

    Returns:
        ``(b, D, D)`` images with the CTF's phase flips and most of its modulation undone.
    """
    return filter_images(images, ctf / (ctf**2 + 1.0 / snr))
