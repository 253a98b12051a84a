"""Run-directory files, written atomically (temp file in the same folder, then rename).

Layout (DESIGN.md contract)::

    RUN/config.json        resolved config, preprocessing, version, command line, inputs
    RUN/model.pt           {"model": state dict, "optimizer": state, "epoch": int}
    RUN/latent.npy         float32 [N, zdim], row i = particle i of the input file
    RUN/poses_refined.star input STAR with refined angles/shifts (pose refinement only)
    RUN/log.jsonl          one line per epoch
    RUN/snapshots/latent.EEE.npy   float16 [N, zdim] latent after epoch EEE (every few epochs)
    RUN/snapshots/decoder.EEE.pt   the decoder's weights after epoch EEE (float32 state dict)
    RUN/particles_subset.star|.cs  the particles trained on, with ``train --indices``
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
    "CONFIG", "LATENT", "LOG", "MODEL", "POSES", "SNAPSHOTS", "SUBSET",
    "atomic_write", "load_checkpoint", "load_snapshot_decoder", "load_snapshot_latent",
    "read_run_config", "save_checkpoint", "save_snapshot", "snapshot_epochs", "write_json",
    "write_npy",
]

CONFIG, MODEL, LATENT, LOG, POSES = (
    "config.json", "model.pt", "latent.npy", "log.jsonl", "poses_refined.star")
SNAPSHOTS = "snapshots"
SUBSET = "particles_subset"
"""Stem of the particle file written by ``train --indices`` (suffix of the input's format)."""
# Prefix of the decoder's parameters in the model's state dict (all a snapshot keeps).
_DECODER_KEYS = "net.decoder."


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


def _snapshot_paths(run_dir: str | Path, epoch: int) -> tuple[Path, Path]:
    folder = Path(run_dir) / SNAPSHOTS
    return folder / f"latent.{epoch:03d}.npy", folder / f"decoder.{epoch:03d}.pt"


def save_snapshot(run_dir: str | Path, epoch: int, z: np.ndarray, model: torch.nn.Module
                  ) -> Path:
    """Keep the latent (float16: ~2 MB for 1e5 particles x 10 dims) and the decoder's weights
    after ``epoch``, for ``analyze --epoch`` and the convergence report."""
    latent_path, decoder_path = _snapshot_paths(run_dir, epoch)
    latent_path.parent.mkdir(exist_ok=True)
    decoder = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
               if k.startswith(_DECODER_KEYS)}
    atomic_write(decoder_path, lambda p: torch.save(decoder, p))
    return write_npy(latent_path, np.asarray(z, dtype=np.float16))


def snapshot_epochs(run_dir: str | Path) -> list[int]:
    """Epochs with a complete snapshot (latent and decoder), ascending."""
    folder = Path(run_dir) / SNAPSHOTS
    epochs = []
    for path in folder.glob("latent.*.npy"):
        stem = path.name.split(".")[1]
        if stem.isdigit() and _snapshot_paths(run_dir, int(stem))[1].is_file():
            epochs.append(int(stem))
    return sorted(epochs)


def _check_snapshot(run_dir: str | Path, epoch: int) -> tuple[Path, Path]:
    paths = _snapshot_paths(run_dir, epoch)
    if not all(p.is_file() for p in paths):
        have = snapshot_epochs(run_dir)
        raise UserInputError(
            f"{paths[0].parent}: no snapshot of epoch {epoch}; "
            + (f"snapshots exist for epochs {', '.join(map(str, have))}" if have else
               "this run kept none (train --snapshot-every N keeps one every N epochs)"))
    return paths


def load_snapshot_latent(run_dir: str | Path, epoch: int) -> np.ndarray:
    """``(N, zdim)`` float32 latent of the snapshot after ``epoch``."""
    path = _check_snapshot(run_dir, epoch)[0]
    try:
        return np.load(path).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read the snapshot ({exc})") from exc


def load_snapshot_decoder(run_dir: str | Path, epoch: int) -> dict[str, torch.Tensor]:
    """The decoder's part of the model's state dict after ``epoch``."""
    path = _check_snapshot(run_dir, epoch)[1]
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError) as exc:
        raise UserInputError(f"{path}: cannot read the snapshot ({exc})") from exc
