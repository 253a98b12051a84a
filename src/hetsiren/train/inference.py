"""Using a trained model: encode particles, decode latent points, and the CTF-mode rule.

These are the library functions behind ``hetsiren encode`` and ``hetsiren decode``. A run's
model comes from ``hetsiren.rundir.open_run(RUN).model(device)`` (its stored network record
and ``model.pt``); :func:`ctf_roles` is the one statement of the CTF modes, shared with the
trainer.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from hetsiren.data import (
    PIXEL_SIZE_RTOL,
    Batch,
    Preprocessing,
    batch_ctf,
    common_pixel_size_A,
    find_cache,
    iterate_batches,
)
from hetsiren.data.batch import PreprocessedImages
from hetsiren.devices import resolve_device
from hetsiren.errors import UserInputError, check_choice
from hetsiren.geometry import mirror_handedness
from hetsiren.io import input_files, read_particles, write_map
from hetsiren.io.particles import ParticleSet
from hetsiren.model import refine_pose
from hetsiren.model.forward import HetSIREN
from hetsiren.outputs import check_outputs
from hetsiren.physics import apply_ctf, downsample, resample_map, wiener_filter
from hetsiren.physics.postprocess import sharpen_map
from hetsiren.rundir import CACHE, LATENT_PRIOR, MODEL, LatentPrior, open_run, run_inputs, write_npy
from hetsiren.train import losses as L
from hetsiren.train.config import CTFMode, TrainConfig
from hetsiren.train.distributed import Dist, gather_rows, share

log = logging.getLogger(__name__)

__all__ = [
    "CTFRoles", "MapOutput", "check_new_output", "ctf_roles", "decode_latent",
    "decode_to_files", "encode_file", "encode_particles", "finish_map",
    "progress_enabled", "read_latent_points", "refine_latent", "refinement_changes",
]


def progress_enabled(progress: bool | None) -> bool:
    """Progress bars by default only when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


# --------------------------------------------------------------------------------------------
# the CTF modes (Supplementary Fig. 4)
# --------------------------------------------------------------------------------------------
class CTFRoles(NamedTuple):
    """What a CTF mode makes of one batch."""

    target: torch.Tensor
    """``(b, d, d)`` what the encoders see and the data term compares with: the images, or
    their Wiener-filtered version (wiener)."""
    ctf: torch.Tensor | None
    """``(b, d, d//2+1)`` the CTF applied to the clean projections (apply), or None."""


def ctf_roles(batch: Batch, prep: Preprocessing, mode: CTFMode) -> CTFRoles:
    """The one rule of the CTF modes: ``apply`` corrupts the projections with the CTF,
    ``wiener`` Wiener-filters the images instead, ``none`` (or no CTF in the file) uses
    neither."""
    check_choice("--ctf-mode", mode, CTFMode)
    ctf = None if mode == "none" else batch_ctf(batch, prep)
    if ctf is None:
        return CTFRoles(batch.images, None)
    if mode == "wiener":
        return CTFRoles(wiener_filter(batch.images, ctf), None)
    return CTFRoles(batch.images, ctf)


@torch.no_grad()
def encode_particles(model: HetSIREN, particles: ParticleSet, prep: Preprocessing,
                     cfg: TrainConfig, device: torch.device, batch_size: int = 64,
                     progress: bool | None = None, images: PreprocessedImages | None = None,
                     dist: Dist | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent vectors (and pose corrections) of every particle, in input order.

    Args:
        images: where the preprocessed images come from (default: the stacks; the run's
            cache for its training particles).
        dist: with several processes, each encodes a contiguous share and every process
            gets the whole set back.

    Returns:
        ``(N, zdim)`` float32 z, ``(N, 3)`` Δangles (radians), ``(N, 2)`` Δshifts (pixels).
    """
    dist = dist or Dist()
    model.eval()
    rows = share(particles.n_particles, dist)
    zs, des, dss = [], [], []
    bar = tqdm(total=len(rows), desc="encoding", unit="img",
               disable=not progress_enabled(progress), leave=False)
    chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    with torch.no_grad():
        for batch in iterate_batches(particles, prep, chunks, device, images=images):
            zb, de, ds = model.net.encode(ctf_roles(batch, prep, cfg.ctf_mode).target)
            zs.append(zb.float().cpu())
            des.append(de.float().cpu())
            dss.append(ds.float().cpu())
            bar.update(len(batch.indices))
    bar.close()
    out = [torch.cat(parts).numpy() if parts else np.zeros((0, width), np.float32)
           for parts, width in ((zs, model.net.config.zdim), (des, 3), (dss, 2))]
    n = particles.n_particles
    z, d_euler, d_shift = (gather_rows(a.astype(np.float32), n, dist, device) for a in out)
    return z, d_euler, d_shift


# Adam's first step in the latent refinement, as a fraction of the prior's RMS spread (then
# cosine-decayed to 0). 20 steps, discrete sets at SNR 0.1, seed 1: 0.3 / 0.6 / 1.0 gave AdK
# rare-state recall 0.87 / 0.91 / 0.87, PR-LBD ARI 0.86 / 0.87 / 0.89, recall 0.85 / 0.86 /
# 0.85 (encoder: 0.81; 0.80, 0.27).
_REFINE_LR_FRACTION = 0.6


def refinement_changes() -> dict[str, float | str]:
    """What defines the latent refinement besides its number of steps (benchmark run keys:
    a stored result of another refinement is never taken for this one)."""
    return {"lr_fraction": _REFINE_LR_FRACTION, "lr_schedule": "cosine"}


def refine_latent(model: HetSIREN, particles: ParticleSet, prep: Preprocessing,
                  cfg: TrainConfig, device: torch.device, z: np.ndarray, prior: LatentPrior,
                  steps: int, d_euler: np.ndarray | None = None,
                  d_shift: np.ndarray | None = None, batch_size: int | None = None,
                  progress: bool | None = None, images: PreprocessedImages | None = None,
                  dist: Dist | None = None) -> np.ndarray:
    """Each particle's z moved from the encoder's guess towards its own posterior mode.

    The decoder is frozen; z minimises ``n · data(z) / (2 · prior.data_term) +
    ½ (z − μ)ᵀ Σ⁻¹ (z − μ)`` by ``steps`` Adam steps (step size cosine-decayed from 0.6 of the
    prior's RMS spread to 0): the particle's data term under the
    CTF mode of training (n pixels in the loss's circle; the last epoch's data term stands
    for the noise variance), and the Gaussian ``prior`` fitted to the encoder's latent of
    the training particles. Particles do not interact (Adam is per coordinate), so the
    result does not depend on the batch size or the number of processes.

    Args:
        z: ``(N, zdim)`` the encoder's latent of every particle.
        d_euler, d_shift: the encoder's pose corrections (``--refine-pose`` runs).
        batch_size: particles per step (default: the training batch, whose decoded maps
            are known to fit in memory).

    Returns:
        ``(N, zdim)`` float32, in input order.
    """
    dist = dist or Dist()
    rows = share(particles.n_particles, dist)
    masks = L.loss_masks(prep.box, cfg.multires, device)
    weight = float(masks[1].sum()) / (2 * max(prior.data_term, 1e-12))
    mean = torch.as_tensor(prior.mean, dtype=torch.float32, device=device)
    precision = torch.as_tensor(np.linalg.inv(prior.covariance), dtype=torch.float32,
                                device=device)
    lr = _REFINE_LR_FRACTION * math.sqrt(float(np.trace(prior.covariance)) / len(prior.mean))
    out = []
    bar = tqdm(total=len(rows), desc="refining z", unit="img",
               disable=not progress_enabled(progress), leave=False)
    size = batch_size or cfg.batch_size
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for p in frozen:
            p.requires_grad_(False)
        for batch in iterate_batches(particles, prep, chunks, device, images=images):
            target, ctf = ctf_roles(batch, prep, cfg.ctf_mode)
            idx = batch.indices.cpu().numpy()
            rotations, shifts = batch.rotations, batch.shifts_px
            if cfg.refine_pose and d_euler is not None and d_shift is not None:
                rotations, shifts = refine_pose(
                    rotations, shifts, torch.as_tensor(d_euler[idx], device=device),
                    torch.as_tensor(d_shift[idx], device=device))
            plan = model.projection_plan(rotations, shifts)
            zb = torch.tensor(z[idx], dtype=torch.float32, device=device, requires_grad=True)
            opt = torch.optim.Adam([zb], lr=lr)
            for k in range(steps):
                # cosine decay to 0: the last steps settle instead of jittering by ~lr
                opt.param_groups[0]["lr"] = lr * 0.5 * (1 + math.cos(math.pi * k / steps))
                clean = model.project(model.decode_values(zb), plan)
                pred = clean if ctf is None else apply_ctf(clean, ctf)
                data = L.multires_image_loss(pred, target, cfg.multires, cfg.data_loss,
                                             downsample, masks) * len(idx)  # sum over particles
                dz = zb - mean
                objective = weight * data + 0.5 * ((dz @ precision) * dz).sum()
                opt.zero_grad(set_to_none=True)
                objective.backward()
                opt.step()
            out.append(zb.detach().float().cpu())
            bar.update(len(idx))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    bar.close()
    mine = torch.cat(out).numpy() if out else np.zeros((0, z.shape[1]), np.float32)
    return gather_rows(mine.astype(np.float32), particles.n_particles, dist, device)


def cache_root(cfg: TrainConfig, run_dir: str | Path) -> Path:
    """The folder holding a run's image caches (``--cache-dir``, else ``RUN/cache``)."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(run_dir) / CACHE


@torch.no_grad()
def decode_latent(model: HetSIREN, z: np.ndarray, device: torch.device) -> np.ndarray:
    """``(k, zdim)`` latent points → ``(k, D, D, D)`` float32 maps."""
    z_t = torch.as_tensor(np.asarray(z, dtype=np.float32), device=device)
    if z_t.ndim != 2 or z_t.shape[1] != model.net.config.zdim:
        raise UserInputError(
            f"latent points must be (k, {model.net.config.zdim}), got {tuple(z_t.shape)}")
    maps = [model.decode_maps(z_t[i:i + 8]).cpu() for i in range(0, len(z_t), 8)]
    return torch.cat(maps).numpy().astype(np.float32)


def encode_file(run_dir: str | Path, particles_path: str | Path, datadir: str | None = None,
                pixel_size_A: float | None = None, device: str = "auto",
                batch_size: int = 64, output: str | Path | None = None,
                refine_steps: int | None = None) -> np.ndarray:
    """Latent vectors of the particles in a file, preprocessed as the run's training data.

    With ``output``, also write them there (``.npy``, float32 ``(N, zdim)``); the path is
    checked against every file read (run, particle file, stacks) before encoding starts.
    ``refine_steps``: steps of :func:`refine_latent` under the run's latent prior (default:
    the run's ``refine_latent_steps``, as its own latent was made; 0: the encoder's z).
    """
    if batch_size < 1:
        raise UserInputError(f"--batch-size {batch_size}: expected a positive integer")
    if refine_steps is not None and refine_steps < 0:
        raise UserInputError(f"--refine-steps {refine_steps}: expected 0 or more")
    run = open_run(run_dir)
    dev = resolve_device(device)
    model = run.model(dev)
    prep = run.preprocessing
    cfg = run.train
    particles = read_particles(particles_path, datadir=datadir, pixel_size_A=pixel_size_A,
                               require_images=True)
    if particles.images is None:
        raise UserInputError(f"{particles_path}: no images to encode")
    if output is not None:
        check_outputs(files=[output], inputs=[*run_inputs(run_dir), *input_files(particles)])
    if particles.box_size != prep.box_in:
        raise UserInputError(
            f"{particles_path}: images are {particles.box_size} px but {run_dir} was trained "
            f"on {prep.box_in} px images; re-extract or train a new run")
    pixel_size_A = common_pixel_size_A(particles)
    if not np.isclose(pixel_size_A, prep.pixel_size_in_A, rtol=PIXEL_SIZE_RTOL, atol=0):
        raise UserInputError(
            f"{particles_path}: pixel size {pixel_size_A:.4g} Å differs from the training "
            f"data's {prep.pixel_size_in_A:.4g} Å")
    images = None
    if cfg.cache and Path(particles_path).resolve() == Path(cfg.particles):
        cache = find_cache(particles, prep.box, cache_root(cfg, run_dir), cfg.cache_dtype)
        images = cache.for_preprocessing(prep) if cache is not None else None
    z, d_euler, d_shift = encode_particles(model, particles, prep, cfg, dev,
                                           batch_size=batch_size, images=images)
    steps = cfg.refine_latent_steps if refine_steps is None else refine_steps
    prior = run.latent_prior() if steps else None
    if steps and prior is None:
        log.warning("%s has no latent prior (%s): the encoder's latent is not refined", run_dir,
                    LATENT_PRIOR)
    elif steps and prior is not None:
        z = refine_latent(model, particles, prep, cfg, dev, z, prior, steps, d_euler, d_shift,
                          images=images)
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise UserInputError(
            f"{particles_path}: the encoder gave NaN/Inf latent vectors for {int(bad.sum())} "
            f"particles (first: particle {int(np.flatnonzero(bad)[0]) + 1}) although their "
            f"images are finite: the weights in {run_dir}/{MODEL} are probably not finite")
    if output is not None:
        write_npy(output, z)
    return z


def read_latent_points(path: str | Path, zdim: int) -> np.ndarray:
    """``.npy`` or text (one point per row) → ``(k, zdim)`` float32."""
    path = Path(path)
    try:
        z = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read latent points ({exc})") from exc
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != zdim:
        raise UserInputError(f"{path}: expected rows of {zdim} values, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise UserInputError(f"{path}: contains NaN or Inf")
    return z


@dataclass(frozen=True)
class MapOutput:
    """How decoded maps are written (``hetsiren decode``, trajectories)."""

    original_size: bool = False
    """Fourier-pad the map from the training box to the particles' own box and pixel size."""
    flip: bool = False
    """Mirror the map (z → -z) to change its handedness."""
    invert: bool = False
    """Multiply the map by -1 (contrast: white-on-black particles give negative density)."""
    lowpass_A: float | None = None
    """Low-pass at this resolution (Å; raised-cosine edge, 0.5 there), e.g. the resolution
    ``hetsiren validate`` supports for the decoded map; None: as decoded."""
    bfactor_A2: float = 0.0
    """Amplitudes × exp(−B s²/4) before the low-pass: B < 0 sharpens (Å²)."""

    def __post_init__(self) -> None:
        if self.lowpass_A is not None and not (math.isfinite(self.lowpass_A)
                                               and self.lowpass_A > 0):
            raise UserInputError(f"--lowpass {self.lowpass_A}: expected a resolution in Å > 0")
        if not math.isfinite(self.bfactor_A2):
            raise UserInputError(f"--bfactor {self.bfactor_A2}: expected a finite B-factor (Å²)")

    def check(self, prep: Preprocessing) -> None:
        """Refuse a low-pass finer than the decoded maps' Nyquist (before anything is written)."""
        nyquist = 2 * prep.pixel_size_A
        if self.lowpass_A is not None and self.lowpass_A < nyquist:
            raise UserInputError(f"--lowpass {self.lowpass_A} Å: finer than the decoded maps' "
                                 f"Nyquist ({nyquist:.3g} Å at {prep.pixel_size_A:.3g} Å/px)")


def finish_map(volume: np.ndarray, prep: Preprocessing, output: MapOutput
               ) -> tuple[np.ndarray, float]:
    """``(D, D, D)`` decoded map at the training box → the map to write and its voxel size (Å).

    ``lowpass_A`` / ``bfactor_A2`` filter it at the training box first; ``original_size``
    resamples band-limited (spectrum zero-padded) to ``prep.box_in`` voxels
    of ``prep.pixel_size_in_A``: no information is added above the training Nyquist, but the
    map overlays the consensus refinement's map voxel for voxel.
    """
    pixel_A = prep.pixel_size_A
    if output.lowpass_A is not None or output.bfactor_A2:
        output.check(prep)
        volume = sharpen_map(torch.from_numpy(np.ascontiguousarray(volume)), pixel_A,
                             output.lowpass_A, output.bfactor_A2).numpy()
    if output.original_size and prep.box_in != prep.box:
        volume = resample_map(torch.from_numpy(np.ascontiguousarray(volume)), pixel_A,
                              prep.pixel_size_in_A, prep.box_in).numpy()
        pixel_A = prep.pixel_size_in_A
    if output.flip:
        volume = mirror_handedness(volume)
    if output.invert:
        volume = -volume
    return np.ascontiguousarray(volume, dtype=np.float32), pixel_A


def check_new_output(paths: list[Path], overwrite: bool, flag: str = "--force") -> None:
    """Refuse to replace existing files unless ``overwrite``; the message names one."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserInputError(
            f"{existing[0]}: already exists ({len(existing)} of the {len(paths)} output files "
            f"do); choose another output folder or pass {flag} to replace them")


def decode_to_files(run_dir: str | Path, z: np.ndarray, out_dir: str | Path,
                    device: str = "auto", prefix: str = "map",
                    output: MapOutput = MapOutput(), overwrite: bool = False,
                    inputs: Sequence[str | Path] = ()) -> list[Path]:
    """Decode latent points to ``OUT/{prefix}_NNN.mrc`` maps.

    Args:
        run_dir: the trained run.
        z: ``(k, zdim)`` latent points.
        out_dir: output folder (created).
        device: where to decode.
        prefix: file name prefix.
        output: size, hand and contrast of the written maps (:class:`MapOutput`).
        overwrite: replace existing ``{prefix}_NNN.mrc`` files (otherwise an error, before
            anything is written).
        inputs: other files the caller read (e.g. the points file); the map paths are
            checked against them and the run's files before decoding.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / f"{prefix}_{i:03d}.mrc" for i in range(len(z))]
    check_outputs(files=paths, inputs=[*run_inputs(run_dir), *inputs], folders=[out_dir])
    check_new_output(paths, overwrite)
    run = open_run(run_dir)
    dev = resolve_device(device)
    model = run.model(dev)
    prep = run.preprocessing
    output.check(prep)
    maps = decode_latent(model, z, dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, volume in zip(paths, maps, strict=True):
        volume, pixel_A = finish_map(volume, prep, output)
        write_map(path, volume, pixel_A)
    return paths
