"""Helpers for the analysis tests: synthetic latents and hand-made run directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from hetsiren.rundir import LATENT, run_record, write_json, write_npy

ZDIM = 4
K = 3
# Blob centres 8 apart with unit-free sd 0.5: KMeans separates them exactly.
_BLOB_SEPARATION = 8.0
_BLOB_SD = 0.5


def blobs(states: np.ndarray, zdim: int = ZDIM, seed: int = 0) -> np.ndarray:
    """``(N, zdim)`` float32 latent with particle i in a Gaussian blob around centre state[i]."""
    rng = np.random.default_rng(seed)
    centres = _BLOB_SEPARATION * np.eye(max(int(states.max()) + 1, zdim))[:, :zdim]
    z = centres[states] + _BLOB_SD * rng.standard_normal((len(states), zdim))
    return z.astype(np.float32)


def balanced_states(n: int, k: int = K, seed: int = 0) -> np.ndarray:
    """``(n,)`` states 0..k-1, each about n/k times, shuffled."""
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def make_run(run_dir: Path, particles: Path | str, z: np.ndarray,
             epochs_logged: int = 3) -> Path:
    """A run directory with config.json, latent.npy and log.jsonl but no model."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"particles": str(particles), "datadir": None, "pixel_size_A": None,
              "zdim": int(z.shape[1]), "epochs": epochs_logged}
    prep = {"box_in": 32, "box": 32, "pixel_size_in_A": 5.0, "noise_std": 1.0}
    write_json(run_dir / "config.json", run_record(config, prep))
    write_npy(run_dir / LATENT, z.astype(np.float32))
    lines = [json.dumps({"epoch": e + 1, "total": 1.0 / (e + 1), "data": 0.8 / (e + 1),
                         "l1": 0.1, "time_s": 1.0}) for e in range(epochs_logged)]
    (run_dir / "log.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a run without its analysis folder."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst
