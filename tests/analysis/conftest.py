"""Run directories for the analysis tests.

Two kinds, both built once per session:

- hand-made runs (``make_run``): ``config.json`` + a synthetic ``latent.npy`` (well-separated
  Gaussian blobs) pointing at a real particle file; enough for PCA, KMeans, labels, export and
  a report without maps. No training, no model.
- one tiny real training (``trained_run``): a simulated 3-state dataset, one epoch on the CPU,
  so that maps decode. The latent it learns in one epoch is meaningless, so it is overwritten
  with blobs that separate the simulated states: the tests then check the analysis logic
  (representatives, clusters, maps, reports), not the training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from analysis_helpers import ZDIM, K, balanced_states, blobs, copy_run, make_run

from hetsiren.rundir import LATENT, write_npy


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    """A simulated 3-state ('discrete') dataset: particles.star/.mrcs and truth.npz."""
    from hetsiren.simulate import SimulationSpec, simulate_phantom

    out = tmp_path_factory.mktemp("sim")
    simulate_phantom(out, "discrete", 32, SimulationSpec(n_particles=200, snr=1.0, seed=3,
                                                         pixel_size_A=5.0, max_shift_px=1.0))
    return out


@pytest.fixture(scope="session")
def truth_states(sim_dataset) -> np.ndarray:
    with np.load(sim_dataset / "truth.npz") as f:
        return f["state"].astype(np.int64)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, sim_dataset, truth_states) -> Path:
    """One epoch of real training on the simulated set, latent replaced by state blobs.

    Do not write into it: copy it (``copy_run``) or use ``analyzed_run``.
    """
    from hetsiren.train.config import TrainConfig
    from hetsiren.train.trainer import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(particles=str(sim_dataset / "particles.star"), epochs=1, batch_size=16,
                      zdim=ZDIM, device="cpu"), run, progress=False)
    write_npy(run / LATENT, blobs(truth_states, seed=1))
    return run


@pytest.fixture(scope="session")
def analyzed_run(tmp_path_factory, trained_run):
    """``(run_dir, AnalysisResult)`` of ``analyze_run(k=3)`` on a copy of the trained run."""
    from hetsiren.analysis.analyze import analyze_run

    run = copy_run(trained_run, tmp_path_factory.mktemp("analyzed") / "run")
    result = analyze_run(run, k=K, pcs=2, n_samples=4, device="cpu", seed=0)
    return run, result


@pytest.fixture(scope="session")
def blob_run(tmp_path_factory, formats_dir) -> tuple[Path, np.ndarray]:
    """Hand-made run of 300 particles in 3 blobs (particles file: any real STAR)."""
    states = balanced_states(300)
    run = make_run(tmp_path_factory.mktemp("blob") / "run", formats_dir / "relion5.star",
                   blobs(states))
    return run, states
