"""``validate_run`` / ``hetsiren validate`` on the tiny trained run (paper Fig. 10 check).

One epoch of training decodes noise, so only the mechanics are checked here: which particles
are reconstructed, which files are written, finite FSC numbers. Whether the decoded map agrees
with the reconstruction on a well-trained run belongs to a (slow) end-to-end test.
"""

from __future__ import annotations

import json
import math

import mrcfile
import numpy as np
import pytest
from analysis_helpers import ZDIM, K

from hetsiren.analysis.validate import validate_run
from hetsiren.cli import main as cli
from hetsiren.errors import UserInputError

MAPS = ("decoded", "decoded_sharpened", "reconstruction", "half1", "half2", "mask", "locres",
        "local_agreement")


@pytest.fixture(scope="module")
def validated(analyzed_run):
    run, analysis = analyzed_run
    return run, analysis, validate_run(run, cluster=1, n_particles=40, device="cpu",
                                       progress=False)


def test_validate_cluster_writes_maps_plot_and_json(validated, truth_states):
    run, analysis, result = validated
    out = run / "analysis" / "validate" / "cluster_01"
    assert result.out_dir == out
    for name in MAPS:
        with mrcfile.open(out / f"{name}.mrc", permissive=True) as f:
            assert f.data.shape == (32, 32, 32)
            assert np.isfinite(f.data).all()
            assert float(f.voxel_size.x) == pytest.approx(5.0)
    for png in ("fsc.png", "locres.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((out / "validation.json").read_text())
    assert info["n_particles"] == result.n_particles == 40
    for key, value in result.summary().items():
        assert math.isfinite(value) and info[key] == value
        if key.endswith("_A"):
            assert value >= 2 * 5.0 - 1e-6  # never beyond Nyquist
    assert len(info["point"]) == ZDIM
    assert len(info["curves"]) == 4
    for curve in info["curves"]:
        assert len(curve["fsc"]) == 16 == len(curve["frequency_per_A"])
        assert all(math.isfinite(v) and -1.0001 <= v <= 1.0001 for v in curve["fsc"])


def test_validate_uses_the_cluster_particles_nearest_its_centre(validated):
    run, analysis, result = validated
    z = np.load(run / "latent.npy").astype(np.float64)
    labels = analysis.clustering.labels
    info = json.loads((run / "analysis" / "validate" / "cluster_01" / "validation.json")
                      .read_text())
    members = np.flatnonzero(labels == 1)
    np.testing.assert_allclose(info["point"], z[members].mean(0), rtol=1e-5, atol=1e-6)
    # the validated point is (up to KMeans tolerance) the cluster centre analyze reported
    np.testing.assert_allclose(info["point"], analysis.clustering.centres[1], atol=1e-3)


def test_half_maps_of_real_particles_agree_at_low_resolution(validated):
    """The reconstruction is of real (simulated, SNR 1) particles of one state: its half maps
    must correlate in the lowest shells whatever the decoder learnt."""
    _, _, result = validated
    assert result.half_map_fsc.fsc[:2].min() > 0.5


def test_decoded_map_is_scored_at_05_not_0143(validated):
    """A map against a reference is read at FSC 0.5; 0.143 is for two half maps."""
    from hetsiren.physics import resolution_at

    _, _, result = validated
    summary = result.summary()
    assert not any("decoded" in key and "0.143" in key for key in summary)
    assert summary["decoded_vs_reconstruction_resolution_0.5_A"] == round(
        resolution_at(result.decoded_vs_reconstruction.corrected, 0.5), 2)
    assert summary["half_maps_resolution_0.143_A"] == round(
        resolution_at(result.half_map_masked.corrected, 0.143), 2)


def test_validate_warns_when_the_cluster_is_smaller_than_n(analyzed_run, caplog):
    """--n 2000 on a cluster of a few dozen particles: all of them are used, and two warnings
    say so and that so few cannot judge the decoded map."""
    run, analysis = analyzed_run
    size = int((analysis.clustering.labels == 2).sum())
    with caplog.at_level("WARNING", logger="hetsiren.analysis.validate"):
        result = validate_run(run, cluster=2, device="cpu", progress=False)
    assert result.n_particles == size < 2000
    text = caplog.text
    assert f"cluster 2 has {size} particles, fewer than --n 2000" in text
    assert f"only {size} particles" in text


def test_validate_help_states_the_cluster_cap(capsys):
    with pytest.raises(SystemExit):
        cli(["validate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "at most the cluster's size" in help_text
    assert "default: 2000" in help_text


def test_validate_at_a_latent_point_file(analyzed_run, tmp_path):
    run, _ = analyzed_run
    point = tmp_path / "point.txt"
    np.savetxt(point, np.load(run / "latent.npy")[:1])
    result = validate_run(run, z_file=point, n_particles=20, device="cpu", progress=False)
    assert result.out_dir == run / "analysis" / "validate" / "point"
    assert result.n_particles == 20
    assert (result.out_dir / "validation.json").is_file()


def test_cli_validate(analyzed_run, capsys):
    run, _ = analyzed_run
    assert cli(["validate", str(run), "--cluster", "0", "--n", "30", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "half_maps_resolution_0.143_A" in out
    assert (run / "analysis" / "validate" / "cluster_00" / "fsc.png").is_file()


@pytest.mark.parametrize("args, match", [
    (["--cluster", str(K)], "clusters 0..2"),
    (["--cluster", "-1"], "clusters 0..2"),
    (["--cluster", "0", "--n", "1"], "--n must be >= 2"),
    (["--z", "{tmp}/bad.txt"], "expected rows of 4 values"),
])
def test_cli_validate_bad_input_exit_code_2(analyzed_run, tmp_path, capsys, args, match):
    run, _ = analyzed_run
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli(["validate", str(run), *args, "--device", "cpu"]) == 2
    assert match in capsys.readouterr().err


def test_validate_needs_one_point(analyzed_run):
    run, _ = analyzed_run
    with pytest.raises(UserInputError, match="exactly one"):
        validate_run(run)


def test_validate_an_unanalysed_run_needs_k(trained_run, tmp_path, capsys):
    from analysis_helpers import copy_run

    run = copy_run(trained_run, tmp_path / "run")
    assert cli(["validate", str(run), "--cluster", "0", "--device", "cpu"]) == 2
    assert "--k" in capsys.readouterr().err
    assert cli(["validate", str(run), "--cluster", "2", "--k", "3", "--n", "10",
                "--device", "cpu"]) == 0
    assert (run / "analysis" / "validate" / "cluster_02" / "validation.json").is_file()


def test_reconstruction_is_of_the_clusters_state(validated, sim_dataset, truth_states):
    """The cluster's particles are of one simulated state: their reconstruction must match
    that state's true map better than the other states' maps (shells 4-8, where the states
    differ)."""
    import torch

    from hetsiren.physics import fsc

    run, analysis, result = validated
    state = int(np.unique(truth_states[analysis.clustering.labels == 1])[0])
    with mrcfile.open(result.out_dir / "reconstruction.mrc") as f:
        recon = torch.from_numpy(f.data.copy())
    scores = []
    for s in range(K):
        with mrcfile.open(sim_dataset / "truth_maps" / f"state_{s:02d}.mrc") as f:
            truth = torch.from_numpy(f.data.copy())
        curve = fsc(recon, truth, 5.0)
        assert curve.fsc[0] > 0.9  # the states share their low-resolution shape
        scores.append(float(curve.fsc[3:8].mean()))
    assert int(np.argmax(scores)) == state, scores
    assert scores[state] > max(np.delete(scores, state)) + 0.1, scores
