"""A cryoDRGN user's session end to end through the CLI, from a relative run folder:
simulate → train with snapshots → analyze (surfaces, notebook) → convergence → trajectories
(line and graph) → map-space landscape → analyze --epoch; the notebook is executed headless."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import hetsiren
from hetsiren.cli import main
from hetsiren.io import read_map

EPOCHS = 3


def _opened_files(script):
    """Files named by a ChimeraX script's ``open`` lines, resolved from the script's folder."""
    files = []
    for line in script.read_text().splitlines():
        if line.startswith("open "):
            for word in line.split()[1:]:
                if word not in ("vseries", "true"):
                    matches = sorted(script.parent.glob(word))
                    assert matches, f"{script}: {word!r} opens nothing"
                    files += matches
    return files


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The folder of the session and its run (relative path ``demo/run``)."""
    home = tmp_path_factory.mktemp("home")
    cwd = os.getcwd()
    os.chdir(home)
    try:
        assert main(["simulate", "-o", "demo/sim", "--phantom", "discrete", "--box", "16",
                     "--n", "96", "--snr", "1", "--pixel-size", "8", "--seed", "5"]) == 0
        assert main(["train", "demo/sim/particles.star", "-o", "demo/run", "--zdim", "2",
                     "--epochs", str(EPOCHS), "--snapshot-every", "1", "--batch-size", "16",
                     "--device", "cpu"]) == 0
        assert main(["analyze", "demo/run", "--k", "3", "--pcs", "1", "--n-samples", "3",
                     "--device", "cpu"]) == 0
    finally:
        os.chdir(cwd)
    return home


def test_analysis_folder_has_surfaces_notebook_and_a_working_chimerax_script(session):
    analysis = session / "demo" / "run" / "analysis"
    assert sorted(p.name for p in (analysis / "surfaces").iterdir()) == [
        f"cluster_{i:02d}.png" for i in range(3)]
    opened = _opened_files(analysis / "chimerax.cxc")
    assert len(opened) == 3 + 3 and all(p.suffix == ".mrc" for p in opened)


def test_convergence_report_over_the_snapshots(session, capsys):
    run = session / "demo" / "run"
    assert main(["convergence", str(run), "--n-maps", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "snapshots of epochs 1, 2, 3" in out
    report = json.loads((run / "analysis" / "convergence" / "convergence.json").read_text())
    assert report["epochs"] == [1, 2, 3] and report["intervals"] == [[1, 2], [2, 3]]
    for key in ("latent_unexplained", "neighbours_kept", "map_relative_change"):
        values = np.asarray(report[key])
        assert values.shape == (2,) and np.all((values >= 0) & (values <= 1.5)), key
    # training changes the maps between epochs: the measure is not stuck at zero
    assert max(report["map_relative_change"]) > 0
    assert (run / "analysis" / "convergence" / "convergence.png").stat().st_size > 1000


def test_interpolated_and_graph_trajectories(session, capsys):
    run = session / "demo" / "run"
    z = np.load(run / "latent.npy")
    lo, hi = z.min(0), z.max(0)
    line = session / "traj_line"
    assert main(["trajectory", str(run), "-o", str(line), "--z-start", *map(str, lo),
                 "--z-end", *map(str, hi), "-n", "4", "--device", "cpu"]) == 0
    record = json.loads((line / "trajectory.json").read_text())
    np.testing.assert_allclose(record["z"][0], lo, rtol=1e-5)
    np.testing.assert_allclose(record["z"][-1], hi, rtol=1e-5)
    assert len(_opened_files(line / "movie.cxc")) == 4
    assert "movie encode traj.mp4" in (line / "movie.cxc").read_text()

    start, end = int(np.argmin(z[:, 0])), int(np.argmax(z[:, 0]))
    graph = session / "traj_graph"
    assert main(["trajectory", str(run), "-o", str(graph), "--graph", str(start), str(end),
                 "--knn", "8", "--original-size", "--device", "cpu"]) == 0
    record = json.loads((graph / "trajectory.json").read_text())
    path = record["particles"]
    assert path[0] == start and path[-1] == end and len(path) >= 2
    np.testing.assert_allclose(record["z"], z[path], atol=1e-6)  # maps at real particles
    maps = sorted(graph.glob("traj_*.mrc"))
    assert len(maps) == len(path) and read_map(maps[0])[0].shape == (16,) * 3
    # an existing trajectory is not replaced silently
    capsys.readouterr()
    assert main(["trajectory", str(run), "-o", str(graph), "--graph", str(start), str(end),
                 "--device", "cpu"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_map_space_landscape(session):
    run = session / "demo" / "run"
    assert main(["landscape", str(run), "--points", "24", "--states", "3", "--pcs", "2",
                 "--n-samples", "3", "--device", "cpu"]) == 0
    out = run / "analysis" / "landscape"
    states = np.load(out / "particle_states.npy")
    assert states.shape == (96,) and set(states.tolist()) == {0, 1, 2}
    with np.load(out / "map_pca.npz") as f:
        ratio = f["explained_variance_ratio"]
        assert f["coords"].shape[0] == 24 and np.all(np.diff(ratio) <= 1e-9)
    counts = [len(np.loadtxt(out / f"state_{s:02d}.txt", ndmin=1)) for s in range(3)]
    assert counts == np.bincount(states).tolist() and counts == sorted(counts, reverse=True)
    assert len(_opened_files(out / "chimerax.cxc")) == 3 + 2 * 3


def test_analyze_a_snapshot_epoch(session):
    run = session / "demo" / "run"
    assert main(["analyze", str(run), "--epoch", "2", "--k", "3", "--pcs", "1",
                 "--n-samples", "2", "--device", "cpu", "--no-report"]) == 0
    summary = json.loads((run / "analysis.002" / "summary.json").read_text())
    assert summary["parameters"]["epoch"] == 2
    labels2 = np.load(run / "analysis.002" / "labels.npy")
    assert labels2.shape == (96,)


def test_the_notebook_runs_headless(session, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    analysis = session / "demo" / "run" / "analysis"
    nb = nbformat.read(analysis / "hetsiren_analysis.ipynb", as_version=4)
    nbformat.validate(nb)
    # the kernel imports the hetsiren under test
    source = str(Path(hetsiren.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (source, os.environ.get("PYTHONPATH")) if p))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(analysis)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert "96 particles, 2-D latent, 3 clusters" in text
    assert not any(o.output_type == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    exported = analysis / "notebook_selection.star"
    assert exported.is_file() and "wrote" in text
