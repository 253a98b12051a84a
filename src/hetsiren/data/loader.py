"""Batches for the training loop, prepared ahead of it by worker threads.

Reading (``pread`` from the stacks, or a copy out of the cache's memory map), the Fourier
crop and the float16 → float32 conversion all release the GIL, so threads overlap them with
the training step and with each other; no worker processes (and no pickling of the particle
set) are needed. On CUDA each batch is assembled in pinned memory and copied with
``non_blocking=True``, so the copy overlaps the previous step's kernels.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from hetsiren.data.batch import (
    Batch,
    PreprocessedImages,
    Preprocessing,
    StackImages,
    host_batch,
)
from hetsiren.io.particles import ParticleSet

__all__ = ["DEFAULT_WORKERS", "iterate_batches"]

DEFAULT_WORKERS = 2
"""Reader threads: 2 keep ~5,000 cached 128-px images/s coming on two cores (bench_io.py)."""
# Batches prepared ahead of the one being trained on, per worker.
_AHEAD_PER_WORKER = 2


def iterate_batches(particles: ParticleSet, prep: Preprocessing, chunks: Sequence[np.ndarray],
                    device: torch.device, images: PreprocessedImages | None = None,
                    workers: int = DEFAULT_WORKERS) -> Iterator[Batch]:
    """One :class:`Batch` per entry of ``chunks`` (arrays of particle indices), in order.

    Args:
        particles: poses, shifts and CTF of every particle.
        prep: the preprocessing of the images.
        chunks: the particle indices of each batch.
        device: where the batches go.
        images: where the preprocessed images come from (default: read from the stacks and
            preprocessed on the fly; a :class:`~hetsiren.data.cache.ImageCache` to read them
            preprocessed).
        workers: reader threads (>= 1).
    """
    images = images if images is not None else StackImages(particles, prep)
    pin = device.type == "cuda"

    def prepare(chunk: np.ndarray) -> Batch:
        return host_batch(particles, prep, chunk, images, pin_memory=pin)

    ahead = max(1, workers) * _AHEAD_PER_WORKER
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="hetsiren-loader")
    pending: deque[Future[Batch]] = deque()
    try:
        for chunk in chunks[:ahead]:
            pending.append(pool.submit(prepare, chunk))
        following = len(pending)
        while pending:
            batch = pending.popleft().result()
            if following < len(chunks):
                pending.append(pool.submit(prepare, chunks[following]))
                following += 1
            yield batch.to(device)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
