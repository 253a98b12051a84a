"""Simulated particle datasets with ground truth (discrete, compositional and continuous).

Each particle: a state (a map, or a point on a path between maps), a uniformly random pose (or
one drawn from a real dataset's poses, keeping its preferred orientations), a random shift, a
CTF with a defocus range and astigmatism, projected with the *reference* projector (not the one
the model trains with), CTF applied, Gaussian noise at a given SNR (variance of the
CTF-corrupted projections over the noise variance). Written as a RELION 3.1 STAR + MRCS stack
plus the ground truth:

    DIR/particles.star, DIR/particles.mrcs
    DIR/truth.npz      state (N,) int (-1 on a continuous path), coordinate (N,) float in [0, 1]
                       (NaN for discrete states), rotations (N, 3, 3) RELION A, shifts_A (N, 2),
                       defocus_u_A, defocus_v_A (N,), noise_std, snr
    DIR/truth.json     the simulation's parameters, populations and file list
    DIR/truth_maps/state_NN.mrc   the true map of each discrete state, or path samples
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from hetsiren.errors import UserInputError
from hetsiren.geometry import shifts_px_to_A
from hetsiren.io import MrcStackWriter, read_rotations, write_map, write_new_star
from hetsiren.io.particles import CTFParams
from hetsiren.outputs import check_outputs, honour_umask
from hetsiren.physics import apply_ctf, compute_ctf, project_volume_reference

__all__ = ["SimulationSpec", "simulate_dataset"]

log = logging.getLogger(__name__)

_BATCH = 64


@dataclass(frozen=True)
class SimulationSpec:
    """Acquisition parameters of a simulated dataset."""

    n_particles: int
    snr: float = 0.1
    seed: int = 0
    pixel_size_A: float = 2.5
    defocus_min_A: float = 10_000.0
    defocus_max_A: float = 25_000.0
    astigmatism_max_A: float = 500.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    max_shift_px: float = 3.0
    ctf: bool = True
    poses_from: str | None = None
    """A particle file (STAR/.cs) whose rotations are drawn from instead of uniform ones."""

    def validate(self) -> None:
        if self.n_particles < 1:
            raise UserInputError(f"--n must be >= 1, got {self.n_particles}")
        if not self.snr > 0:
            raise UserInputError(f"--snr must be > 0 (signal over noise variance), got {self.snr}")
        if not self.pixel_size_A > 0:
            raise UserInputError(f"--pixel-size must be > 0, got {self.pixel_size_A}")
        if not 0 < self.defocus_min_A <= self.defocus_max_A:
            raise UserInputError("defocus range must satisfy 0 < min <= max")


def _random_ctf(rng: np.random.Generator, spec: SimulationSpec, n: int) -> CTFParams:
    mean = rng.uniform(spec.defocus_min_A, spec.defocus_max_A, n)
    astig = rng.uniform(0, spec.astigmatism_max_A, n)
    full = np.full(n, 1.0)
    return CTFParams(
        defocus_u_A=mean + astig / 2, defocus_v_A=mean - astig / 2,
        astigmatism_angle_rad=rng.uniform(-np.pi, np.pi, n),
        voltage_kv=full * spec.voltage_kv, cs_mm=full * spec.cs_mm,
        amplitude_contrast=full * spec.amplitude_contrast,
        phase_shift_rad=np.zeros(n), bfactor_A2=np.zeros(n))


def _draw_rotations(rng: np.random.Generator, spec: SimulationSpec, n: int) -> np.ndarray:
    """Uniform on SO(3), or resampled from the poses of ``spec.poses_from``."""
    if spec.poses_from is None:
        return Rotation.random(n, random_state=rng).as_matrix()
    pool = read_rotations(spec.poses_from)
    return pool[rng.choice(len(pool), n, replace=len(pool) < n)].astype(np.float64)


def _clean_images(volume: np.ndarray, rotations: np.ndarray, shifts_px: np.ndarray,
                  ctf: dict[str, torch.Tensor] | None, spec: SimulationSpec) -> torch.Tensor:
    vol = torch.from_numpy(volume)
    images = project_volume_reference(vol, torch.from_numpy(rotations).float(),
                                      torch.from_numpy(shifts_px).float())
    if ctf is None:
        return images
    return apply_ctf(images, compute_ctf(**ctf, box_size=volume.shape[-1],
                                         pixel_size_A=spec.pixel_size_A))


def simulate_dataset(
    out_dir: str | Path,
    volume_for: Callable[[int], np.ndarray],
    n_volumes: int,
    volume_of_particle: np.ndarray,
    spec: SimulationSpec,
    truth: dict[str, np.ndarray],
    describe: dict,
    truth_maps: Sequence[np.ndarray],
    progress: bool | None = None,
) -> Path:
    """Project, corrupt and write a dataset; the folder appears complete or not at all.

    Args:
        out_dir: output folder (must not exist, or be empty).
        volume_for: index → ``(D, D, D)`` float32 map; called once per index.
        n_volumes: number of distinct maps.
        volume_of_particle: ``(N,)`` index of each particle's map.
        spec: acquisition parameters.
        truth: per-particle ground truth to store (``state``, ``coordinate``).
        describe: JSON-able description of the heterogeneity (stored in truth.json).
        truth_maps: the maps written to ``truth_maps/``.
        progress: show a progress bar (default: when stderr is a terminal).
    """
    spec.validate()
    out_dir = Path(out_dir)
    check_outputs(folders=[out_dir])
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserInputError(f"{out_dir} exists and is not empty; choose a new -o")
    rng = np.random.default_rng(spec.seed)
    n = spec.n_particles
    rotations = _draw_rotations(rng, spec, n)
    shifts_px = rng.uniform(-spec.max_shift_px, spec.max_shift_px, (n, 2))
    ctf = _random_ctf(rng, spec, n) if spec.ctf else None
    box = volume_for(0).shape[-1]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    honour_umask(staging, folder=True)  # mkdtemp makes it private (0700)
    try:
        # Noise level from the signal variance of a first sample of particles.
        probe = np.arange(min(n, 256))
        signal_var = 0.0
        for k in np.unique(volume_of_particle[probe]):
            sel = probe[volume_of_particle[probe] == k]
            imgs = _clean_images(volume_for(int(k)), rotations[sel], shifts_px[sel],
                                 None if ctf is None else ctf.to_tensors(sel), spec)
            signal_var += float(imgs.var(dim=(-1, -2)).sum())
        noise_std = float(np.sqrt(signal_var / len(probe) / spec.snr))

        noise_gen = torch.Generator().manual_seed(spec.seed + 1)
        # Particles are projected grouped by map but stored in random (particle) order: a
        # scratch memmap keeps RAM use to one batch whatever the dataset size.
        scratch = staging / "images.scratch.npy"
        images = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32,
                                           shape=(n, box, box))
        log.info("simulating %d particles of %d px from %d map(s) into %s", n, box, n_volumes,
                 out_dir)
        bar = tqdm(total=n, desc="simulating", unit="img", leave=False,
                   disable=not (sys.stderr.isatty() if progress is None else progress))
        for k in range(n_volumes):
            members = np.flatnonzero(volume_of_particle == k)
            if len(members) == 0:
                continue
            volume = volume_for(k)
            for start in range(0, len(members), _BATCH):
                sel = members[start:start + _BATCH]
                clean = _clean_images(volume, rotations[sel], shifts_px[sel],
                                      None if ctf is None else ctf.to_tensors(sel), spec)
                noise = torch.randn(clean.shape, generator=noise_gen) * noise_std
                images[sel] = (clean + noise).numpy()
                bar.update(len(sel))
        bar.close()

        with MrcStackWriter(staging / "particles.mrcs", box, spec.pixel_size_A) as writer:
            for start in range(0, n, 1024):
                writer.write(np.asarray(images[start:start + 1024]))
        del images
        scratch.unlink()
        names = [f"{i + 1:06d}@particles.mrcs" for i in range(n)]
        write_new_star(staging / "particles.star", image_names=names,
                       pixel_size_A=spec.pixel_size_A, box_size=box, rotations=rotations,
                       shifts_A=shifts_px_to_A(shifts_px, spec.pixel_size_A), ctf=ctf)
        maps_dir = staging / "truth_maps"
        maps_dir.mkdir()
        map_files = []
        for i, m in enumerate(truth_maps):
            write_map(maps_dir / f"state_{i:02d}.mrc", m, spec.pixel_size_A)
            map_files.append(f"truth_maps/state_{i:02d}.mrc")
        arrays: dict[str, Any] = dict(truth)
        np.savez(staging / "truth.npz", rotations=rotations,
                 shifts_A=shifts_px_to_A(shifts_px, spec.pixel_size_A),
                 defocus_u_A=ctf.defocus_u_A if ctf else np.zeros(n),
                 defocus_v_A=ctf.defocus_v_A if ctf else np.zeros(n),
                 noise_std=noise_std, snr=spec.snr, **arrays)
        (staging / "truth.json").write_text(json.dumps(
            {"spec": asdict(spec), "noise_std": noise_std, "truth_maps": map_files,
             "particles": "particles.star", **describe}, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %d particles (%d px, %.3g Å/px, SNR %.3g) to %s", n, box,
             spec.pixel_size_A, spec.snr, out_dir)
    return out_dir
