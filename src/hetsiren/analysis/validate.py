"""``validate_point``: does the decoder tell the truth at a latent point? (paper, Fig. 10)

The N particles nearest a latent point (a cluster's centre, or any point) are reconstructed
at their consensus poses by SNR-weighted backprojection (RELION's τ² from the half-map FSC), as
two half maps; the map decoded at that point is then compared with that reconstruction inside
a soft mask made from it, through the FSC corrected by phase randomisation (read at 0.5, the
threshold for a map against a reference; 0.143 is for two half maps) and through the local
agreement (windowed FSC at 0.5). The reconstruction's own half-map FSC (masked, corrected, at
0.143) and local resolution say how far the particles can judge. A decoded map that is
supported by the particles agrees with their reconstruction up to about the resolution the
half maps reach; a hallucinated feature would not be in the reconstruction.

The decoded map is also written low-passed at the resolution the comparison supports and
sharpened by its own Guinier B-factor (the "internal sharpening" of decoded maps).

Writes ``RUN/analysis/validate/<name>/``: ``decoded.mrc``, ``decoded_sharpened.mrc``,
``reconstruction.mrc``, ``half1.mrc``, ``half2.mrc``, ``mask.mrc``, ``locres.mrc`` (local
resolution of the half maps), ``local_agreement.mrc`` (decoded vs reconstruction),
``fsc.png``, ``locres.png`` and ``validation.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetsiren.analysis.landscape import nearest_particles
from hetsiren.analysis.plots import plot_fsc, plot_histograms
from hetsiren.analysis.postprocess import PostprocessConfig, postprocess_maps
from hetsiren.analysis.select import load_labels
from hetsiren.errors import UserInputError
from hetsiren.io import input_files, read_particles, write_map
from hetsiren.outputs import check_outputs
from hetsiren.physics import FSCCurve, reconstruct_particles, resolution_at
from hetsiren.physics.postprocess import (
    MaskedFSC,
    fit_guinier,
    local_resolution,
    masked_fsc,
    sharpen_map,
)
from hetsiren.rundir import VALIDATE_DIR, analysis_folder, load_latent, locks_run, write_json
from hetsiren.train.inference import decode_latent, load_run, read_latent_points

__all__ = ["DEFAULT_N_PARTICLES", "MIN_RELIABLE_PARTICLES", "ValidationResult",
           "validate_point", "validate_run"]

log = logging.getLogger(__name__)

DEFAULT_N_PARTICLES = 2000
"""Particles nearest the latent point that are reconstructed (with a cluster: at most all of
its particles)."""
MIN_RELIABLE_PARTICLES = 1000
"""Below this many particles a warning says the reconstruction is too noisy to judge a decoded
map at any useful resolution (at SNR 0.1 and box 64 a few thousand reach ~2 × the Nyquist
resolution; tens give only the overall shape)."""
MAP_VS_REFERENCE_THRESHOLD = 0.5
"""FSC threshold of one map against an independent reference (0.143 is for half maps)."""
HALF_MAP_THRESHOLD = 0.143


@dataclass
class ValidationResult:
    out_dir: Path
    n_particles: int
    half_map_fsc: FSCCurve
    """Unmasked FSC of the reconstruction's half maps."""
    half_map_masked: MaskedFSC
    """The half maps' FSC inside the mask, with its phase-randomisation correction."""
    decoded_vs_reconstruction: MaskedFSC
    """Decoded map vs the reconstruction of all N particles, inside the same mask."""
    half_map_local_resolution: np.ndarray
    """``(D, D, D)`` local resolution of the half maps (Å, 0 outside the mask)."""
    local_agreement: np.ndarray
    """``(D, D, D)`` local FSC = 0.5 resolution of decoded vs reconstruction (Å)."""
    mask: np.ndarray

    def summary(self) -> dict[str, Any]:
        def res(curve: FSCCurve, t: float) -> float:
            return round(resolution_at(curve, t), 2)

        def median(values: np.ndarray) -> float:
            inside = values[(self.mask > 0.5) & (values > 0)]
            return round(float(np.median(inside)), 2) if inside.size else float("nan")

        versus = self.decoded_vs_reconstruction
        return {
            "n_particles": self.n_particles,
            "half_maps_resolution_0.143_A": res(self.half_map_masked.corrected,
                                                HALF_MAP_THRESHOLD),
            "half_maps_unmasked_resolution_0.143_A": res(self.half_map_fsc, HALF_MAP_THRESHOLD),
            "half_maps_resolution_0.5_A": res(self.half_map_masked.corrected, 0.5),
            "decoded_vs_reconstruction_resolution_0.5_A": res(versus.corrected,
                                                              MAP_VS_REFERENCE_THRESHOLD),
            "decoded_vs_reconstruction_unmasked_resolution_0.5_A": res(
                versus.unmasked, MAP_VS_REFERENCE_THRESHOLD),
            "half_maps_local_resolution_median_A": median(self.half_map_local_resolution),
            "local_agreement_median_A": median(self.local_agreement),
        }


# The maps validate_point writes, in this order.
_MAPS = ("decoded", "decoded_sharpened", "reconstruction", "half1", "half2", "mask", "locres",
         "local_agreement")


def _curve_dict(label: str, curve: FSCCurve) -> dict[str, Any]:
    return {"label": label, "frequency_per_A": curve.frequency_per_A.tolist(),
            "fsc": curve.fsc.tolist()}


def _window(box: int) -> int:
    """Local-resolution window: 16 voxels, at most half the box (even, ≥ 6)."""
    return max(6, min(16, (box // 2) // 2 * 2))


def validate_point(run_dir: str | Path, point: np.ndarray, out_dir: str | Path,
                   rows: np.ndarray, device: str = "auto",
                   progress: bool | None = None) -> ValidationResult:
    """Reconstruct the particles ``rows`` and compare with the map decoded at ``point``.

    Args:
        run_dir: a trained run.
        point: ``(zdim,)`` latent point.
        out_dir: folder for the maps, plots and JSON.
        rows: ``(n,)`` indices of the particles to reconstruct (in the run's particle file).
        device: where to decode and reconstruct.
    """
    cfg, prep, model, dev = load_run(run_dir, device)
    if len(rows) < 2:
        raise UserInputError(f"need at least 2 particles to validate, got {len(rows)}")
    if len(rows) < MIN_RELIABLE_PARTICLES:
        log.warning("validating with only %d particles: their reconstruction is too noisy to "
                    "judge the decoded map beyond its overall shape (use at least %d)",
                    len(rows), MIN_RELIABLE_PARTICLES)
    particles = read_particles(cfg.particles, datadir=cfg.datadir, pixel_size_A=cfg.pixel_size_A)
    if int(np.max(rows)) >= particles.n_particles:
        raise UserInputError(
            f"{cfg.particles} has {particles.n_particles} particles, fewer than the run's latent "
            "vectors: is it the file the run was trained on?")
    out = Path(out_dir)
    check_outputs(files=[out / f"{name}.mrc" for name in _MAPS], folders=[out],
                  inputs=input_files(particles))
    decoded = decode_latent(model, np.asarray(point, dtype=np.float32)[None], dev)[0]
    recon = reconstruct_particles(particles, indices=np.sort(rows), box=prep.box,
                                  half_maps=True, device=dev, weighting="ssnr",
                                  progress=progress is not False)
    pixel_A = prep.pixel_size_A
    box = decoded.shape[-1]
    window = _window(box)
    pp = postprocess_maps(recon.half1, recon.half2, pixel_A, out_dir,
                          PostprocessConfig(local_window_px=window), write=False)
    dec = torch.from_numpy(np.asarray(decoded, dtype=np.float64))
    ref = torch.from_numpy(np.asarray(recon.map, dtype=np.float64))
    mask = torch.from_numpy(pp.mask.astype(np.float64))
    versus = masked_fsc(dec, ref, mask, pixel_A)
    agreement = local_resolution(dec, ref, pixel_A, mask, window_px=window,
                                 threshold=MAP_VS_REFERENCE_THRESHOLD).numpy()
    supported_A = resolution_at(versus.corrected, MAP_VS_REFERENCE_THRESHOLD)
    try:
        bfactor = fit_guinier(dec * mask, pixel_A, supported_A).bfactor_A2
    except ValueError as exc:
        log.info("decoded map not sharpened (%s): low-passed only", exc)
        bfactor = 0.0
    sharpened = sharpen_map(dec, pixel_A, supported_A, bfactor).numpy().astype(np.float32)

    out.mkdir(parents=True, exist_ok=True)
    maps = (decoded, sharpened, recon.map, recon.half1, recon.half2, pp.mask,
            pp.local_resolution, agreement)
    for name, volume in zip(_MAPS, maps, strict=True):
        write_map(out / f"{name}.mrc", volume, pixel_A)
    curves = [_curve_dict("half maps, unmasked", recon.fsc),
              _curve_dict("half maps, masked + corrected", pp.fsc.corrected),
              _curve_dict("decoded vs reconstruction, unmasked", versus.unmasked),
              _curve_dict("decoded vs reconstruction, masked + corrected", versus.corrected)]
    plot_fsc(curves, out / "fsc.png",
             title=f"{len(rows)} particles nearest the latent point (half maps: 0.143; "
                   "decoded vs reconstruction: 0.5)")
    inside = pp.mask > 0.5
    plot_histograms({"half maps (FSC 0.143)": pp.local_resolution[inside & (
        pp.local_resolution > 0)], "decoded vs reconstruction (FSC 0.5)": agreement[
        inside & (agreement > 0)]}, out / "locres.png", xlabel="local resolution (Å)",
        title=f"Local resolution inside the mask ({window} px window)")
    result = ValidationResult(out_dir=out, n_particles=len(rows), half_map_fsc=recon.fsc,
                              half_map_masked=pp.fsc, decoded_vs_reconstruction=versus,
                              half_map_local_resolution=pp.local_resolution,
                              local_agreement=agreement, mask=pp.mask)
    write_json(out / "validation.json", {
        **result.summary(), "decoded_sharpened_bfactor_A2": round(bfactor, 1),
        "decoded_sharpened_lowpass_A": round(supported_A, 2),
        "point": np.asarray(point).tolist(), "curves": curves})
    return result


@locks_run
def validate_run(run_dir: str | Path, cluster: int | None = None, z_file: str | Path | None = None,
                 n_particles: int = DEFAULT_N_PARTICLES, device: str = "auto",
                 progress: bool | None = None, k: int | None = None) -> ValidationResult:
    """Validate at a cluster's centre or at a given latent point.

    Args:
        run_dir: a trained run.
        cluster: cluster number, from 0 as ``analyze`` writes them; the point is the mean of
            the cluster's latent vectors (its KMeans centre) and the ``n_particles`` members
            nearest it are reconstructed (all of them when the cluster has fewer: a warning
            says so).
        z_file: alternatively, a file whose first row is the latent point (``.npy`` or text);
            the ``n_particles`` particles nearest it are reconstructed.
        n_particles: particles to reconstruct (at most the cluster's population).
        device: where to decode and reconstruct.
        progress: progress bar (default: when stderr is a terminal).
        k: clusters to use when the run has no stored clustering (as ``export --k``).
    """
    if (cluster is None) == (z_file is None):
        raise UserInputError("give exactly one of --cluster K or --z FILE")
    if n_particles < 2:
        raise UserInputError(f"--n must be >= 2, got {n_particles}")
    run_dir = Path(run_dir)
    z = load_latent(run_dir)
    if cluster is not None:
        labels = load_labels(run_dir, z, k=k)
        if not 0 <= cluster <= labels.max():
            raise UserInputError(f"--cluster {cluster}: the clustering has clusters "
                                 f"0..{labels.max()}")
        members = np.flatnonzero(labels == cluster)
        if len(members) < n_particles:
            log.warning("cluster %d has %d particles, fewer than --n %d: reconstructing all "
                        "of them", cluster, len(members), n_particles)
        point = z[members].mean(0)
        order = nearest_particles(z[members], point, min(n_particles, len(members)))
        rows, name = members[order], f"cluster_{cluster:02d}"
    else:
        point = read_latent_points(z_file, z.shape[1])[0]
        rows, name = nearest_particles(z, point, n_particles), Path(z_file).stem
    log.info("validating %s with the %d nearest particles", name, len(rows))
    return validate_point(run_dir, point, analysis_folder(run_dir) / VALIDATE_DIR / name, rows,
                          device=device, progress=progress)
