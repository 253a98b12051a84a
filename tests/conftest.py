"""Shared fixtures: paths to the real files written by other tools, devices to test on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def formats_dir() -> Path:
    """Real RELION/cryoSPARC files (see shared/data/README.md)."""
    path = SHARED_DATA / "formats"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """Projections of map.mrc made outside this project, with STAR and .cs poses."""
    path = SHARED_DATA / "conformance"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


# --------------------------------------------------------------------------------------------
# the real command line, in a subprocess (for what only a separate process shows: locks,
# kill -9, exit codes, tracebacks)
# --------------------------------------------------------------------------------------------
SRC = Path(__file__).resolve().parents[1] / "src"


def cli_env() -> dict[str, str]:
    """Environment for a `hetsiren` subprocess: this checkout's package, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


class HetsirenCli:
    """``hetsiren`` in a new Python process, text output captured."""

    @staticmethod
    def _argv(args, prelude: str) -> list[str]:
        code = f"{prelude}\nimport sys\nfrom hetsiren.cli import main\nsys.exit(main())"
        return [sys.executable, "-c", code, *map(str, args)]

    def __call__(self, *args, cwd=None, timeout=600, prelude: str = ""
                 ) -> subprocess.CompletedProcess:
        """Run to the end (never raising on a non-zero exit). ``prelude``: Python run first
        in that process (e.g. to make it kill itself at a chosen point)."""
        return subprocess.run(self._argv(args, prelude), cwd=cwd, env=cli_env(),
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args, cwd=None, prelude: str = "") -> subprocess.Popen:
        """Start without waiting; the process's pid is the Popen's."""
        return subprocess.Popen(self._argv(args, prelude), cwd=cwd, env=cli_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def cli_environ() -> dict[str, str]:
    """:func:`cli_env` for tests in folders with their own conftest (whose name shadows this
    module's)."""
    return cli_env()


@pytest.fixture(scope="session")
def hetsiren_cli() -> HetsirenCli:
    return HetsirenCli()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """64 simulated particles of 16 px (phantom, CTF, SNR 1): DIR/particles.star + .mrcs."""
    from hetsiren.simulate import SimulationSpec, simulate_phantom

    out = tmp_path_factory.mktemp("tiny") / "sim"
    simulate_phantom(out, "discrete", 16, SimulationSpec(n_particles=64, snr=1.0, seed=4,
                                                         pixel_size_A=5.0), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A 1-epoch run on ``tiny_dataset`` (zdim 2): copy it before changing anything in it."""
    from hetsiren.train.config import TrainConfig
    from hetsiren.train.trainer import train

    run = tmp_path_factory.mktemp("tiny_run") / "run"
    train(TrainConfig(particles=str(tiny_dataset / "particles.star"), zdim=2, epochs=1,
                      batch_size=16, device="cpu"), run, progress=False)
    return run
