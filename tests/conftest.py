"""Shared fixtures: paths to the real files written by other tools, devices to test on."""

from __future__ import annotations

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
