"""``postprocess``: from two half maps to a map a structural biologist can judge (RELION-style).

A soft mask (given, or made from the average of the halves), the masked FSC corrected by phase
randomisation, the FSC = 0.143 resolution, the B-factor from the Guinier plot, the sharpened
FSC-weighted map, and the local resolution; see :mod:`hetsiren.physics.postprocess` for the
recipe. Writes into ``out_dir``:

- ``postprocess.mrc`` (sharpened, FSC-weighted, low-passed at the resolution),
  ``postprocess_masked.mrc`` (the same times the mask), ``mask.mrc`` (the mask used),
- ``fsc.png`` (unmasked, masked, phase-randomised and corrected FSC), ``guinier.png``,
- ``locres.mrc`` (local resolution in Å inside the mask, 0 outside) and ``locres.png`` (its
  histogram) unless switched off,
- ``postprocess.json`` (resolutions, B-factor, the curves).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetsiren.analysis.plots import plot_fsc, plot_guinier, plot_histograms
from hetsiren.errors import UserInputError
from hetsiren.io import read_map, write_map
from hetsiren.physics import FSCCurve, resolution_at
from hetsiren.physics.postprocess import (
    GUINIER_MIN_RESOLUTION_A,
    RANDOMISE_BELOW_FSC,
    GuinierFit,
    MaskedFSC,
    auto_mask,
    filter_shells,
    fit_guinier,
    fsc_weights,
    local_resolution,
    masked_fsc,
    sharpen_map,
)
from hetsiren.rundir import write_json

__all__ = ["PostprocessConfig", "PostprocessResult", "postprocess_files", "postprocess_maps"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostprocessConfig:
    """Options of ``hetsiren postprocess`` (defaults: RELION's ``relion_postprocess``)."""

    mask_threshold: float | None = None
    """Binarisation level of the low-passed average map for the automatic mask; None: 10 % of
    its maximum above its median."""
    mask_lowpass_A: float = 15.0
    """Low-pass applied before thresholding (RELION's mask_create --lowpass, commonly 15 Å)."""
    mask_extend_px: float = 3.0
    """Binary dilation of the thresholded map, in voxels."""
    mask_soft_width_px: float = 6.0
    """Width of the raised-cosine edge, in voxels."""
    randomise_below_fsc: float = RANDOMISE_BELOW_FSC
    """Randomise phases beyond the first shell whose unmasked FSC is below this (RELION 0.8)."""
    bfactor_A2: float | None = None
    """Sharpening B-factor in Å² (negative sharpens); None: from the Guinier fit."""
    guinier_min_resolution_A: float = GUINIER_MIN_RESOLUTION_A
    """Low-resolution end of the Guinier fit (RELION --autob_lowres, 10 Å)."""
    local_resolution: bool = True
    """Also estimate the local resolution (windowed FSC)."""
    local_window_px: int = 16
    """Box of the local-resolution window in voxels (even)."""
    local_step_px: int = 2
    """Spacing of the points where the windowed FSC is computed."""
    seed: int = 0
    """Seed of the random phases."""

    def validate(self) -> None:
        if not self.mask_lowpass_A > 0:
            raise UserInputError(f"--mask-lowpass {self.mask_lowpass_A}: expected > 0 Å")
        if self.mask_extend_px < 0 or self.mask_soft_width_px < 0:
            raise UserInputError("--mask-extend and --mask-soft-width must be >= 0 voxels")
        if not 0 < self.randomise_below_fsc < 1:
            raise UserInputError(f"--randomise-below {self.randomise_below_fsc}: expected a "
                                 "value between 0 and 1")
        if self.local_window_px % 2 or self.local_window_px < 6:
            raise UserInputError(f"--local-window {self.local_window_px}: expected an even "
                                 "number of voxels >= 6")
        if self.local_step_px < 1:
            raise UserInputError(f"--local-step {self.local_step_px}: expected >= 1")


@dataclass
class PostprocessResult:
    out_dir: Path
    resolution_A: float
    """FSC = 0.143 of the mask-corrected curve."""
    unmasked_resolution_A: float
    bfactor_A2: float
    fsc: MaskedFSC
    guinier: GuinierFit | None
    sharpened: np.ndarray
    """``(D, D, D)`` sharpened, FSC-weighted, low-passed map (unmasked)."""
    mask: np.ndarray
    local_resolution: np.ndarray | None

    def summary(self) -> dict[str, Any]:
        out = {"resolution_0.143_A": round(self.resolution_A, 2),
               "unmasked_resolution_0.143_A": round(self.unmasked_resolution_A, 2),
               "bfactor_A2": round(self.bfactor_A2, 1),
               "randomised_beyond_A": round(float(
                   1 / self.fsc.unmasked.frequency_per_A[self.fsc.randomise_shell - 1])
                   if self.fsc.randomise_shell > 0 else float("inf"), 2)}
        if self.local_resolution is not None:
            inside = self.local_resolution[self.mask > 0.5]
            inside = inside[inside > 0]
            if inside.size:
                out["local_resolution_median_A"] = round(float(np.median(inside)), 2)
        return out


def _curve(label: str, curve: FSCCurve) -> dict[str, Any]:
    return {"label": label, "frequency_per_A": curve.frequency_per_A.tolist(),
            "fsc": curve.fsc.tolist()}


def postprocess_maps(half1: np.ndarray, half2: np.ndarray, pixel_size_A: float,
                     out_dir: str | Path, cfg: PostprocessConfig = PostprocessConfig(),
                     mask: np.ndarray | None = None, write: bool = True) -> PostprocessResult:
    """Mask, masked + corrected FSC, B-factor, sharpened map and local resolution of halves.

    Args:
        half1, half2: ``(D, D, D)`` half maps (independent halves of the particles).
        pixel_size_A: voxel size in Å.
        out_dir: folder for the files (created).
        cfg: options.
        mask: ``(D, D, D)`` soft mask in [0, 1]; None: made from the average map.
        write: write the files (False: only compute).
    """
    cfg.validate()
    h1 = torch.as_tensor(np.asarray(half1, dtype=np.float64))
    h2 = torch.as_tensor(np.asarray(half2, dtype=np.float64))
    if h1.shape != h2.shape or h1.ndim != 3 or len(set(h1.shape)) != 1:
        raise UserInputError(f"half maps must be cubes of one shape, got {tuple(h1.shape)} and "
                             f"{tuple(h2.shape)}")
    d = h1.shape[-1]
    average = 0.5 * (h1 + h2)
    if mask is None:
        try:
            m = auto_mask(average, pixel_size_A, cfg.mask_threshold, cfg.mask_lowpass_A,
                          cfg.mask_extend_px, cfg.mask_soft_width_px)
        except ValueError as exc:
            raise UserInputError(f"automatic mask: {exc}; give --mask-threshold lower") from exc
    else:
        m = torch.as_tensor(np.asarray(mask, dtype=np.float64))
        if m.shape != h1.shape:
            raise UserInputError(f"mask shape {tuple(m.shape)} differs from the half maps' "
                                 f"{tuple(h1.shape)}")
        if m.min() < -1e-6 or m.max() > 1 + 1e-6 or not (m > 0.5).any():
            raise UserInputError(f"mask values span {float(m.min()):g}..{float(m.max()):g}; "
                                 "expected a mask in [0, 1] with voxels above 0.5")
    curves = masked_fsc(h1, h2, m, pixel_size_A, cfg.randomise_below_fsc, cfg.seed)
    resolution = resolution_at(curves.corrected, 0.143)
    weighted = filter_shells(average, fsc_weights(curves.corrected))
    guinier = None
    if cfg.bfactor_A2 is not None:
        bfactor = float(cfg.bfactor_A2)
    else:
        try:
            guinier = fit_guinier(weighted * m, pixel_size_A, resolution,
                                  cfg.guinier_min_resolution_A)
            bfactor = guinier.bfactor_A2
        except ValueError as exc:
            log.warning("no automatic B-factor (%s): not sharpening", exc)
            bfactor = 0.0
    sharpened = sharpen_map(weighted, pixel_size_A, resolution, bfactor)
    locres = None
    if cfg.local_resolution:
        locres = local_resolution(h1, h2, pixel_size_A, m, cfg.local_window_px,
                                  cfg.local_step_px).numpy()
    result = PostprocessResult(
        out_dir=Path(out_dir), resolution_A=resolution,
        unmasked_resolution_A=resolution_at(curves.unmasked, 0.143), bfactor_A2=bfactor,
        fsc=curves, guinier=guinier, sharpened=sharpened.numpy().astype(np.float32),
        mask=m.numpy().astype(np.float32), local_resolution=locres)
    if write:
        _write(result, pixel_size_A, cfg, d)
    return result


def _write(result: PostprocessResult, pixel_size_A: float, cfg: PostprocessConfig,
           d: int) -> None:
    out = result.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_map(out / "postprocess.mrc", result.sharpened, pixel_size_A)
    write_map(out / "postprocess_masked.mrc", result.sharpened * result.mask, pixel_size_A)
    write_map(out / "mask.mrc", result.mask, pixel_size_A)
    c = result.fsc
    curves = [_curve("unmasked", c.unmasked), _curve("masked", c.masked),
              _curve("phase-randomised, masked", c.randomised),
              _curve("corrected", c.corrected)]
    plot_fsc(curves, out / "fsc.png",
             title=f"gold-standard FSC: {result.resolution_A:.2f} Å at 0.143 (corrected)")
    if result.guinier is not None:
        g = result.guinier
        plot_guinier(g.s2_per_A2, g.log_amplitude, g.fitted, g.intercept, g.slope_A2,
                     out / "guinier.png", title=f"Guinier plot: B = {g.bfactor_A2:.0f} Å²")
    if result.local_resolution is not None:
        write_map(out / "locres.mrc", result.local_resolution, pixel_size_A)
        inside = result.local_resolution[(result.mask > 0.5) & (result.local_resolution > 0)]
        plot_histograms({"half maps": inside}, out / "locres.png",
                        xlabel="local resolution (Å)", title="Local resolution (windowed FSC "
                        f"0.143, {cfg.local_window_px} px window)")
    write_json(out / "postprocess.json", {**result.summary(), "config": asdict(cfg),
                                          "box": d, "pixel_size_A": pixel_size_A,
                                          "curves": curves})


def postprocess_files(half1: str | Path, half2: str | Path, out_dir: str | Path,
                      cfg: PostprocessConfig = PostprocessConfig(),
                      mask: str | Path | None = None) -> PostprocessResult:
    """:func:`postprocess_maps` on two half-map files (and an optional mask file)."""
    cfg.validate()
    paths = [Path(half1), Path(half2)] + ([Path(mask)] if mask is not None else [])
    for p in paths:
        if not p.is_file():
            raise UserInputError(f"{p}: map file not found")
    out = Path(out_dir)
    mine = {(out / n).resolve() for n in ("postprocess.mrc", "postprocess_masked.mrc",
                                          "mask.mrc", "locres.mrc")}
    clash = [p for p in paths if p.resolve() in mine]
    if clash:
        raise UserInputError(f"{clash[0]}: an input would be overwritten by the output in "
                             f"{out}; choose another -o")
    v1, px1 = read_map(half1)
    v2, px2 = read_map(half2)
    if v1.shape != v2.shape:
        raise UserInputError(f"{half2}: shape {v2.shape} differs from {half1}'s {v1.shape}")
    if abs(px1 - px2) > 1e-3 * px1:
        raise UserInputError(f"{half2}: voxel size {px2:g} Å differs from {half1}'s {px1:g} Å")
    m = None
    if mask is not None:
        m, _ = read_map(mask)
        if m.shape != v1.shape:
            raise UserInputError(f"{mask}: shape {m.shape} differs from the half maps' "
                                 f"{v1.shape}")
    return postprocess_maps(v1, v2, px1, out, cfg, m)
