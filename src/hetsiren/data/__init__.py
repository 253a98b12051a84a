"""The data layer: particles from io turned into tensors, preprocessed the same way every time.

It owns the preprocessing record (:class:`Preprocessing`), the batch (:class:`Batch`: images,
rotations, shifts in training pixels, CTF parameters as tensors), reading batches
(:func:`load_batch`; :func:`iterate_batches` with reader threads, ``loader.py``), the
once-built cache of preprocessed images (:func:`open_cache`, ``cache.py``), the check that a
particle set has one pixel size (:func:`common_pixel_size_A`) and the homogeneous
reconstruction of a particle set (:func:`reconstruct_particles`: batches read here,
backprojected by physics). It sits on io, geometry and physics (physics takes tensors and
never imports it); train, encode, validate and ``hetsiren reconstruct`` read particles
through it.
"""

from hetsiren.data.batch import (
    PIXEL_SIZE_RTOL,
    Batch,
    Preprocessing,
    StackImages,
    batch_ctf,
    common_pixel_size_A,
    estimate_preprocessing,
    load_batch,
)
from hetsiren.data.cache import ImageCache, find_cache, open_cache
from hetsiren.data.loader import iterate_batches
from hetsiren.data.reconstruct import reconstruct_particles

__all__ = [
    "PIXEL_SIZE_RTOL",
    "Batch",
    "ImageCache",
    "Preprocessing",
    "StackImages",
    "batch_ctf",
    "common_pixel_size_A",
    "estimate_preprocessing",
    "find_cache",
    "iterate_batches",
    "load_batch",
    "open_cache",
    "reconstruct_particles",
]
