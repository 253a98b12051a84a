"""The data layer: the batch as tensors, the one pixel-size rule, CTF parameters as tensors and
the one CTF-mode rule."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from hetsiren.data import (
    Preprocessing,
    batch_ctf,
    common_pixel_size_A,
    estimate_preprocessing,
    load_batch,
)
from hetsiren.errors import UserInputError
from hetsiren.io import read_particles
from hetsiren.physics import compute_ctf, fourier_crop, wiener_filter
from hetsiren.train.inference import ctf_roles


@pytest.fixture(scope="module")
def particles(tiny_dataset):
    return read_particles(tiny_dataset / "particles.star")


def test_one_pixel_size_rule(particles):
    assert common_pixel_size_A(particles) == 5.0
    # sizes written with different precision by different tools are one size: the rule the
    # training's check (rounded to 1e-6) and the reconstruction's (1e-3 spread) now share
    close = dataclasses.replace(particles, pixel_size_A=np.r_[1.0, 1.0000005, 1.0004])
    assert common_pixel_size_A(close) == 1.0
    apart = dataclasses.replace(particles, pixel_size_A=np.r_[1.0, 1.0, 1.06])
    with pytest.raises(UserInputError, match="different pixel sizes"):
        common_pixel_size_A(apart)


def test_ctf_parameters_as_tensors_are_compute_ctf_arguments(particles):
    rows = np.array([5, 0, 7])
    params = particles.ctf.to_tensors(rows, "cpu", torch.float64)
    names = set(inspect.signature(compute_ctf).parameters) - {"box_size", "pixel_size_A"}
    assert set(params) == names
    assert all(v.dtype == torch.float64 and v.shape == (3,) for v in params.values())
    np.testing.assert_array_equal(params["defocus_u_A"].numpy(),
                                  particles.ctf.defocus_u_A[rows])
    assert particles.ctf.to_tensors(rows)["cs_mm"].dtype == torch.float32


def test_a_batch_holds_the_particles_in_training_units(particles):
    prep = estimate_preprocessing(particles, box=8)
    assert prep.pixel_size_A == pytest.approx(10.0) and prep.box_in == 16
    rows = np.array([3, 1, 2])
    batch = load_batch(particles, prep, rows, torch.device("cpu"))
    assert batch.images.shape == (3, 8, 8) and batch.images.dtype == torch.float32
    np.testing.assert_allclose(batch.shifts_px.numpy(), particles.shifts_A[rows] / 10.0,
                               rtol=1e-6)
    np.testing.assert_allclose(batch.rotations.numpy(), particles.rotations[rows], atol=1e-7)
    # as stored (reconstruction): Fourier-cropped only, float64 geometry
    raw = load_batch(particles, prep, rows, torch.device("cpu"), dtype=torch.float64,
                     normalise=False)
    expected = fourier_crop(torch.from_numpy(particles.images.read(rows)), 8)
    torch.testing.assert_close(raw.images, expected)
    assert raw.rotations.dtype == raw.shifts_px.dtype == raw.ctf["defocus_u_A"].dtype == (
        torch.float64)
    # normalised: background mean removed, divided by the noise level (not the raw images)
    assert not torch.allclose(batch.images, expected)


@pytest.mark.parametrize("mode", ["apply", "wiener", "none"])
def test_the_ctf_mode_rule(particles, mode):
    prep = Preprocessing(box_in=16, box=16, pixel_size_in_A=5.0, noise_std=1.0)
    batch = load_batch(particles, prep, np.arange(4), torch.device("cpu"))
    ctf = batch_ctf(batch, prep)
    roles = ctf_roles(batch, prep, mode)
    if mode == "apply":
        assert roles.target is batch.images and torch.equal(roles.ctf, ctf)
    elif mode == "wiener":
        assert roles.ctf is None
        torch.testing.assert_close(roles.target, wiener_filter(batch.images, ctf))
    else:
        assert roles.target is batch.images and roles.ctf is None
    # particles without CTF parameters: every mode uses the images as they are
    no_ctf = dataclasses.replace(batch, ctf=None)
    assert ctf_roles(no_ctf, prep, mode).ctf is None


def test_an_unknown_ctf_mode_is_refused(particles):
    prep = Preprocessing(box_in=16, box=16, pixel_size_in_A=5.0, noise_std=1.0)
    batch = load_batch(particles, prep, np.arange(2), torch.device("cpu"))
    with pytest.raises(UserInputError, match="--ctf-mode 'wien'"):
        ctf_roles(batch, prep, "wien")
