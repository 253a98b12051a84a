"""A ChimeraX command script (``.cxc``) that opens the maps ``analyze`` decodes.

Paths in the script are relative to the script's folder (``RUN/analysis``); ChimeraX runs a
command script from its own folder, so the script keeps working when the run is copied
elsewhere. Model numbers are fixed by closing the session first: cluster maps are #1..#k (tiled,
coloured as in the landscape plots), each PC trajectory is one volume series after them,
hidden, ready to play with ``vseries play``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hetsiren.rundir import atomic_write

__all__ = ["MapSeries", "contour_level", "write_chimerax_script", "write_movie_script"]

# Contour at the level enclosing this fraction of the box, a typical particle's share of the
# inscribed sphere for cryo-EM boxes (about 1.5-2x the particle diameter); the user adjusts it.
_ENCLOSED_FRACTION = 0.05


@dataclass(frozen=True)
class MapSeries:
    """One set of maps for the script."""

    name: str
    """Short label, e.g. ``clusters`` or ``pc1``."""
    paths: Sequence[Path]
    """Map files, in order."""
    level: float
    """Contour level for all of them."""
    trajectory: bool
    """Open as one volume series (to play) rather than as separate models."""
    colours: Sequence[str] | None = None
    """Hex colour per map (separate models only)."""


def contour_level(volume: np.ndarray, enclosed_fraction: float = _ENCLOSED_FRACTION) -> float:
    """Surface level of one ``(D, D, D)`` map: the value ``enclosed_fraction`` of its voxels
    exceed (half the maximum when that is not positive). A series uses the median of its maps'
    levels, so that one odd map does not set it."""
    values = np.asarray(volume, dtype=np.float32).reshape(-1)
    level = float(np.quantile(values, 1 - enclosed_fraction))
    if not (np.isfinite(level) and level > 0):
        level = float(values.max()) / 2
    return level


def _spec(first: int, last: int) -> str:
    return f"#{first}" if first == last else f"#{first}-{last}"


def write_chimerax_script(path: str | Path, series: Sequence[MapSeries]) -> Path:
    """Write the ``.cxc`` script opening each series (paths relative to the script's folder)."""
    path = Path(path)
    lines = [
        "# HetSIREN analysis: open in ChimeraX with  open " + path.name,
        "# (from this folder, or give the full path; map paths below are relative to it)",
        "close session",
        "set bgColor white",
        "lighting soft",
    ]
    model = 1
    played: list[tuple[str, int]] = []
    for s in series:
        if not s.paths:
            continue
        rel = [_relative_to(p, path.parent) for p in s.paths]
        lines.append(f"# {s.name}: {len(rel)} maps")
        if s.trajectory:
            pattern = _common_glob(rel)
            lines.append(f"open {pattern} vseries true")
            lines.append(f"volume #{model} style surface level {s.level:.6g} step 1")
            lines.append(f"rename #{model} {s.name}")
            lines.append(f"hide #{model} models")
            played.append((s.name, model))
            model += 1
        else:
            first = model
            for r in rel:
                lines.append(f"open {r}")
                model += 1
            last = model - 1
            lines.append(f"volume {_spec(first, last)} style surface level {s.level:.6g} step 1")
            for i, colour in enumerate(s.colours or []):
                lines.append(f"volume #{first + i} color {colour}")
            lines.append(f"tile {_spec(first, last)}")
    lines.append("view")
    for name, m in played:
        lines.append(f"# play the {name} trajectory:  show #{m} models; "
                     f"vseries play #{m} loop true direction oscillate maxFrameRate 5")
    if played:
        name, m = played[0]
        lines.append(f"# (a slider for any series:  vseries slider #{m})")
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


# Maps shown per second in a recorded movie, and ChimeraX's graphics frame rate (its default
# 60/s): `wait` counts frames, so one back-and-forth pass of n maps lasts 2n/8 s = 15n frames.
_MOVIE_MAPS_PER_S = 8
_CHIMERAX_FPS = 60


def write_movie_script(path: str | Path, series: MapSeries, movie: str = "movie.mp4") -> Path:
    """Write a ``.cxc`` that opens one map series as a volume series, plays it and records
    ``movie`` (next to the script); paths are relative to the script's folder."""
    path = Path(path)
    rel = [_relative_to(p, path.parent) for p in series.paths]
    frames = round(2 * len(rel) / _MOVIE_MAPS_PER_S * _CHIMERAX_FPS)
    lines = [
        "# HetSIREN trajectory movie: open in ChimeraX with  open " + path.name,
        "# (map paths below are relative to this script's folder)",
        "close session",
        "set bgColor white",
        "lighting soft",
        f"open {_common_glob(rel)} vseries true",
        f"volume #1 style surface level {series.level:.6g} step 1",
        f"rename #1 {series.name}",
        "view",
        "movie record supersample 3",
        f"vseries play #1 loop true direction oscillate maxFrameRate {_MOVIE_MAPS_PER_S}",
        f"wait {frames}",
        "vseries stop #1",
        f"movie encode {movie} framerate {_CHIMERAX_FPS}",
        "# to look without recording:  vseries play #1 loop true direction oscillate",
    ]
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` as seen from ``folder`` (ChimeraX runs a script from the script's folder), for
    absolute and working-directory-relative paths alike."""
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def _common_glob(paths: Sequence[str]) -> str:
    """``a/pc1_00.mrc, a/pc1_01.mrc`` → ``a/pc1_*.mrc`` when that matches exactly these names
    in sorted order; otherwise the names themselves, space separated."""
    folder = {str(Path(p).parent) for p in paths}
    stems = [Path(p).name for p in paths]
    prefix = _common_prefix(stems)
    if len(folder) == 1 and prefix and sorted(stems) == stems and all(
            s.endswith(".mrc") for s in stems):
        return (Path(next(iter(folder))) / f"{prefix}*.mrc").as_posix()
    return " ".join(paths)


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]
