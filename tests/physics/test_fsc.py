"""FSC and the resolution read from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import blob_map
from hetsiren.physics import FSCCurve, fsc, resolution_at


def test_fsc_of_map_with_itself_is_one():
    vol = blob_map(32) + 0.1 * torch.randn(32, 32, 32, dtype=torch.float64)
    curve = fsc(vol, vol, 1.5)
    assert curve.fsc.shape == (16,) and curve.frequency_per_A.shape == (16,)
    np.testing.assert_allclose(curve.fsc, 1.0, atol=1e-12)
    np.testing.assert_allclose(curve.frequency_per_A[-1], 1 / (2 * 1.5))
    assert resolution_at(curve, 0.143) == pytest.approx(3.0)  # never crosses → Nyquist


def test_fsc_of_independent_noise_is_small_and_scale_invariant():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, 32, generator=gen, dtype=torch.float64)
    b = torch.randn(32, 32, 32, generator=gen, dtype=torch.float64)
    assert np.abs(fsc(a, b, 1.0).fsc[4:]).max() < 0.15
    np.testing.assert_allclose(fsc(a, 3 * a + 0 * b, 1.0).fsc, 1.0, atol=1e-12)
    np.testing.assert_allclose(fsc(a, -a, 1.0).fsc, -1.0, atol=1e-12)


def test_resolution_at_interpolates_first_crossing():
    freq = np.arange(1, 11) / 20.0  # pixel 1 Å, D = 20
    values = np.array([1.0, 0.95, 0.9, 0.6, 0.4, 0.2, 0.6, 0.1, 0.0, 0.0])
    curve = FSCCurve(frequency_per_A=freq, fsc=values, pixel_size_A=1.0)
    # 0.5 crossed between shells 4 (0.6) and 5 (0.4): frequency 4.5/20
    assert resolution_at(curve, 0.5) == pytest.approx(20 / 4.5)
    # 0.143 first crossed between shells 6 (0.2) and 7 (0.6)? no: 0.2 → 0.6 rises; first
    # drop below 0.143 is shell 8 (0.1), interpolating from shell 7 (0.6)
    f = (7 + (0.6 - 0.143) / 0.5) / 20
    assert resolution_at(curve, 0.143) == pytest.approx(1 / f)
    assert resolution_at(FSCCurve(freq, np.zeros(10), 1.0), 0.5) == pytest.approx(20.0)
