"""The preprocessed-image cache: built once, reused without touching the stacks, resumable
after kill -9, and never trusted when it does not check out."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from hetsiren.data import cache as C
from hetsiren.data.batch import StackImages, estimate_preprocessing
from hetsiren.io import read_particles
from hetsiren.io.mrc import MrcImageSource

BOX = 12  # the 16-px tiny dataset cropped


@pytest.fixture()
def particles(tiny_dataset):
    return read_particles(tiny_dataset / "particles.star")


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(C, "CHUNK", 8)  # 64 particles → 8 chunks


def _no_stack_reads(monkeypatch):
    def refuse(self, indices):
        raise AssertionError("an original stack was read")

    monkeypatch.setattr(MrcImageSource, "read", refuse)


def test_cache_holds_the_preprocessed_images(particles, tmp_path, small_chunks):
    cache = C.open_cache(particles, BOX, tmp_path)
    prep = estimate_preprocessing(particles, BOX)
    assert cache.prep == prep
    direct = StackImages(particles, prep).read(np.arange(particles.n_particles)).numpy()
    rows = np.array([5, 0, 63, 5, 17])  # any order, repeats
    got = cache.read(rows).numpy()
    assert got.dtype == np.float32 and got.shape == (5, BOX, BOX)
    # float16 keeps 11 significant bits: ~5e-4 relative, far below unit noise
    np.testing.assert_allclose(got, direct[rows], rtol=2e-3, atol=2e-3)
    assert np.abs(got - direct[rows]).max() > 0  # float16 by default
    exact = C.open_cache(particles, BOX, tmp_path / "f32", dtype="float32")
    np.testing.assert_array_equal(exact.read(rows).numpy(), direct[rows])


def test_a_second_open_reads_no_original_stack(particles, tmp_path, small_chunks, monkeypatch):
    first = C.open_cache(particles, BOX, tmp_path)
    before = first.read(np.arange(10)).numpy()
    _no_stack_reads(monkeypatch)
    again = C.open_cache(read_particles(particles.metadata["path"]), BOX, tmp_path)
    assert again.folder == first.folder
    np.testing.assert_array_equal(again.read(np.arange(10)).numpy(), before)


def test_the_key_follows_the_images_and_the_box(particles, tmp_path):
    key = C.cache_key(particles, BOX)
    assert C.cache_key(particles, BOX) == key
    assert C.cache_key(particles, 8) != key
    assert C.cache_key(particles, BOX, "float32") != key
    stack = particles.images.stack_paths[0]
    st = stack.stat()
    os.utime(stack, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the stack was rewritten
    assert C.cache_key(read_particles(particles.metadata["path"]), BOX) != key


def _images_file(tmp_path):
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return folder, folder / C.IMAGES


def test_a_corrupt_cache_is_rebuilt_with_a_warning(particles, tmp_path, small_chunks, caplog):
    good = C.open_cache(particles, BOX, tmp_path).read(np.arange(64)).numpy()
    folder, path = _images_file(tmp_path)
    images = np.load(path, mmap_mode="r+")
    images[20:22] = 0  # a chunk overwritten
    images.flush()
    del images
    with caplog.at_level(logging.WARNING):
        again = C.open_cache(particles, BOX, tmp_path)
    assert "fails its checksum" in caplog.text and "rebuilding" in caplog.text
    np.testing.assert_array_equal(again.read(np.arange(64)).numpy(), good)


@pytest.mark.parametrize("damage", ["truncated", "record", "inputs"])
def test_a_mismatched_cache_is_not_trusted(particles, tmp_path, small_chunks, caplog, damage):
    good = C.open_cache(particles, BOX, tmp_path).read(np.arange(64)).numpy()
    folder, path = _images_file(tmp_path)
    if damage == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(path.stat().st_size - 100)
    elif damage == "record":
        (folder / C.RECORD).write_text("{not json")
    else:
        record = json.loads((folder / C.RECORD).read_text())
        record["inputs"]["box"] = 10
        (folder / C.RECORD).write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        again = C.open_cache(particles, BOX, tmp_path)
    assert "not using this image cache" in caplog.text
    np.testing.assert_array_equal(again.read(np.arange(64)).numpy(), good)


_SLOW_BUILD = textwrap.dedent("""
    import sys, time
    from hetsiren.data import cache as C
    from hetsiren.data.batch import StackImages
    from hetsiren.io import read_particles

    C.CHUNK = 8
    original = StackImages.read
    def slow(self, indices):
        time.sleep(0.3)
        return original(self, indices)
    StackImages.read = slow
    C.open_cache(read_particles(sys.argv[1]), int(sys.argv[2]), sys.argv[3], workers=1)
""")


def test_a_build_killed_midway_resumes(particles, tmp_path, small_chunks, caplog,
                                        cli_environ):
    script = tmp_path / "build.py"
    script.write_text(_SLOW_BUILD)
    root = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, str(script), particles.metadata["path"], str(BOX),
                             str(root)], env=cli_environ)
    record_path = root / C.cache_key(particles, BOX) / C.RECORD
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = len(json.loads(record_path.read_text())["chunk_crc32"])
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= done < 8, f"killed after {done} of 8 chunks"
    with caplog.at_level(logging.INFO):
        resumed = C.open_cache(particles, BOX, root)
    assert "continuing an interrupted cache build" in caplog.text
    fresh = C.open_cache(particles, BOX, tmp_path / "fresh")
    # equal up to one float16 step: the killed build ran in another process, whose thread
    # count may order the FFT's sums differently (float32 results 1e-7 apart)
    a, b = resumed.read(np.arange(64)).numpy(), fresh.read(np.arange(64)).numpy()
    np.testing.assert_allclose(a, b, rtol=2**-10, atol=2**-10 * np.abs(b).max())
