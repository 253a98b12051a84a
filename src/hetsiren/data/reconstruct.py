"""Homogeneous reconstruction of a particle set: the particles read batch by batch through the
data layer, backprojected by ``hetsiren.physics.reconstruct_batches`` (tensors in)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from hetsiren.data.batch import Preprocessing, batch_ctf, common_pixel_size_A, load_batch
from hetsiren.devices import resolve_device
from hetsiren.errors import UserInputError, check_choice
from hetsiren.io.particles import ParticleSet
from hetsiren.physics.reconstruct import (
    DEFAULT_BATCH,
    DEFAULT_OVERSAMPLING,
    DEFAULT_REGULARISATION,
    DEFAULT_WEIGHTING,
    ReconstructionResult,
    Weighting,
    reconstruct_batches,
)

__all__ = ["reconstruct_particles"]

log = logging.getLogger(__name__)


def _split_halves(particles: ParticleSet, sel: np.ndarray, seed: int
                  ) -> tuple[np.ndarray, Literal["file", "random"]]:
    """``(n,)`` bool (True = second half) for the selected particles, and its source."""
    subset = particles.random_subset
    if subset is not None:
        mine = np.asarray(subset)[sel]
        if (mine == 1).any() and (mine == 2).any():
            return mine == 2, "file"
        log.warning("the selected particles all belong to random subset %d of the file: "
                    "splitting them at random (seed %d) instead", int(mine[0]), seed)
    second = np.zeros(len(sel), dtype=bool)
    second[np.random.default_rng(seed).permutation(len(sel))[: len(sel) // 2]] = True
    return second, "random"


def reconstruct_particles(
    particles: ParticleSet,
    indices: np.ndarray | None = None,
    box: int | None = None,
    half_maps: bool = False,
    batch_size: int = DEFAULT_BATCH,
    device: str | torch.device | None = None,
    progress: bool = True,
    oversampling: int = DEFAULT_OVERSAMPLING,
    regularisation: float = DEFAULT_REGULARISATION,
    weighting: Weighting = DEFAULT_WEIGHTING,
    split_seed: int = 0,
) -> ReconstructionResult:
    """Homogeneous reconstruction of a particle set at its poses (and CTF when present).

    Images are read lazily, ``batch_size`` at a time (:func:`~hetsiren.data.load_batch`,
    Fourier-cropped to ``box``, otherwise as stored). The halves are the file's random subsets
    (``particles.random_subset``, RELION's ``rlnRandomSubset``) when the selection has
    particles of both, otherwise a seeded random split into two equal halves.

    Args:
        particles: with images and poses.
        indices: ``(n,)`` particles to use; all by default.
        box: reconstruct at this box (images Fourier-cropped); the images' box by default.
        half_maps: also return the two half maps and their FSC ("ssnr" always builds them).
        batch_size: images per batch.
        device: ``"auto"``/None, ``"cpu"``, ``"cuda[:N]"`` or a torch.device.
        progress: show a progress bar (only when stderr is a terminal).
        oversampling, regularisation, weighting: see
            :func:`hetsiren.physics.reconstruct_batches`.
        split_seed: seed of the random split when the file has no usable subsets.
    """
    check_choice("weighting", weighting, Weighting)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if particles.images is None:
        raise UserInputError("the particle file has no images to reconstruct from")
    if particles.rotations is None:
        raise UserInputError("the particle file has no poses (angles): cannot reconstruct")
    pixel_size_A = common_pixel_size_A(particles)
    d_in = int(particles.box_size)
    d = d_in if box is None else int(box)
    if d > d_in or d < 4:
        raise UserInputError(f"--box {d}: expected 4 ≤ box ≤ the images' box {d_in}")
    # images as stored (noise_std 1, not normalised), Fourier-cropped to d
    prep = Preprocessing(box_in=d_in, box=d, pixel_size_in_A=pixel_size_A, noise_std=1.0)
    sel = np.arange(particles.n_particles) if indices is None else np.asarray(indices)
    two_halves = half_maps or weighting == "ssnr"
    if len(sel) < (2 if two_halves else 1):
        raise UserInputError(f"{len(sel)} particle(s) selected: half maps need at least 2")
    second: np.ndarray | None = None
    split: Literal["file", "random"] | None = None
    if two_halves:
        second, split = _split_halves(particles, sel, split_seed)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                    torch.Tensor | None, torch.Tensor | None]]:
        bar = tqdm(total=len(sel), desc="backprojecting", unit="img",
                   disable=not (progress and sys.stderr.isatty()), leave=False)
        for start in range(0, len(sel), batch_size):
            chunk = sel[start:start + batch_size]
            batch = load_batch(particles, prep, chunk, dev, dtype=torch.float64,
                               normalise=False)
            ctf = batch_ctf(batch, prep)
            half = None if second is None else torch.from_numpy(
                second[start:start + len(chunk)]).to(dev)
            yield (batch.images, batch.rotations, batch.shifts_px,
                   None if ctf is None else ctf.float(), half)
            bar.update(len(chunk))
        bar.close()

    result = reconstruct_batches(batches(), d, prep.pixel_size_A, half_maps, oversampling,
                                 regularisation, weighting)
    if second is not None:
        log.info("reconstructed %d particles (%s weighting, halves of %d and %d from the %s "
                 "split)", len(sel), weighting, int((~second).sum()), int(second.sum()),
                 "file's" if split == "file" else "random")
    return dataclasses.replace(result, split=split)
