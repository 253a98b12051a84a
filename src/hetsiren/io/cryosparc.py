"""cryoSPARC ``.cs`` particle files (numpy structured arrays saved with ``np.save``).

Fields read: ``blob/path`` (bytes, relative to the project folder; a leading ``>`` as cryoSPARC
writes for imported files is stripped), ``blob/idx`` (0-based), ``blob/shape``,
``blob/psize_A``; ``alignments3D/pose`` (rotation vector of Aᵀ, converted by
:func:`hetsiren.geometry.rotvec_cryosparc_to_matrix`), ``alignments3D/shift`` (pixels at
``alignments3D/psize_A``, else ``blob/psize_A``; same sign as RELION's origin); ``ctf/df1_A``,
``ctf/df2_A``, ``ctf/df_angle_rad``, ``ctf/accel_kv``, ``ctf/cs_mm``, ``ctf/amp_contrast``,
optional ``ctf/phase_shift_rad`` and ``ctf/bfactor``; ``alignments3D/split`` (0/1, the
gold-standard half) when present.

Fields missing from the main file (cryoSPARC keeps some in a ``*passthrough*.cs`` beside it)
are taken from a passthrough file, matched by ``uid``: the one given, or the only
``*passthrough*.cs`` in the same folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hetsiren.errors import UserInputError
from hetsiren.geometry import (
    matrix_to_rotvec_cryosparc,
    rotvec_cryosparc_to_matrix,
    shifts_A_to_px,
)
from hetsiren.io.mrc import MrcImageSource
from hetsiren.io.particles import CTFParams, ParticleSet
from hetsiren.io.stacks import image_source_from_paths, stack_refs_of
from hetsiren.outputs import atomic_path

__all__ = ["read_cs_particles", "write_cs"]

log = logging.getLogger(__name__)

_CTF_REQUIRED = ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm",
                 "ctf/amp_contrast")
_NEEDED = ("blob/path", "blob/idx", "blob/psize_A", *_CTF_REQUIRED, "alignments3D/pose")


def _fields(arr: np.ndarray) -> tuple[str, ...]:
    """The field names of a structured array (``_load`` refuses arrays without)."""
    return arr.dtype.names or ()


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError on non-npy data
        raise UserInputError(f"{path}: not a cryoSPARC .cs file (expected a numpy structured "
                             f"array): {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.names is None or arr.ndim != 1:
        raise UserInputError(f"{path}: not a cryoSPARC .cs file (expected a 1D numpy "
                             "structured array with fields such as uid, blob/path)")
    return arr


def _merge_passthrough(path: Path, arr: np.ndarray, pt_path: Path) -> np.ndarray:
    pt = _load(pt_path)
    extra = [n for n in _fields(pt) if n not in _fields(arr)]
    if not extra:
        return arr
    if "uid" not in _fields(arr) or "uid" not in _fields(pt):
        raise UserInputError(f"{path}: cannot merge {pt_path}: field uid missing")
    order = np.argsort(pt["uid"])
    pos = np.searchsorted(pt["uid"], arr["uid"], sorter=order)
    pos = np.clip(pos, 0, len(pt) - 1)
    found = pt["uid"][order[pos]] == arr["uid"]
    if not found.all():
        row = int(np.flatnonzero(~found)[0])
        raise UserInputError(f"{path}: row {row + 1}: uid {arr['uid'][row]} not found in "
                             f"passthrough file {pt_path}")
    src = pt[order[pos]]
    merged = np.empty(len(arr), dtype=arr.dtype.descr + [d for d in pt.dtype.descr
                                                         if d[0] in extra])
    for name in _fields(arr):
        merged[name] = arr[name]
    for name in extra:
        merged[name] = src[name]
    log.info("%s: took %d fields from %s", path, len(extra), pt_path)
    return merged


def _field(path: Path, arr: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(arr[name], dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))[0])
        raise UserInputError(f"{path}: row {row + 1}, field {name}: expected finite numbers, "
                             f"got {arr[name][row]}")
    return values


def read_cs_particles(path: str | Path, datadir: str | Path | None = None,
                      pixel_size_A: float | None = None, passthrough: str | Path | None = None,
                      require_pixel_size: bool = True) -> ParticleSet:
    """Read a cryoSPARC particle ``.cs`` (optionally with its passthrough) into a ParticleSet."""
    path = Path(path)
    arr = _load(path)
    n = len(arr)
    if n == 0:
        raise UserInputError(f"{path}: no particles")
    pt_path = Path(passthrough) if passthrough is not None else None
    if pt_path is None and any(f not in _fields(arr) for f in _NEEDED):
        candidates = [p for p in sorted(path.parent.glob("*passthrough*.cs")) if p != path]
        if len(candidates) == 1:
            pt_path = candidates[0]
    if pt_path is not None:
        arr = _merge_passthrough(path, arr, pt_path)
    names = _fields(arr)

    for required in ("blob/path", "blob/idx"):
        if required not in names:
            raise UserInputError(
                f"{path}: field {required} missing; expected the particle image references "
                "(export the particles job, or give its *_passthrough_particles.cs)")
    stack_names = np.char.decode(np.asarray(arr["blob/path"], dtype=bytes), "utf-8")
    stack_names = np.char.lstrip(stack_names, ">")
    box = None
    if "blob/shape" in names:
        shapes = np.unique(np.asarray(arr["blob/shape"]).reshape(n, -1), axis=0)
        if len(shapes) > 1 or shapes[0][0] != shapes[0][-1]:
            raise UserInputError(f"{path}: field blob/shape: expected one square image shape, "
                                 f"got {shapes.tolist()}")
        box = int(shapes[0][0])
    images = image_source_from_paths(stack_names.astype(object),
                                     np.asarray(arr["blob/idx"], dtype=np.int64), path, datadir,
                                     [path.parent, path.parent.parent], box)

    if pixel_size_A is not None:
        if pixel_size_A <= 0:
            raise UserInputError(f"pixel size {pixel_size_A} Å given; expected a positive value")
        pixel = np.full(n, float(pixel_size_A))
    elif "blob/psize_A" in names:
        pixel = _field(path, arr, "blob/psize_A")
        bad = ~(np.isfinite(pixel) & (pixel > 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserInputError(
                f"{path}: row {row + 1}, field blob/psize_A: pixel size {pixel[row]:g} Å; "
                "expected a positive value (or pass --pixel-size)")
    elif images.voxel_size_A:
        pixel = np.full(n, float(images.voxel_size_A))
    elif require_pixel_size:
        raise UserInputError(f"{path}: no pixel size (field blob/psize_A missing); pass "
                             "--pixel-size")
    else:
        pixel = np.full(n, np.nan)

    rotations = None
    if "alignments3D/pose" in names:
        rotations = rotvec_cryosparc_to_matrix(_field(path, arr, "alignments3D/pose"))
    shifts_A = None
    if "alignments3D/shift" in names:
        shift_px = _field(path, arr, "alignments3D/shift").reshape(n, 2)
        psize = (_field(path, arr, "alignments3D/psize_A") if "alignments3D/psize_A" in names
                 else pixel)
        shifts_A = shift_px * psize.reshape(-1, 1)

    ctf = None
    present = [f for f in _CTF_REQUIRED if f in names]
    if present:
        missing = [f for f in _CTF_REQUIRED if f not in names]
        if missing:
            raise UserInputError(f"{path}: CTF incomplete: field(s) {', '.join(missing)} "
                                 f"missing (found {', '.join(present)})")

        def opt(name: str) -> np.ndarray:
            return _field(path, arr, name) if name in names else np.zeros(n)

        ctf = CTFParams(
            defocus_u_A=_field(path, arr, "ctf/df1_A"),
            defocus_v_A=_field(path, arr, "ctf/df2_A"),
            astigmatism_angle_rad=_field(path, arr, "ctf/df_angle_rad"),
            voltage_kv=_field(path, arr, "ctf/accel_kv"),
            cs_mm=_field(path, arr, "ctf/cs_mm"),
            amplitude_contrast=_field(path, arr, "ctf/amp_contrast"),
            phase_shift_rad=opt("ctf/phase_shift_rad"),
            bfactor_A2=opt("ctf/bfactor"),
        )
    random_subset = None
    if "alignments3D/split" in names:
        split = _field(path, arr, "alignments3D/split")
        if not np.isin(split, (0, 1)).all():
            row = int(np.flatnonzero(~np.isin(split, (0, 1)))[0])
            raise UserInputError(f"{path}: row {row + 1}, field alignments3D/split: got "
                                 f"{split[row]:g}; expected 0 or 1 (the gold-standard half)")
        random_subset = split.astype(np.int64) + 1
    return ParticleSet(
        n_particles=n, box_size=images.box_size, pixel_size_A=pixel, images=images,
        rotations=rotations, shifts_A=shifts_A, ctf=ctf, optics_group=None,
        random_subset=random_subset,
        metadata={"format": "cs", "path": str(path), "array": arr,
                  "passthrough": str(pt_path) if pt_path else None},
    )


def _save_cs(path: str | Path, arr: np.ndarray) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
    return Path(path)


def _encoded_stack_paths(particles: ParticleSet, relative_to: Path | None
                         ) -> tuple[np.ndarray, np.ndarray]:

    stack_paths, index0 = stack_refs_of(particles, relative_to)
    return np.char.encode(np.asarray(stack_paths, dtype=str), "utf-8"), index0


def _with_stack_paths(arr: np.ndarray, encoded: np.ndarray) -> np.ndarray:
    """``arr`` with ``encoded`` in its ``blob/path`` field (widened when needed)."""
    if np.array_equal(encoded, arr["blob/path"]):
        return arr
    width = f"S{max(encoded.dtype.itemsize, arr.dtype['blob/path'].itemsize)}"
    descr = [(name, width) if name == "blob/path" else (name, *rest)
             for name, *rest in arr.dtype.descr if name]
    out = np.empty(len(arr), dtype=descr)
    for name in _fields(arr):
        out[name] = encoded if name == "blob/path" else arr[name]
    return out


def _fresh_cs(particles: ParticleSet, relative_to: Path | None) -> np.ndarray:
    n = particles.n_particles
    encoded, index0 = _encoded_stack_paths(particles, relative_to)
    fields: list[tuple[str, Any, Any]] = [
        ("uid", "<u8", None), ("blob/path", encoded.dtype.str, None), ("blob/idx", "<u4", None),
        ("blob/shape", "<u4", (2,)), ("blob/psize_A", "<f4", None)]
    if particles.rotations is not None:
        fields += [("alignments3D/pose", "<f4", (3,))]
    if particles.shifts_A is not None:
        fields += [("alignments3D/shift", "<f4", (2,)), ("alignments3D/psize_A", "<f4", None)]
    if particles.ctf is not None:
        fields += [(f, "<f4", None) for f in (*_CTF_REQUIRED, "ctf/phase_shift_rad",
                                              "ctf/bfactor")]
    dtype = np.dtype([(f, t) if s is None else (f, t, s) for f, t, s in fields])
    arr = np.zeros(n, dtype=dtype)
    # cryoSPARC uids are random 64-bit integers; a fixed seed keeps outputs reproducible.
    rng = np.random.default_rng(0)
    uid = rng.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64)
    while len(np.unique(uid)) != n:
        uid = rng.integers(0, np.iinfo(np.int64).max, size=n, dtype=np.int64).astype(np.uint64)
    arr["uid"] = uid
    arr["blob/path"] = encoded
    arr["blob/idx"] = index0
    arr["blob/shape"] = particles.box_size
    arr["blob/psize_A"] = particles.pixel_size_A
    if particles.rotations is not None:
        arr["alignments3D/pose"] = matrix_to_rotvec_cryosparc(particles.rotations)
    if particles.shifts_A is not None:
        arr["alignments3D/shift"] = shifts_A_to_px(particles.shifts_A, particles.pixel_size_A)
        arr["alignments3D/psize_A"] = particles.pixel_size_A
    ctf = particles.ctf
    if ctf is not None:
        arr["ctf/df1_A"] = ctf.defocus_u_A
        arr["ctf/df2_A"] = ctf.defocus_v_A
        arr["ctf/df_angle_rad"] = ctf.astigmatism_angle_rad
        arr["ctf/accel_kv"] = ctf.voltage_kv
        arr["ctf/cs_mm"] = ctf.cs_mm
        arr["ctf/amp_contrast"] = ctf.amplitude_contrast
        arr["ctf/phase_shift_rad"] = ctf.phase_shift_rad
        arr["ctf/bfactor"] = ctf.bfactor_A2
    return arr


def write_cs(path: str | Path, particles: ParticleSet, rows: np.ndarray | None = None,
             extra_columns: dict[str, np.ndarray] | None = None,
             absolute_stack_paths: bool = False) -> Path:
    """Write ``particles`` as a cryoSPARC ``.cs``, atomically.

    From a ``.cs`` every field (passthrough included) is kept; otherwise a fresh array is built
    (uid, blob/*, alignments3D/* in pixels, ctf/*). ``rows``: sorted 0-based indices to keep;
    ``extra_columns``: name → ``(N,)`` values added as float32 fields. ``blob/path`` is
    rewritten relative to the output's folder, as :func:`write_star` does (absolute with
    ``absolute_stack_paths``).
    """
    n = particles.n_particles
    relative_to = None if absolute_stack_paths else Path(path).parent
    if particles.metadata.get("format") == "cs":
        arr = particles.metadata["array"]
        if isinstance(particles.images, MrcImageSource):
            arr = _with_stack_paths(arr, _encoded_stack_paths(particles, relative_to)[0])
    else:
        arr = _fresh_cs(particles, relative_to)
    extra = {}
    for name, values in (extra_columns or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(f"extra column {name}: expected shape ({n},), got {values.shape}")
        extra[name] = values
    if extra:
        kept = [d for d in arr.dtype.descr if d[0] and d[0] not in extra]
        out = np.empty(n, dtype=kept + [(name, "<f4") for name in extra])
        for d in kept:
            out[d[0]] = arr[d[0]]
        for name, values in extra.items():
            out[name] = values
        arr = out
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"rows must be 0-based indices below {n}")
        arr = arr[rows]
    return _save_cs(path, arr)
