"""Projectors against data made by another tool, against each other, and their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import DEVICES, blob_map, correlation
from hetsiren.geometry import euler_to_matrix, grid_coordinates, sphere_mask
from hetsiren.physics import project_points, project_volume_reference

N_FAST = 60  # conformance particles used per check (of 500), to keep the suite fast
N_REF = 40


def _masked_points(volume: torch.Tensor):
    d = volume.shape[-1]
    mask = sphere_mask(d)
    return volume[mask], grid_coordinates(d)[mask]


def test_project_points_reproduces_conformance_images(conformance):
    """Poses and origins read by cryoDRGN from the files reproduce the particles."""
    vol, images = conformance["map"], conformance["images"][:N_FAST]
    rot = conformance["rotations"][:N_FAST].float()
    origin = conformance["origins_px"][:N_FAST].float()
    values, coords = _masked_points(vol)
    d = vol.shape[-1]
    true = correlation(project_points(values, coords, rot, origin, d), images).mean()
    transposed = correlation(
        project_points(values, coords, rot.transpose(1, 2), origin, d), images).mean()
    flipped = correlation(project_points(values, coords, rot, -origin, d), images).mean()
    print(f"project_points corr: true {true:.4f}, transposed A {transposed:.4f}, "
          f"flipped shift {flipped:.4f}")
    assert true > 0.98
    assert transposed < 0.5 and flipped < 0.5


def test_reference_projector_reproduces_conformance_images(conformance):
    vol, images = conformance["map"], conformance["images"][:N_REF]
    rot = conformance["rotations"][:N_REF].float()
    origin = conformance["origins_px"][:N_REF].float()
    true = correlation(project_volume_reference(vol, rot, origin), images).mean()
    transposed = correlation(
        project_volume_reference(vol, rot.transpose(1, 2), origin), images).mean()
    flipped = correlation(project_volume_reference(vol, rot, -origin), images).mean()
    print(f"reference corr: true {true:.4f}, transposed A {transposed:.4f}, "
          f"flipped shift {flipped:.4f}")
    assert true > 0.98
    assert transposed < 0.5 and flipped < 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_fast_matches_reference_on_smooth_map(device):
    d = 32
    vol = blob_map(d).float().to(device)
    rot = torch.from_numpy(Rotation.random(16, random_state=1).as_matrix()).float().to(device)
    shifts = torch.from_numpy(np.random.default_rng(2).uniform(-2, 2, (16, 2))).float()
    shifts = shifts.to(device)
    values, coords = _masked_points(vol.cpu())
    fast = project_points(values.to(device), coords.to(device), rot, shifts, d)
    ref = project_volume_reference(vol, rot, shifts)
    c = correlation(fast, ref)
    print(f"fast vs reference corr (smooth map, D=32): min {c.min():.5f} mean {c.mean():.5f}")
    assert c.min() > 0.99
    # same total mass (the splat conserves it, the reference up to interpolation)
    torch.testing.assert_close(fast.sum((1, 2)), ref.sum((1, 2)), rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("box", [8, 9])
def test_point_lands_at_centre_and_moves_opposite_to_origin(box):
    c = box // 2
    values = torch.ones(1, 1)
    coords = torch.zeros(1, 3)
    eye = torch.eye(3)[None]
    # float32: a point on a pixel keeps its weight there to rounding (1e-6)
    img = project_points(values, coords, eye, torch.zeros(1, 2), box)[0]
    assert img[c, c] == pytest.approx(1, abs=1e-6) and img.sum() == pytest.approx(1, abs=1e-6)
    img = project_points(values, coords, eye, torch.tensor([[1.0, -2.0]]), box)[0]
    assert img[c + 2, c - 1] == pytest.approx(1, abs=1e-6)  # at minus the origin: x − 1, y + 2
    # a point at +x rotated by A lands at (A e_x)_xy
    a = euler_to_matrix(torch.tensor([[0.0, 0.0, np.pi / 2]]))  # psi = 90°
    img = project_points(values, torch.tensor([[2.0, 0.0, 0.0]]), a, torch.zeros(1, 2), box)[0]
    land = a[0] @ torch.tensor([2.0, 0.0, 0.0])
    assert img[c + int(round(land[1].item())), c + int(round(land[0].item()))] == pytest.approx(1)


def test_shared_values_and_out_of_box_points_dropped():
    d = 8
    coords = torch.tensor([[0.3, 0.2, 0.0], [40.0, 0.0, 0.0]])
    values = torch.tensor([2.0, 5.0])
    rot = torch.eye(3).expand(3, 3, 3)
    img = project_points(values, coords, rot, torch.zeros(3, 2), d)
    assert img.shape == (3, d, d)
    torch.testing.assert_close(img.sum((1, 2)), torch.full((3,), 2.0))


def _tiny_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    n, d = 12, 8
    # points at half-integer-ish offsets: never on a pixel boundary under small perturbations
    coords = (torch.randint(-2, 3, (n, 3), generator=gen).double()
              + 0.3 + 0.4 * torch.rand(n, 3, generator=gen, dtype=torch.float64))
    values = torch.rand(2, n, generator=gen, dtype=torch.float64)
    euler = torch.tensor([[0.3, 0.7, -0.4], [1.1, 2.0, 0.5]], dtype=torch.float64)
    shifts = torch.tensor([[0.21, -0.13], [-0.37, 0.44]], dtype=torch.float64)
    return values, coords, euler, shifts, d


def test_gradcheck_values():
    values, coords, euler, shifts, d = _tiny_problem()
    rot = euler_to_matrix(euler)
    values.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: project_points(v, coords, rot, shifts, d), (values,), eps=1e-6, atol=1e-7)


def test_gradcheck_pose():
    values, coords, euler, shifts, d = _tiny_problem(1)
    euler.requires_grad_(True)
    shifts.requires_grad_(True)

    def f(e, s):
        return project_points(values, coords, euler_to_matrix(e), s, d)

    assert torch.autograd.gradcheck(f, (euler, shifts), eps=1e-7, atol=1e-5)


def test_reference_projector_is_differentiable():
    d = 8
    vol = blob_map(d, n_blobs=2, sigma_px=1.5).requires_grad_(True)
    rot = torch.from_numpy(Rotation.random(2, random_state=3).as_matrix())
    shifts = torch.tensor([[0.5, -0.25], [0.0, 1.0]], dtype=torch.float64)
    out = project_volume_reference(vol, rot, shifts)
    out.square().sum().backward()
    assert vol.grad is not None and torch.isfinite(vol.grad).all()
