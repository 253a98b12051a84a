"""--refine-pose recovers deliberately perturbed angles (issue 4).

A homogeneous dataset is simulated, every particle's rotation is turned by 5° about a random
axis in the STAR given to training, and the refined poses written to poses_refined.star are
compared with the true ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hetsiren.io import read_particles, write_star
from hetsiren.rundir import POSES
from hetsiren.simulate import SimulationSpec, discrete_phantom_maps, simulate_discrete
from hetsiren.train.config import TrainConfig
from hetsiren.train.trainer import train

PERTURBATION_DEG = 5.0


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    relative = np.einsum("nij,nkj->nik", a, b)
    cos = (np.trace(relative, axis1=1, axis2=2) - 1) / 2
    return np.rad2deg(np.arccos(np.clip(cos, -1, 1)))


def _refinement_errors(tmp_path, n: int, epochs: int) -> tuple[float, float]:
    truth_map = discrete_phantom_maps(32, 5.0)[0]
    data = tmp_path / "data"
    simulate_discrete(data, [truth_map], SimulationSpec(n_particles=n, snr=2.0, seed=5,
                                                        pixel_size_A=5.0, max_shift_px=1.0),
                      progress=False)
    particles = read_particles(data / "particles.star")
    rng = np.random.default_rng(0)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    turn = Rotation.from_rotvec(axis * np.deg2rad(PERTURBATION_DEG)).as_matrix()
    write_star(data / "perturbed.star", particles, rotations=turn @ particles.rotations,
               shifts_A=particles.shifts_A)
    cfg = TrainConfig(particles=str(data / "perturbed.star"), ref=str(data / "truth_maps" /
                      "state_00.mrc"), refine_pose=True, zdim=2, epochs=epochs,
                      pose_decoupling=0.0, ctf_decoupling=0.0, device="cpu", seed=0)
    train(cfg, tmp_path / "run", progress=False)
    refined = read_particles(tmp_path / "run" / POSES)
    before = _angle_deg(turn @ particles.rotations, particles.rotations).mean()
    after = _angle_deg(refined.rotations, particles.rotations).mean()
    return float(before), float(after)


def test_refined_poses_are_closer_to_the_truth(tmp_path):
    before, after = _refinement_errors(tmp_path, n=500, epochs=10)
    assert before == pytest.approx(PERTURBATION_DEG)
    assert after < 0.9 * before, f"mean angular error {before:.2f}° -> {after:.2f}°"


@pytest.mark.slow
def test_refined_poses_recover_most_of_the_perturbation(tmp_path):
    # Measured: 5.0° -> 3.1° mean (3.0° median) with 1,000 particles and 15 epochs.
    before, after = _refinement_errors(tmp_path, n=1000, epochs=15)
    assert after < 0.75 * before, f"mean angular error {before:.2f}° -> {after:.2f}°"
