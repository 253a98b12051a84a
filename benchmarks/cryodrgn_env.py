"""Shared by the cryoDRGN benchmarks: cryoDRGN in its own venv, and measured subprocesses."""

from __future__ import annotations

import argparse
import pickle
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TORCH_PIN = "torch==2.13.0"


def run(cmd: list[str | Path], env: dict[str, str] | None = None) -> None:
    """Run a command, echoing it; its output is shown only when it fails."""
    print("$", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@dataclass(frozen=True)
class Measured:
    wall_s: float
    peak_rss_gb: float


# Runs the command as its own child and reports that child's peak RSS (KiB). A child
# inherits its parent's high-water mark on Linux, so this small launcher stands between the
# benchmark (hundreds of MB after its imports) and the measured command.
_LAUNCHER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
             "open(sys.argv[1], 'w').write(str(resource.getrusage("
             "resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(rc)")


def run_measured(cmd: list[str | Path], log: Path, env: dict[str, str] | None = None
                 ) -> Measured:
    """Run a command with its output in ``log``; its wall time and peak resident memory."""
    print("$", " ".join(str(c) for c in cmd), f"> {log}", flush=True)
    rss_file = log.with_suffix(".maxrss")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-c", _LAUNCHER, str(rss_file),
                                *(str(c) for c in cmd)], stdout=out, stderr=subprocess.STDOUT,
                               env=env)
    wall = time.perf_counter() - t0
    if code != 0:
        sys.exit(f"command failed ({code}); see {log}:\n" + "".join(open(log).readlines()[-20:]))
    return Measured(wall, int(rss_file.read_text()) / 1024**2)  # KiB on Linux


@dataclass(frozen=True)
class VaeRun:
    """A finished ``cryodrgn train_vae``: its folder, its process's cost and each epoch's
    training time as cryoDRGN logs it (``Finished in``: the epoch's batches, without the
    re-encoding of a checkpoint)."""

    out: Path
    cost: Measured
    epoch_s: list[float]

    def latent(self, epoch: int | None = None) -> np.ndarray:
        """The posterior means after ``epoch`` (cryoDRGN counts from 1; a checkpoint) or at
        the end."""
        path = self.out / ("z.pkl" if epoch is None else f"z.{epoch}.pkl")
        with open(path, "rb") as f:
            return np.asarray(pickle.load(f), dtype=np.float64)

    def decoder(self, venv: Path, apix: float, env: dict[str, str],
                epoch: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """A latent point → cryoDRGN's map there (``eval_vol`` with the epoch's weights)."""
        from hetsiren.io.mrc import read_map

        weights = self.out / ("weights.pkl" if epoch is None else f"weights.{epoch}.pkl")

        def decode(point: np.ndarray) -> np.ndarray:
            with tempfile.TemporaryDirectory(dir=self.out) as tmp:
                vol = Path(tmp) / "vol.mrc"
                run([venv / "bin" / "cryodrgn", "eval_vol", weights, "-c",
                     self.out / "config.yaml", "-o", vol, "--Apix", apix, "-z",
                     *(f"{v:.6g}" for v in point)], env)
                return read_map(vol)[0]

        return decode


_EPOCH_TIME = re.compile(r"=====> Epoch: \d+ .*Finished in (\d+):(\d+):([\d.]+)")


def train_vae(venv: Path, particles: Path, poses: Path, ctf: Path, work: Path,
              zdim: int, epochs: int, seed: int, env: dict[str, str],
              checkpoint: int | None = None, datadir: Path | None = None) -> VaeRun:
    """``cryodrgn train_vae`` with its defaults but the latent size, epochs and seed, timed
    and measured. ``checkpoint``: re-encode every particle every this many epochs (its
    default, 1, costs an encoder pass per epoch; None: only at the end)."""
    out = work / "train_vae"
    cmd = [venv / "bin" / "cryodrgn", "train_vae", particles, "--poses", poses, "--ctf", ctf,
           "--zdim", zdim, "-n", epochs, "--seed", seed, "--no-analysis",
           "--checkpoint", checkpoint or epochs, "-o", out]
    if datadir is not None:
        cmd += ["--datadir", datadir]
    cost = run_measured(cmd, work / "train.log", env)
    epoch_s = [int(h) * 3600 + int(m) * 60 + float(s)
               for h, m, s in _EPOCH_TIME.findall((work / "train.log").read_text())]
    return VaeRun(out, cost, epoch_s)


def ensure_cryodrgn(venv: Path) -> str:
    """cryoDRGN's version in ``venv``, installing torch (pinned) and cryoDRGN there if missing.

    ``torch==2.13.0`` goes first (the CPU wheel on this machine); a bare ``torch`` requirement
    would pull a multi-GB CUDA build.
    """
    python = venv / "bin" / "python"
    probe = [python, "-c", "import cryodrgn; print(cryodrgn.__version__)"]
    if not (venv / "bin" / "cryodrgn").exists():
        print(f"no cryoDRGN in {venv}: creating the venv and installing {TORCH_PIN}, then "
              "cryodrgn (several minutes)", flush=True)
        if not python.exists():
            run([sys.executable, "-m", "venv", venv])
        run([python, "-m", "pip", "install", TORCH_PIN])
        run([python, "-m", "pip", "install", "cryodrgn"])
    proc = subprocess.run([str(c) for c in probe], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cryoDRGN in {venv} does not import:\n{proc.stderr}\nremove the folder and "
                 f"rerun, or install it by hand: pip install {TORCH_PIN} && pip install cryodrgn")
    return proc.stdout.strip()


def add_common_args(p: argparse.ArgumentParser) -> None:
    """``-o`` (a new folder) and ``--cryodrgn-venv``, shared by the cryoDRGN benchmarks."""
    p.add_argument("-o", "--output", type=Path, required=True, help="new folder")
    p.add_argument("--cryodrgn-venv", type=Path, default=Path("/tmp/cdvenv"),
                   help="venv with cryoDRGN (created when missing; default: /tmp/cdvenv)")


def prepare(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """The new output folder, the venv and cryoDRGN's version (installed when missing)."""
    out = args.output.resolve()
    if out.exists():
        sys.exit(f"{out} exists: give a new folder")
    venv = args.cryodrgn_venv.resolve()
    return out, venv, ensure_cryodrgn(venv)
