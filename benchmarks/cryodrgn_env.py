"""Shared by the cryoDRGN benchmarks: cryoDRGN in its own venv, and measured subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


def run_measured(cmd: list[str | Path], log: Path, env: dict[str, str] | None = None
                 ) -> Measured:
    """Run a command with its output in ``log``; its own wall time and peak resident memory.

    The memory is the child's ``ru_maxrss`` from ``wait4``: that process alone, so two tools
    run one after the other are measured separately.
    """
    print("$", " ".join(str(c) for c in cmd), f"> {log}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed ({os.waitstatus_to_exitcode(status)}); see {log}:\n"
                 + "".join(open(log).readlines()[-20:]))
    return Measured(wall, usage.ru_maxrss / 1024**2)  # ru_maxrss is in KiB on Linux


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
