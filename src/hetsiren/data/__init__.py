"""The data layer: particles from io turned into tensors, preprocessed the same way every time.

It owns the preprocessing record (:class:`Preprocessing`), the batch (:class:`Batch`: images,
rotations, shifts in training pixels, CTF parameters as tensors), reading batches
(:func:`load_batch`; :func:`iterate_batches` with reader threads, ``loader.py``), the
once-built cache of preprocessed images (:func:`open_cache`, ``cache.py``) and the check
that a particle set has one pixel size (:func:`common_pixel_size_A`). It sits on io,
geometry and physics' Fourier resampling; train, encode and reconstruction read particles
through it.
"""

from hetsiren.data.batch import (
    Batch,
    Preprocessing,
    StackImages,
    common_pixel_size_A,
    estimate_preprocessing,
    load_batch,
)
from hetsiren.data.cache import ImageCache, find_cache, open_cache
from hetsiren.data.loader import iterate_batches

__all__ = [
    "Batch",
    "ImageCache",
    "Preprocessing",
    "StackImages",
    "common_pixel_size_A",
    "estimate_preprocessing",
    "find_cache",
    "iterate_batches",
    "load_batch",
    "open_cache",
]
