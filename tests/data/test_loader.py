"""The loader: batches in the order asked for, whatever the number of reader threads, equal to
the batches read one by one; an error in a reader reaches the loop; leaving early stops it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from hetsiren.data import StackImages, estimate_preprocessing, iterate_batches, load_batch
from hetsiren.errors import UserInputError
from hetsiren.io import read_particles


@pytest.fixture()
def particles(tiny_dataset):
    return read_particles(tiny_dataset / "particles.star")


@pytest.mark.parametrize("workers", [1, 3])
def test_batches_in_order_and_equal_to_single_reads(particles, workers):
    prep = estimate_preprocessing(particles, 12)
    order = np.random.default_rng(0).permutation(particles.n_particles)
    chunks = [order[i:i + 10] for i in range(0, len(order), 10)]
    cpu = torch.device("cpu")
    batches = list(iterate_batches(particles, prep, chunks, cpu, workers=workers))
    assert [b.indices.tolist() for b in batches] == [c.tolist() for c in chunks]
    for batch, chunk in zip(batches, chunks, strict=True):
        one = load_batch(particles, prep, chunk, cpu)
        torch.testing.assert_close(batch.images, one.images, rtol=0, atol=0)
        torch.testing.assert_close(batch.rotations, one.rotations, rtol=0, atol=0)
        torch.testing.assert_close(batch.shifts_px, one.shifts_px, rtol=0, atol=0)
        assert batch.ctf.keys() == one.ctf.keys()


def test_a_reader_error_reaches_the_loop(particles, monkeypatch):
    prep = estimate_preprocessing(particles, 12)

    def broken(self, indices):
        if 40 in indices:
            raise UserInputError("image 41 is broken")
        return original(self, indices)

    original = StackImages.read
    monkeypatch.setattr(StackImages, "read", broken)
    chunks = [np.arange(i, i + 8) for i in range(0, 64, 8)]
    seen = []
    with pytest.raises(UserInputError, match="image 41 is broken"):
        for batch in iterate_batches(particles, prep, chunks, torch.device("cpu"), workers=2):
            seen.append(int(batch.indices[0]))
    assert seen == [0, 8, 16, 24, 32]


def test_leaving_early_stops_the_readers(particles):
    prep = estimate_preprocessing(particles, 12)
    chunks = [np.arange(i, i + 4) for i in range(0, 64, 4)]
    loader = iterate_batches(particles, prep, chunks, torch.device("cpu"), workers=2)
    next(loader)
    loader.close()  # returns: the pending reads are cancelled or finished, threads joined
    assert not [t for t in threading.enumerate() if t.name.startswith("hetsiren-loader")]
