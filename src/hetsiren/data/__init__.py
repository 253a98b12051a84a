"""The data layer: particles from io turned into tensors, preprocessed the same way every time.

It owns the preprocessing record (:class:`Preprocessing`), the batch (:class:`Batch`: images,
rotations, shifts in training pixels, CTF parameters as tensors), reading batches
(:func:`load_batch`, :func:`iterate_batches`) and the check that a particle set has one pixel
size (:func:`common_pixel_size_A`). It sits on io, geometry and physics' Fourier resampling;
train, encode and reconstruction read particles through it.
"""

from hetsiren.data.batch import (
    Batch,
    Preprocessing,
    common_pixel_size_A,
    estimate_preprocessing,
    iterate_batches,
    load_batch,
)

__all__ = [
    "Batch",
    "Preprocessing",
    "common_pixel_size_A",
    "estimate_preprocessing",
    "iterate_batches",
    "load_batch",
]
