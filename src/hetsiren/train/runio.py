"""Run-directory files, written atomically (temp file in the same folder, then rename).

Layout (DESIGN.md contract)::

    RUN/config.json        resolved config, preprocessing, version, command line, inputs
    RUN/model.pt           {"model": state dict, "optimizer": state, "epoch": int}
    RUN/latent.npy         float32 [N, zdim], row i = particle i of the input file
    RUN/poses_refined.star input STAR with refined angles/shifts (pose refinement only)
    RUN/log.jsonl          one line per epoch
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hetsiren import __version__
from hetsiren.errors import UserInputError
from hetsiren.io.atomic import atomic_path

__all__ = [
    "CONFIG", "LATENT", "LOG", "MODEL", "POSES",
    "atomic_write", "load_checkpoint", "read_run_config", "save_checkpoint", "write_json",
    "write_npy",
]

CONFIG, MODEL, LATENT, LOG, POSES = (
    "config.json", "model.pt", "latent.npy", "log.jsonl", "poses_refined.star")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path`` in one rename."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    def _save(p: Path) -> None:
        with open(p, "wb") as fh:
            np.save(fh, array)

    return atomic_write(path, _save)


def run_record(config: dict[str, Any], preprocessing: dict[str, Any]) -> dict[str, Any]:
    """What config.json holds: enough to rebuild the model and to reproduce the run."""
    return {
        "hetsiren_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command_line": sys.argv,
        "config": config,
        "preprocessing": preprocessing,
    }


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserInputError(f"{path}: not found; is {run_dir} a hetsiren training run?") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read run configuration ({exc})") from exc


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int) -> Path:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
    return atomic_write(run_dir / MODEL, lambda p: torch.save(state, p))


def load_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    path = Path(run_dir) / MODEL
    if not path.is_file():
        raise UserInputError(f"{path}: no checkpoint; train first (hetsiren train ... -o RUN)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise UserInputError(f"{path}: cannot read checkpoint ({exc})") from exc
