"""RELION STAR files: read any layout into a ParticleSet, write the user's file back.

Layouts read:

- RELION 3.0: one particle block; pixel size ``rlnDetectorPixelSize`` (µm) × 1e4 /
  ``rlnMagnification``; origins ``rlnOriginX/Y`` in pixels.
- RELION 3.1, 4, 5: a ``data_optics`` block merged per particle through ``rlnOpticsGroup``
  (``rlnImagePixelSize``, ``rlnImageSize``, voltage, Cs, amplitude contrast); origins
  ``rlnOriginX/YAngst`` in Å. Files written by cryoDRGN have an optics block but origins
  ``rlnOriginX/Y`` in pixels: both column sets are accepted in either layout.

CTF: ``rlnDefocusU/V`` (Å), ``rlnDefocusAngle`` (deg), ``rlnVoltage`` (kV),
``rlnSphericalAberration`` (mm) are required once a defocus column is present;
``rlnAmplitudeContrast`` defaults to 0.1 (with a warning), ``rlnPhaseShift`` (deg) and
``rlnCtfBfactor`` to 0.

Any per-particle value may sit in the particle block or in the optics block (the particle
block wins). Angles are RELION's rot/tilt/psi in degrees, converted once by
:func:`hetsiren.geometry.euler_deg_to_matrix`.

Reading: :func:`read_star_blocks` hands each ``loop_`` body straight from the file to pandas'
C parser (the tables equal ``starfile.read``'s, which the tests check on every shared file).

Writing keeps every block and column of the input. Floats are written with the shortest text
that reads back to the same float64 (Python's ``repr``): no precision is lost, unlike
``starfile``'s default ``%.6f``.
"""

from __future__ import annotations

import csv
import io
import logging
import mmap
import os
import re
import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import pandas as pd

from hetsiren.errors import UserInputError
from hetsiren.geometry import (
    euler_deg_to_matrix,
    matrix_to_euler_deg,
    shifts_A_to_px,
    shifts_px_to_A,
)
from hetsiren.io.mrc import MrcImageSource
from hetsiren.io.particles import CTFParams, ParticleSet
from hetsiren.io.stacks import image_names_of, image_source_from_names, stack_paths_to_write
from hetsiren.outputs import atomic_path

__all__ = ["read_star_blocks", "read_star_particles", "write_new_star", "write_star",
           "write_star_blocks"]

log = logging.getLogger(__name__)

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGIN_A_COLUMNS = ("rlnOriginXAngst", "rlnOriginYAngst")
ORIGIN_PX_COLUMNS = ("rlnOriginX", "rlnOriginY")
# RELION 3.0: rlnDetectorPixelSize is in µm, rlnMagnification dimensionless.
_UM_TO_A = 1e4
_VERSION_RE = re.compile(r"^#\s*version\s+(\d+)")
_VERSION_SCAN_BYTES = 4096
_PIXEL_SIZE_RTOL = 1e-3
# Some RELION 3.0 files (e.g. cryoSPARC exports) omit it; 0.1 is the usual value for cryo-EM
# of proteins in vitreous ice and what RELION's own job defaults use.
DEFAULT_AMPLITUDE_CONTRAST = 0.1
_NON_BLANK = re.compile(rb"\S")
# pandas' message for a row longer than the first: "Expected 4 fields in line 2, saw 6".
_PANDAS_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


# ----------------------------------------------------------------------------------- reading


class _ByteRange(io.RawIOBase):
    """Bytes ``[start, end)`` of an open binary file, as a readable stream (no copy): what
    pandas' C parser reads a loop body from."""

    def __init__(self, fh: BinaryIO, start: int, end: int) -> None:
        super().__init__()
        self._fh, self._left = cast(io.BufferedIOBase, fh), end - start
        fh.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        got = self._fh.readinto(memoryview(buffer)[:n])
        self._left -= got or 0
        return got or 0


def _numericise(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _block_starts(mm: mmap.mmap) -> list[int]:
    """Byte offsets of the lines that open a data block (``data_...`` after optional spaces)."""
    starts = []
    pos = 0
    while pos < len(mm):
        end = mm.find(b"\n", pos)
        end = len(mm) if end < 0 else end
        line = mm[pos:end].lstrip()
        if line.startswith(b"data_"):
            starts.append(pos)
        elif line.startswith(b"loop_"):
            # skip the loop's header, then jump over its body to the next "data_"
            nxt = _next_data_line(mm, end)
            pos = nxt
            continue
        pos = end + 1
    return starts


def _next_data_line(mm: mmap.mmap, pos: int) -> int:
    """Offset of the next line starting with ``data_`` (maybe after spaces) at or after pos."""
    while True:
        hit = mm.find(b"data_", pos)
        if hit < 0:
            return len(mm)
        line_start = mm.rfind(b"\n", 0, hit) + 1
        if not mm[line_start:hit].strip():
            return line_start
        pos = hit + 5


def _parse_loop(path: Path, fh: BinaryIO, mm: mmap.mmap, name: str, pos: int, end: int
                ) -> pd.DataFrame:
    """A ``loop_`` table: header lines ``_name [#i]``, then whitespace-separated rows."""
    columns = []
    while pos < end:
        eol = mm.find(b"\n", pos, end)
        eol = end if eol < 0 else eol
        line = mm[pos:eol].strip()
        if line.startswith(b"_"):
            columns.append(line.split()[0][1:].decode())
        elif line:
            break
        pos = eol + 1
    if not columns:
        raise UserInputError(f"{path}: data_{name}: loop_ without column names; expected "
                             "'_rlnName' lines after loop_")
    if _NON_BLANK.search(mm, pos, end) is None:  # a loop with no rows
        return pd.DataFrame(np.zeros((0, len(columns))), columns=columns)
    quoted = mm.find(b"'", pos, end) >= 0
    df = None if quoted else _read_rows_in_parallel(path, mm, pos, end, len(columns))
    try:
        if df is None:  # single quotes read as double quotes (as starfile)
            source = (io.StringIO(mm[pos:end].decode().replace("'", '"')) if quoted else
                      io.BufferedReader(_ByteRange(fh, pos, end), buffer_size=1 << 20))
            df = _read_rows(source)
    except pd.errors.EmptyDataError:  # comments only
        return pd.DataFrame(np.zeros((0, len(columns))), columns=columns)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        m = _PANDAS_FIELDS.search(str(exc))
        line_no = mm[:pos].count(b"\n") + int(m.group(2)) if m else 0
        what = f"line {line_no} has {m.group(3)} values" if m else f"{type(exc).__name__}: {exc}"
        raise UserInputError(
            f"{path}: could not parse data_{name}: {what}; expected {len(columns)} "
            f"whitespace-separated values per row ({columns[0]} ... {columns[-1]}), one row "
            "per line") from exc
    if df.shape[1] != len(columns):
        raise UserInputError(
            f"{path}: could not parse data_{name}: row 1 has {df.shape[1]} values; expected "
            f"{len(columns)} (one per column, {columns[0]} ... {columns[-1]})")
    df.columns = columns
    for col in df.columns:  # a column of numbers with a gap (short row) is read as text
        if pd.api.types.is_numeric_dtype(df[col]):
            continue
        try:
            df[col] = pd.to_numeric(df[col])
        except (ValueError, TypeError):
            pass
    return df


def _read_rows(source: Any) -> pd.DataFrame:
    """pandas' C parser on whitespace-separated rows (``#`` comments, ``"`` quotes)."""
    return pd.read_csv(source, sep=r"\s+", header=None, comment="#", quotechar='"',
                       keep_default_na=False, na_values=["nan", "NaN", "<NA>"], engine="c")


_PARALLEL_MIN_BYTES = 16 << 20  # below, one thread is as fast (1e6 particles: ~180 MB)
_PARALLEL_MAX_THREADS = 4


def _read_rows_in_parallel(path: Path, mm: mmap.mmap, pos: int, end: int, n_columns: int
                           ) -> pd.DataFrame | None:
    """Rows ``[pos, end)`` parsed in line-aligned pieces on several threads (pandas' parser
    releases the GIL), or None where one thread must do it: a small table, one core, or any
    piece that does not parse to the same columns and types as the others (the one-thread
    parse then gives the exact result, or the error with its line number)."""
    threads = min(os.cpu_count() or 1, _PARALLEL_MAX_THREADS)
    if threads < 2 or end - pos < _PARALLEL_MIN_BYTES:
        return None
    bounds = [pos]
    for k in range(1, threads):
        cut = mm.find(b"\n", pos + (end - pos) * k // threads, end)
        if cut < 0 or cut + 1 <= bounds[-1]:
            break
        bounds.append(cut + 1)
    bounds.append(end)

    def piece(start: int, stop: int) -> pd.DataFrame:
        with open(path, "rb") as fh:
            return _read_rows(io.BufferedReader(_ByteRange(fh, start, stop),
                                                buffer_size=1 << 20))

    try:
        with ThreadPoolExecutor(len(bounds) - 1) as pool:
            pieces = list(pool.map(piece, bounds[:-1], bounds[1:]))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeDecodeError):
        return None
    # integers in one piece and decimals in another concatenate to floats, as one parse gives
    kinds = {tuple("n" if t.kind in "iuf" else t.kind for t in df.dtypes) for df in pieces}
    if any(df.shape[1] != n_columns for df in pieces) or len(kinds) > 1:
        return None
    return pd.concat(pieces, ignore_index=True)


def _parse_pairs(path: Path, mm: mmap.mmap, name: str, pos: int, end: int) -> dict[str, Any]:
    """A key-value block: ``_name value`` lines (value quoted when it holds spaces)."""
    block: dict[str, Any] = {}
    for n, raw in enumerate(mm[pos:end].decode().splitlines(), 1):
        line = raw.strip()
        if not line.startswith("_"):
            continue
        try:
            key, value = shlex.split(line)
        except ValueError as exc:
            raise UserInputError(f"{path}: data_{name}, line {n} of the block: expected "
                                 f"'_name value', got {line!r}") from exc
        block[key[1:]] = _numericise(value)
    return block


def read_star_blocks(path: str | Path) -> dict[str, pd.DataFrame | dict[str, Any]]:
    """Every data block of a STAR file: ``loop_`` tables as DataFrames, the others as dicts.

    The same tables as ``starfile.read(path, always_dict=True)`` (checked on every shared
    file by the tests), ~3x faster on large files (1e5 rows: 0.30 s against 0.99 s): the loop
    bodies go straight from the file to pandas' C parser, with no Python loop over their lines
    and no copy of their text.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    blocks: dict[str, Any] = {}
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise UserInputError(f"{path}: no data_ block found; expected a RELION STAR file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            starts = _block_starts(mm)
            for start, end in zip(starts, [*starts[1:], len(mm)], strict=False):
                eol = mm.find(b"\n", start, end)
                eol = end if eol < 0 else eol
                name = mm[start:eol].strip()[5:].decode()
                pos = eol + 1
                kind = None
                while pos < end:  # the first line saying what the block is
                    nxt = mm.find(b"\n", pos, end)
                    nxt = end if nxt < 0 else nxt
                    line = mm[pos:nxt].strip()
                    if line.startswith(b"loop_"):
                        kind = "loop"
                        pos = nxt + 1
                        break
                    if line.startswith(b"_"):
                        kind = "pairs"
                        break
                    pos = nxt + 1
                if kind == "loop":
                    blocks[name] = _parse_loop(path, fh, mm, name, pos, end)
                elif kind == "pairs":
                    blocks[name] = _parse_pairs(path, mm, name, pos, end)
                else:
                    blocks[name] = None
    if not blocks:
        raise UserInputError(f"{path}: no data_ block found; expected a RELION STAR file")
    return blocks


def _file_version(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(_VERSION_SCAN_BYTES).decode("utf-8", errors="replace")
    for line in head.splitlines():
        m = _VERSION_RE.match(line.strip())
        if m:
            return m.group(1)
    return None


def _pick_blocks(path: Path, blocks: dict[str, Any]) -> tuple[str, str | None]:
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    optics = "optics" if "optics" in tables else None
    if "particles" in tables:
        return "particles", optics
    with_names = [k for k, v in tables.items() if "rlnImageName" in v.columns]
    if with_names:
        return with_names[0], optics
    others = [k for k in tables if k != optics]
    if len(others) == 1:
        return others[0], optics
    raise UserInputError(
        f"{path}: cannot tell which block holds the particles (blocks: "
        f"{', '.join('data_' + k for k in blocks) or 'none'}); expected data_particles or a "
        "loop_ block with rlnImageName")


def _check_row_lengths(path: Path, block: str, df: pd.DataFrame) -> None:
    """Short rows come back padded with NaN: report them as what they are."""
    if df.shape[1] == 0 or len(df) == 0:
        return
    na = df.isna().to_numpy()
    short = na[:, -1]
    if not short.any():
        return
    row = int(np.flatnonzero(short)[0])
    present = na[row]
    n_fields = int(np.flatnonzero(~present)[-1]) + 1 if (~present).any() else 0
    raise UserInputError(
        f"{path}: data_{block}, row {row + 1}: found {n_fields} values, expected "
        f"{df.shape[1]} (one per column, {df.columns[0]} ... {df.columns[-1]}); the row is "
        "truncated or has a value missing")


class _Columns:
    """Per-particle numeric values from the particle block, else from its optics group."""

    def __init__(self, path: Path, particles: pd.DataFrame, pblock: str,
                 optics: pd.DataFrame | None, oblock: str | None) -> None:
        self.path, self.particles, self.pblock = path, particles, pblock
        self.optics, self.oblock = optics, oblock
        self.optics_row: np.ndarray | None = None
        if optics is not None:
            self._link_optics()

    def _link_optics(self) -> None:
        optics = self.optics
        assert optics is not None
        if "rlnOpticsGroup" not in optics.columns:
            raise UserInputError(f"{self.path}: data_{self.oblock} has no rlnOpticsGroup column; "
                                 "expected one row per optics group numbered by rlnOpticsGroup")
        groups = self._numeric(optics, "rlnOpticsGroup", self.oblock)
        if "rlnOpticsGroup" in self.particles.columns:
            pgroups = self.numeric("rlnOpticsGroup")
            row = pd.Index(groups).get_indexer(pgroups)
            if (row < 0).any():
                bad = int(np.flatnonzero(row < 0)[0])
                raise UserInputError(
                    f"{self.path}: data_{self.pblock}, row {bad + 1}, column rlnOpticsGroup: "
                    f"group {pgroups[bad]:g} is not in data_{self.oblock} (groups: "
                    f"{', '.join(f'{g:g}' for g in groups)})")
            self.optics_row = row
        elif len(optics) == 1:
            self.optics_row = np.zeros(len(self.particles), dtype=np.int64)
        else:
            raise UserInputError(
                f"{self.path}: data_{self.pblock} has no rlnOpticsGroup column but "
                f"data_{self.oblock} has {len(optics)} groups; expected rlnOpticsGroup per "
                "particle")

    def _numeric(self, df: pd.DataFrame, name: str, block: str | None) -> np.ndarray:
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserInputError(
                f"{self.path}: data_{block}, row {row + 1}, column {name}: expected a finite "
                f"number, got {df[name].iloc[row]!r}")
        return values

    def has(self, name: str) -> bool:
        return name in self.particles.columns or (
            self.optics is not None and name in self.optics.columns)

    def numeric(self, name: str, default: float | None = None) -> np.ndarray:
        if name in self.particles.columns:
            return self._numeric(self.particles, name, self.pblock)
        if self.optics is not None and name in self.optics.columns:
            assert self.optics_row is not None
            return self._numeric(self.optics, name, self.oblock)[self.optics_row]
        if default is not None:
            return np.full(len(self.particles), float(default))
        where = f"data_{self.pblock}" + (f" or data_{self.oblock}" if self.oblock else "")
        raise UserInputError(f"{self.path}: column {name} missing from {where}")

    def group(self, names: Sequence[str], what: str) -> np.ndarray | None:
        """``(N, len(names))`` if all present, None if none; a partial set is an error."""
        present = [self.has(n) for n in names]
        if not any(present):
            return None
        if not all(present):
            missing = [n for n, p in zip(names, present, strict=True) if not p]
            raise UserInputError(
                f"{self.path}: {what} incomplete: column(s) {', '.join(missing)} missing from "
                f"data_{self.pblock} (found "
                f"{', '.join(n for n, p in zip(names, present, strict=True) if p)})")
        return np.stack([self.numeric(n) for n in names], axis=1)


def _pixel_size(cols: _Columns, path: Path, pixel_size_A: float | None) -> np.ndarray | None:
    n = len(cols.particles)
    from_file = None
    if cols.has("rlnImagePixelSize"):
        from_file = cols.numeric("rlnImagePixelSize")
    elif cols.has("rlnDetectorPixelSize") and cols.has("rlnMagnification"):
        from_file = cols.numeric("rlnDetectorPixelSize") * _UM_TO_A / cols.numeric(
            "rlnMagnification")
    if from_file is not None and (from_file <= 0).any():
        row = int(np.flatnonzero(from_file <= 0)[0])
        raise UserInputError(f"{path}: row {row + 1}: pixel size {from_file[row]:g} Å; expected "
                             "a positive rlnImagePixelSize (or rlnDetectorPixelSize and "
                             "rlnMagnification)")
    if pixel_size_A is not None:
        if pixel_size_A <= 0:
            raise UserInputError(f"pixel size {pixel_size_A} Å given; expected a positive value")
        if from_file is not None and not np.allclose(from_file, pixel_size_A,
                                                     rtol=_PIXEL_SIZE_RTOL):
            log.warning("%s: using the given pixel size %.4g Å instead of the file's %s", path,
                        pixel_size_A, np.unique(from_file))
        return np.full(n, float(pixel_size_A))
    return from_file


def _amplitude_contrast(cols: _Columns, path: Path) -> np.ndarray:
    if cols.has("rlnAmplitudeContrast"):
        return cols.numeric("rlnAmplitudeContrast")
    log.warning("%s: no rlnAmplitudeContrast; using %g", path, DEFAULT_AMPLITUDE_CONTRAST)
    return np.full(len(cols.particles), DEFAULT_AMPLITUDE_CONTRAST)


def _random_subset(cols: _Columns, path: Path) -> np.ndarray | None:
    """``rlnRandomSubset`` as ``(N,)`` int64 halves 1/2, or None when the column is absent."""
    if "rlnRandomSubset" not in cols.particles.columns:
        return None
    values = cols.numeric("rlnRandomSubset")
    bad = ~np.isin(values, (1, 2))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserInputError(f"{path}: rlnRandomSubset of particle {row + 1} is {values[row]:g}; "
                             "expected 1 or 2 (the gold-standard half)")
    return values.astype(np.int64)


def read_star_particles(path: str | Path, datadir: str | Path | None = None,
                        pixel_size_A: float | None = None,
                        require_pixel_size: bool = True) -> ParticleSet:
    """Read a RELION particle STAR file (3.0, 3.1, 4, 5 or cryoDRGN's) into a ParticleSet.

    Args:
        path: the STAR file.
        datadir: folder holding the image stacks, when the paths in the file do not resolve
            relative to the file's folder.
        pixel_size_A: override (or supply, for files that have none) the pixel size in Å.
        require_pixel_size: raise when no pixel size is found anywhere (file, argument, stack
            header); when False the pixel sizes are NaN (for ``hetsiren info``).
    """
    path = Path(path)
    blocks = read_star_blocks(path)
    pblock, oblock = _pick_blocks(path, blocks)
    particles: pd.DataFrame = blocks[pblock]
    optics: pd.DataFrame | None = blocks[oblock] if oblock else None
    _check_row_lengths(path, pblock, particles)
    if oblock and optics is not None:
        _check_row_lengths(path, oblock, optics)
    n = len(particles)
    if n == 0:
        raise UserInputError(f"{path}: data_{pblock} has no rows; expected one row per particle")
    if "rlnImageName" not in particles.columns:
        raise UserInputError(f"{path}: column rlnImageName missing from data_{pblock}; expected "
                             "'NNNNNN@stack.mrcs' image references, one per particle")
    cols = _Columns(path, particles, pblock, optics, oblock)

    box = None
    if cols.has("rlnImageSize"):
        sizes = np.unique(cols.numeric("rlnImageSize"))
        if len(sizes) > 1:
            raise UserInputError(f"{path}: particles have several box sizes ({sizes}); "
                                 "expected one rlnImageSize")
        box = int(sizes[0])
    images = image_source_from_names(particles["rlnImageName"], path, datadir, [path.parent],
                                     box)
    pixel = _pixel_size(cols, path, pixel_size_A)
    if pixel is None:
        if images.voxel_size_A:
            log.warning("%s: no pixel size in the file; using %.4g Å from the header of %s "
                        "(pass --pixel-size to set it)", path, images.voxel_size_A,
                        next(iter(images.headers.values())).path)
            pixel = np.full(n, float(images.voxel_size_A))
        elif require_pixel_size:
            raise UserInputError(
                f"{path}: no pixel size: no rlnImagePixelSize (optics block), no "
                "rlnDetectorPixelSize/rlnMagnification and no readable image stack; pass "
                "--pixel-size")
        else:
            pixel = np.full(n, np.nan)

    euler = cols.group(ANGLE_COLUMNS, "angles")
    rotations = euler_deg_to_matrix(euler) if euler is not None else None

    origin_unit = None
    shifts_A = None
    origin_A = cols.group(ORIGIN_A_COLUMNS, "origins (Å)")
    if origin_A is not None:
        shifts_A, origin_unit = origin_A, "A"
    else:
        origin_px = cols.group(ORIGIN_PX_COLUMNS, "origins (pixels)")
        if origin_px is not None:
            shifts_A, origin_unit = shifts_px_to_A(origin_px, pixel), "px"

    ctf = None
    if cols.has("rlnDefocusU") or cols.has("rlnDefocusV"):
        uv = cols.group(("rlnDefocusU", "rlnDefocusV"), "CTF defocus")
        assert uv is not None
        ctf = CTFParams(
            defocus_u_A=uv[:, 0], defocus_v_A=uv[:, 1],
            astigmatism_angle_rad=np.deg2rad(cols.numeric("rlnDefocusAngle")),
            voltage_kv=cols.numeric("rlnVoltage"),
            cs_mm=cols.numeric("rlnSphericalAberration"),
            amplitude_contrast=_amplitude_contrast(cols, path),
            phase_shift_rad=np.deg2rad(cols.numeric("rlnPhaseShift", default=0.0)),
            bfactor_A2=cols.numeric("rlnCtfBfactor", default=0.0),
        )

    optics_group = cols.numeric("rlnOpticsGroup").astype(np.int64) if cols.has(
        "rlnOpticsGroup") else None
    random_subset = _random_subset(cols, path)
    return ParticleSet(
        n_particles=n, box_size=images.box_size, pixel_size_A=pixel, images=images,
        rotations=rotations, shifts_A=shifts_A, ctf=ctf, optics_group=optics_group,
        random_subset=random_subset,
        metadata={"format": "star", "path": str(path), "blocks": blocks,
                  "particles_block": pblock, "optics_block": oblock,
                  "origin_unit": origin_unit, "version": _file_version(path)},
    )


# ----------------------------------------------------------------------------------- writing


def _quoted(series: pd.Series) -> pd.Series:
    text = series.astype(str)
    needs = text.str.contains(r"\s", regex=True) | (text.str.len() == 0)
    return text.where(~needs, '"' + text + '"')


def write_star_blocks(path: str | Path, blocks: dict[str, Any],
                      version: str | None = None) -> Path:
    """Write STAR blocks (DataFrames as ``loop_``, dicts as key-value pairs) atomically.

    Floats are written losslessly (shortest round-trip text); strings with spaces are quoted.
    ``version`` (e.g. ``"30001"``) adds RELION's ``# version`` line before each block.
    """
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("# Written by hetsiren\n\n")
        for name, block in blocks.items():
            if version:
                fh.write(f"# version {version}\n\n")
            fh.write(f"data_{name}\n\n")
            if isinstance(block, dict):
                for key, value in block.items():
                    text = _quoted(pd.Series([value])).iloc[0] if isinstance(value, str) else (
                        repr(float(value)) if isinstance(value, float) else str(value))
                    fh.write(f"_{key}\t{text}\n")
                fh.write("\n\n")
                continue
            df = block.copy()
            fh.write("loop_\n")
            for i, col in enumerate(df.columns, 1):
                fh.write(f"_{col} #{i}\n")
            for col in df.columns:
                if not (pd.api.types.is_numeric_dtype(df[col]) or
                        pd.api.types.is_bool_dtype(df[col])):
                    df[col] = _quoted(df[col])
            df.to_csv(fh, sep="\t", header=False, index=False, quoting=csv.QUOTE_NONE,
                      float_format=None, lineterminator="\n")
            fh.write("\n\n")
    return Path(path)


def _check_rows(rows: np.ndarray | None, n: int) -> np.ndarray | None:
    if rows is None:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"rows must be 0-based indices below {n}")
    return rows


def _check_extra(extra: dict[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    out = {}
    for name, values in (extra or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"extra column {name}: expected shape ({n},), got {values.shape}")
        out[name] = values
    return out


def write_star(path: str | Path, particles: ParticleSet, rotations: np.ndarray | None = None,
               shifts_A: np.ndarray | None = None, rows: np.ndarray | None = None,
               extra_columns: dict[str, np.ndarray] | None = None,
               absolute_stack_paths: bool = False) -> Path:
    """Write ``particles`` as a STAR file, giving the user back their own file.

    Image stack paths are rewritten relative to the output's folder (absolute with
    ``absolute_stack_paths``), so that they resolve wherever the output is written.

    Args:
        path: output STAR.
        particles: from :func:`read_particles`. From a STAR, every block and column is kept;
            from a ``.cs`` or ``.mrcs``, a fresh RELION 3.1 file is built.
        rotations: ``(N, 3, 3)`` RELION matrices A replacing the angles (all particles).
        shifts_A: ``(N, 2)`` (x, y) origins in Å replacing the origins, written in the unit of
            the input's columns (pixels for ``rlnOriginX/Y``, Å for ``rlnOriginX/YAngst``).
        rows: sorted 0-based indices of the particles to keep (default all).
        extra_columns: name → ``(N,)`` values appended as columns (e.g. ``rlnHetsirenZ1``).
        absolute_stack_paths: write absolute stack paths (RELION resolves relative ones from
            the folder it runs in, not from the STAR's).
    """
    n = particles.n_particles
    rows = _check_rows(rows, n)
    extra = _check_extra(extra_columns, n)
    meta = particles.metadata
    relative_to = None if absolute_stack_paths else Path(path).parent
    if meta.get("format") != "star":
        return _write_fresh(path, particles, rotations, shifts_A, rows, extra, relative_to)
    blocks = dict(meta["blocks"])
    pblock = meta["particles_block"]
    df = blocks[pblock].copy()
    if rotations is not None:
        euler = matrix_to_euler_deg(np.asarray(rotations).reshape(n, 3, 3))
        for j, col in enumerate(ANGLE_COLUMNS):
            df[col] = euler[:, j]
    if shifts_A is not None:
        shifts_A = np.asarray(shifts_A, dtype=np.float64).reshape(n, 2)
        unit = meta.get("origin_unit")
        if unit is None:
            optics = blocks.get(meta.get("optics_block") or "")
            unit = "A" if isinstance(optics, pd.DataFrame) else "px"
        if unit == "A":
            df[ORIGIN_A_COLUMNS[0]], df[ORIGIN_A_COLUMNS[1]] = shifts_A[:, 0], shifts_A[:, 1]
        else:
            px = shifts_A_to_px(shifts_A, particles.pixel_size_A)
            df[ORIGIN_PX_COLUMNS[0]], df[ORIGIN_PX_COLUMNS[1]] = px[:, 0], px[:, 1]
    if isinstance(particles.images, MrcImageSource):
        df["rlnImageName"] = _rebased_image_names(df["rlnImageName"], particles.images,
                                                  relative_to)
    for name, values in extra.items():
        df[name] = values
    if rows is not None:
        df = df.iloc[rows].reset_index(drop=True)
    blocks[pblock] = df
    return write_star_blocks(path, blocks, version=meta.get("version"))


def _rebased_image_names(names: pd.Series, images: MrcImageSource, relative_to: Path | None
                         ) -> list[str]:
    """``NNNNNN@stack`` names with only the stack part changed (see ``stack_paths_to_write``)."""

    paths = stack_paths_to_write(images, relative_to)
    out = []
    for name, code in zip(names.astype(str).tolist(), images.stack_of_particle.tolist(),
                          strict=True):
        number, at, _ = name.rpartition("@") if "@" in name else ("", "", name)
        out.append(f"{number}{at}{paths[code]}")
    return out


def _fresh_blocks(image_names: Sequence[str], pixel_size_A: np.ndarray, box_size: int,
                  rotations: np.ndarray | None, shifts_A: np.ndarray | None,
                  ctf: CTFParams | None) -> dict[str, pd.DataFrame]:
    n = len(image_names)
    pixel = np.broadcast_to(np.asarray(pixel_size_A, dtype=np.float64), (n,))
    keys: dict[str, np.ndarray] = {"rlnImagePixelSize": pixel}
    if ctf is not None:
        keys.update(rlnVoltage=np.asarray(ctf.voltage_kv, dtype=np.float64),
                    rlnSphericalAberration=np.asarray(ctf.cs_mm, dtype=np.float64),
                    rlnAmplitudeContrast=np.asarray(ctf.amplitude_contrast, dtype=np.float64))
    table = pd.DataFrame(keys)
    optics = table.drop_duplicates().reset_index(drop=True)
    codes = table.merge(optics.reset_index(), on=list(table.columns), how="left")[
        "index"].to_numpy()
    k = len(optics)
    optics.insert(0, "rlnOpticsGroup", np.arange(1, k + 1))
    optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{i}" for i in range(1, k + 1)])
    optics.insert(3, "rlnImageSize", np.full(k, int(box_size)))
    optics.insert(4, "rlnImageDimensionality", np.full(k, 2))
    part: dict[str, Any] = {"rlnImageName": list(image_names)}
    if rotations is not None:
        euler = matrix_to_euler_deg(np.asarray(rotations).reshape(n, 3, 3))
        part.update(rlnAngleRot=euler[:, 0], rlnAngleTilt=euler[:, 1], rlnAnglePsi=euler[:, 2])
    if shifts_A is not None:
        s = np.asarray(shifts_A, dtype=np.float64).reshape(n, 2)
        part.update(rlnOriginXAngst=s[:, 0], rlnOriginYAngst=s[:, 1])
    if ctf is not None:
        part.update(rlnDefocusU=np.asarray(ctf.defocus_u_A, dtype=np.float64),
                    rlnDefocusV=np.asarray(ctf.defocus_v_A, dtype=np.float64),
                    rlnDefocusAngle=np.rad2deg(ctf.astigmatism_angle_rad),
                    rlnPhaseShift=np.rad2deg(ctf.phase_shift_rad),
                    rlnCtfBfactor=np.asarray(ctf.bfactor_A2, dtype=np.float64))
    part["rlnOpticsGroup"] = codes + 1
    return {"optics": optics, "particles": pd.DataFrame(part)}


def write_new_star(path: str | Path, image_names: Sequence[str], pixel_size_A: float,
                   box_size: int, rotations: np.ndarray | None, shifts_A: np.ndarray | None,
                   ctf: CTFParams | None) -> Path:
    """Write a fresh RELION 3.1 STAR (optics + particles blocks), atomically.

    Args:
        image_names: ``N`` references ``NNNNNN@stack.mrcs`` (1-based).
        pixel_size_A: pixel size of the images in Å.
        box_size: image size in pixels.
        rotations: ``(N, 3, 3)`` RELION matrices A, or None (no angle columns).
        shifts_A: ``(N, 2)`` (x, y) origins in Å, written as ``rlnOriginX/YAngst``, or None.
        ctf: per-particle CTF parameters, or None (no CTF columns). One optics group per
            distinct (pixel size, voltage, Cs, amplitude contrast).
    """
    blocks = _fresh_blocks(image_names, np.asarray(pixel_size_A), box_size, rotations, shifts_A,
                           ctf)
    return write_star_blocks(path, blocks, version="30001")


def _write_fresh(path: str | Path, particles: ParticleSet, rotations: np.ndarray | None,
                 shifts_A: np.ndarray | None, rows: np.ndarray | None,
                 extra: dict[str, np.ndarray], relative_to: Path | None) -> Path:

    names = image_names_of(particles, relative_to)
    rot = rotations if rotations is not None else particles.rotations
    sh = shifts_A if shifts_A is not None else particles.shifts_A
    blocks = _fresh_blocks(names, particles.pixel_size_A, particles.box_size, rot, sh,
                           particles.ctf)
    df = blocks["particles"]
    for name, values in extra.items():
        df[name] = values
    if rows is not None:
        df = df.iloc[rows].reset_index(drop=True)
    blocks["particles"] = df
    return write_star_blocks(path, blocks, version="30001")
