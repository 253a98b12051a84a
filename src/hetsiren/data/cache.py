"""The preprocessed-image cache: every training image Fourier-cropped and normalised once.

Training reads each particle once per epoch; reading and cropping it from the original stacks
(a 256-px image cropped to 128 px costs two FFTs) is then repeated every epoch, on every rank,
for ``--resume`` and for ``encode``. The cache does it once and keeps the result as one
memory-mapped ``.npy`` array ``(N, d, d)`` (float16 by default: the images are normalised to
unit noise, where float16's 3 significant digits are far below the noise; float32 on request).

Layout of one cache (a folder under the cache root: ``RUN/cache/`` by default, or a
``--cache-dir`` shared by runs on the same particles and box)::

    ROOT/<key>/images.npy   (N, d, d) preprocessed images, row i = particle i
    ROOT/<key>/cache.json   what it holds: key inputs, Preprocessing, dtype, progress, checksums
    ROOT/<key>/.build.lock  flock held by the process building it

The key is a hash of what determines the images: every stack's resolved path, size and
modification time, which image of which stack each particle is, the training box, the
preprocessing method and the dtype. The metadata file itself (poses, CTF) does not enter: a
re-refined STAR over the same images reuses the cache.

The build is resumable: images are written in chunks, and ``cache.json`` records (atomically)
the chunks done and each one's CRC-32; a build killed at any point continues from the last
recorded chunk. A cache whose record does not match its key, whose file has the wrong size or
header, or whose sampled chunks fail their checksum is rebuilt with a warning, never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from hetsiren.data.batch import Preprocessing, StackImages, estimate_preprocessing
from hetsiren.errors import UserInputError
from hetsiren.io.mrc import MrcImageSource
from hetsiren.io.particles import ParticleSet
from hetsiren.outputs import TMP_MARK, atomic_path

__all__ = ["CACHE_FILES", "CacheDtype", "ImageCache", "cache_key", "find_cache", "open_cache"]

log = logging.getLogger(__name__)

CacheDtype = Literal["float16", "float32"]
IMAGES, RECORD, BUILD_LOCK = "images.npy", "cache.json", ".build.lock"
CACHE_FILES = (IMAGES, RECORD)
# Bump when what a cache holds changes (preprocessing, layout): old caches are then rebuilt.
CACHE_FORMAT = 1
# Images per chunk: the unit of progress and of the checksums (~32 MB at 128 px, float16).
CHUNK = 1024
# Images read and cropped at once while building: the FFTs of 1024 images of 256 px run 3x
# slower per image than of 64 (their 0.5 GB spectra leave the CPU caches).
_READ_BATCH = 64
# Chunks whose checksum is verified each time a complete cache is opened (plus the last):
# catches a truncated or overwritten file in well under a second at any size.
_VERIFY_CHUNKS = 8


def _stack_identity(images: MrcImageSource) -> list[list[Any]]:
    out = []
    for path in images.stack_paths:
        try:
            st = path.stat()
            out.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(path), None, None])
    return out


def _key_inputs(particles: ParticleSet, box: int | None, dtype: CacheDtype) -> dict[str, Any]:
    images = particles.images
    if not isinstance(images, MrcImageSource):
        raise UserInputError("the particle file has no MRC images to cache")
    which = hashlib.sha256()
    which.update(np.ascontiguousarray(images.stack_of_particle, dtype=np.int64).tobytes())
    which.update(np.ascontiguousarray(images.index_in_stack, dtype=np.int64).tobytes())
    return {"format": CACHE_FORMAT, "n_particles": particles.n_particles,
            "box_in": particles.box_size, "box": int(box or particles.box_size),
            "dtype": dtype, "stacks": _stack_identity(images),
            "images_sha256": which.hexdigest()}


def cache_key(particles: ParticleSet, box: int | None, dtype: CacheDtype = "float16") -> str:
    """The name of the cache folder for these particles' images at ``box``."""
    text = json.dumps(_key_inputs(particles, box, dtype), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class ImageCache:
    """A complete cache, open for reading: ``read(indices)`` gives preprocessed images."""

    folder: Path
    prep: Preprocessing
    images: np.ndarray
    """``(N, d, d)`` memory map (float16 or float32)."""
    scale: float = 1.0
    """Factor applied when reading (a run whose noise estimate differs from the cache's)."""

    def __len__(self) -> int:
        return len(self.images)

    def for_preprocessing(self, prep: Preprocessing) -> ImageCache:
        """This cache read as ``prep`` normalises: the same box, scaled to its noise level
        (runs recorded before the cache existed estimated it from another sample)."""
        if (prep.box, prep.box_in) != (self.prep.box, self.prep.box_in):
            raise ValueError(f"cache of box {self.prep.box} used for box {prep.box}")
        return replace(self, prep=prep, scale=self.prep.noise_std / prep.noise_std)

    def read(self, indices: np.ndarray) -> torch.Tensor:
        """``(b,)`` particle indices → ``(b, d, d)`` float32 preprocessed images."""
        indices = np.asarray(indices, dtype=np.int64)
        # sorted reads walk the file forwards; put the rows back in the asked order after
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices), *self.images.shape[1:]), dtype=np.float32)
        out[order] = self.images[indices[order]]
        if self.scale != 1.0:
            out *= self.scale
        return torch.from_numpy(out)


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    with atomic_path(folder / RECORD) as tmp:
        tmp.write_text(json.dumps(record) + "\n")


def _chunk_crc(images: np.ndarray, k: int) -> int:
    return zlib.crc32(np.ascontiguousarray(images[k * CHUNK:(k + 1) * CHUNK]).data)


def _open_images(folder: Path, shape: tuple[int, ...], dtype: str, mode: str
                 ) -> np.ndarray | None:
    """The memory map, or None when the file is missing or not the array it should be."""
    path = folder / IMAGES
    try:
        images = np.load(path, mmap_mode=mode)  # type: ignore[arg-type]
    except (OSError, ValueError):
        return None
    if images.shape != shape or images.dtype != np.dtype(dtype):
        return None
    return images


def _problem(folder: Path, record: dict[str, Any] | None, inputs: dict[str, Any]
             ) -> str | None:
    """Why a cache folder cannot be used as it is (None: it can, complete or resumable)."""
    if record is None:
        return None if not (folder / IMAGES).exists() else f"{RECORD} missing"
    if not record:
        return f"{RECORD} unreadable"
    if record.get("inputs") != inputs:
        return "it was built from other images or settings"
    try:
        Preprocessing(**record["preprocessing"])
    except (KeyError, TypeError):
        return f"{RECORD} has no valid preprocessing"
    return None


def _verify(folder: Path, images: np.ndarray, record: dict[str, Any]) -> str | None:
    crcs = record.get("chunk_crc32", [])
    n_chunks = -(-len(images) // CHUNK)
    if len(crcs) != n_chunks:
        return f"{len(crcs)} of {n_chunks} chunk checksums recorded"
    rng = np.random.default_rng()
    picks = set(rng.choice(n_chunks, size=min(n_chunks, _VERIFY_CHUNKS), replace=False).tolist())
    for k in sorted(picks | {n_chunks - 1}):
        if _chunk_crc(images, k) != crcs[k]:
            return f"chunk {k} (images {k * CHUNK + 1}-{min((k + 1) * CHUNK, len(images))}) " \
                   "fails its checksum"
    return None


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """One builder per cache folder (another run on the same particles waits); released by
    the system if the holder dies, kill -9 included."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / BUILD_LOCK, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is building this cache; waiting for it", folder)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _complete(folder: Path, inputs: dict[str, Any], warn: bool) -> ImageCache | None:
    record = _read_record(folder)
    problem = _problem(folder, record, inputs)
    if problem is None and record and record.get("complete"):
        shape = (inputs["n_particles"], inputs["box"], inputs["box"])
        images = _open_images(folder, shape, inputs["dtype"], "r")
        problem = (f"{IMAGES} is not a {inputs['dtype']} array of shape {shape}"
                   if images is None else _verify(folder, images, record))
        if problem is None:
            assert images is not None
            return ImageCache(folder, Preprocessing(**record["preprocessing"]), images)
    if problem is not None and warn:
        log.warning("%s: not using this image cache (%s); rebuilding it", folder, problem)
        for name in CACHE_FILES:
            (folder / name).unlink(missing_ok=True)
    return None


def find_cache(particles: ParticleSet, box: int | None, root: str | Path,
               dtype: CacheDtype = "float16") -> ImageCache | None:
    """The complete, sound cache of ``particles`` at ``box`` under ``root``, or None (nothing
    is built: for ``encode``, which may run while a training builds it)."""
    folder = Path(root) / cache_key(particles, box, dtype)
    return _complete(folder, _key_inputs(particles, box, dtype), warn=False)


def open_cache(particles: ParticleSet, box: int | None, root: str | Path,
               dtype: CacheDtype = "float16", progress: bool = False,
               workers: int = 2) -> ImageCache:
    """The cache of ``particles`` at ``box`` under ``root``: opened if complete and sound,
    else built (or its interrupted build continued) first.

    The preprocessing (training box, noise level) is estimated when the cache is built and
    stored with it, so a run that finds the cache reads no original image at all.

    Args:
        particles: the training particles (their images, lazily read).
        box: training box in pixels (None: the images' own box).
        root: folder holding caches (one sub-folder per key).
        dtype: storage type of the cached images.
        progress: show a progress bar while building.
        workers: threads reading and cropping images while building.
    """
    inputs = _key_inputs(particles, box, dtype)
    folder = Path(root) / cache_key(particles, box, dtype)
    cache = _complete(folder, inputs, warn=False)
    if cache is not None:
        return cache
    with _build_lock(folder):
        cache = _complete(folder, inputs, warn=True)  # built meanwhile by another process?
        if cache is not None:
            return cache
        _build(folder, particles, inputs, progress, workers)
        cache = _complete(folder, inputs, warn=True)
    if cache is None:
        raise UserInputError(f"{folder}: the image cache just built does not verify; is the "
                             "disk full or the folder shared with another writer?")
    return cache


def _build(folder: Path, particles: ParticleSet, inputs: dict[str, Any], progress: bool,
           workers: int) -> None:
    n, box = inputs["n_particles"], inputs["box"]
    record = _read_record(folder)
    images = None
    if record and record.get("inputs") == inputs and _problem(folder, record, inputs) is None:
        images = _open_images(folder, (n, box, box), inputs["dtype"], "r+")
    for leftover in folder.glob(f".*{TMP_MARK}*"):  # of a build killed while creating files
        leftover.unlink(missing_ok=True)
    if images is None:  # a fresh build
        prep = estimate_preprocessing(particles, box)
        record = {"inputs": inputs, "preprocessing": prep.to_dict(), "complete": False,
                  "chunk_crc32": []}
        for name in CACHE_FILES:
            (folder / name).unlink(missing_ok=True)
        with atomic_path(folder / IMAGES) as tmp:
            np.lib.format.open_memmap(tmp, mode="w+", dtype=inputs["dtype"],
                                      shape=(n, box, box)).flush()
        _write_record(folder, record)
        images = _open_images(folder, (n, box, box), inputs["dtype"], "r+")
        assert images is not None
    else:
        assert record is not None
        log.info("%s: continuing an interrupted cache build after %d of %d images", folder,
                 min(len(record["chunk_crc32"]) * CHUNK, n), n)
    prep = Preprocessing(**record["preprocessing"])
    source = StackImages(particles, prep)
    n_chunks = -(-n // CHUNK)
    done = len(record["chunk_crc32"])
    bar = tqdm(total=n, initial=min(done * CHUNK, n), unit="img", leave=False,
               desc="caching images", disable=not progress)

    def load(k: int) -> np.ndarray:
        rows = np.arange(k * CHUNK, min((k + 1) * CHUNK, n))
        return np.concatenate([source.read(rows[i:i + _READ_BATCH]).numpy().astype(images.dtype)
                               for i in range(0, len(rows), _READ_BATCH)])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(load, k) for k in range(done, min(done + workers + 1, n_chunks))]
        for k in range(done, n_chunks):
            chunk = futures.pop(0).result()
            if k + workers + 1 < n_chunks:
                futures.append(pool.submit(load, k + workers + 1))
            images[k * CHUNK:k * CHUNK + len(chunk)] = chunk
            images.flush()  # type: ignore[attr-defined]  # on disk before the record says so
            record["chunk_crc32"].append(_chunk_crc(images, k))
            record["complete"] = k == n_chunks - 1
            _write_record(folder, record)
            bar.update(len(chunk))
    bar.close()
