"""Particle batches as plain tensors, preprocessed the same way every time.

Images are read lazily from their stacks in batches, Fourier-cropped to the training box (the
pixel size grows by D/d), their background mean is removed per image and they are divided by
one global noise estimate. That preprocessing is recorded (:class:`Preprocessing`) in the run's
config so that ``encode`` treats new particles identically.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hetsiren.errors import UserInputError
from hetsiren.geometry import grid_coordinates, shifts_A_to_px
from hetsiren.io.particles import ParticleSet
from hetsiren.physics import fourier_crop

__all__ = ["Batch", "Preprocessing", "common_pixel_size_A", "estimate_preprocessing",
           "iterate_batches", "load_batch"]

# Pixels farther than this fraction of the half-box from the centre count as background for
# the normalisation (RELION's default background radius is 0.75 of the half box; the outer
# ring is used here because particles may fill most of the inscribed circle).
_BACKGROUND_RADIUS_FRACTION = 0.85
# Particles read to estimate the noise level.
_NOISE_SAMPLE = 1000
# Relative spread of pixel sizes still taken as one pixel size: values written with 4-6
# digits by different tools differ by ~1e-4 relative; optics groups with really different
# magnifications differ by 1e-2 and more.
_PIXEL_SIZE_RTOL = 1e-3


@dataclass(frozen=True)
class Preprocessing:
    """How images are turned into network inputs; stored in the run config."""

    box_in: int
    """Box of the images as stored, in pixels."""
    box: int
    """Training box after Fourier cropping, in pixels."""
    pixel_size_in_A: float
    """Pixel size of the images as stored."""
    noise_std: float
    """Global background standard deviation after cropping; images are divided by it."""

    @property
    def pixel_size_A(self) -> float:
        """Pixel size at the training box."""
        return self.pixel_size_in_A * self.box_in / self.box

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    """One batch of particles as tensors on the training device."""

    indices: torch.Tensor
    """``(b,)`` particle indices in the input file."""
    images: torch.Tensor
    """``(b, d, d)`` preprocessed images."""
    rotations: torch.Tensor
    """``(b, 3, 3)`` RELION matrices A."""
    shifts_px: torch.Tensor
    """``(b, 2)`` (x, y) origins in training pixels (RELION sign)."""
    ctf: dict[str, torch.Tensor] | None
    """CTF parameters, each ``(b,)``: defocus_u_A, defocus_v_A, astigmatism_angle_rad,
    voltage_kv, cs_mm, amplitude_contrast, phase_shift_rad, bfactor_A2."""


@functools.lru_cache(maxsize=4)
def _background_mask(box: int) -> torch.Tensor:
    radius = grid_coordinates(box, ndim=2).norm(dim=-1)
    return radius > _BACKGROUND_RADIUS_FRACTION * (box / 2)


def _crop_and_centre(raw: np.ndarray, box: int, background: torch.Tensor) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    if images.shape[-1] != box:
        images = fourier_crop(images, box)
    return images - images[:, background].mean(1)[:, None, None]


def common_pixel_size_A(particles: ParticleSet) -> float:
    """The one pixel size (Å) of all images of ``particles``; error when they have several.

    Sizes within a relative spread of ``_PIXEL_SIZE_RTOL`` count as one (the first
    particle's, to 6 decimals); training, reconstruction and encoding all apply this rule.
    """
    sizes = np.asarray(particles.pixel_size_A, dtype=np.float64).reshape(-1)
    if np.ptp(sizes) > _PIXEL_SIZE_RTOL * sizes.max():
        raise UserInputError(
            f"particles have different pixel sizes ({sizes.min():g}–{sizes.max():g} Å): use "
            "one optics group (one pixel size) at a time")
    return float(np.round(sizes[0], 6))  # as files state it (<= 6 decimals)


def estimate_preprocessing(particles: ParticleSet, box: int | None, seed: int = 0
                           ) -> Preprocessing:
    """Choose the training box and estimate the global noise level from a sample of images."""
    if particles.images is None:
        raise UserInputError("the particle file has no images to train on")
    box_in = particles.box_size
    box = box or box_in
    if box > box_in:
        raise UserInputError(f"--box {box} is larger than the images' box {box_in}")
    pixel_size_A = common_pixel_size_A(particles)
    rng = np.random.default_rng(seed)
    n = particles.n_particles
    sample = np.sort(rng.choice(n, size=min(n, _NOISE_SAMPLE), replace=False))
    background = _background_mask(box)
    images = _crop_and_centre(particles.images.read(sample), box, background)
    noise_std = float(images[:, background].std())
    overall_std = float(images.std())
    if not np.isfinite(overall_std) or overall_std == 0:
        raise UserInputError("images are constant or contain NaN/Inf values")
    if noise_std < 1e-3 * overall_std:  # noise-free (simulated) data: scale by the signal
        noise_std = overall_std
    return Preprocessing(box_in=box_in, box=box, pixel_size_in_A=pixel_size_A,
                         noise_std=noise_std)


def load_batch(particles: ParticleSet, prep: Preprocessing, indices: np.ndarray,
               device: torch.device) -> Batch:
    """Read, preprocess and move one batch of particles to ``device``."""
    indices = np.asarray(indices)
    images = _crop_and_centre(particles.images.read(indices), prep.box,
                              _background_mask(prep.box)) / prep.noise_std
    if particles.rotations is not None:
        rotations = torch.from_numpy(particles.rotations[indices]).float()
        shifts = torch.from_numpy(
            shifts_A_to_px(particles.shifts_A[indices], prep.pixel_size_A)).float()
    else:
        rotations = torch.eye(3).expand(len(indices), 3, 3).clone()
        shifts = torch.zeros(len(indices), 2)
    ctf = None
    if particles.ctf is not None:
        sub = particles.ctf.subset(indices)
        ctf = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).to(device)
               for k, v in asdict(sub).items()}
    return Batch(
        indices=torch.from_numpy(indices).to(device),
        images=images.to(device, non_blocking=True),
        rotations=rotations.to(device),
        shifts_px=shifts.to(device),
        ctf=ctf,
    )


def iterate_batches(particles: ParticleSet, prep: Preprocessing, order: np.ndarray,
                    batch_size: int, device: torch.device, prefetch: int = 2
                    ) -> Iterator[Batch]:
    """Batches of ``order`` (particle indices) with reading done in a background thread.

    Reading from memory-mapped stacks and the FFT crop release the GIL, so one reader thread
    overlaps them with the training step.
    """
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def reader():
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                q.put(load_batch(particles, prep, chunk, device))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)
            return
        q.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
