"""The fast projector (SplatPlan / project_points) against the plain-autograd splat it replaced
(``reference_splat.py``): images and every gradient equal in float64, for points inside, on
the border and outside the box, stored and recomputed plans, and plan reuse with a
permutation."""

from __future__ import annotations

import pytest
import torch
from reference_splat import reference_project_points
from scipy.spatial.transform import Rotation

from conftest import DEVICES
from hetsiren.physics import SplatPlan, project_points
from hetsiren.physics import projection as projection_module


def _problem(device, d=12, b=5, n=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * (1.3 * d)
    values = torch.randn(b, n, generator=gen, dtype=torch.float64)
    rot = torch.from_numpy(Rotation.random(b, random_state=seed).as_matrix())
    shifts = torch.randn(b, 2, generator=gen, dtype=torch.float64) * 3
    return [t.to(device) for t in (values, coords, rot, shifts)] + [d]


def _grads(fn, values, rot, shifts, weight):
    values = values.clone().requires_grad_(True)
    rot = rot.clone().requires_grad_(True)
    shifts = shifts.clone().requires_grad_(True)
    out = fn(values, rot, shifts)
    (out * weight).sum().backward()
    return out.detach(), values.grad, rot.grad, shifts.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stored", [True, False])
def test_matches_reference_splat_with_gradients(device, stored, monkeypatch):
    if not stored:  # force several chunks, recomputed in the backward pass
        monkeypatch.setattr(projection_module, "_CHUNK_POINTS", 700)
        monkeypatch.setattr(projection_module, "_STORED_POINTS", 0)
    values, coords, rot, shifts, d = _problem(device)
    weight = torch.randn(len(rot), d, d, dtype=torch.float64, device=device)
    fast = _grads(lambda v, r, s: project_points(v, coords, r, s, d), values, rot, shifts,
                  weight)
    ref = _grads(lambda v, r, s: reference_project_points(v, coords, r, s, d), values, rot,
                 shifts, weight)
    assert fast[0].abs().sum() > 0
    for a, b in zip(fast, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_plan_reuse_with_permutation(device):
    values, coords, rot, shifts, d = _problem(device, seed=3)
    perm = torch.tensor([2, 0, 4, 1, 3], device=device)
    weight = torch.randn(len(rot), d, d, dtype=torch.float64, device=device)

    def reused(v, r, s):
        plan = SplatPlan(coords, r, s, d)
        return plan.project(v) + 2 * plan.project(v, perm)

    def separate(v, r, s):
        return (reference_project_points(v, coords, r, s, d)
                + 2 * reference_project_points(v, coords, r[perm], s[perm], d))

    for a, b in zip(_grads(reused, values, rot, shifts, weight),
                    _grads(separate, values, rot, shifts, weight), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_shared_values_float32_close_to_float64():
    values, coords, rot, shifts, d = _problem("cpu", seed=5)
    shared = values[0]
    out32 = project_points(shared.float(), coords.float(), rot.float(), shifts.float(), d)
    out64 = reference_project_points(shared, coords, rot, shifts, d)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)
