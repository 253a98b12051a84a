"""Post-processing of half maps: soft masks, phase-randomised masked FSC, Guinier B-factor,
FSC weighting and sharpening, local resolution. Pure functions: tensors in, tensors out.

The recipe is RELION's ``relion_postprocess`` (Chen et al. 2013, Ultramicroscopy 135:24;
Rosenthal & Henderson 2003, J. Mol. Biol. 333:721):

- A mask raises the FSC of two half maps, also where they share nothing but the mask's own
  (identical) edges. The half maps' phases are therefore randomised beyond the shell where
  their unmasked FSC drops below 0.8, the randomised halves masked the same way, and their FSC
  (what the mask alone contributes) removed from the masked FSC:
  ``FSC_true = (FSC_masked − FSC_random) / (1 − FSC_random)`` beyond that shell.
- The map is the average of the halves, each shell weighted by
  ``C_ref = √(2 FSC / (1 + FSC))`` (the full map's expected correlation with the truth),
  sharpened by ``exp(−B s² / 4)`` with B the slope × 4 of ln|F| against s² (the Guinier plot)
  between 10 Å and the FSC = 0.143 resolution, and low-passed at that resolution.
- Local resolution (blocres-style, Cardone et al. 2013, J. Struct. Biol. 184:226): the FSC
  of the two halves inside a soft spherical window around each point of a coarse grid, read at
  a threshold, interpolated back to every voxel.

Shells are those of :mod:`hetsiren.physics.fsc`: shell k holds ``k − ½ ≤ |f|·D < k + ½``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hetsiren.geometry import centered_axis
from hetsiren.physics.fourier import centered_fftn, centered_ifftn
from hetsiren.physics.fsc import FSCCurve, fsc

__all__ = [
    "GUINIER_MIN_RESOLUTION_A",
    "RANDOMISE_BELOW_FSC",
    "GuinierFit",
    "MaskedFSC",
    "apply_bfactor",
    "auto_mask",
    "filter_shells",
    "fit_guinier",
    "fsc_weights",
    "guinier_plot",
    "local_resolution",
    "lowpass_map",
    "masked_fsc",
    "randomise_phases",
    "sharpen_map",
    "shell_of_resolution",
    "soft_edge",
]

RANDOMISE_BELOW_FSC = 0.8
"""Phases are randomised beyond the first shell where the unmasked FSC is below this
(RELION's ``--randomize_at_fsc`` default)."""
GUINIER_MIN_RESOLUTION_A = 10.0
"""Low-resolution end of the Guinier fit (RELION's ``--autob_lowres`` default): below it the
falloff is the molecule's shape, not its B-factor."""


# ------------------------------------------------------------------------------ shells
def _shells(d: int, device=None) -> torch.Tensor:
    """``(D, D, D)`` shell index of each voxel of a centred spectrum (as :func:`fsc`)."""
    axis = centered_axis(d, dtype=torch.float64, device=device)
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.round(torch.sqrt(xx**2 + yy**2 + zz**2)).long()


def shell_of_resolution(resolution_A: float, box_size: int, pixel_size_A: float) -> float:
    """Fractional shell k = D·pixel / resolution."""
    return box_size * pixel_size_A / resolution_A


def filter_shells(volume: torch.Tensor, per_shell: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Multiply each Fourier shell of a map by a real factor.

    Args:
        volume: ``(D, D, D)`` map.
        per_shell: ``(K,)`` factors of shells 0 … K − 1 (K = D//2 + 1: to Nyquist); voxels of
            the shells beyond (the corners of the cube) get 0.

    Returns:
        ``(D, D, D)`` filtered map, dtype of ``volume``.
    """
    d = volume.shape[-1]
    factors = torch.as_tensor(np.asarray(per_shell), dtype=torch.float64, device=volume.device)
    factors = torch.cat([factors, factors.new_zeros(1)])
    shells = _shells(d, volume.device).clamp(max=len(factors) - 1)
    spec = centered_fftn(volume.to(torch.float64), 3) * factors[shells]
    return centered_ifftn(spec, 3).real.to(volume.dtype)


def _shell_frequencies(d: int, pixel_size_A: float) -> np.ndarray:
    """``(D//2 + 1,)`` frequency of shells 0 … D//2 in 1/Å."""
    return np.arange(d // 2 + 1) / (d * pixel_size_A)


def lowpass_map(volume: torch.Tensor, resolution_A: float, pixel_size_A: float,
                edge_shells: float = 2.0) -> torch.Tensor:
    """Low-pass a map with a raised-cosine edge ``edge_shells`` wide, 0.5 at ``resolution_A``."""
    d = volume.shape[-1]
    k = torch.arange(d // 2 + 1, dtype=torch.float64)
    t = ((k - shell_of_resolution(resolution_A, d, pixel_size_A)) / edge_shells + 0.5).clamp(0, 1)
    return filter_shells(volume, 0.5 * (1 + torch.cos(math.pi * t)))


def apply_bfactor(volume: torch.Tensor, bfactor_A2: float, pixel_size_A: float) -> torch.Tensor:
    """Multiply amplitudes by ``exp(−B s² / 4)``: a negative B sharpens, a positive one blurs."""
    s = torch.from_numpy(_shell_frequencies(volume.shape[-1], pixel_size_A))
    return filter_shells(volume, torch.exp(-bfactor_A2 * s**2 / 4))


def sharpen_map(volume: torch.Tensor, pixel_size_A: float, resolution_A: float | None = None,
                bfactor_A2: float = 0.0) -> torch.Tensor:
    """Sharpen (B < 0) or blur (B > 0) a map, then low-pass it at ``resolution_A`` (the
    "internal sharpening" of decoded maps at the resolution a validation supports).

    Args:
        volume: ``(D, D, D)`` map.
        pixel_size_A: voxel size in Å.
        resolution_A: low-pass (raised-cosine edge, 0.5 there); None: no low-pass.
        bfactor_A2: amplitudes × exp(−B s²/4).

    Returns:
        ``(D, D, D)`` map, dtype of ``volume``.
    """
    out = volume
    if bfactor_A2:
        out = apply_bfactor(out, bfactor_A2, pixel_size_A)
    if resolution_A is not None:
        out = lowpass_map(out, resolution_A, pixel_size_A)
    return out


# ------------------------------------------------------------------------------ masks
def _ball(d: int, radius_px: float, device=None) -> torch.Tensor:
    axis = centered_axis(d, dtype=torch.float64, device=device)
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    return ((xx**2 + yy**2 + zz**2) <= radius_px**2 + 1e-9).to(torch.float64)


def _dilate(binary: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Binary dilation by a ball (periodic FFT convolution; masks stay away from the edge)."""
    if radius_px <= 0:
        return binary.clone()
    ball = _ball(binary.shape[-1], radius_px, binary.device)
    # centred transforms convolve with the ball about its centre D//2: no net shift
    conv = centered_ifftn(centered_fftn(binary.to(torch.float64), 3) * centered_fftn(ball, 3),
                          3).real
    return conv > 0.5


def soft_edge(binary: torch.Tensor, width_px: float) -> torch.Tensor:
    """``(D, D, D)`` bool → float mask: 1 inside, a raised cosine falling to 0 over
    ``width_px`` voxels outside (distance measured by dilations of 1 voxel each)."""
    out = binary.to(torch.float64)
    if width_px <= 0:
        return out
    previous = binary
    steps = int(math.ceil(width_px))
    for i in range(1, steps + 1):
        grown = _dilate(binary, i)
        ring = grown & ~previous
        out[ring] = 0.5 * (1 + math.cos(math.pi * min(i / width_px, 1.0)))
        previous = grown
    return out


def auto_mask(volume: torch.Tensor, pixel_size_A: float, threshold: float | None = None,
              lowpass_A: float = 15.0, extend_px: float = 3.0, soft_width_px: float = 6.0
              ) -> torch.Tensor:
    """Soft mask around a map's molecule.

    The map is low-passed at ``lowpass_A``, binarised at ``threshold`` (default: 10 % of the
    low-passed map's maximum above its median), dilated by ``extend_px`` and given a
    raised-cosine edge ``soft_width_px`` wide (RELION ``relion_mask_create --lowpass
    --ini_threshold --extend_inimask --width_soft_edge``).

    Args:
        volume: ``(D, D, D)`` map (the average of the half maps).
        pixel_size_A: voxel size in Å.
        threshold: binarisation level in the map's units, after the low-pass.

    Returns:
        ``(D, D, D)`` float64 mask in [0, 1].
    """
    smooth = lowpass_map(volume.to(torch.float64), lowpass_A, pixel_size_A)
    if threshold is None:
        base = smooth.median()
        threshold = float(base + 0.1 * (smooth.max() - base))
    binary = smooth > threshold
    if not binary.any():
        raise ValueError(f"auto_mask: no voxel above the threshold {threshold:g}")
    return soft_edge(_dilate(binary, extend_px), soft_width_px)


# ------------------------------------------------------------------------------ masked FSC
def _mirror_index(d: int, device=None) -> torch.Tensor:
    """Index of −k for each index of a centred axis (index D//2 = 0)."""
    c = d // 2
    return (2 * c - torch.arange(d, device=device)) % d


def randomise_phases(volume: torch.Tensor, beyond_shell: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace the phases of every shell > ``beyond_shell`` by random ones (amplitudes kept).

    The random phase field is antisymmetric, φ(−k) = −φ(k), so the map stays real.

    Args:
        volume: ``(D, D, D)`` map.
        beyond_shell: last shell whose phases are kept.
        generator: torch random generator (CPU), for reproducibility.

    Returns:
        ``(D, D, D)`` map, dtype of ``volume``.
    """
    d = volume.shape[-1]
    theta = torch.rand((d, d, d), generator=generator, dtype=torch.float64) * 2 * math.pi
    theta = theta.to(volume.device)
    m = _mirror_index(d, volume.device)
    phi = theta - theta[m][:, m][:, :, m]
    phi = torch.where(_shells(d, volume.device) > beyond_shell, phi, 0.0)
    spec = centered_fftn(volume.to(torch.float64), 3) * torch.polar(torch.ones_like(phi), phi)
    return centered_ifftn(spec, 3).real.to(volume.dtype)


@dataclass(frozen=True)
class MaskedFSC:
    """The four FSC curves of RELION's postprocess and where the phases were randomised."""

    unmasked: FSCCurve
    masked: FSCCurve
    randomised: FSCCurve
    """FSC of the masked, phase-randomised halves (what the mask alone contributes)."""
    corrected: FSCCurve
    """``(FSC_masked − FSC_random) / (1 − FSC_random)`` beyond ``randomise_shell``."""
    randomise_shell: int
    """Phases of shells > this were randomised."""


def masked_fsc(half1: torch.Tensor, half2: torch.Tensor, mask: torch.Tensor,
               pixel_size_A: float, randomise_below: float = RANDOMISE_BELOW_FSC,
               seed: int = 0) -> MaskedFSC:
    """Gold-standard FSC inside a mask, corrected for the mask by phase randomisation.

    Args:
        half1, half2: ``(D, D, D)`` half maps.
        mask: ``(D, D, D)`` soft mask in [0, 1].
        pixel_size_A: voxel size in Å.
        randomise_below: randomise beyond the first shell whose unmasked FSC is below this.
        seed: seed of the random phases.

    Returns:
        :class:`MaskedFSC`.
    """
    h1, h2 = (torch.as_tensor(np.asarray(h) if not isinstance(h, torch.Tensor) else h)
              .to(torch.float64) for h in (half1, half2))
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask
                        ).to(device=h1.device, dtype=torch.float64)
    h2 = h2.to(h1.device)
    unmasked = fsc(h1, h2, pixel_size_A)
    below = np.flatnonzero(unmasked.fsc < randomise_below)
    # curve index i is shell i + 1; keep the phases of the shells before the first one below
    shell = int(below[0]) if len(below) else len(unmasked.fsc)
    gen = torch.Generator().manual_seed(seed)
    r1 = randomise_phases(h1, shell, gen)
    r2 = randomise_phases(h2, shell, gen)
    masked = fsc(h1 * m, h2 * m, pixel_size_A)
    randomised = fsc(r1 * m, r2 * m, pixel_size_A)
    k = np.arange(1, len(masked.fsc) + 1)
    fr = np.minimum(randomised.fsc, 1 - 1e-6)
    corrected = np.where(k > shell, (masked.fsc - fr) / (1 - fr), masked.fsc)
    # With few particles the randomised FSC can come close to 1 in a shell where the masked
    # one is lower, and the ratio leaves [-1, 1]; a correlation cannot.
    corrected = np.clip(corrected, -1.0, 1.0)
    return MaskedFSC(unmasked, masked, randomised,
                     FSCCurve(masked.frequency_per_A, corrected, float(pixel_size_A)), shell)


# ------------------------------------------------------------------------------ sharpening
def fsc_weights(curve: FSCCurve, floor: float = 0.0) -> np.ndarray:
    """``(K + 1,)`` C_ref = √(2 FSC / (1 + FSC)) for shells 0 … K of a curve of shells 1 … K
    (1 at DC), the FSC first clipped to [``floor``, 1] (0 by default: a shell whose FSC is
    ≤ 0 gets 0)."""
    c = np.clip(np.asarray(curve.fsc, dtype=np.float64), floor, 1.0)
    return np.concatenate([[1.0], np.sqrt(2 * c / (1 + c))])


@dataclass(frozen=True)
class GuinierFit:
    """Straight line ln|F| = a + b·s² fitted between two resolutions; B = 4·b."""

    s2_per_A2: np.ndarray
    """``(D//2,)`` s² of shells 1 … D//2 in 1/Å²."""
    log_amplitude: np.ndarray
    """``(D//2,)`` ln of the mean amplitude of each shell."""
    fitted: np.ndarray
    """``(D//2,)`` bool: shells used in the fit."""
    intercept: float
    slope_A2: float
    bfactor_A2: float
    """4 × slope (negative for a map whose amplitudes fall off); sharpen with −|B|."""


def guinier_plot(volume: torch.Tensor, pixel_size_A: float) -> tuple[np.ndarray, np.ndarray]:
    """``(s² (D//2,), ln mean |F| (D//2,))`` of shells 1 … D//2."""
    d = volume.shape[-1]
    amp = centered_fftn(torch.as_tensor(volume).to(torch.float64), 3).abs().reshape(-1)
    shells = _shells(d, amp.device).reshape(-1)
    keep = shells <= d // 2
    total = torch.zeros(d // 2 + 1, dtype=torch.float64, device=amp.device)
    total.index_add_(0, shells[keep], amp[keep])
    count = torch.zeros_like(total).index_add_(0, shells[keep], torch.ones_like(amp[keep]))
    mean = (total / count.clamp(min=1)).cpu().numpy()[1:]
    s = _shell_frequencies(d, pixel_size_A)[1:]
    return s**2, np.log(np.maximum(mean, 1e-30))


def fit_guinier(volume: torch.Tensor, pixel_size_A: float, high_resolution_A: float,
                low_resolution_A: float = GUINIER_MIN_RESOLUTION_A) -> GuinierFit:
    """Fit the Guinier plot of a (masked, FSC-weighted) map between two resolutions.

    Raises:
        ValueError: fewer than 3 shells between the two resolutions.
    """
    s2, log_amp = guinier_plot(volume, pixel_size_A)
    fitted = (s2 >= 1 / low_resolution_A**2) & (s2 <= 1 / high_resolution_A**2)
    if fitted.sum() < 3:
        raise ValueError(f"Guinier fit: only {int(fitted.sum())} shells between "
                         f"{low_resolution_A:g} Å and {high_resolution_A:.2f} Å (need 3)")
    slope, intercept = np.polyfit(s2[fitted], log_amp[fitted], 1)
    return GuinierFit(s2, log_amp, fitted, float(intercept), float(slope), float(4 * slope))


# ------------------------------------------------------------------------------ local resolution
def _window_resolution(fsc_values: torch.Tensor, frequency: torch.Tensor,
                       threshold: float) -> torch.Tensor:
    """``(b, n)`` FSC of shells 1 … n → ``(b,)`` resolution in Å at ``threshold``
    (as :func:`resolution_at`: linear in frequency, Nyquist if never below)."""
    b, n = fsc_values.shape
    below = fsc_values < threshold
    first = torch.where(below.any(1), below.float().argmax(1), torch.full((b,), n,
                                                                          device=below.device))
    res = torch.empty(b, dtype=torch.float64, device=fsc_values.device)
    never = first == n
    res[never] = 1.0 / frequency[-1]
    at_start = first == 0
    res[at_start] = 1.0 / frequency[0]
    mid = ~never & ~at_start
    i = first[mid]
    c0 = fsc_values[mid, i - 1]
    c1 = fsc_values[mid, i]
    t = (c0 - threshold) / (c0 - c1)
    res[mid] = 1.0 / (frequency[i - 1] + t * (frequency[i] - frequency[i - 1]))
    return res


def local_resolution(half1: torch.Tensor, half2: torch.Tensor, pixel_size_A: float,
                     mask: torch.Tensor | None = None, window_px: int = 16, step_px: int = 2,
                     threshold: float = 0.143, batch: int = 256) -> torch.Tensor:
    """Local resolution from two half maps by FSC in a moving soft spherical window.

    Args:
        half1, half2: ``(D, D, D)`` half maps.
        pixel_size_A: voxel size in Å.
        mask: ``(D, D, D)`` mask; points where it is ≤ 0.5 are not estimated (0 in the output).
            None: the sphere inscribed in the box.
        window_px: window box (even); the window is a sphere of diameter ``window_px`` with a
            raised-cosine edge of ``window_px / 4``.
        step_px: spacing of the points where the FSC is computed; every voxel gets the
            trilinear interpolation of its neighbours.
        threshold: FSC threshold read in each window.
        batch: windows transformed at a time.

    Returns:
        ``(D, D, D)`` float32 resolution in Å inside the mask, 0 outside.
    """
    h1 = torch.as_tensor(np.asarray(half1) if not isinstance(half1, torch.Tensor) else half1
                         ).to(torch.float64)
    h2 = torch.as_tensor(np.asarray(half2) if not isinstance(half2, torch.Tensor) else half2
                         ).to(device=h1.device, dtype=torch.float64)
    d, w = h1.shape[-1], int(window_px)
    if w % 2 or w < 6 or w > d:
        raise ValueError(f"local_resolution: window {w} must be even, ≥ 6 and ≤ the box {d}")
    if mask is None:
        mask = _ball(d, d // 2 - 1, h1.device)
    inside = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask
                             ).to(h1.device) > 0.5
    # soft spherical window, radius w/2, cosine edge w/4 wide
    axis = centered_axis(w, dtype=torch.float64, device=h1.device)
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    r = torch.sqrt(xx**2 + yy**2 + zz**2)
    edge = w / 4
    t = ((r - (w / 2 - edge)) / edge).clamp(0, 1)
    window = 0.5 * (1 + torch.cos(math.pi * t))
    shells = _shells(w, h1.device).reshape(-1)
    n_shells = w // 2
    keep = (shells >= 1) & (shells <= n_shells)
    onehot = F.one_hot(shells[keep] - 1, n_shells).to(torch.float64)  # [m, n]
    frequency = torch.arange(1, n_shells + 1, dtype=torch.float64, device=h1.device) / (
        w * pixel_size_A)

    # coarse grid of window centres, pad so every window is inside the padded maps
    centres_1d = torch.arange(0, d, step_px, device=h1.device)
    cz, cy, cx = torch.meshgrid(centres_1d, centres_1d, centres_1d, indexing="ij")
    pad = w // 2
    p1 = F.pad(h1[None, None], (pad,) * 6)[0, 0]
    p2 = F.pad(h2[None, None], (pad,) * 6)[0, 0]
    near = F.max_pool3d(inside[None, None].float(), kernel_size=2 * step_px + 1, stride=1,
                        padding=step_px)[0, 0] > 0  # points next to the mask, for interpolation
    wanted = near[cz, cy, cx]
    coarse = torch.zeros(cz.shape, dtype=torch.float64, device=h1.device)
    idx = torch.nonzero(wanted)
    offs = centered_axis(w, dtype=torch.int64, device=h1.device)
    for start in range(0, len(idx), batch):
        sel = idx[start:start + batch]
        zc = cz[sel[:, 0], sel[:, 1], sel[:, 2]] + pad
        yc = cy[sel[:, 0], sel[:, 1], sel[:, 2]] + pad
        xc = cx[sel[:, 0], sel[:, 1], sel[:, 2]] + pad
        iz = (zc[:, None] + offs)[:, :, None, None]
        iy = (yc[:, None] + offs)[:, None, :, None]
        ix = (xc[:, None] + offs)[:, None, None, :]
        a = centered_fftn(p1[iz, iy, ix] * window, 3).reshape(len(sel), -1)[:, keep]
        b = centered_fftn(p2[iz, iy, ix] * window, 3).reshape(len(sel), -1)[:, keep]
        cross = (a * b.conj()).real @ onehot
        pa, pb = (a.abs() ** 2) @ onehot, (b.abs() ** 2) @ onehot
        denom = torch.sqrt(pa * pb)
        values = torch.where(denom > 0, cross / torch.where(denom > 0, denom, 1.0), 0.0)
        coarse[sel[:, 0], sel[:, 1], sel[:, 2]] = _window_resolution(values, frequency,
                                                                      threshold)
    # every voxel: trilinear interpolation of the coarse grid (its points at index·step)
    n_c = coarse.shape[-1]
    grid_1d = torch.arange(d, dtype=torch.float64, device=h1.device) / step_px / max(n_c - 1, 1)
    grid_1d = grid_1d * 2 - 1
    gz, gy, gx = torch.meshgrid(grid_1d, grid_1d, grid_1d, indexing="ij")
    grid = torch.stack([gx, gy, gz], -1)[None]
    valid = (coarse > 0).to(torch.float64)
    num = F.grid_sample(coarse[None, None], grid, mode="bilinear", align_corners=True,
                        padding_mode="border")[0, 0]
    den = F.grid_sample(valid[None, None], grid, mode="bilinear", align_corners=True,
                        padding_mode="border")[0, 0]
    out = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return torch.where(inside, out, 0.0).float()
