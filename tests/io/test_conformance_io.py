"""Poses read from files made outside this project equal the truth (shared/data/conformance),
and a .cs built by hand with cryoSPARC's convention reads the same as the STAR it came from."""

from __future__ import annotations

import numpy as np
import pytest
import starfile
from scipy.spatial.transform import Rotation

from hetsiren.io import read_particles


@pytest.mark.parametrize("name", ["particles.star", "particles.cs"])
def test_conformance_poses(conformance_dir, name):
    p = read_particles(conformance_dir / name)
    truth_rot = np.load(conformance_dir / "truth_rotations_A.npy")
    truth_px = np.load(conformance_dir / "truth_origin_px.npy")
    assert p.n_particles == 500 and p.box_size == 64
    np.testing.assert_allclose(p.pixel_size_A, 1.0)
    np.testing.assert_allclose(p.rotations, truth_rot, atol=1e-5)
    np.testing.assert_allclose(p.shifts_A / p.pixel_size_A[:, None], truth_px, atol=1e-5)
    assert p.images.missing_stacks == []
    assert p.images.read(np.array([499, 0])).shape == (2, 64, 64)


def _cs_from_star_values(euler_deg: np.ndarray, origin_px: np.ndarray, psize: float,
                         stack: str) -> np.ndarray:
    """cryoSPARC's documented convention, written with numpy/scipy only."""
    n = len(euler_deg)
    dtype = np.dtype([("uid", "<u8"), ("blob/path", "S64"), ("blob/idx", "<u4"),
                      ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4"),
                      ("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,)),
                      ("alignments3D/psize_A", "<f4")])
    arr = np.zeros(n, dtype=dtype)
    arr["uid"] = np.arange(n) + 1000
    arr["blob/path"] = stack.encode()
    arr["blob/idx"] = np.arange(n)
    arr["blob/shape"] = 64
    arr["blob/psize_A"] = psize
    arr["alignments3D/pose"] = Rotation.from_euler("ZYZ", euler_deg, degrees=True).as_rotvec()
    arr["alignments3D/shift"] = origin_px
    arr["alignments3D/psize_A"] = psize
    return arr


def test_cs_built_from_star_matches_star(conformance_dir, tmp_path):
    df = starfile.read(conformance_dir / "particles.star")["particles"]
    euler = df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    origin = df[["rlnOriginX", "rlnOriginY"]].to_numpy()
    arr = _cs_from_star_values(euler, origin, 1.0, str(conformance_dir / "particles.mrcs"))
    with open(tmp_path / "built.cs", "wb") as fh:
        np.save(fh, arr)
    from_cs = read_particles(tmp_path / "built.cs")
    from_star = read_particles(conformance_dir / "particles.star")
    # float32 storage of the rotation vector limits agreement to ~1e-6
    np.testing.assert_allclose(from_cs.rotations, from_star.rotations, atol=2e-6)
    np.testing.assert_allclose(from_cs.shifts_A, from_star.shifts_A, atol=1e-6)


def test_hand_worked_pose(tmp_path):
    """rot=90, tilt=0, psi=0: cryoSPARC pose (0, 0, π/2); A = [[0,1,0],[-1,0,0],[0,0,1]]."""
    pose = Rotation.from_euler("ZYZ", [90, 0, 0], degrees=True).as_rotvec()
    np.testing.assert_allclose(pose, [0, 0, np.pi / 2], atol=1e-12)
    expected_A = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    arr = _cs_from_star_values(np.array([[90.0, 0.0, 0.0]]), np.array([[1.5, -2.0]]), 2.0,
                               "absent.mrcs")
    with open(tmp_path / "one.cs", "wb") as fh:
        np.save(fh, arr)
    p = read_particles(tmp_path / "one.cs")
    np.testing.assert_allclose(p.rotations[0], expected_A, atol=1e-7)
    np.testing.assert_allclose(p.shifts_A[0], [3.0, -4.0])  # pixels * 2 Å
    star = tmp_path / "one.star"
    star.write_text("data_\nloop_\n_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n"
                    "_rlnOriginX\n_rlnOriginY\n1@absent.mrcs 90 0 0 1.5 -2.0\n")
    q = read_particles(star, pixel_size_A=2.0)
    np.testing.assert_allclose(q.rotations[0], expected_A, atol=1e-12)
    np.testing.assert_allclose(q.shifts_A[0], [3.0, -4.0])
