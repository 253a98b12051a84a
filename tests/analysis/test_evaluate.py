"""``hetsiren evaluate``: the ground-truth metrics behind every benchmark table.

The metrics must be right before any comparison built on them means anything, so each is
checked on latents whose answer is known by construction: a latent that *is* the truth scores
~1, a random one ~0, a latent that carries defocus shows leakage. The map metric is checked by
decoding the true maps themselves (FSC 1 to Nyquist) and the wrong state's map (lower).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hetsiren.analysis.evaluate import evaluate_latent, evaluate_maps, load_truth
from hetsiren.cli import main as cli
from hetsiren.errors import UserInputError
from hetsiren.geometry import sphere_mask
from hetsiren.io import read_map
from hetsiren.physics import resample_map

N = 600


def _truth(discrete: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rot = np.linalg.qr(rng.standard_normal((N, 3, 3)))[0]
    defocus = rng.uniform(10_000, 25_000, N)
    return {"state": rng.integers(0, 3, N) if discrete else np.full(N, -1),
            "coordinate": np.full(N, np.nan) if discrete else rng.uniform(0, 1, N),
            "rotations": rot, "defocus_u_A": defocus + 100, "defocus_v_A": defocus - 100}


def test_discrete_metrics_are_one_for_the_truth_and_zero_for_noise():
    truth = _truth(discrete=True)
    rng = np.random.default_rng(1)
    perfect = np.eye(3)[truth["state"]] * 5 + 0.1 * rng.standard_normal((N, 3))
    good = evaluate_latent(perfect, truth)
    assert good["ari_kmeans"] == pytest.approx(1.0)
    assert good["knn_accuracy"] == pytest.approx(1.0)
    random = evaluate_latent(rng.standard_normal((N, 3)), truth)
    assert abs(random["ari_kmeans"]) < 0.05
    assert random["knn_accuracy"] < 0.45  # chance is 1/3
    assert "spearman_pc1" not in good


def test_continuous_metrics_follow_the_coordinate():
    truth = _truth(discrete=False)
    rng = np.random.default_rng(2)
    # The coordinate along a diagonal of a 4-D latent, under small noise.
    z = np.outer(truth["coordinate"], [1, 2, -1, 0.5]) + 0.01 * rng.standard_normal((N, 4))
    good = evaluate_latent(z, truth)
    assert good["spearman_pc1"] > 0.99
    assert good["knn_r2_coordinate"] > 0.95
    random = evaluate_latent(rng.standard_normal((N, 4)), truth)
    assert random["spearman_pc1"] < 0.15
    assert random["knn_r2_coordinate"] < 0.1
    assert "ari_kmeans" not in good


def test_leakage_sees_defocus_and_viewing_direction_in_the_latent():
    truth = _truth(discrete=False)
    defocus = 0.5 * (truth["defocus_u_A"] + truth["defocus_v_A"])
    clean = np.outer(truth["coordinate"], [1.0, 1.0])
    leaky = np.column_stack([clean, (defocus - defocus.mean()) / defocus.std(),
                             truth["rotations"][:, 2, :]])
    m_leaky, m_clean = evaluate_latent(leaky, truth), evaluate_latent(clean, truth)
    assert m_leaky["leakage_knn_r2_defocus"] > 0.8
    assert m_leaky["leakage_knn_r2_viewing"] > 0.5
    assert m_clean["leakage_knn_r2_defocus"] < 0.1
    assert m_clean["leakage_knn_r2_viewing"] < 0.1


def test_latent_and_truth_of_different_lengths_is_an_error():
    with pytest.raises(UserInputError, match="was the run trained on this simulated dataset"):
        evaluate_latent(np.zeros((N - 1, 2)), _truth(discrete=True))


def test_map_fsc_is_perfect_for_the_true_maps_and_worse_for_the_wrong_state(sim_dataset):
    truth, meta = load_truth(sim_dataset)
    maps = []
    for rel in meta["truth_maps"]:
        m, voxel_A = read_map(sim_dataset / rel)
        maps.append(resample_map(torch.from_numpy(m), voxel_A, 5.0, 32).numpy())
    z = np.eye(3)[truth["state"]]  # state k's mean latent is e_k
    right = evaluate_maps(lambda p: maps[int(p.argmax())], z, truth, meta, sim_dataset, 5.0, 32)
    wrong = evaluate_maps(lambda p: maps[(int(p.argmax()) + 1) % 3], z, truth, meta,
                          sim_dataset, 5.0, 32)
    assert [m["index"] for m in right] == [0, 1, 2]
    for r, w in zip(right, wrong, strict=True):
        assert r["auc"] == pytest.approx(1.0, abs=1e-4)
        assert r["resolution_0.5_A"] == pytest.approx(10.0)  # Nyquist at 5 Å/px
        assert w["auc"] < r["auc"] - 0.02
        assert r["n_particles"] == int((truth["state"] == r["index"]).sum())


def test_cli_prints_the_metrics_as_json(trained_run, sim_dataset, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert cli(["evaluate", str(trained_run), "--truth", str(sim_dataset), "--device", "cpu",
                "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    # trained_run's latent is blobs placed by the true states (see conftest).
    assert printed["ari_kmeans"] == pytest.approx(1.0)
    assert len(printed["maps"]) == 3
    assert all(np.isfinite(m["auc"]) for m in printed["maps"])


def test_cli_on_a_folder_without_truth_fails_cleanly(trained_run, tmp_path, capsys):
    assert cli(["evaluate", str(trained_run), "--truth", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "truth.npz" in err


def test_path_maps_are_decoded_from_the_particles_near_each_truth_point(tmp_path):
    from hetsiren.simulate import SimulationSpec, simulate_phantom

    data = simulate_phantom(tmp_path / "path", "continuous", 24, SimulationSpec(
        n_particles=300, snr=1.0, seed=1, pixel_size_A=5.0), progress=False)
    truth, meta = load_truth(data)
    points = np.asarray(meta["truth_map_coordinates"])
    maps = [read_map(data / rel)[0] for rel in meta["truth_maps"]]
    z = truth["coordinate"][:, None]
    rng = np.random.default_rng(0)
    outside = ~sphere_mask(24).numpy()

    def nearest_map_with_background(p: np.ndarray) -> np.ndarray:
        # The right map, plus noise outside the inscribed sphere (where the score must not look).
        m = maps[int(np.abs(points - p[0]).argmin())].copy()
        m[outside] += rng.standard_normal(int(outside.sum())).astype(np.float32)
        return m

    results = evaluate_maps(nearest_map_with_background, z, truth, meta, data, 5.0, 24)
    assert [r["index"] for r in results] == list(range(len(points)))
    for r in results:
        assert r["auc"] == pytest.approx(1.0, abs=1e-4)
        near = np.abs(truth["coordinate"] - points[r["index"]]) <= 0.05
        assert r["n_particles"] == int(near.sum()) > 0
