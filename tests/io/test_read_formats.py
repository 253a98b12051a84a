"""Every file in shared/data/formats is read; values checked against numbers copied by hand
from the files (``head``/``grep`` for STAR, numpy printouts for ``.cs``)."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hetsiren.io import MrcImageSource, describe_particles, read_particles


def stack_data(path) -> np.ndarray:
    """The whole stack, read by mrcfile (these files lack the MAP id: permissive)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with mrcfile.open(path, permissive=True) as m:
            return np.array(m.data)


def relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's A, written independently of hetsiren.geometry (DEPENDENCIES.md)."""
    return Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).inv().as_matrix()


def cryosparc_matrix(pose) -> np.ndarray:
    """cryoSPARC's pose is the rotation vector of Aᵀ."""
    return Rotation.from_rotvec(np.asarray(pose, dtype=np.float64)).as_matrix().T


def test_relion30_toy_projections(formats_dir):
    p = read_particles(formats_dir / "toy_projections.star")
    assert p.n_particles == 1000
    assert p.box_size == 30
    # No pixel size in the file: taken from the stack header (1 Å).
    np.testing.assert_allclose(p.pixel_size_A, 1.0)
    assert p.rotations is None and p.shifts_A is None
    ctf = p.ctf
    np.testing.assert_allclose(ctf.defocus_u_A[[0, -1]], 0.0)
    np.testing.assert_allclose(ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(ctf.cs_mm, 0.001)
    np.testing.assert_allclose(ctf.amplitude_contrast, 0.1)
    np.testing.assert_allclose(ctf.phase_shift_rad, np.pi / 2)  # rlnPhaseShift 90 deg
    np.testing.assert_allclose(ctf.bfactor_A2, 0.0)
    assert p.images.missing_stacks == []


def test_relion30_toy_projections_pixel_size_argument(formats_dir):
    p = read_particles(formats_dir / "toy_projections.star", pixel_size_A=2.5)
    np.testing.assert_allclose(p.pixel_size_A, 2.5)


def test_relion30_pfcrt(formats_dir):
    p = read_particles(formats_dir / "FinalRefinement-OriginalParticles-PfCRT.star")
    assert p.n_particles == 5
    # rlnDetectorPixelSize 1.035 µm * 1e4 / rlnMagnification 10000
    np.testing.assert_allclose(p.pixel_size_A, 1.035)
    # first row: psi 98.225690, rot 16.093530, tilt 86.352776; last: 154.973890 -115.40303 84.934080
    np.testing.assert_allclose(p.rotations[0], relion_matrix(16.093530, 86.352776, 98.225690),
                               atol=1e-9)
    np.testing.assert_allclose(p.rotations[-1],
                               relion_matrix(-115.40303, 84.934080, 154.973890), atol=1e-9)
    # rlnOriginX/Y in pixels (RELION 3.0) → Å
    np.testing.assert_allclose(p.shifts_A[0], np.array([-0.14063, -0.04688]) * 1.035)
    np.testing.assert_allclose(p.shifts_A[-1], np.array([-0.04688, 0.203125]) * 1.035)
    np.testing.assert_allclose(p.ctf.defocus_u_A[[0, -1]], [15686.0, 14106.6])
    np.testing.assert_allclose(p.ctf.defocus_v_A[[0, -1]], [17521.4, 15297.2])
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad[[0, -1]],
                               np.deg2rad([87.629070, 10.903939]))
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 0.001)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.1)  # absent: default
    assert p.images.n_stacks_found == 0
    assert p.images.missing_stacks[0].name == "FinalRefinement-OriginalParticles-PfCRT.mrcs"


@pytest.mark.parametrize("name", ["relion31.star", "relion31.v2.star"])
def test_relion31(formats_dir, name):
    p = read_particles(formats_dir / name)
    assert p.n_particles == 5
    assert p.box_size == 256
    np.testing.assert_allclose(p.pixel_size_A, 2.806)
    np.testing.assert_array_equal(p.optics_group, 1)
    # row 1: rot -102.30296 tilt 82.318041 psi 124.706463, origin 0.019324 -0.64686 Å
    np.testing.assert_allclose(p.rotations[0], relion_matrix(-102.30296, 82.318041, 124.706463),
                               atol=1e-9)
    np.testing.assert_allclose(p.rotations[-1], relion_matrix(162.855018, 84.493794, 140.014019),
                               atol=1e-9)
    np.testing.assert_allclose(p.shifts_A[0], [0.019324, -0.64686])
    np.testing.assert_allclose(p.shifts_A[-1], [-0.33773, 0.385262])
    np.testing.assert_allclose(p.ctf.defocus_u_A[[0, -1]], [13108.082418, 12725.541100])
    np.testing.assert_allclose(p.ctf.defocus_v_A[[0, -1]], [12845.582418, 12463.041100])
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad, np.deg2rad(-160.39))
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 0.01)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.1)
    np.testing.assert_allclose(p.ctf.phase_shift_rad, 0.0)
    np.testing.assert_allclose(p.ctf.bfactor_A2, 0.0)
    # 000001@relion31.mrcs ... 000005@relion31.mrcs: readable
    images = p.images.read(np.array([4, 0]))
    np.testing.assert_array_equal(images, stack_data(formats_dir / "relion31.mrcs")[[4, 0]])


def test_relion31_six_optics_groups(formats_dir):
    p = read_particles(formats_dir / "relion31.6opticsgroups.star")
    assert p.n_particles == 139
    assert p.box_size == 196
    # row 1 is in optics group 6 (opticsGroup6: 1.25 Å, Cs 2.7); last row in group 4
    # (opticsGroup1: 1.25 Å, Cs 2.6); group 2 (opticsGroup3) has 1.24 Å.
    assert p.optics_group[0] == 6 and p.optics_group[-1] == 4
    np.testing.assert_allclose(p.pixel_size_A[[0, -1]], [1.25, 1.25])
    np.testing.assert_allclose(p.ctf.cs_mm[[0, -1]], [2.7, 2.6])
    np.testing.assert_allclose(p.pixel_size_A[p.optics_group == 2], 1.24)
    np.testing.assert_allclose(p.ctf.voltage_kv, 200.0)
    np.testing.assert_allclose(p.rotations[0], relion_matrix(-128.10516, 37.068920, -82.17809),
                               atol=1e-9)
    np.testing.assert_allclose(p.rotations[-1], relion_matrix(174.071681, 136.991101, -169.98067),
                               atol=1e-9)
    np.testing.assert_allclose(p.shifts_A[0], [13.284554, -3.21701])
    np.testing.assert_allclose(p.shifts_A[-1], [-4.46701, 3.032991])
    np.testing.assert_allclose(p.ctf.defocus_u_A[[0, -1]], [10352.805929, 11089.867209])
    np.testing.assert_allclose(p.ctf.defocus_v_A[[0, -1]], [8905.919375, 10606.174935])
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad[[0, -1]],
                               np.deg2rad([60.889370, 106.579170]))
    info = describe_particles(formats_dir / "relion31.6opticsgroups.star")
    assert [g["n_particles"] for g in info["optics_groups"]] == [48, 29, 5, 7, 26, 24]
    assert info["optics_groups"][3]["name"] == "opticsGroup1"
    assert info["optics_groups"][3]["cs_mm"] == pytest.approx(2.6)
    assert info["pixel_size_A"] == [1.24, 1.25]
    assert info["stacks_found"] == 0 and len(info["missing_stacks"]) == info["n_stacks"] > 100


def test_relion5(formats_dir):
    p = read_particles(formats_dir / "relion5.star")
    assert p.n_particles == 17
    assert p.box_size == 448
    np.testing.assert_allclose(p.pixel_size_A, 0.89)
    np.testing.assert_allclose(p.ctf.voltage_kv, 100.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 1.6)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.1)
    # first: rot 111.508618 tilt 36.742536 psi 141.158035; last: 38.079654 123.661745 22.407112
    np.testing.assert_allclose(p.rotations[0], relion_matrix(111.508618, 36.742536, 141.158035),
                               atol=1e-9)
    np.testing.assert_allclose(p.rotations[-1], relion_matrix(38.079654, 123.661745, 22.407112),
                               atol=1e-9)
    np.testing.assert_allclose(p.shifts_A[0], [-3.12578, -1.41031])
    np.testing.assert_allclose(p.shifts_A[-1], [1.259694, 0.846956])
    np.testing.assert_allclose(p.ctf.defocus_u_A[[0, -1]], [11949.061330, 11650.680211])
    np.testing.assert_allclose(p.ctf.defocus_v_A[[0, -1]], [11800.493288, 11601.105367])
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad[[0, -1]],
                               np.deg2rad([49.059993, 81.974647]))
    missing = sorted(m.name for m in p.images.missing_stacks)
    assert missing == ["toy_images_a.mrcs", "toy_images_b.mrcs"]
    # rlnRandomSubset, column 26, in file order
    np.testing.assert_array_equal(p.random_subset,
                                  [1, 2, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 2, 1, 2, 1])


def test_cryosparc_p12_j24(formats_dir):
    p = read_particles(formats_dir / "cryosparc_P12_J24_001_particles.cs")
    assert p.n_particles == 2019
    assert p.box_size == 180
    np.testing.assert_allclose(p.pixel_size_A, 2.95, rtol=1e-6)
    # alignments3D/pose, first and last row (float32 in the file)
    np.testing.assert_allclose(p.rotations[0],
                               cryosparc_matrix([2.3386633, -0.25595567, -1.2236784]), atol=1e-6)
    np.testing.assert_allclose(p.rotations[-1],
                               cryosparc_matrix([0.55047995, 3.2572987, -1.5672901]), atol=1e-6)
    # alignments3D/shift (px) * alignments3D/psize_A 2.95
    np.testing.assert_allclose(p.shifts_A[0], np.array([11.334375, -1.828125]) * 2.95, rtol=1e-6)
    np.testing.assert_allclose(p.shifts_A[-1], np.array([-3.628125, 8.296875]) * 2.95, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.defocus_u_A[[0, -1]], [45591.37, 22815.318], rtol=1e-6)
    np.testing.assert_allclose(p.ctf.defocus_v_A[[0, -1]], [45309.793, 21894.865], rtol=1e-6)
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad[[0, -1]],
                               [-1.3636448, 0.11439586], rtol=1e-6)
    np.testing.assert_allclose(p.ctf.voltage_kv, 200.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 2.0)
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.07, rtol=1e-6)
    # alignments3D/split (0/1) → halves 1/2: first [1 0 0 0 1], last [0 0 1], 1009 ones
    np.testing.assert_array_equal(p.random_subset[:5], [2, 1, 1, 1, 2])
    np.testing.assert_array_equal(p.random_subset[-3:], [1, 1, 2])
    assert (p.random_subset == 2).sum() == 1009 and (p.random_subset == 1).sum() == 1010
    src = p.images
    assert isinstance(src, MrcImageSource)
    assert src.index_in_stack[0] == 0 and src.index_in_stack[-1] == 124  # blob/idx
    assert len(src.missing_stacks) == len(src.stack_paths) == 50
    assert src.missing_stacks[0].name == (
        "20150917_05196_DNA-TET-25k-DE20_raw.region_000.sum-all_003-072_particles.mrc")


def test_cryosparc_j2_exported(formats_dir):
    p = read_particles(formats_dir / "cryosparc_J2_particles_exported.cs")
    assert p.n_particles == 22
    assert p.box_size == 300
    np.testing.assert_allclose(p.pixel_size_A, 1.345, rtol=1e-6)
    assert p.rotations is None and p.shifts_A is None  # only alignments2D
    np.testing.assert_allclose(p.ctf.defocus_u_A, 16412.178, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.defocus_v_A, 16236.26, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad, 0.86163914, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    # blob/path '>J1/imported/...': the '>' is stripped
    (missing,) = p.images.missing_stacks
    assert missing.name == "000090334788266266069_18jam15b_0345_ali_DW.mrcs"
    assert missing.parent.name == "imported" and ">" not in str(missing)
    assert p.images.index_in_stack[-1] == 21


@pytest.mark.parametrize(("name", "n", "box"), [("relion31.mrcs", 5, 256),
                                                ("toy_projections.mrcs", 1000, 30)])
def test_plain_stacks(formats_dir, name, n, box):
    p = read_particles(formats_dir / name)
    assert (p.n_particles, p.box_size) == (n, box)
    assert p.rotations is None and p.ctf is None
    np.testing.assert_allclose(p.pixel_size_A, 1.0)
    idx = np.array([n - 1, 0, 2, 1])
    np.testing.assert_array_equal(p.images.read(idx), stack_data(formats_dir / name)[idx])


def test_toy_projections_star_images_match_stack(formats_dir):
    p = read_particles(formats_dir / "toy_projections.star")
    idx = np.array([999, 3, 500, 3])
    np.testing.assert_array_equal(p.images.read(idx),
                                  stack_data(formats_dir / "toy_projections.mrcs")[idx])


def test_datadir_resolution(formats_dir, tmp_path):
    (tmp_path / "copy.star").write_text(
        (formats_dir / "toy_projections.star").read_text())
    p = read_particles(tmp_path / "copy.star", pixel_size_A=1.0)
    assert len(p.images.missing_stacks) == 1
    p = read_particles(tmp_path / "copy.star", datadir=formats_dir)
    assert p.images.missing_stacks == []
    assert p.images.read(np.array([0])).shape == (1, 30, 30)


def test_map(formats_dir):
    from hetsiren.io import read_map

    volume, voxel = read_map(formats_dir / "toymodel_small_nocenter.mrc")
    assert volume.shape == (30, 30, 30) and volume.dtype == np.float32
    assert voxel == 1.0
