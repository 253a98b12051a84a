"""Choosing particles on the landscape and writing them back for RELION / cryoSPARC.

A selection is a sorted array of 0-based particle indices (rows of the input file = rows of
``latent.npy``). Three ways to make one:

- clusters: KMeans labels written by ``hetsiren analyze`` (``RUN/analysis/labels.npy``); if they
  are missing, the clustering is re-run with the k and seed stored in ``clusters.json`` (or
  the k given).
- an indices file: ``.npy`` of integers, or text with integers separated by spaces, commas or
  newlines (``#`` starts a comment); see ``hetsiren.io.indices``.
- a region file (JSON), one of::

      {"space": "pca", "pcs": [1, 2], "polygon": [[x1, y1], [x2, y2], [x3, y3], ...]}
      {"space": "pca", "pcs": [1, 2, 3], "min": [a1, a2, a3], "max": [b1, b2, b3]}
      {"space": "umap", "polygon": [[x1, y1], ...]}
      {"space": "latent", "min": [a1, ..., a_zdim], "max": [b1, ..., b_zdim]}

  ``pcs`` are 1-based principal components of the latent (default [1, 2]), computed as
  ``analyze`` computed them (``RUN/analysis/pca.npz``; re-fitted with the same sign convention
  when absent). ``umap`` uses ``RUN/analysis/umap.npy`` (first two dimensions). A box takes the
  particles with ``min <= coordinate <= max`` on every listed axis; ``null`` leaves a bound
  open. A polygon takes the particles inside it (the report's lasso downloads one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hetsiren.analysis.landscape import LatentPCA, cluster_latent, fit_pca
from hetsiren.errors import UserInputError
from hetsiren.io.indices import read_indices
from hetsiren.outputs import check_outputs
from hetsiren.rundir import (
    ANALYSIS_FILES,
    analysis_folder,
    load_latent,
    read_run_config,
    run_inputs,
)

__all__ = [
    "ExportResult",
    "Region",
    "export_particles",
    "export_subset",
    "latent_column_names",
    "load_labels",
    "load_pca",
    "read_indices",
    "read_region",
    "select_clusters",
    "select_region",
]

log = logging.getLogger(__name__)

Space = Literal["pca", "umap", "latent"]
OutputFormat = Literal["star", "cs"]


# --------------------------------------------------------------------------------------------
# clusters
# --------------------------------------------------------------------------------------------
def load_labels(run_dir: str | Path, z: np.ndarray, k: int | None = None, seed: int | None = None
                ) -> np.ndarray:
    """``(N,)`` KMeans labels of a run: ``analysis/labels.npy``, or re-clustered when missing.

    Args:
        run_dir: the run directory.
        z: ``(N, zdim)`` its latent vectors.
        k: clusters to use when re-clustering (default: ``clusters.json``'s k). When given and
            different from the stored clustering's k, the clustering is redone with it.
        seed: KMeans seed when re-clustering (default: the stored one, else 0).
    """
    out = analysis_folder(run_dir)
    clusters_path = out / ANALYSIS_FILES["clusters"]
    stored: dict[str, Any] = {}
    if clusters_path.is_file():
        try:
            stored = json.loads(clusters_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable (%s); ignoring it", clusters_path, exc)
    labels_path = out / ANALYSIS_FILES["labels"]
    if labels_path.is_file() and (k is None or k == stored.get("k")):
        labels = np.load(labels_path)
        if labels.shape == (len(z),):
            return labels.astype(np.int64)
        log.warning("%s has %d labels for %d particles; re-clustering", labels_path,
                    len(labels), len(z))
    k = k if k is not None else stored.get("k")
    if k is None:
        raise UserInputError(
            f"{run_dir}: no clustering found (analysis/labels.npy); run `hetsiren analyze "
            f"{run_dir}` first or pass --k")
    seed = seed if seed is not None else int(stored.get("seed", 0))
    log.info("clustering the latent with k=%d (seed %d)", k, seed)
    return cluster_latent(z, int(k), seed=seed).labels


def select_clusters(labels: np.ndarray, clusters: Sequence[int]) -> np.ndarray:
    """Sorted indices of the particles whose ``(N,)`` label is in ``clusters``."""
    k = int(labels.max()) + 1 if len(labels) else 0
    bad = [c for c in clusters if not 0 <= c < k]
    if bad:
        raise UserInputError(
            f"--clusters {','.join(map(str, bad))}: clusters are numbered 0..{k - 1}")
    return np.flatnonzero(np.isin(labels, np.asarray(list(clusters))))


# --------------------------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A region of the landscape (see the module docstring for the file format)."""

    space: Space
    axes: tuple[int, ...]
    """1-based PCs (pca), (1, 2) (umap) or latent dimensions (latent) the region is drawn on."""
    polygon: np.ndarray | None = None
    """``(m, 2)`` vertices, or None for a box."""
    lower: np.ndarray | None = None
    """``(len(axes),)`` box lower bounds (-inf = open)."""
    upper: np.ndarray | None = None
    """``(len(axes),)`` box upper bounds (+inf = open)."""


def _bounds(values: Any, n: int, fill: float, where: str) -> np.ndarray:
    if values is None:
        return np.full(n, fill)
    if not isinstance(values, list) or len(values) != n:
        raise UserInputError(f"{where}: expected a list of {n} numbers (or null)")
    try:
        return np.array([fill if v is None else float(v) for v in values])
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{where}: expected numbers or null ({exc})") from exc


def read_region(path: str | Path, zdim: int) -> Region:
    """Parse and check a region file for a latent of ``zdim`` dimensions."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read the region file ({exc})") from exc
    if not isinstance(spec, dict) or spec.get("space") not in ("pca", "umap", "latent"):
        raise UserInputError(
            f"{path}: a region is a JSON object with \"space\": \"pca\", \"umap\" or \"latent\" "
            "(see `hetsiren export --help`)")
    space: Space = spec["space"]
    if space == "latent":
        axes = tuple(range(1, zdim + 1))
    elif space == "umap":
        axes = (1, 2)
    else:
        raw = spec.get("pcs", [1, 2])
        if (not isinstance(raw, list) or not raw
                or not all(isinstance(a, int) and not isinstance(a, bool) and 1 <= a <= zdim
                           for a in raw)):
            raise UserInputError(f"{path}: \"pcs\" must list PC numbers 1..{zdim}, got {raw}")
        axes = tuple(raw)
    if "polygon" in spec:
        if space == "latent":
            raise UserInputError(f"{path}: a polygon needs a 2D space (pca or umap)")
        if len(axes) != 2:
            raise UserInputError(f"{path}: a polygon needs exactly two \"pcs\", got {list(axes)}")
        try:
            poly = np.asarray(spec["polygon"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"{path}: \"polygon\" must be [[x, y], ...] ({exc})") from exc
        if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3 or not np.isfinite(poly).all():
            raise UserInputError(
                f"{path}: \"polygon\" must be at least 3 finite [x, y] vertices, got shape "
                f"{poly.shape}")
        return Region(space=space, axes=axes, polygon=poly)
    if "min" in spec or "max" in spec:
        lower = _bounds(spec.get("min"), len(axes), -np.inf, f"{path}: \"min\"")
        upper = _bounds(spec.get("max"), len(axes), np.inf, f"{path}: \"max\"")
        if np.any(lower > upper):
            raise UserInputError(f"{path}: \"min\" exceeds \"max\" on some axis")
        return Region(space=space, axes=axes, lower=lower, upper=upper)
    raise UserInputError(f"{path}: give a \"polygon\" or a box (\"min\"/\"max\")")


def load_pca(run_dir: str | Path, z: np.ndarray) -> LatentPCA:
    """The PCA ``analyze`` stored (``analysis/pca.npz``), or a new fit of ``z``."""
    path = analysis_folder(run_dir) / ANALYSIS_FILES["pca"]
    if path.is_file():
        with np.load(path) as f:
            pca = LatentPCA(mean=f["mean"], components=f["components"],
                            explained_variance_ratio=f["explained_variance_ratio"])
        if pca.mean.shape == (z.shape[1],):
            return pca
        log.warning("%s does not match the latent's dimension; re-fitting the PCA", path)
    return fit_pca(z)


def select_region(region: Region, z: np.ndarray, run_dir: str | Path) -> np.ndarray:
    """Sorted indices of the particles of ``(N, zdim)`` z inside ``region``."""
    from matplotlib.path import Path as PolygonPath

    if region.space == "latent":
        coords = np.asarray(z, dtype=np.float64)
    elif region.space == "pca":
        pca = load_pca(run_dir, z)
        if max(region.axes) > len(pca.components):
            raise UserInputError(f"PC{max(region.axes)} does not exist for this run")
        coords = pca.transform(z)[:, [a - 1 for a in region.axes]]
    else:
        path = analysis_folder(run_dir) / ANALYSIS_FILES["umap"]
        if not path.is_file():
            raise UserInputError(
                f"{path}: not found; a UMAP region needs `hetsiren analyze {run_dir} --umap` "
                "first")
        coords = np.load(path)[:, :2].astype(np.float64)
        if len(coords) != len(z):
            raise UserInputError(f"{path}: has {len(coords)} rows, the latent {len(z)}")
    if region.polygon is not None:
        inside = PolygonPath(region.polygon).contains_points(coords)
    else:
        inside = np.all((coords >= region.lower) & (coords <= region.upper), axis=1)
    return np.flatnonzero(inside)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def latent_column_names(zdim: int, fmt: OutputFormat) -> list[str]:
    """Column names for z: ``rlnHetsirenZ01``... (STAR) or ``hetsiren/z01``... (cryoSPARC)."""
    if fmt == "star":
        return [f"rlnHetsirenZ{i + 1:02d}" for i in range(zdim)]
    return [f"hetsiren/z{i + 1:02d}" for i in range(zdim)]


def export_particles(particles: Any, rows: np.ndarray, out_path: str | Path,
                     z: np.ndarray | None = None, extra: dict[str, np.ndarray] | None = None,
                     absolute_stack_paths: bool = False) -> Path:
    """Write the particles at ``rows`` (sorted, 0-based) of ``particles`` to ``out_path``.

    The format follows the extension (``.star`` or ``.cs``); every column of the input and its
    optics block are kept (io's writers). ``z`` (``(N, zdim)``, all particles) adds the latent
    vectors of the selected rows as extra columns; ``extra`` adds other ``(N,)`` columns.
    Image stack paths are written relative to the output's folder, or absolute with
    ``absolute_stack_paths`` (what RELION needs when it runs from another folder).
    """
    from hetsiren.io import write_cs, write_star

    out_path = Path(out_path)
    fmt: OutputFormat
    if out_path.suffix.lower() == ".star":
        fmt = "star"
    elif out_path.suffix.lower() == ".cs":
        fmt = "cs"
    else:
        raise UserInputError(f"{out_path}: the output must end in .star (RELION) or .cs "
                             "(cryoSPARC)")
    columns: dict[str, np.ndarray] = {}
    if z is not None:
        for j, name in enumerate(latent_column_names(z.shape[1], fmt)):
            columns[name] = np.asarray(z[:, j], dtype=np.float32)
    for name, values in (extra or {}).items():
        columns[name] = np.asarray(values)
    writer = write_star if fmt == "star" else write_cs
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer(out_path, particles, rows=np.asarray(rows, dtype=np.int64),
           extra_columns=columns or None, absolute_stack_paths=absolute_stack_paths)
    return out_path


@dataclass(frozen=True)
class ExportResult:
    path: Path
    rows: np.ndarray
    """Sorted 0-based indices of the exported particles."""
    n_particles: int


def export_subset(run_dir: str | Path, out_path: str | Path,
                  clusters: Sequence[int] | None = None, indices: str | Path | None = None,
                  region: str | Path | None = None, add_latent: bool = False,
                  particles: str | Path | None = None, datadir: str | None = None,
                  k: int | None = None, absolute_stack_paths: bool = False) -> ExportResult:
    """Write the particles of a run chosen by clusters, an indices file or a region.

    Criteria given together are intersected (e.g. clusters 3 and 7 inside a PC box).

    Args:
        run_dir: the training run.
        out_path: ``.star`` or ``.cs``.
        clusters: cluster numbers (from 0, as ``analyze`` writes them).
        indices: file of 0-based particle indices (.npy or text).
        region: region JSON (module docstring).
        add_latent: add z as extra columns (``rlnHetsirenZ01``... / ``hetsiren/z01``...).
        particles: the particle file the run was trained on (default: the one in its config).
        datadir: folder of the image stacks (default: the config's).
        k: clusters to use when the run has no stored labels (or to re-cluster with).
        absolute_stack_paths: write absolute image stack paths (default: relative to the
            output's folder).
    """
    from hetsiren.io import input_files, read_particles

    if clusters is None and indices is None and region is None:
        raise UserInputError("choose particles with --clusters, --indices or --region")
    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    cfg = record.get("config", {})
    z = load_latent(run_dir)
    n = len(z)
    keep = np.ones(n, dtype=bool)
    if clusters is not None:
        sel = np.zeros(n, dtype=bool)
        sel[select_clusters(load_labels(run_dir, z, k=k), clusters)] = True
        keep &= sel
    if indices is not None:
        sel = np.zeros(n, dtype=bool)
        sel[read_indices(indices, n)] = True
        keep &= sel
    if region is not None:
        sel = np.zeros(n, dtype=bool)
        sel[select_region(read_region(region, z.shape[1]), z, run_dir)] = True
        keep &= sel
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise UserInputError("the selection is empty: no particle matches all the criteria")
    source = particles or cfg.get("particles")
    if not source:
        raise UserInputError(f"{run_dir}/config.json names no particle file; pass --particles")
    if not Path(source).exists():
        raise UserInputError(
            f"{source}: the run's particle file is not there (moved?); pass --particles FILE")
    pset = read_particles(source, datadir=datadir or cfg.get("datadir"),
                          pixel_size_A=cfg.get("pixel_size_A"))
    check_outputs(files=[out_path],
                  inputs=[*run_inputs(run_dir), *input_files(pset), indices, region])
    if pset.n_particles != n:
        raise UserInputError(
            f"{source} has {pset.n_particles} particles but {run_dir}/latent.npy has {n}: "
            "pass the particle file the run was trained on")
    path = export_particles(pset, rows, out_path, z=z if add_latent else None,
                            absolute_stack_paths=absolute_stack_paths)
    log.debug("wrote %d of %d particles to %s", len(rows), n, path)
    return ExportResult(path=Path(path), rows=rows, n_particles=n)
