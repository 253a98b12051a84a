"""Read any particle file by its extension; describe a particle file for ``hetsiren info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hetsiren.errors import UserInputError
from hetsiren.io.cryosparc import read_cs_particles
from hetsiren.io.mrc import MrcImageSource, read_stack_header
from hetsiren.io.particles import ParticleSet
from hetsiren.io.star import read_star_particles

__all__ = ["describe_particles", "input_files", "read_particles"]


_STACK_SUFFIXES = (".mrcs", ".mrc", ".st")


def _read_mrcs(path: Path, pixel_size_A: float | None, require_pixel_size: bool) -> ParticleSet:
    header = read_stack_header(path)
    n = header.n_images
    images = MrcImageSource([path], np.zeros(n, dtype=np.int32), np.arange(n), source=path)
    if pixel_size_A is not None:
        if pixel_size_A <= 0:
            raise UserInputError(f"pixel size {pixel_size_A} Å given; expected a positive value")
        pixel = float(pixel_size_A)
    elif header.voxel_size_A > 0:
        pixel = header.voxel_size_A
    elif require_pixel_size:
        raise UserInputError(f"{path}: the header gives no pixel size (voxel size 0); pass "
                             "--pixel-size")
    else:
        pixel = np.nan
    return ParticleSet(n_particles=n, box_size=images.box_size, pixel_size_A=np.full(n, pixel),
                       images=images, metadata={"format": "mrcs", "path": str(path)})


def _read(path: str | Path, datadir: str | Path | None, pixel_size_A: float | None,
          require_pixel_size: bool, passthrough: str | Path | None) -> ParticleSet:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".star":
        return read_star_particles(path, datadir, pixel_size_A, require_pixel_size)
    if suffix == ".cs":
        return read_cs_particles(path, datadir, pixel_size_A, passthrough, require_pixel_size)
    if suffix in _STACK_SUFFIXES:
        if not path.is_file():
            raise UserInputError(f"{path}: file not found")
        return _read_mrcs(path, pixel_size_A, require_pixel_size)
    raise UserInputError(f"{path}: unknown particle file type {suffix!r}; expected .star "
                         "(RELION), .cs (cryoSPARC) or .mrcs/.mrc (image stack)")


def read_particles(path: str | Path, datadir: str | Path | None = None,
                   pixel_size_A: float | None = None, *, require_images: bool = False,
                   passthrough: str | Path | None = None) -> ParticleSet:
    """Read particles from a RELION ``.star``, cryoSPARC ``.cs`` or ``.mrcs`` stack.

    Images stay on disk (memory-mapped on demand). Stacks that are not found do not stop the
    metadata from being read: they are listed in ``particles.images.missing_stacks`` and
    reading an image from one raises :class:`UserInputError`. With ``require_images=True``
    the error comes here instead, before any work starts.

    Args:
        path: the particle file; the format follows the extension.
        datadir: folder holding the stacks, when the paths in the file do not resolve relative
            to the file's folder (tried as ``datadir/path`` then ``datadir/<basename>``).
        pixel_size_A: pixel size of the images in Å, overriding the file's (needed for files
            that have none).
        require_images: raise now if any image stack is missing.
        passthrough: cryoSPARC passthrough ``.cs`` holding fields the main file lacks.
    """
    particles = _read(path, datadir, pixel_size_A, True, passthrough)
    if require_images and isinstance(particles.images, MrcImageSource):
        particles.images.check_available()
    return particles


def input_files(particles: ParticleSet) -> list[Path]:
    """Every file a particle set is read from: the metadata file, a cryoSPARC passthrough and
    the image stacks found. Outputs are checked against these (hetsiren.outputs)."""
    meta = particles.metadata
    files = [Path(p) for p in (meta.get("path"), meta.get("passthrough")) if p]
    if isinstance(particles.images, MrcImageSource):
        files += [h.path for h in particles.images.headers.values()]
    return files


def read_rotations(path: str | Path) -> np.ndarray:
    """``(N, 3, 3)`` RELION rotation matrices of a particle file; no image or pixel size needed.

    Raises :class:`UserInputError` when the file holds no poses.
    """
    rotations = _read(path, None, None, False, None).rotations
    if rotations is None:
        raise UserInputError(f"{path}: no poses (rlnAngleRot/Tilt/Psi or alignments3D/pose) "
                             "in this file")
    return rotations


def _value_or_list(values: np.ndarray) -> Any:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return None
    uniq = np.unique(np.round(finite, 6))
    return float(uniq[0]) if len(uniq) == 1 else [float(v) for v in uniq]


def _optics_groups(p: ParticleSet) -> list[dict[str, Any]]:
    meta = p.metadata
    ctf = p.ctf
    groups: list[dict[str, Any]] = []
    optics = meta.get("blocks", {}).get(meta.get("optics_block") or "") if meta.get(
        "format") == "star" else None
    if optics is not None and p.optics_group is not None:
        for i, row in optics.reset_index(drop=True).iterrows():
            number = int(row["rlnOpticsGroup"])
            member = p.optics_group == number
            first = int(np.flatnonzero(member)[0]) if member.any() else None
            groups.append({
                "number": number,
                "name": str(row.get("rlnOpticsGroupName", f"opticsGroup{i + 1}")),
                "pixel_size_A": None if first is None else _num(p.pixel_size_A[first]),
                "voltage_kv": _ctf_at(ctf, "voltage_kv", first),
                "cs_mm": _ctf_at(ctf, "cs_mm", first),
                "amplitude_contrast": _ctf_at(ctf, "amplitude_contrast", first),
                "n_particles": int(member.sum()),
            })
        return groups
    # No optics block: one group per distinct (pixel size, voltage, Cs, amplitude contrast).
    cols = [p.pixel_size_A]
    if ctf is not None:
        cols += [ctf.voltage_kv, ctf.cs_mm, ctf.amplitude_contrast]
    table = np.round(np.stack(cols, axis=1), 6)
    # An unknown value (NaN: e.g. the pixel size of a RELION 3.0 file whose stacks are not
    # found) is one value, not one per particle: NaN never equals NaN, so give it one code.
    table[np.isnan(table)] = np.inf
    uniq, inverse, counts = np.unique(table, axis=0, return_inverse=True, return_counts=True)
    for k, (values, count) in enumerate(zip(uniq, counts, strict=True)):
        first = int(np.flatnonzero(inverse.reshape(-1) == k)[0])
        groups.append({
            "number": k + 1, "name": f"group{k + 1}", "pixel_size_A": _num(values[0]),
            "voltage_kv": _ctf_at(ctf, "voltage_kv", first),
            "cs_mm": _ctf_at(ctf, "cs_mm", first),
            "amplitude_contrast": _ctf_at(ctf, "amplitude_contrast", first),
            "n_particles": int(count),
        })
    return groups


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _ctf_at(ctf: Any, name: str, row: int | None) -> float | None:
    if ctf is None or row is None:
        return None
    return float(getattr(ctf, name)[row])


def describe_particles(path: str | Path, datadir: str | Path | None = None,
                       pixel_size_A: float | None = None) -> dict[str, Any]:
    """Summarise a particle file without reading any image.

    Returns a dict with ``format``, ``path``, ``n_particles``, ``box_size`` (None if unknown),
    ``pixel_size_A`` (float, a list when several, None if unknown), ``optics_groups`` (list of
    dicts: number, name, pixel_size_A, voltage_kv, cs_mm, amplitude_contrast, n_particles),
    ``has_poses``, ``has_shifts``, ``has_ctf``, ``n_stacks``, ``stacks_found`` and
    ``missing_stacks`` (list of paths).
    """
    p = _read(path, datadir, pixel_size_A, False, None)
    src = p.images
    missing = [str(m) for m in src.missing_stacks] if isinstance(src, MrcImageSource) else []
    n_stacks = len(src.stack_paths) if isinstance(src, MrcImageSource) else 0
    return {
        "format": p.metadata.get("format"),
        "path": str(path),
        "n_particles": p.n_particles,
        "box_size": p.box_size or None,
        "pixel_size_A": _value_or_list(p.pixel_size_A),
        "optics_groups": _optics_groups(p),
        "has_poses": p.has_poses,
        "has_shifts": p.shifts_A is not None,
        "has_ctf": p.has_ctf,
        "n_stacks": n_stacks,
        "stacks_found": n_stacks - len(missing),
        "missing_stacks": missing,
    }
