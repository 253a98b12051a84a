"""Particle index files: which rows of a particle file to use (``train --indices``,
``export --indices``).

Formats: ``.npy`` of integers, or text with integers separated by spaces, commas, semicolons
or newlines (``#`` starts a comment). Indices are 0-based rows of the particle file.
cryoDRGN's ``.pkl`` index files are Python pickles; unpickling can run code from the file, so
they are refused with the one-line conversion to ``.npy``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hetsiren.errors import UserInputError

__all__ = ["read_indices"]

# First byte of a pickle of protocol 2 or later (cryoDRGN writes protocol 4).
_PICKLE_MAGIC = b"\x80"


def _pickle_message(path: Path) -> str:
    return (f"{path}: this is a Python pickle (cryoDRGN's index format); hetsiren does not "
            "load pickles (loading one can run any code it contains). Convert it where "
            "cryoDRGN wrote it, if you trust the file: save the indices with numpy.save as "
            f"{path.with_suffix('.npy').name} (or as text, one 0-based index per line) and "
            "pass that")


def read_indices(path: str | Path, n_particles: int) -> np.ndarray:
    """Sorted unique 0-based indices from ``.npy`` or text; checked against ``n_particles``."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read particle indices ({exc})") from exc
    if path.suffix.lower() in (".pkl", ".pickle") or head == _PICKLE_MAGIC:
        raise UserInputError(_pickle_message(path))
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False).reshape(-1)
        else:
            text = re.sub(r"#[^\n]*", "", path.read_text())
            tokens = [t for t in re.split(r"[\s,;]+", text) if t]
            values = np.array([float(t) for t in tokens])
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read particle indices ({exc})") from exc
    if values.size == 0:
        raise UserInputError(f"{path}: no particle indices in it")
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise UserInputError(f"{path}: particle indices must be integers (0-based)")
    values = values.astype(np.int64)
    bad = values[(values < 0) | (values >= n_particles)]
    if bad.size:
        raise UserInputError(
            f"{path}: index {int(bad[0])} is out of range: the particle file has {n_particles} "
            f"particles, numbered 0..{n_particles - 1} ({bad.size} indices out of range)")
    return np.unique(values)
