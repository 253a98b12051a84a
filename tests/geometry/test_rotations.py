"""Rotation conventions: against scipy's published definitions and the conformance truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from hetsiren.geometry import (
    euler_deg_to_matrix,
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_euler_deg,
    matrix_to_rotvec_cryosparc,
    rotvec_cryosparc_to_matrix,
)

angle = st.floats(-180.0, 180.0, allow_nan=False)
tilt = st.one_of(st.just(0.0), st.just(180.0), st.floats(0.0, 180.0, allow_nan=False))


def test_relion_matrix_equals_scipy_inverse_zyz():
    euler = np.random.default_rng(0).uniform(-180, 180, (500, 3))
    expected = Rotation.from_euler("ZYZ", euler, degrees=True).inv().as_matrix()
    np.testing.assert_allclose(euler_deg_to_matrix(euler), expected, atol=1e-12)


def test_worked_example_rot90():
    # rot = 90°, tilt = psi = 0: RELION's Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]], so the
    # x axis is carried to -y: a voxel on +x lands at image (0, -1).
    a = euler_deg_to_matrix(np.array([[90.0, 0.0, 0.0]]))[0]
    np.testing.assert_allclose(a @ [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(rot=angle, tilt=tilt, psi=angle)
@example(rot=0.0, tilt=1e-5, psi=0.0)  # found by CI: near-lock tilt in float64
def test_euler_matrix_euler_round_trip(rot, tilt, psi):
    a = euler_deg_to_matrix(np.array([[rot, tilt, psi]]))
    back = matrix_to_euler_deg(a)
    assert 0.0 <= back[0, 1] <= 180.0
    np.testing.assert_allclose(euler_deg_to_matrix(back), a, atol=1e-9)


@pytest.mark.parametrize("tilt_deg", [0.0, 180.0, 1e-9, 180.0 - 1e-9])
def test_gimbal_lock_is_stable(tilt_deg):
    a = euler_deg_to_matrix(np.array([[37.0, tilt_deg, -81.0]]))
    back = matrix_to_euler_deg(a)
    assert np.all(np.isfinite(back))
    np.testing.assert_allclose(euler_deg_to_matrix(back), a, atol=1e-7)


def test_euler_to_matrix_gradients_finite_and_correct():
    euler = torch.tensor([[0.3, 1.1, -2.0], [0.0, 0.0, 0.5]], dtype=torch.float64,
                         requires_grad=True)
    assert torch.autograd.gradcheck(euler_to_matrix, (euler,))
    m = euler_to_matrix(euler)
    torch.testing.assert_close(m @ m.transpose(-1, -2), torch.eye(3, dtype=torch.float64)
                               .expand(2, 3, 3))
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(2, dtype=torch.float64))
    back = matrix_to_euler(m)
    back.sum().backward()
    assert torch.isfinite(euler.grad).all()


def test_cryosparc_rotvec_is_transpose_of_A():
    rotvec = Rotation.random(200, random_state=1).as_rotvec()
    a = rotvec_cryosparc_to_matrix(rotvec)
    np.testing.assert_allclose(a, Rotation.from_rotvec(rotvec).as_matrix().transpose(0, 2, 1),
                               atol=1e-12)
    back = matrix_to_rotvec_cryosparc(a)
    np.testing.assert_allclose(rotvec_cryosparc_to_matrix(back), a, atol=1e-12)


def test_cryosparc_worked_example():
    # pose = (0, 0, π/2): cryoSPARC's matrix Aᵀ is a +90° turn about z, so A turns x to -y,
    # the same as RELION rot = 90° in test_worked_example_rot90.
    a = rotvec_cryosparc_to_matrix(np.array([[0.0, 0.0, np.pi / 2]]))[0]
    np.testing.assert_allclose(a, euler_deg_to_matrix(np.array([[90.0, 0.0, 0.0]]))[0],
                               atol=1e-12)


def test_rotvec_near_pi_round_trip():
    axis = np.array([[1.0, 2.0, -0.5]]) / np.linalg.norm([1.0, 2.0, -0.5])
    for ang in (np.pi - 1e-7, np.pi):
        a = rotvec_cryosparc_to_matrix(axis * ang)
        np.testing.assert_allclose(rotvec_cryosparc_to_matrix(matrix_to_rotvec_cryosparc(a)), a,
                                   atol=1e-9)


def test_conformance_star_and_cs_give_truth(conformance_dir):
    import starfile

    truth = np.load(conformance_dir / "truth_rotations_A.npy")
    table = starfile.read(conformance_dir / "particles.star")["particles"]
    euler = table[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    np.testing.assert_allclose(euler_deg_to_matrix(euler), truth, atol=1e-6)
    cs = np.load(conformance_dir / "particles.cs")
    np.testing.assert_allclose(rotvec_cryosparc_to_matrix(cs["alignments3D/pose"]), truth,
                               atol=1e-6)
