"""``analyze_run`` and ``hetsiren analyze`` on a tiny trained run (maps decode) and on
hand-made runs (latent analysis only)."""

from __future__ import annotations

import glob
import json
import re

import mrcfile
import numpy as np
import pytest
from analysis_helpers import ZDIM, K, balanced_states, blobs, copy_run, make_run
from PIL import Image

from hetsiren.analysis.analyze import analyze_run
from hetsiren.cli import main as cli
from hetsiren.errors import UserInputError
from hetsiren.rundir import load_latent

# Files the module docstring of analyze.py promises for a decoded run without UMAP
# (with pcs=2): relative to RUN/analysis.
DOCUMENTED = ["pca.npz", "pca_coords.npy", "labels.npy", "clusters.json", "clusters.csv",
              "pc_samples.json", "chimerax.cxc", "report.html", "summary.json",
              "landscape_pca.png", "density_pca.png", "explained_variance.png",
              "training_curves.png"]


def _assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 50 and im.size[1] > 50


def test_writes_the_documented_files(analyzed_run):
    run, result = analyzed_run
    out = run / "analysis"
    assert result.out_dir == out
    for name in DOCUMENTED:
        assert (out / name).is_file(), name
    for i in range(K):
        assert (out / "clusters" / f"cluster_{i:02d}.mrc").is_file()
    for pc in (1, 2):
        assert sorted(p.name for p in (out / f"pc{pc}").iterdir()) == [
            f"pc{pc}_{i:02d}.mrc" for i in range(4)]
    for png in out.glob("*.png"):
        _assert_png(png)


def test_arrays_have_the_documented_shapes(analyzed_run):
    run, _ = analyzed_run
    out = run / "analysis"
    z = load_latent(run)
    coords = np.load(out / "pca_coords.npy")
    assert coords.shape == (len(z), ZDIM) and coords.dtype == np.float32
    labels = np.load(out / "labels.npy")
    assert labels.shape == (len(z),) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(K))
    with np.load(out / "pca.npz") as f:
        assert f["mean"].shape == (ZDIM,)
        assert f["components"].shape == (ZDIM, ZDIM)
        assert f["explained_variance_ratio"].sum() == pytest.approx(1.0)


def test_clusters_json_is_consistent(analyzed_run):
    run, _ = analyzed_run
    out = run / "analysis"
    z = load_latent(run).astype(np.float64)
    info = json.loads((out / "clusters.json").read_text())
    labels = np.load(out / "labels.npy")
    assert info["k"] == K and info["n_particles"] == len(z)
    assert sum(info["populations"]) == len(z)
    assert info["populations"] == np.bincount(labels, minlength=K).tolist()
    assert sum(info["fractions"]) == pytest.approx(1.0)
    reps = np.array(info["representatives"])
    centres = np.array(info["centres"])
    # representatives are real particle indices, each the particle nearest its centre
    assert reps.dtype.kind == "i" and np.all((reps >= 0) & (reps < len(z)))
    d2 = ((z[:, None] - centres[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(reps, d2.argmin(0))
    np.testing.assert_allclose(info["representative_z"], z[reps], rtol=1e-6)
    assert info["maps"] == [f"clusters/cluster_{i:02d}.mrc" for i in range(K)]
    rows = (out / "clusters.csv").read_text().splitlines()
    assert rows[0] == "cluster,population,fraction,representative_particle,map"
    assert [int(r.split(",")[3]) for r in rows[1:]] == reps.tolist()


def test_representatives_land_in_the_simulated_states(analyzed_run, truth_states):
    """The latent separates the simulated states: each cluster is one state, and its
    representative particle is of that state."""
    run, result = analyzed_run
    labels = result.clustering.labels
    cluster_state = []
    for c in range(K):
        states = np.unique(truth_states[labels == c])
        assert len(states) == 1, f"cluster {c} mixes states {states}"
        cluster_state.append(int(states[0]))
        assert truth_states[result.clustering.representatives[c]] == states[0]
    assert sorted(cluster_state) == list(range(K))


def test_maps_are_decoded_at_the_representatives(analyzed_run):
    run, result = analyzed_run
    z = load_latent(run)
    box = json.loads((run / "config.json").read_text())["preprocessing"]["box"]
    for c, m in enumerate(result.cluster_maps):
        np.testing.assert_array_equal(m.z, z[result.clustering.representatives[c]])
        with mrcfile.open(m.path, permissive=True) as f:
            assert f.data.shape == (box, box, box)
            assert np.isfinite(f.data).all()
            assert float(f.voxel_size.x) == pytest.approx(5.0)
        assert m.thumbnail_png[:8] == b"\x89PNG\r\n\x1a\n"
    samples = json.loads((run / "analysis" / "pc_samples.json").read_text())
    assert set(samples["pcs"]) == {"pc1", "pc2"}
    t = samples["pcs"]["pc1"]["pc_coordinate"]
    assert len(t) == 4 and np.all(np.diff(t) > 0)


def test_chimerax_script_opens_existing_maps(analyzed_run):
    run, _ = analyzed_run
    script = run / "analysis" / "chimerax.cxc"
    opened = []
    for line in script.read_text().splitlines():
        if line.startswith("open "):
            words = [w for w in line.split()[1:] if w not in ("vseries", "true")]
            opened.extend(words)
    assert opened
    n_maps = 0
    for spec in opened:
        matches = sorted(glob.glob(str(script.parent / spec)))  # paths relative to the script
        assert matches, f"{spec} matches no file"
        assert all(m.endswith(".mrc") for m in matches)
        n_maps += len(matches)
    assert n_maps == K + 2 * 4
    text = script.read_text()
    assert "vseries play" in text
    # every cluster map gets the landscape colour of its cluster
    assert len(re.findall(r"^volume #\d+ color #[0-9a-f]{6}$", text, re.M)) == K


def test_summary_lists_files_that_exist(analyzed_run):
    run, _ = analyzed_run
    out = run / "analysis"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["k"] == K
    assert summary["n_particles"] == 200 and summary["zdim"] == ZDIM
    assert "report" in summary["files"] and "chimerax" in summary["files"]
    for rel in summary["files"].values():
        assert (out / rel).is_file(), rel


def test_cli_analyze(trained_run, tmp_path, capsys):
    run = copy_run(trained_run, tmp_path / "run")
    assert cli(["analyze", str(run), "--k", "3", "--pcs", "1", "--n-samples", "3",
                "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out
    assert (run / "analysis" / "report.html").is_file()
    assert len(list((run / "analysis" / "clusters").glob("*.mrc"))) == 3
    assert not (run / "analysis" / "pc2").exists()


def test_reanalysis_with_fewer_clusters_removes_stale_maps(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    analyze_run(run, k=4, pcs=0, device="cpu", report=False)
    assert len(list((run / "analysis" / "clusters").glob("*.mrc"))) == 4
    analyze_run(run, k=2, pcs=0, device="cpu", report=False)
    assert sorted(p.name for p in (run / "analysis" / "clusters").glob("*.mrc")) == [
        "cluster_00.mrc", "cluster_01.mrc"]
    assert json.loads((run / "analysis" / "clusters.json").read_text())["k"] == 2
    # a latent-only re-analysis leaves no map, script or report of the earlier clustering
    analyze_run(run, k=3, pcs=1, device="cpu", n_samples=3)
    assert (run / "analysis" / "pc1").is_dir() and (run / "analysis" / "chimerax.cxc").is_file()
    analyze_run(run, k=3, decode=False, report=False)
    out = run / "analysis"
    for gone in ("clusters", "pc1", "chimerax.cxc", "pc_samples.json", "report.html"):
        assert not (out / gone).exists(), gone
    summary = json.loads((out / "summary.json").read_text())
    assert all((out / rel).is_file() for rel in summary["files"].values())


def test_a_failed_reanalysis_keeps_the_previous_one(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    analyze_run(run, k=3, pcs=0, device="cpu")
    for bad in ({"umap": True, "umap_dims": 5}, {"pcs": 1, "percentiles": (90.0, 10.0)},
                {"pcs": 1, "n_samples": 1}, {"k": 500}):
        with pytest.raises(UserInputError):
            analyze_run(run, **{"k": 3, "pcs": 0, "device": "cpu", **bad})
    assert (run / "analysis" / "report.html").is_file()
    assert len(list((run / "analysis" / "clusters").glob("*.mrc"))) == 3


def test_diverged_model_is_a_user_error(trained_run, tmp_path, monkeypatch):
    import hetsiren.train.inference as inference

    def nan_maps(model, z, device):
        return np.full((len(z), 8, 8, 8), np.nan, dtype=np.float32)

    monkeypatch.setattr(inference, "decode_latent", nan_maps)
    run = copy_run(trained_run, tmp_path / "run")
    with pytest.raises(UserInputError, match="diverged"):
        analyze_run(run, k=3, pcs=0, device="cpu")
    assert not list((run / "analysis").glob("clusters/*.mrc"))


def test_collapsed_latent(tmp_path, formats_dir, capsys):
    z = np.zeros((30, ZDIM), dtype=np.float32)
    z[:10] = 1.0
    run = make_run(tmp_path / "run", formats_dir / "relion5.star", z)
    assert cli(["analyze", str(run), "--k", "3", "--no-decode"]) == 2
    assert "use --k 2 or less" in capsys.readouterr().err
    result = analyze_run(run, k=2, decode=False)
    assert sorted(result.clustering.populations.tolist()) == [10, 20]


def test_latent_only_analysis_needs_no_model(blob_run):
    run, states = blob_run
    result = analyze_run(run, k=3, decode=False, report=False)
    out = run / "analysis"
    assert not (out / "clusters").exists() and "chimerax" not in result.files
    info = json.loads((out / "clusters.json").read_text())
    assert info["maps"] == [None] * 3
    assert sum(info["populations"]) == len(states)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(states, np.load(out / "labels.npy")) == pytest.approx(1.0)


def test_one_dimensional_latent(tmp_path, formats_dir):
    states = balanced_states(60, 2)
    run = make_run(tmp_path / "run", formats_dir / "relion5.star", blobs(states, zdim=1))
    result = analyze_run(run, k=2, pcs=1, decode=False)
    assert result.pca.components.shape == (1, 1)
    assert (run / "analysis" / "landscape_pca.png").is_file()
    assert (run / "analysis" / "report.html").is_file()


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "--k must be >= 1"),
    ({"k": 1000}, "larger than the number of particles"),
    ({"pcs": 9}, "only 4 dimensions"),
    ({"pcs": -1}, ">= 0"),
])
def test_bad_arguments_are_user_errors(blob_run, kwargs, match):
    run, _ = blob_run
    with pytest.raises(UserInputError, match=match):
        analyze_run(run, decode=False, report=False, **{"k": 3, **kwargs})


def test_missing_or_broken_latent(tmp_path, formats_dir, capsys):
    run = make_run(tmp_path / "run", formats_dir / "relion5.star", np.zeros((5, 2)))
    np.save(run / "latent.npy", np.full((5, 2), np.nan, dtype=np.float32))
    with pytest.raises(UserInputError, match="NaN"):
        analyze_run(run, k=2, decode=False)
    (run / "latent.npy").unlink()
    assert cli(["analyze", str(run), "--k", "2"]) == 2
    assert "latent.npy" in capsys.readouterr().err
    assert cli(["analyze", str(tmp_path / "nowhere"), "--k", "2"]) == 2
