"""``validate_point``: does the decoder tell the truth at a latent point? (paper, Fig. 10)

The N particles nearest a latent point (a cluster's centre, or any point) are
reconstructed by plain Wiener backprojection at their consensus poses, as two half maps; the
map decoded at that point is then compared with that reconstruction. A decoded map that is
supported by the particles agrees with their reconstruction up to about the resolution the
half maps reach; a hallucinated feature would not be in the reconstruction.

Writes ``RUN/analysis/validate/<name>/``: ``decoded.mrc``, ``reconstruction.mrc``,
``half1.mrc``, ``half2.mrc``, ``fsc.png`` and ``validation.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetsiren.analysis.analyze import load_latent
from hetsiren.analysis.landscape import nearest_particles
from hetsiren.analysis.plots import plot_fsc
from hetsiren.analysis.select import ANALYSIS_DIR, load_labels
from hetsiren.errors import UserInputError
from hetsiren.io import input_files, read_particles, write_map
from hetsiren.outputs import check_outputs
from hetsiren.physics import FSCCurve, fsc, reconstruct_particles, resolution_at
from hetsiren.train.inference import decode_latent, load_run, read_latent_points
from hetsiren.train.runio import locks_run, write_json

__all__ = ["ValidationResult", "validate_point", "validate_run"]

log = logging.getLogger(__name__)

DEFAULT_N_PARTICLES = 2000
"""Particles nearest the latent point that are reconstructed (capped by the cluster size
when validating a cluster)."""


@dataclass
class ValidationResult:
    out_dir: Path
    n_particles: int
    half_map_fsc: FSCCurve
    decoded_vs_reconstruction: FSCCurve

    def summary(self) -> dict[str, Any]:
        def res(curve: FSCCurve, t: float) -> float:
            return round(resolution_at(curve, t), 2)

        return {
            "n_particles": self.n_particles,
            "half_maps_resolution_0.143_A": res(self.half_map_fsc, 0.143),
            "half_maps_resolution_0.5_A": res(self.half_map_fsc, 0.5),
            "decoded_vs_reconstruction_resolution_0.5_A": res(self.decoded_vs_reconstruction,
                                                              0.5),
            "decoded_vs_reconstruction_resolution_0.143_A": res(
                self.decoded_vs_reconstruction, 0.143),
        }


# The maps validate_point writes, in this order.
_MAPS = ("decoded", "reconstruction", "half1", "half2")


def _curve_dict(label: str, curve: FSCCurve) -> dict[str, Any]:
    return {"label": label, "frequency_per_A": curve.frequency_per_A.tolist(),
            "fsc": curve.fsc.tolist()}


def validate_point(run_dir: str | Path, point: np.ndarray, out_dir: str | Path,
                   rows: np.ndarray, device: str = "auto",
                   progress: bool | None = None) -> ValidationResult:
    """Reconstruct the particles ``rows`` and compare with the map decoded at ``point``.

    Args:
        run_dir: a trained run.
        point: ``(zdim,)`` latent point.
        out_dir: folder for the maps, plot and JSON.
        rows: ``(n,)`` indices of the particles to reconstruct (in the run's particle file).
        device: where to decode and reconstruct.
    """
    cfg, prep, model, dev = load_run(run_dir, device)
    if len(rows) < 2:
        raise UserInputError(f"need at least 2 particles to validate, got {len(rows)}")
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
                                  half_maps=True, device=dev,
                                  progress=progress is not False)
    pixel_A = prep.pixel_size_A
    versus = fsc(torch.from_numpy(decoded), torch.from_numpy(recon.map), pixel_A)
    out.mkdir(parents=True, exist_ok=True)
    for name, volume in zip(_MAPS, (decoded, recon.map, recon.half1, recon.half2), strict=True):
        write_map(out / f"{name}.mrc", volume, pixel_A)
    plot_fsc([_curve_dict("half maps", recon.fsc),
              _curve_dict("decoded vs reconstruction", versus)],
             out / "fsc.png", title=f"{len(rows)} particles nearest the latent point")
    result = ValidationResult(out_dir=out, n_particles=len(rows), half_map_fsc=recon.fsc,
                              decoded_vs_reconstruction=versus)
    write_json(out / "validation.json", {
        **result.summary(), "point": np.asarray(point).tolist(),
        "curves": [_curve_dict("half maps", recon.fsc),
                   _curve_dict("decoded vs reconstruction", versus)]})
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
            nearest it are reconstructed.
        z_file: alternatively, a file whose first row is the latent point (``.npy`` or text);
            the ``n_particles`` particles nearest it are reconstructed.
        n_particles: particles to reconstruct (capped by the cluster's population).
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
        point = z[members].mean(0)
        order = nearest_particles(z[members], point, min(n_particles, len(members)))
        rows, name = members[order], f"cluster_{cluster:02d}"
    else:
        point = read_latent_points(z_file, z.shape[1])[0]
        rows, name = nearest_particles(z, point, n_particles), Path(z_file).stem
    log.info("validating %s with the %d nearest particles", name, len(rows))
    return validate_point(run_dir, point, run_dir / ANALYSIS_DIR / "validate" / name, rows,
                          device=device, progress=progress)
