"""MaskedVolume: V = V0 + ΔV on mask voxels, its grid and its spatial gradient."""

from __future__ import annotations

import torch

from hetsiren.geometry import sphere_mask
from hetsiren.model.volume import MaskedVolume, pad_values


def _dense_forward_differences(grid: torch.Tensor) -> torch.Tensor:
    """(b, D, D, D) → (b, D, D, D, 3) forward differences along x, y, z with zero padding."""
    padded = torch.nn.functional.pad(grid, (0, 1, 0, 1, 0, 1))
    dx = padded[:, :-1, :-1, 1:] - grid
    dy = padded[:, :-1, 1:, :-1] - grid
    dz = padded[:, 1:, :-1, :-1] - grid
    return torch.stack([dx, dy, dz], -1)


def test_gradient_matches_dense_grid_with_focus_mask():
    d = 12
    gen = torch.Generator().manual_seed(0)
    v0 = torch.rand(d, d, d, generator=gen) * sphere_mask(d)
    mask = torch.zeros(d, d, d, dtype=torch.bool)
    mask[3:9, 4:8, 1:11] = True
    vol = MaskedVolume(d, v0=v0, mask=mask)
    mask &= sphere_mask(d)  # the decoder never leaves the inscribed sphere
    assert vol.n_voxels == int(mask.sum())
    delta = torch.randn(2, vol.n_voxels, generator=gen)
    values = vol.values(delta)
    grid = vol.to_grid(values)
    # outside the mask the grid is V0 exactly; inside V0 + ΔV
    torch.testing.assert_close(grid[:, ~mask], v0[~mask].expand(2, -1))
    torch.testing.assert_close(grid[:, mask], (v0[mask] + delta))
    dense = _dense_forward_differences(grid).reshape(2, -1, 3)[:, vol.decoder_index]
    padded = pad_values(values)
    per_axis = torch.stack([vol.forward_difference(padded, k) for k in range(3)], -1)
    torch.testing.assert_close(per_axis, dense)


def test_forward_difference_adjoint():
    """<D g, v> = <g, D* v> for the per-axis difference without its constant part."""
    d = 10
    gen = torch.Generator().manual_seed(1)
    mask = torch.zeros(d, d, d, dtype=torch.bool)
    mask[2:8, 1:9, 3:7] = True
    vol = MaskedVolume(d, mask=mask)  # V0 = 0: the difference is linear in the values
    values = torch.randn(3, vol.n_voxels, generator=gen, dtype=torch.float64)
    g = torch.randn(3, vol.n_voxels, generator=gen, dtype=torch.float64)
    for k in range(3):
        lhs = (vol.forward_difference(pad_values(values), k) * g).sum()
        rhs = (values * vol.forward_difference_adjoint(pad_values(g), k)).sum()
        torch.testing.assert_close(lhs, rhs)


def test_static_part_holds_reference_outside_mask():
    d = 10
    v0 = torch.ones(d, d, d) * sphere_mask(d)
    mask = torch.zeros(d, d, d, dtype=torch.bool)
    mask[:5] = True
    vol = MaskedVolume(d, v0=v0, mask=mask)
    assert vol.n_voxels + vol.static_values.numel() == int(sphere_mask(d).sum())
    assert torch.all(vol.static_values == 1)
    assert not MaskedVolume(d).has_static


def test_reference_stats():
    d = 8
    v0 = torch.arange(d**3, dtype=torch.float32).reshape(d, d, d)
    vol = MaskedVolume(d, v0=v0)
    inside = v0[sphere_mask(d)]
    torch.testing.assert_close(
        vol.ref_stats,
        torch.stack([inside.max(), inside.min(), inside.mean(), inside.std(unbiased=False)]))
