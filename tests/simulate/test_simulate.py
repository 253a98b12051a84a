"""Simulator: ground truth, reproducibility, and bad input that writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hetsiren.errors import UserInputError
from hetsiren.io import read_map, read_particles
from hetsiren.simulate import (
    SimulationSpec,
    maps_from_atomic_models,
    simulate_discrete,
    simulate_path,
    simulate_phantom,
)

BOX = 24


def _blob(shift: float) -> np.ndarray:
    ax = np.arange(BOX) - BOX // 2
    z, y, x = np.meshgrid(ax, ax, ax, indexing="ij")
    return np.exp(-((x - shift) ** 2 + y**2 + z**2) / 8).astype(np.float32)


def test_discrete_populations_and_truth(tmp_path):
    spec = SimulationSpec(n_particles=400, snr=0.5, seed=2, pixel_size_A=4.0)
    out = simulate_discrete(tmp_path / "d", [_blob(-3), _blob(3)], spec, populations=[0.9, 0.1])
    truth = np.load(out / "truth.npz")
    assert 0.05 < np.mean(truth["state"] == 1) < 0.15
    assert np.all(np.isnan(truth["coordinate"]))
    particles = read_particles(out / "particles.star")
    assert particles.n_particles == 400 and particles.box_size == BOX
    np.testing.assert_allclose(particles.rotations, truth["rotations"], atol=1e-6)
    np.testing.assert_allclose(particles.shifts_A, truth["shifts_A"], atol=1e-4)
    np.testing.assert_allclose(particles.ctf.defocus_u_A, truth["defocus_u_A"], rtol=1e-6)
    meta = json.loads((out / "truth.json").read_text())
    assert meta["kind"] == "discrete" and len(meta["truth_maps"]) == 2
    vol, voxel = read_map(out / meta["truth_maps"][1])
    np.testing.assert_allclose(vol, _blob(3), atol=1e-6)
    assert voxel == pytest.approx(4.0)


def test_snr_sets_noise_level(tmp_path):
    spec = SimulationSpec(n_particles=200, snr=0.25, seed=0, pixel_size_A=4.0, ctf=False)
    out = simulate_discrete(tmp_path / "d", [_blob(0)], spec)
    truth = np.load(out / "truth.npz")
    images = read_particles(out / "particles.star").images.read(np.arange(200))
    # total variance = signal + noise = noise * (1 + SNR)
    ratio = images.var(axis=(1, 2)).mean() / float(truth["noise_std"]) ** 2
    assert ratio == pytest.approx(1.25, rel=0.1)


def test_seeded_and_reproducible(tmp_path):
    spec = SimulationSpec(n_particles=50, seed=5, pixel_size_A=4.0)
    a = simulate_phantom(tmp_path / "a", "continuous", BOX, spec)
    b = simulate_phantom(tmp_path / "b", "continuous", BOX, spec)
    ia = read_particles(a / "particles.star").images.read(np.arange(50))
    ib = read_particles(b / "particles.star").images.read(np.arange(50))
    np.testing.assert_array_equal(ia, ib)
    truth = np.load(a / "truth.npz")
    assert np.all(truth["state"] == -1)
    assert 0 <= truth["coordinate"].min() and truth["coordinate"].max() <= 1


def test_path_interpolates_between_maps(tmp_path):
    spec = SimulationSpec(n_particles=30, seed=1, pixel_size_A=4.0)
    out = simulate_path(tmp_path / "p", [_blob(-4), _blob(4)], spec)
    meta = json.loads((out / "truth.json").read_text())
    middle, _ = read_map(out / meta["truth_maps"][2])  # coordinate 0.5
    np.testing.assert_allclose(middle, 0.5 * (_blob(-4) + _blob(4)), atol=1e-6)


@pytest.mark.parametrize(
    "maps, spec_kw, match",
    [
        ([_blob(0), np.zeros((BOX + 2,) * 3, np.float32)], {}, "differs"),
        ([_blob(0)], {"snr": 0.0}, "snr"),
        ([_blob(0)], {"snr": -1.0}, "snr"),
        ([np.full((BOX,) * 3, np.nan, np.float32)], {}, "NaN"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, maps, spec_kw, match):
    spec = SimulationSpec(n_particles=10, pixel_size_A=4.0, **spec_kw)
    with pytest.raises(UserInputError, match=match):
        simulate_discrete(tmp_path / "out", maps, spec)
    assert list(tmp_path.iterdir()) == []


def test_pdb_without_atoms_is_an_error(tmp_path):
    pytest.importorskip("gemmi")
    empty = tmp_path / "empty.pdb"
    empty.write_text("HEADER    EMPTY\nEND\n")
    with pytest.raises(UserInputError, match="no atoms"):
        maps_from_atomic_models([empty], BOX, 4.0, 8.0)


def test_pdb_models_become_centred_density(tmp_path):
    pytest.importorskip("gemmi")
    lines = []
    for model, dx in ((1, 0.0), (2, 6.0)):
        lines.append(f"MODEL     {model:4d}")
        for i, (x, y, z) in enumerate([(0, 0, 0), (4, 0, 0), (8, 0, 0)]):
            lines.append(f"ATOM  {i + 1:5d}  CA  ALA A{i + 1:4d}    {x + 10 + dx * (i == 2):8.3f}"
                         f"{y + 20:8.3f}{z + 30:8.3f}  1.00  0.00           C")
        lines.append("ENDMDL")
    (tmp_path / "traj.pdb").write_text("\n".join(lines) + "\nEND\n")
    maps, names = maps_from_atomic_models([tmp_path / "traj.pdb"], BOX, 2.0, 4.0)
    assert len(maps) == 2 and names[1].endswith("#2")
    weights = maps[0].sum()
    ax = np.arange(BOX) - BOX // 2
    com_x = (maps[0].sum((0, 1)) * ax).sum() / weights
    assert abs(com_x) < 0.5  # centred on the first model's centre of mass
    assert not np.allclose(maps[0], maps[1])  # the third atom moved


def test_poses_drawn_from_a_real_cryosparc_file(tmp_path, formats_dir):
    source = formats_dir / "cryosparc_P12_J24_001_particles.cs"
    pool = read_particles(source).rotations  # 2019 poses from cryoSPARC's alignments3D/pose
    spec = SimulationSpec(n_particles=300, seed=4, pixel_size_A=4.0, poses_from=str(source))
    out = simulate_discrete(tmp_path / "d", [_blob(0)], spec)
    truth = np.load(out / "truth.npz")
    # Every simulated pose is one of the file's (distance to the nearest matrix ~0) ...
    dist = np.linalg.norm(truth["rotations"][:, None] - pool[None], axis=(-1, -2)).min(1)
    assert dist.max() < 1e-6
    # ... drawn without replacement while the file has enough, and written as simulated.
    assert len(np.unique(truth["rotations"].round(6), axis=0)) == 300
    np.testing.assert_allclose(read_particles(out / "particles.star").rotations,
                               truth["rotations"], atol=1e-6)
    assert json.loads((out / "truth.json").read_text())["spec"]["poses_from"] == str(source)


@pytest.mark.parametrize("name", ["relion31.mrcs", "missing.star"])
def test_poses_from_a_file_without_poses_writes_nothing(tmp_path, formats_dir, name):
    spec = SimulationSpec(n_particles=10, pixel_size_A=4.0, poses_from=str(formats_dir / name))
    with pytest.raises(UserInputError, match=name):
        simulate_discrete(tmp_path / "out", [_blob(0)], spec)
    assert list(tmp_path.iterdir()) == []
