"""The run folder: every file name in it, and reading and writing its files.

Nothing else knows the layout of RUN/: code that needs a file of a run asks this module for
its name or path. Files are written atomically (temp file in the same folder, then rename).

Layout (DESIGN.md contract)::

    RUN/config.json        resolved config, preprocessing, version, command line, inputs
    RUN/model.pt           {"model": state dict, "optimizer": state, "epoch": int}
    RUN/latent.npy         float32 [N, zdim], row i = particle i of the input file
    RUN/latent_prior.npz   the encoder's latent as a Gaussian (mean, covariance) and the
                           last epoch's data term: what the latent refinement weighs by
    RUN/poses_refined.star input STAR with refined angles/shifts (pose refinement only)
    RUN/log.jsonl          one line per epoch
    RUN/snapshots/latent.EEE.npy   float16 [N, zdim] latent after epoch EEE (every few epochs)
    RUN/snapshots/decoder.EEE.pt   the decoder's weights after epoch EEE (float32 state dict)
    RUN/particles_subset.star|.cs  the particles trained on, with ``train --indices``
    RUN/cache/KEY/         preprocessed training images (``hetsiren.data.cache``; unless
                           ``--cache-dir`` puts them elsewhere)
    RUN/.lock              pid, host and command of the process writing the run (while it does)
    RUN/analysis/          ``hetsiren analyze`` (RUN/analysis.EEE: of the snapshot after EEE)
        pca.npz, pca_coords.npy, umap.npy, labels.npy, clusters.json, clusters.csv,
        clusters/cluster_NN.mrc, surfaces/cluster_NN.png, pcN/pcN_NN.mrc, pc_samples.json,
        chimerax.cxc, report.html, hetsiren_analysis.ipynb, summary.json, *.png
        landscape/         ``hetsiren landscape`` (map-space landscape)
        convergence/       ``hetsiren convergence`` (snapshots compared)
        validate/NAME/     ``hetsiren validate`` (decoded map vs nearby particles)

Only one process writes a run folder at a time: :class:`RunLock` (held by ``train``,
``analyze`` and ``validate``) gives a second writer a clear error naming the holder, and
takes over a lock left by a process that died (kill -9, power cut).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from hetsiren import __version__
from hetsiren.data import Preprocessing
from hetsiren.devices import resolve_device
from hetsiren.errors import UserInputError
from hetsiren.io import read_particles
from hetsiren.io.particles import ParticleSet
from hetsiren.model.forward import HetSIREN, model_from_state
from hetsiren.model.network import NetworkConfig
from hetsiren.outputs import TMP_MARK, atomic_path, describe_os_error, honour_umask
from hetsiren.train.config import TrainConfig

__all__ = [
    "ANALYSIS_DIR", "ANALYSIS_FILES", "CONFIG", "CONVERGENCE_DIR", "LANDSCAPE_DIR", "LATENT",
    "CACHE", "LATENT_PRIOR", "LEGACY_NETWORK", "LOCK", "LOG", "MODEL", "NETWORK_ADDED",
    "NOTEBOOK", "POSES", "RUN_FILES", "SNAPSHOTS", "SUBSET", "VALIDATE_DIR", "LatentPrior",
    "Run", "RunLock", "RunRecord",
    "analysis_folder", "append_log", "atomic_write", "clear_run_files", "cluster_map_name",
    "load_checkpoint", "load_latent", "load_snapshot_decoder", "load_snapshot_latent",
    "locks_run", "network_changes", "open_run", "pc_map_name", "read_record",
    "read_training_log", "remove_stale_temporaries", "run_inputs", "save_checkpoint",
    "save_snapshot", "snapshot_epochs", "truncate_log", "write_json", "write_latent",
    "write_latent_prior", "write_npy", "write_record",
]

log = logging.getLogger(__name__)

CONFIG, MODEL, LATENT, LATENT_PRIOR, LOG, POSES, LOCK = (
    "config.json", "model.pt", "latent.npy", "latent_prior.npz", "log.jsonl",
    "poses_refined.star", ".lock")
# The files ``train`` writes in a run folder.
RUN_FILES = (CONFIG, MODEL, LATENT, LATENT_PRIOR, LOG, POSES)
# What a checkpoint holds (save_checkpoint).
_CHECKPOINT_KEYS = ("model", "optimizer", "epoch")
SNAPSHOTS = "snapshots"
CACHE = "cache"
"""``RUN/cache``: preprocessed-image caches (``hetsiren.data.cache``) unless ``--cache-dir``."""
SUBSET = "particles_subset"
"""Stem of the particle file written by ``train --indices`` (suffix of the input's format)."""
# Prefix of the decoder's parameters in the model's state dict (all a snapshot keeps).
_DECODER_KEYS = "net.decoder."

ANALYSIS_DIR = "analysis"
"""``RUN/analysis``: what ``hetsiren analyze`` writes (``analysis.EEE`` for a snapshot)."""
LANDSCAPE_DIR, CONVERGENCE_DIR, VALIDATE_DIR = "landscape", "convergence", "validate"
"""Sub-folders of the analysis folder written by ``landscape``, ``convergence``, ``validate``."""
NOTEBOOK = "hetsiren_analysis.ipynb"
ANALYSIS_FILES = {
    "pca": "pca.npz", "pca_coords": "pca_coords.npy", "umap": "umap.npy",
    "labels": "labels.npy", "clusters": "clusters.json", "clusters_csv": "clusters.csv",
    "cluster_maps": "clusters", "surfaces": "surfaces", "pc_samples": "pc_samples.json",
    "chimerax": "chimerax.cxc", "report": "report.html", "notebook": NOTEBOOK,
    "summary": "summary.json", "landscape_pca": "landscape_pca.png",
    "density_pca": "density_pca.png", "landscape_umap": "landscape_umap.png",
    "density_umap": "density_umap.png", "explained_variance": "explained_variance.png",
    "training_curves": "training_curves.png",
}
"""File (or folder) names inside an analysis folder, by the key ``analyze`` reports them under."""


def analysis_folder(run_dir: str | Path, epoch: int | None = None) -> Path:
    """``RUN/analysis``, or ``RUN/analysis.EEE`` for the snapshot after epoch EEE."""
    return Path(run_dir) / (ANALYSIS_DIR if epoch is None else f"{ANALYSIS_DIR}.{epoch:03d}")


def cluster_map_name(i: int) -> str:
    """Path of cluster ``i``'s map relative to the analysis folder."""
    return f"{ANALYSIS_FILES['cluster_maps']}/cluster_{i:02d}.mrc"


def pc_map_name(pc: int, i: int) -> str:
    """Path of the ``i``-th map sampled along PC ``pc`` (1-based) relative to the analysis
    folder."""
    return f"pc{pc}/pc{pc}_{i:02d}.mrc"


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
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


def run_inputs(run_dir: str | Path) -> list[Path]:
    """The files of a run that exist: what a command reading the run must not overwrite."""
    return [p for p in (Path(run_dir) / name for name in RUN_FILES) if p.exists()]


def load_latent(run_dir: str | Path) -> np.ndarray:
    """``RUN/latent.npy`` as ``(N, zdim)`` float32, checked."""
    path = Path(run_dir) / LATENT
    if not path.is_file():
        raise UserInputError(f"{path}: not found; has training finished (hetsiren train)?")
    try:
        z = np.load(path)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read the latent vectors ({exc})") from exc
    if z.ndim != 2 or len(z) == 0:
        raise UserInputError(f"{path}: expected an (N, zdim) array, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise UserInputError(f"{path}: contains NaN or Inf; the run may have diverged")
    return z.astype(np.float32, copy=False)




@dataclass(frozen=True)
class LatentPrior:
    """The encoder's latent of the training particles as a Gaussian, and the noise level of
    the data term: the prior and the likelihood's scale of the latent refinement
    (``hetsiren.train.inference.refine_latent``)."""

    mean: np.ndarray
    """``(zdim,)``."""
    covariance: np.ndarray
    """``(zdim, zdim)``."""
    data_term: float
    """The last training epoch's mean data term (for MSE: the residual variance per pixel
    of the normalised images, i.e. the noise variance at SNR ≤ 0.1)."""

    @classmethod
    def fit(cls, z: np.ndarray, data_term: float) -> LatentPrior:
        z = np.asarray(z, dtype=np.float64)
        cov = np.atleast_2d(np.cov(z.T)) if len(z) > 1 else np.eye(z.shape[1])
        # a floor on the variances keeps the precision finite for a dimension z never uses
        floor = 1e-6 * max(float(np.trace(cov)) / len(cov), 1e-12)
        return cls(z.mean(0), cov + floor * np.eye(len(cov)), float(data_term))


def write_latent_prior(run_dir: str | Path, prior: LatentPrior) -> Path:
    """Write ``RUN/latent_prior.npz``."""
    def _save(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, mean=prior.mean, covariance=prior.covariance,
                     data_term=np.float64(prior.data_term))

    return atomic_write(Path(run_dir) / LATENT_PRIOR, _save)


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
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read checkpoint ({exc})") from exc
    missing = [k for k in _CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserInputError(f"{path}: not a hetsiren checkpoint: no {', '.join(missing)} "
                             f"(expected {', '.join(_CHECKPOINT_KEYS)})")
    return state


def read_training_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """Entries of ``RUN/log.jsonl`` (empty when missing; a torn line is skipped)."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return []
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not isinstance(entry, dict):
            log.warning("%s:%d: not a JSON object (a line cut by an interruption?), skipped",
                        path, n)
            continue
        entries.append(entry)
    return entries


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left in ``run_dir``
    (``.model.pt.XXXX.tmp.pt`` ...). Call only while holding the run's :class:`RunLock`."""
    removed = []
    for path in Path(run_dir).glob(f".*{TMP_MARK}*"):
        if path.is_file():
            path.unlink()
            removed.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write in %s (%s)",
                 len(removed), run_dir, ", ".join(p.name for p in removed))
    return removed


# --------------------------------------------------------------------------------------------
# the run-folder lock
# --------------------------------------------------------------------------------------------
def _boot_id() -> str | None:
    """Changes at every boot (Linux): a pid recorded before a reboot says nothing after it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """The right to write one run folder, held for the duration of a ``with`` block.

    The lock is ``RUN/.lock``, created atomically (hard link of a complete temporary file)
    and holding the writer's pid, host, boot id, start time and command line. A second
    writer gets a :class:`UserInputError` naming the holder. A lock whose process is gone
    (same host and boot, no such pid; or written before the last reboot) is stale: it is
    taken over with a warning. A lock from another host cannot be checked: the error says
    to delete it if that process is known to be gone.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "command": " ".join(sys.argv)}
        self._held = False
        self._made_folder = False

    def _create(self) -> bool:
        """Try to create the lock; False when one exists."""
        fd, tmp = tempfile.mkstemp(prefix=f"{LOCK}.", suffix=TMP_MARK, dir=self.run_dir)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.info) + "\n")
            honour_umask(tmp)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError:  # file systems without hard links: exclusive create instead
                try:
                    with open(self.path, "x") as fh:
                        fh.write(json.dumps(self.info) + "\n")
                except FileExistsError:
                    return False
            return True
        finally:
            os.unlink(tmp)

    def _holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            holder = None
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
            # Only a process that died while writing the fallback lock leaves it unreadable.
            return {"pid": None, "host": None, "unreadable": True}
        return holder

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("unreadable"):
            return time.time() - self.path.stat().st_mtime > 60
        if holder.get("host") != self.info["host"]:
            return False
        if holder.get("boot_id") and self.info["boot_id"] and \
                holder["boot_id"] != self.info["boot_id"]:
            return True
        return not _pid_alive(int(holder["pid"]))

    def __enter__(self) -> RunLock:
        try:
            self._made_folder = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for _ in range(3):
                if self._create():
                    self._held = True
                    return self
                holder = self._holder()
                if not holder:  # released meanwhile
                    continue
                if not self._is_stale(holder):
                    raise UserInputError(self._busy_message(holder))
                log.warning("%s: taking over the lock of pid %s on %s (started %s), which is "
                            "no longer running", self.run_dir, holder.get("pid"),
                            holder.get("host"), holder.get("started", "?"))
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise UserInputError(f"{self.run_dir}: cannot lock the run folder: "
                                 f"{describe_os_error(exc)}") from exc
        raise UserInputError(f"{self.path}: another process keeps taking this lock; retry")

    def _busy_message(self, holder: dict[str, Any]) -> str:
        who = (f"pid {holder['pid']} on host {holder['host']}, since {holder.get('started', '?')}"
               if holder.get("pid") else "a process that is still creating it")
        command = f" ({holder['command']})" if holder.get("command") else ""
        other_host = holder.get("host") not in (None, self.info["host"])
        hint = (f"; if that process is gone, delete {self.path}" if other_host else
                "; wait for it to finish, stop it, or use another output folder")
        return f"{self.run_dir} is being written by another hetsiren process: {who}{command}{hint}"

    def __exit__(self, *exc_info: object) -> None:
        if not self._held:
            return
        self._held = False
        try:
            if json.loads(self.path.read_text()).get("pid") == self.info["pid"]:
                self.path.unlink()
            if self._made_folder and not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()  # a run that failed before writing anything leaves none
        except (OSError, json.JSONDecodeError):
            pass


_F = TypeVar("_F", bound=Callable[..., Any])


def locks_run(func: _F) -> _F:
    """Decorator for functions that write into an existing run folder (their first argument):
    hold its :class:`RunLock` for the call, so that they never interleave with a training."""

    @functools.wraps(func)
    def locked(run_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        if not Path(run_dir).is_dir():
            raise UserInputError(f"{run_dir}: not found; expected a hetsiren training run folder")
        with RunLock(run_dir):
            return func(run_dir, *args, **kwargs)

    return locked  # type: ignore[return-value]


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


# --------------------------------------------------------------------------------------------
# the run record (config.json)
# --------------------------------------------------------------------------------------------
NETWORK_ADDED: dict[str, Any] = {"feature_norm": False}
"""NetworkConfig fields added after config.json stored the network, with the value of the runs
stored before them (a new default must not change how an old checkpoint computes)."""

LEGACY_NETWORK: dict[str, Any] = {
    "working_size": 64, "n_hidden": 3, "hyper_width": None, "n_hyper_layers": 1,
    "max_delta_angle": math.radians(10.0), "max_delta_shift_fraction": 0.05,
    "delta_init_std": 1e-3, **NETWORK_ADDED,
}
"""The architecture constants of runs whose config.json has no "network": NetworkConfig's
defaults from the first network (d5a8833) through e5e3953 to the change that stored them. Kept
here, not read from NetworkConfig, so that a new default there cannot break an old run."""


def network_changes() -> dict[str, Any]:
    """The fields of :data:`NETWORK_ADDED` whose NetworkConfig default today differs from the
    value of the runs stored before them (what a benchmark's run key must hold so that a
    stored result of the old network is not taken for the new one)."""
    defaults = {f.name: f.default for f in dataclasses.fields(NetworkConfig)}
    return {k: defaults[k] for k, old in NETWORK_ADDED.items() if defaults[k] != old}


@dataclass(frozen=True)
class RunRecord:
    """What ``config.json`` holds: enough to rebuild the model and to reproduce the run."""

    train: TrainConfig
    """Every option of the run, resolved (absolute paths, ``extra``: values found at run time)."""
    network: NetworkConfig
    """The architecture the weights in ``model.pt`` have."""
    preprocessing: Preprocessing
    """How images become network inputs (box, pixel size, noise level)."""
    version: str
    """hetsiren version that created the run."""
    command_line: tuple[str, ...]
    created: str
    """Local time of creation, ``YYYY-MM-DDTHH:MM:SS``."""
    resumed: tuple[dict[str, Any], ...] = ()
    """One entry per resume that changed options: time, epoch, ``{name: [old, new]}``."""

    @classmethod
    def new(cls, train: TrainConfig, network: NetworkConfig, preprocessing: Preprocessing
            ) -> RunRecord:
        """The record of a run starting now, from this command line."""
        return cls(train, network, preprocessing, __version__, tuple(sys.argv),
                   time.strftime("%Y-%m-%dT%H:%M:%S"))

    def resumed_with(self, train: TrainConfig, after_epoch: int,
                     changes: dict[str, tuple[Any, Any]]) -> RunRecord:
        """This record with ``train`` and the resume that changed it appended."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "after_epoch": after_epoch,
                 "changes": {k: list(v) for k, v in changes.items()}}
        return dataclasses.replace(self, train=train, resumed=(*self.resumed, entry))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "hetsiren_version": self.version, "created": self.created,
            "command_line": list(self.command_line), "config": self.train.to_dict(),
            "network": dataclasses.asdict(self.network),
            "preprocessing": self.preprocessing.to_dict()}
        if self.resumed:
            data["resumed"] = list(self.resumed)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = CONFIG) -> RunRecord:
        """Parse a stored record; one written before the network was stored gets
        :data:`LEGACY_NETWORK`. Raises :class:`UserInputError` naming ``source``."""
        if not (isinstance(data, dict) and "hetsiren_version" in data
                and isinstance(data.get("config"), dict)
                and isinstance(data.get("preprocessing"), dict)):
            raise UserInputError(f"{source}: not a hetsiren run record (expected "
                                 "hetsiren_version, config and preprocessing)")
        try:
            train = TrainConfig.from_dict(data["config"])
            prep = Preprocessing(**data["preprocessing"])
            stored = data.get("network")
            network = (train.network(prep.box, **LEGACY_NETWORK) if stored is None
                       else NetworkConfig(**{**NETWORK_ADDED, **stored}).validate())
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"{source}: unreadable run record ({exc})") from exc
        return cls(train, network, prep, str(data["hetsiren_version"]),
                   tuple(data.get("command_line") or ()), str(data.get("created", "?")),
                   tuple(data.get("resumed") or ()))


def read_record(run_dir: str | Path) -> RunRecord:
    """``RUN/config.json`` parsed (see :meth:`RunRecord.from_dict`)."""
    path = Path(run_dir) / CONFIG
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserInputError(f"{path}: not found; is {run_dir} a hetsiren training run?") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read run configuration ({exc})") from exc
    return RunRecord.from_dict(data, path)


# --------------------------------------------------------------------------------------------
# reading a run: open_run
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """A trained run folder, opened: its record and accessors for every file in it."""

    path: Path
    record: RunRecord

    @property
    def train(self) -> TrainConfig:
        return self.record.train

    @property
    def preprocessing(self) -> Preprocessing:
        return self.record.preprocessing

    def latent(self, epoch: int | None = None) -> np.ndarray:
        """``(N, zdim)`` float32 latent: the final one, or the snapshot after ``epoch``."""
        return load_latent(self.path) if epoch is None else load_snapshot_latent(self.path,
                                                                                  epoch)

    def log(self) -> list[dict[str, Any]]:
        """The entries of ``log.jsonl``, one per epoch."""
        return read_training_log(self.path)

    def latent_prior(self) -> LatentPrior | None:
        """``latent_prior.npz``; for a run from before it was written (whose ``latent.npy``
        is the encoder's latent) fitted to ``latent.npy`` and the last epoch's data term;
        None when neither is there."""
        path = self.path / LATENT_PRIOR
        if path.is_file():
            try:
                with np.load(path) as f:
                    return LatentPrior(f["mean"], f["covariance"], float(f["data_term"]))
            except (OSError, ValueError, KeyError) as exc:
                raise UserInputError(f"{path}: cannot read the latent prior ({exc}); "
                                     "delete it to refit it from latent.npy") from exc
        entries = [e for e in self.log() if "data" in e]
        if self.train.refine_latent_steps or not entries or not (self.path / LATENT).is_file():
            return None
        return LatentPrior.fit(self.latent(), entries[-1]["data"])

    def _analysis_file(self, key: str) -> Path:
        return analysis_folder(self.path) / ANALYSIS_FILES[key]

    def clusters(self) -> dict[str, Any]:
        """``analysis/clusters.json`` (k, seed, populations ...); empty when missing or
        unreadable (a warning says which)."""
        path = self._analysis_file("clusters")
        if not path.is_file():
            return {}
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.warning("%s: unreadable (%s); ignoring it", path, exc)
            return {}
        return stored if isinstance(stored, dict) else {}

    def labels(self) -> np.ndarray | None:
        """``(N,)`` int64 cluster labels ``analyze`` wrote, or None."""
        path = self._analysis_file("labels")
        return np.load(path).astype(np.int64) if path.is_file() else None

    def pca(self) -> dict[str, np.ndarray] | None:
        """The latent PCA ``analyze`` wrote (mean, components, explained_variance_ratio), or
        None."""
        path = self._analysis_file("pca")
        if not path.is_file():
            return None
        with np.load(path) as f:
            return {k: f[k] for k in ("mean", "components", "explained_variance_ratio")}

    def umap(self) -> np.ndarray | None:
        """``(N, 2|3)`` UMAP embedding ``analyze --umap`` wrote, or None."""
        path = self._analysis_file("umap")
        return np.load(path) if path.is_file() else None

    def model(self, device: str | torch.device = "cpu", epoch: int | None = None) -> HetSIREN:
        """The trained model on ``device`` in eval mode; with ``epoch``, its decoder as it was
        after that epoch (``RUN/snapshots``)."""
        state = load_checkpoint(self.path, map_location="cpu")
        model = model_from_state(self.record.network, state["model"], self.path / MODEL)
        if epoch is not None:
            unexpected = model.load_state_dict(load_snapshot_decoder(self.path, epoch),
                                               strict=False).unexpected_keys
            if unexpected:
                raise UserInputError(f"{self.path}: the epoch-{epoch} snapshot does not fit "
                                     f"this run's model ({unexpected[0]})")
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        return model.to(dev).eval()

    def particles(self, path: str | Path | None = None, datadir: str | None = None
                  ) -> ParticleSet:
        """The particles the run was trained on (or ``path``), read as the run read them."""
        cfg = self.record.train
        source = path or cfg.particles
        if not source:
            raise UserInputError(f"{self.path / CONFIG} names no particle file; pass --particles")
        if not Path(source).exists():
            raise UserInputError(f"{source}: the run's particle file is not there (moved?); "
                                 "pass --particles FILE")
        return read_particles(source, datadir=datadir or cfg.datadir,
                              pixel_size_A=cfg.pixel_size_A)

    def inputs(self) -> list[Path]:
        """The run's files that exist: what a command reading the run must not overwrite."""
        return run_inputs(self.path)


def open_run(run_dir: str | Path) -> Run:
    """Open a training run folder for reading (its ``config.json`` is parsed here)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserInputError(f"{run_dir}: not found; expected a hetsiren training run folder")
    return Run(path, read_record(path))


# --------------------------------------------------------------------------------------------
# writing a run (the trainer)
# --------------------------------------------------------------------------------------------
def write_record(run_dir: str | Path, record: RunRecord) -> Path:
    """Write ``RUN/config.json``."""
    return write_json(Path(run_dir) / CONFIG, record.to_dict())


def append_log(run_dir: str | Path, entry: dict[str, Any]) -> None:
    """Add one epoch's line to ``RUN/log.jsonl``. Written before that epoch's checkpoint; an
    interruption between the two is repaired by :func:`truncate_log` on resume."""
    with open(Path(run_dir) / LOG, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def truncate_log(run_dir: str | Path, last_epoch: int) -> None:
    """Drop log lines of epochs after the checkpoint (an interruption between the log line and
    the checkpoint would otherwise leave a duplicate epoch after resuming), and a line cut by
    an interruption."""
    path = Path(run_dir) / LOG
    if not path.is_file():
        return
    lines = [json.dumps(e) for e in read_training_log(run_dir)
             if e.get("epoch", 0) <= last_epoch]
    atomic_write(path, lambda p: p.write_text("".join(f"{line}\n" for line in lines)))


def write_latent(run_dir: str | Path, z: np.ndarray) -> Path:
    """Write ``RUN/latent.npy``: ``(N, zdim)`` float32, row i = particle i."""
    return write_npy(Path(run_dir) / LATENT, np.asarray(z, dtype=np.float32))


def clear_run_files(run_dir: str | Path) -> None:
    """Delete the files ``train`` writes (a run restarted from scratch)."""
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
