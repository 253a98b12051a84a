"""The data layer: particles from io turned into tensors, preprocessed the same way every time.

It owns the preprocessing record (:class:`Preprocessing`), the batch (:class:`Batch`: images,
rotations, shifts in training pixels, CTF parameters as tensors), reading batches
(:func:`load_batch`, :func:`iterate_batches`) and the check that a particle set has one pixel
size (:func:`common_pixel_size_A`), and the homogeneous reconstruction of a particle set
(:func:`reconstruct_particles`: batches read here, backprojected by physics). It sits on io,
geometry and physics (physics takes tensors and never imports it); train, encode, validate
and ``hetsiren reconstruct`` read particles through it.
"""

from hetsiren.data.batch import (
    PIXEL_SIZE_RTOL,
    Batch,
    Preprocessing,
    batch_ctf,
    common_pixel_size_A,
    estimate_preprocessing,
    iterate_batches,
    load_batch,
)
from hetsiren.data.reconstruct import reconstruct_particles

__all__ = [
    "PIXEL_SIZE_RTOL",
    "Batch",
    "Preprocessing",
    "batch_ctf",
    "common_pixel_size_A",
    "estimate_preprocessing",
    "iterate_batches",
    "load_batch",
    "reconstruct_particles",
]
