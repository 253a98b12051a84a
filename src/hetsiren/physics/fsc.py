"""Fourier shell correlation between two maps and the resolution where it crosses a threshold.

Shells are one Fourier voxel thick: shell k holds the frequencies with
``k − ½ ≤ |f|·D < k + ½`` (f in cycles/voxel), k = 1 … D//2; its frequency is ``k / (D·pixel)``
in 1/Å. The DC term (k = 0) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hetsiren.geometry import centered_axis
from hetsiren.physics.fourier import centered_fftn

__all__ = ["FSCCurve", "fsc", "resolution_at"]


@dataclass(frozen=True)
class FSCCurve:
    """FSC per Fourier shell."""

    frequency_per_A: np.ndarray
    """``(K,)`` shell frequencies k / (D·pixel), k = 1 … K (K = D//2 unless the curve runs
    through the corners), in 1/Å."""
    fsc: np.ndarray
    """``(K,)`` correlation in each shell."""
    pixel_size_A: float
    """Voxel size of the maps in Å."""

    @property
    def resolution_A(self) -> np.ndarray:
        """``(D//2,)`` shell resolutions 1/frequency in Å."""
        return 1.0 / self.frequency_per_A


def _shell_index(d: int, device=None) -> torch.Tensor:
    """``(D, D, D)`` integer shell of each voxel of a centred spectrum."""
    axis = centered_axis(d, dtype=torch.float64, device=device)
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.round(torch.sqrt(xx**2 + yy**2 + zz**2)).long()


def fsc(v1: torch.Tensor, v2: torch.Tensor, pixel_size_A: float,
        through_corners: bool = False) -> FSCCurve:
    """FSC of two maps of the same box and voxel size.

    Args:
        v1, v2: ``(D, D, D)`` maps ``[z, y, x]`` (tensors or numpy arrays).
        pixel_size_A: voxel size in Å.
        through_corners: also the shells beyond Nyquist, out to the cube's corners
            (k up to √3·D/2; partial shells), for weighting maps that hold them.

    Returns:
        :class:`FSCCurve` with shells 1 … D//2 (1 … ⌊√3·D/2⌉ with ``through_corners``). A
        shell where either map has no power gets 0.
    """
    a = torch.as_tensor(np.asarray(v1) if not isinstance(v1, torch.Tensor) else v1)
    b = torch.as_tensor(np.asarray(v2) if not isinstance(v2, torch.Tensor) else v2)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"fsc: maps must be (D, D, D) of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a = a.detach().to(torch.float64)
    b = b.detach().to(device=a.device, dtype=torch.float64)
    d = a.shape[-1]
    fa, fb = centered_fftn(a, 3), centered_fftn(b, 3)
    shell = _shell_index(d, a.device).reshape(-1)
    n_shells = int(shell.max()) + 1 if through_corners else d // 2 + 1
    keep = shell < n_shells
    shell = shell[keep]

    def sums(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_shells, dtype=torch.float64, device=a.device).index_add_(
            0, shell, x.reshape(-1)[keep])

    cross = sums((fa * fb.conj()).real)
    p1, p2 = sums(fa.abs() ** 2), sums(fb.abs() ** 2)
    denom = torch.sqrt(p1 * p2)
    values = torch.where(denom > 0, cross / torch.where(denom > 0, denom, 1.0), 0.0)
    k = np.arange(1, n_shells, dtype=np.float64)
    return FSCCurve(frequency_per_A=k / (d * pixel_size_A), fsc=values[1:].cpu().numpy(),
                    pixel_size_A=float(pixel_size_A))


def resolution_at(curve: FSCCurve, threshold: float) -> float:
    """Resolution in Å where the FSC first drops below ``threshold``.

    Linear interpolation in frequency between the last shell at or above the threshold and the
    first below it. Returns the Nyquist resolution ``2 · pixel`` when the curve never drops
    below, and the first shell's resolution when it starts below.
    """
    f, c = np.asarray(curve.frequency_per_A), np.asarray(curve.fsc)
    below = np.nonzero(c < threshold)[0]
    if len(below) == 0:
        return 2.0 * curve.pixel_size_A
    i = int(below[0])
    if i == 0:
        return float(1.0 / f[0])
    t = (c[i - 1] - threshold) / (c[i - 1] - c[i])
    return float(1.0 / (f[i - 1] + t * (f[i] - f[i - 1])))
