"""Particle batches as plain tensors, preprocessed the same way every time.

Images are read lazily from their stacks (or, preprocessed, from the cache: ``data/cache.py``)
in batches, Fourier-cropped to the training box (the
pixel size grows by D/d), their background mean is removed per image and they are divided by
one global noise estimate. That preprocessing is recorded (:class:`Preprocessing`) in the run's
config so that ``encode`` treats new particles identically.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch

from hetsiren.errors import UserInputError
from hetsiren.geometry import grid_coordinates, shifts_A_to_px
from hetsiren.io.particles import ParticleSet
from hetsiren.physics import compute_ctf, fourier_crop

__all__ = ["PIXEL_SIZE_RTOL", "Batch", "PreprocessedImages", "Preprocessing", "StackImages",
           "batch_ctf", "common_pixel_size_A", "estimate_preprocessing", "host_batch",
           "load_batch"]

# Pixels farther than this fraction of the half-box from the centre count as background for
# the normalisation (RELION's default background radius is 0.75 of the half box; the outer
# ring is used here because particles may fill most of the inscribed circle).
_BACKGROUND_RADIUS_FRACTION = 0.85
# Particles read to estimate the noise level.
_NOISE_SAMPLE = 1000
# Images cropped at once by estimate_preprocessing.
_READ_BATCH = 64
# Relative spread of pixel sizes still taken as one pixel size: values written with 4-6
# digits by different tools differ by ~1e-4 relative; optics groups with really different
# magnifications differ by 1e-2 and more.
PIXEL_SIZE_RTOL = 1e-3


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

    def _map(self, fn) -> Batch:
        return Batch(indices=fn(self.indices), images=fn(self.images),
                     rotations=fn(self.rotations), shifts_px=fn(self.shifts_px),
                     ctf=None if self.ctf is None else {k: fn(v) for k, v in self.ctf.items()})

    def to(self, device: torch.device) -> Batch:
        """On ``device``; from pinned memory the copies are asynchronous."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        return self._map(lambda t: t.pin_memory())


@functools.lru_cache(maxsize=4)
def _background_mask(box: int) -> torch.Tensor:
    radius = grid_coordinates(box, ndim=2).norm(dim=-1)
    return radius > _BACKGROUND_RADIUS_FRACTION * (box / 2)


def _crop(raw: np.ndarray, box: int) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))
    return images if images.shape[-1] == box else fourier_crop(images, box)


def _crop_and_centre(raw: np.ndarray, box: int, background: torch.Tensor) -> torch.Tensor:
    images = _crop(raw, box)
    return images - images[:, background].mean(1)[:, None, None]


def common_pixel_size_A(particles: ParticleSet) -> float:
    """The one pixel size (Å) of all images of ``particles``; error when they have several.

    Sizes within a relative spread of ``PIXEL_SIZE_RTOL`` count as one (the first
    particle's, to 6 decimals); training, reconstruction and encoding all apply this rule.
    """
    sizes = np.asarray(particles.pixel_size_A, dtype=np.float64).reshape(-1)
    if np.ptp(sizes) > PIXEL_SIZE_RTOL * sizes.max():
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
    # in batches: the FFTs of 1000 large images at once run ~3x slower per image
    images = torch.cat([_crop_and_centre(particles.images.read(sample[i:i + _READ_BATCH]), box,
                                         background) for i in range(0, len(sample), _READ_BATCH)])
    noise_std = float(images[:, background].std())
    overall_std = float(images.std())
    if not np.isfinite(overall_std) or overall_std == 0:
        raise UserInputError("images are constant or contain NaN/Inf values")
    if noise_std < 1e-3 * overall_std:  # noise-free (simulated) data: scale by the signal
        noise_std = overall_std
    return Preprocessing(box_in=box_in, box=box, pixel_size_in_A=pixel_size_A,
                         noise_std=noise_std)


class PreprocessedImages(Protocol):
    """Where a batch's preprocessed images come from: the stacks (:class:`StackImages`) or
    the cache (:class:`~hetsiren.data.cache.ImageCache`)."""

    def read(self, indices: np.ndarray) -> torch.Tensor:
        """``(b,)`` particle indices → ``(b, d, d)`` float32 preprocessed images."""
        ...


class StackImages:
    """Images read from their stacks and preprocessed on the fly (safe from several threads:
    the reads take turns, the Fourier crops run in parallel).

    ``normalise``: remove each image's background mean and divide by ``prep.noise_std`` (the
    network's input); False leaves the Fourier-cropped images as stored (what a
    reconstruction backprojects).
    """

    def __init__(self, particles: ParticleSet, prep: Preprocessing, normalise: bool = True
                 ) -> None:
        if particles.images is None:
            raise UserInputError("the particle file has no images")
        self.particles, self.prep, self.normalise = particles, prep, normalise
        self._lock = threading.Lock()  # MrcImageSource keeps an LRU of open files

    def read(self, indices: np.ndarray) -> torch.Tensor:
        assert self.particles.images is not None
        with self._lock:
            raw = self.particles.images.read(np.asarray(indices))
        if not self.normalise:
            return _crop(raw, self.prep.box)
        return _crop_and_centre(raw, self.prep.box,
                                _background_mask(self.prep.box)) / self.prep.noise_std


def host_batch(particles: ParticleSet, prep: Preprocessing, indices: np.ndarray,
               images: PreprocessedImages, pin_memory: bool = False,
               dtype: torch.dtype = torch.float32) -> Batch:
    """One batch in host memory (pinned for fast, asynchronous copies to a GPU if asked).

    ``dtype``: of the rotations, shifts and CTF parameters (float64 for reconstruction;
    images are float32 always).
    """
    indices = np.asarray(indices)
    pixels = images.read(indices)
    if particles.rotations is not None:
        rotations = torch.from_numpy(particles.rotations[indices]).to(dtype)
    else:
        rotations = torch.eye(3, dtype=dtype).expand(len(indices), 3, 3).clone()
    if particles.rotations is not None and particles.shifts_A is not None:
        shifts = torch.from_numpy(
            shifts_A_to_px(particles.shifts_A[indices], prep.pixel_size_A)).to(dtype)
    else:
        shifts = torch.zeros(len(indices), 2, dtype=dtype)
    ctf = (None if particles.ctf is None
           else particles.ctf.to_tensors(indices, torch.device("cpu"), dtype))
    batch = Batch(indices=torch.from_numpy(indices), images=pixels, rotations=rotations,
                  shifts_px=shifts, ctf=ctf)
    return batch.pin_memory() if pin_memory else batch


def load_batch(particles: ParticleSet, prep: Preprocessing, indices: np.ndarray,
               device: torch.device, images: PreprocessedImages | None = None,
               dtype: torch.dtype = torch.float32, normalise: bool = True) -> Batch:
    """Read (from ``images``, default the stacks), preprocess and move one batch to
    ``device``; ``dtype`` and ``normalise`` as in :func:`host_batch` / :class:`StackImages`."""
    images = images if images is not None else StackImages(particles, prep, normalise)
    return host_batch(particles, prep, indices, images, dtype=dtype).to(device)


def batch_ctf(batch: Batch, prep: Preprocessing) -> torch.Tensor | None:
    """``(b, d, d//2+1)`` CTF of the batch's particles at the training box (rfft layout, dtype
    of the batch's CTF parameters), or None for particles without CTF parameters."""
    if batch.ctf is None:
        return None
    return compute_ctf(**batch.ctf, box_size=prep.box, pixel_size_A=prep.pixel_size_A)
