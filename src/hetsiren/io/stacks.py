"""From image references in metadata (``NNNNNN@stack.mrcs``, cryoSPARC blob path + index) to a
lazy :class:`~hetsiren.io.mrc.MrcImageSource`.

Relative stack paths are resolved against, in order: ``datadir/path`` and ``datadir/<basename>``
when ``datadir`` is given; otherwise the metadata file's folder (and, for cryoSPARC, the
project folder above it, since ``blob/path`` is relative to the project).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hetsiren.errors import UserInputError
from hetsiren.io.mrc import MrcImageSource

__all__ = ["image_source_from_names", "image_source_from_paths", "resolve_stack"]


def resolve_stack(name: str, base_dirs: Sequence[Path], datadir: Path | None) -> Path:
    """Resolve one stack path; return the first candidate that exists (else the first tried)."""
    path = Path(name)
    if path.is_absolute() and datadir is None:
        return path
    if datadir is not None:
        candidates = [datadir / path, datadir / path.name] if not path.is_absolute() else [
            path, datadir / path.name]
    else:
        candidates = [base / path for base in base_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


def image_source_from_paths(stack_names: np.ndarray, index_in_stack: np.ndarray,
                            source: Path, datadir: str | Path | None,
                            base_dirs: Sequence[Path], box_size: int | None) -> MrcImageSource:
    """``(N,)`` stack names (str) and 0-based indices → a lazy image source."""
    codes, uniques = pd.factorize(pd.Series(stack_names, dtype=object), sort=False)
    dd = Path(datadir) if datadir is not None else None
    paths = [resolve_stack(str(u), base_dirs, dd) for u in uniques]
    src = MrcImageSource(paths, codes.astype(np.int32), index_in_stack, source=source,
                         box_size=box_size)
    src.stack_names = [str(u) for u in uniques]
    return src


def image_source_from_names(names: pd.Series, source: Path, datadir: str | Path | None,
                            base_dirs: Sequence[Path], box_size: int | None,
                            column: str = "rlnImageName") -> MrcImageSource:
    """RELION image names ``NNNNNN@stack.mrcs`` (1-based; no ``@`` means image 1) → source."""
    names = pd.Series(names).astype(str)
    # Plain Python split: several times faster than pandas' str.split on 1e6 names.
    parts = [n.split("@", 1) if "@" in n else ("1", n) for n in names.tolist()]
    numbers_text, stacks = zip(*parts, strict=True) if parts else ((), ())
    number = pd.to_numeric(pd.Series(numbers_text, dtype=object), errors="coerce")
    stack = pd.Series(stacks, dtype=object)
    bad = number.isna() | (number < 1) | (number != np.floor(number)) | (stack.str.len() == 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserInputError(
            f"{source}: row {row + 1}, column {column}: expected 'NNNNNN@stack.mrcs' with a "
            f"1-based image number, got {names.iloc[row]!r}")
    return image_source_from_paths(stack.to_numpy(dtype=object),
                                   number.to_numpy(dtype=np.int64) - 1, source, datadir,
                                   base_dirs, box_size)
