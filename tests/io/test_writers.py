"""Writers give the user back their own file; MRC writers are atomic and stream."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from hetsiren.io import (
    CTFParams,
    MrcStackWriter,
    read_map,
    read_particles,
    write_cs,
    write_map,
    write_new_star,
    write_star,
)

STARS = ["toy_projections.star", "relion31.star", "relion31.v2.star",
         "relion31.6opticsgroups.star", "relion5.star",
         "FinalRefinement-OriginalParticles-PfCRT.star"]


def _tables(path):
    return starfile.read(path, always_dict=True)


@pytest.mark.parametrize("name", STARS)
def test_star_round_trip_identical(formats_dir, tmp_path, name):
    p = read_particles(formats_dir / name, pixel_size_A=None if name != "toy_projections.star"
                       else 1.0)
    out = write_star(tmp_path / name, p)
    before, after = _tables(formats_dir / name), _tables(out)
    assert list(before) == list(after)
    for key in before:
        # image names are rewritten for the output's folder (test below); all else is kept
        pd.testing.assert_frame_equal(before[key].drop(columns="rlnImageName", errors="ignore"),
                                      after[key].drop(columns="rlnImageName", errors="ignore"),
                                      check_exact=True)
    q = read_particles(out, pixel_size_A=1.0 if name == "toy_projections.star" else None)
    assert _found(q) == _found(p)


def _found(particles):
    return [path.resolve() for path in particles.images.stack_paths if path.is_file()]


def _stack_files(particle_file):
    return _found(read_particles(particle_file))


@pytest.mark.parametrize("suffix", [".star", ".cs"])
@pytest.mark.parametrize("source", ["particles.star", "particles.cs"])
def test_written_stack_paths_resolve_from_the_outputs_folder(conformance_dir, tmp_path,
                                                             monkeypatch, suffix, source):
    """A subset written to another folder, from a relative working directory, still finds
    its stacks, in both formats and from both formats, with relative paths in the file."""
    monkeypatch.chdir(tmp_path)
    p = read_particles(conformance_dir / source)
    expected = _stack_files(conformance_dir / source)
    assert expected
    out = tmp_path / "elsewhere" / "deeper" / f"subset{suffix}"
    out.parent.mkdir(parents=True)
    writer = write_star if suffix == ".star" else write_cs
    writer(type(out)("elsewhere/deeper") / out.name, p, rows=np.arange(4))
    monkeypatch.chdir("/")
    assert _stack_files(out) == expected
    q = read_particles(out)
    np.testing.assert_array_equal(q.images.read(np.arange(4)), p.images.read(np.arange(4)))
    if suffix == ".cs":
        assert not any(path.startswith(b"/") for path in np.load(out)["blob/path"])
    else:
        assert not any(n.split("@")[1].startswith("/") for n in _tables(out)["particles"][
            "rlnImageName"])
    absolute = writer(tmp_path / f"absolute{suffix}", p, absolute_stack_paths=True)
    assert _stack_files(absolute) == expected


@pytest.mark.parametrize("name", STARS[1:])
def test_star_round_trip_with_poses(formats_dir, tmp_path, name):
    p = read_particles(formats_dir / name)
    out = write_star(tmp_path / name, p, rotations=p.rotations, shifts_A=p.shifts_A)
    q = read_particles(out)
    np.testing.assert_allclose(q.rotations, p.rotations, atol=1e-12)
    np.testing.assert_allclose(q.shifts_A, p.shifts_A, atol=1e-12)
    # the file's own column names are kept (pixels for 3.0, Å for 3.1+)
    assert list(_tables(out)[p.metadata["particles_block"]].columns) == list(
        _tables(formats_dir / name)[p.metadata["particles_block"]].columns)


def test_write_star_rows_and_extra_columns(formats_dir, tmp_path):
    src = formats_dir / "relion31.6opticsgroups.star"
    p = read_particles(src)
    rows = np.array([0, 5, 138])
    z = np.arange(p.n_particles, dtype=np.float32) / 7
    out = write_star(tmp_path / "sub.star", p, rows=rows,
                     extra_columns={"rlnHetsirenZ1": z, "rlnHetsirenZ2": -z})
    before, after = _tables(src), _tables(out)
    pd.testing.assert_frame_equal(before["optics"], after["optics"], check_exact=True)
    expected = before["particles"].iloc[rows].reset_index(drop=True)
    got = after["particles"]
    assert list(got.columns) == list(expected.columns) + ["rlnHetsirenZ1", "rlnHetsirenZ2"]
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_exact=True)
    np.testing.assert_allclose(got["rlnHetsirenZ1"], z[rows], rtol=1e-7)
    q = read_particles(out)
    np.testing.assert_allclose(q.rotations, p.rotations[rows], atol=1e-12)
    np.testing.assert_array_equal(q.optics_group, p.optics_group[rows])


def test_write_star_keeps_version_comment(formats_dir, tmp_path):
    out = write_star(tmp_path / "a.star", read_particles(formats_dir / "relion31.star"))
    assert "# version 30001" in out.read_text()


def test_write_star_from_cs_is_relion31(formats_dir, tmp_path, conformance_dir):
    p = read_particles(conformance_dir / "particles.cs")
    out = write_star(tmp_path / "from_cs.star", p, rows=np.arange(10))
    blocks = _tables(out)
    assert set(blocks) == {"optics", "particles"}
    q = read_particles(out)
    np.testing.assert_allclose(q.rotations, p.rotations[:10], atol=1e-12)
    np.testing.assert_allclose(q.shifts_A, p.shifts_A[:10], atol=1e-12)
    np.testing.assert_array_equal(q.images.read(np.arange(3)), p.images.read(np.arange(3)))


def test_write_cs_from_cs_keeps_fields(formats_dir, tmp_path):
    src = formats_dir / "cryosparc_P12_J24_001_particles.cs"
    p = read_particles(src)
    rows = np.array([1, 2, 2000])
    out = write_cs(tmp_path / "sub.cs", p, rows=rows,
                   extra_columns={"components_mode_0/value": np.arange(p.n_particles)})
    assert out.suffix == ".cs" and out.exists()
    original, got = np.load(src), np.load(out)
    assert got.dtype.names == (*original.dtype.names, "components_mode_0/value")
    for name in original.dtype.names:
        np.testing.assert_array_equal(got[name], original[name][rows])
    np.testing.assert_array_equal(got["components_mode_0/value"], rows.astype(np.float32))


def test_write_cs_from_star(conformance_dir, tmp_path):
    p = read_particles(conformance_dir / "particles.star")
    out = write_cs(tmp_path / "from_star.cs", p)
    q = read_particles(out)
    np.testing.assert_allclose(q.rotations, p.rotations, atol=2e-6)
    np.testing.assert_allclose(q.shifts_A, p.shifts_A, atol=1e-6)
    assert len(np.unique(np.load(out)["uid"])) == p.n_particles
    np.testing.assert_array_equal(q.images.read(np.array([7, 3])), p.images.read(np.array([7, 3])))


def test_write_new_star(tmp_path):
    n = 4
    rng = np.random.default_rng(1)
    from scipy.spatial.transform import Rotation

    rot = Rotation.random(n, random_state=2).as_matrix()
    shifts = rng.normal(size=(n, 2))
    ctf = CTFParams(*(np.full(n, v, dtype=np.float64) for v in (
        12000.0, 11000.0, 0.3, 300.0, 2.7, 0.1, 0.0, 0.0)))
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(n)]
    with MrcStackWriter(tmp_path / "particles.mrcs", 16, 2.5) as w:
        w.write(rng.normal(size=(n, 16, 16)))
    out = write_new_star(tmp_path / "particles.star", names, 2.5, 16, rot, shifts, ctf)
    blocks = _tables(out)
    opt = blocks["optics"]
    assert list(opt.columns[:5]) == ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnImagePixelSize",
                                     "rlnImageSize", "rlnImageDimensionality"]
    assert {"rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"} <= set(opt.columns)
    assert list(blocks["particles"].columns) == [
        "rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
        "rlnOriginYAngst", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift",
        "rlnCtfBfactor", "rlnOpticsGroup"]
    p = read_particles(out)
    np.testing.assert_allclose(p.rotations, rot, atol=1e-12)
    np.testing.assert_allclose(p.shifts_A, shifts, atol=1e-12)
    np.testing.assert_allclose(p.ctf.astigmatism_angle_rad, 0.3)
    assert p.box_size == 16 and p.images.read(np.arange(n)).shape == (n, 16, 16)


def test_mrc_stack_writer_streams_and_is_atomic(tmp_path):
    path = tmp_path / "s.mrcs"
    data = np.random.default_rng(0).normal(size=(10, 8, 8)).astype(np.float32)
    with MrcStackWriter(path, 8, 1.7) as w:
        w.write(data[:3])
        assert not path.exists()
        w.write(data[3:])
    with mrcfile.open(path) as m:  # strict: a valid MRC with the right header
        np.testing.assert_array_equal(m.data, data)
        assert m.voxel_size.x == pytest.approx(1.7)
        assert m.is_image_stack()
        assert m.header.dmax == pytest.approx(data.max())
    with pytest.raises(RuntimeError), MrcStackWriter(tmp_path / "bad.mrcs", 8, 1.0) as w:
        w.write(data)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == [path]


def test_map_round_trip(tmp_path):
    vol = np.random.default_rng(0).normal(size=(6, 6, 6)).astype(np.float32)
    write_map(tmp_path / "m.mrc", vol, 3.2)
    got, voxel = read_map(tmp_path / "m.mrc")
    np.testing.assert_array_equal(got, vol)
    assert voxel == pytest.approx(3.2)
    assert [f.name for f in tmp_path.iterdir()] == ["m.mrc"]
