"""Reductions and clustering of the latent space (the paper's landscape exploration).

All clustering and distances work on the full latent vectors z, never on a 2D embedding: PCA
and UMAP are for looking only (paper Figs. 2, 5, 7: KMeans "of the original latent space",
maps decoded at the cluster representatives, maps sampled along the leading PC).

Shapes: ``z`` is ``(N, zdim)`` float32, row i = particle i of the input file.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

from hetsiren.errors import UserInputError

__all__ = [
    "Clustering",
    "LatentPCA",
    "cluster_latent",
    "embed_umap",
    "fit_pca",
    "nearest_particles",
    "representatives",
    "sample_pc",
]

log = logging.getLogger(__name__)

UMAP_HINT = ("UMAP needs umap-learn: pip install umap-learn (in the environment hetsiren runs "
             "in; from a source checkout, pip install -e '.[analysis]' does the same)")
# KMeans restarts: enough for stable centres on well-separated landscapes, cheap at N = 1e6.
_KMEANS_INIT = 10


@dataclass(frozen=True)
class LatentPCA:
    """A PCA of the latent space: ``coords = (z - mean) @ components.T``."""

    mean: np.ndarray
    """``(zdim,)`` latent mean."""
    components: np.ndarray
    """``(p, zdim)`` unit principal axes, PC1 first (sign fixed: largest |loading| > 0)."""
    explained_variance_ratio: np.ndarray
    """``(p,)`` fraction of the latent variance along each axis."""

    def transform(self, z: np.ndarray) -> np.ndarray:
        """``(N, zdim)`` latent → ``(N, p)`` PC coordinates."""
        return (np.asarray(z, dtype=np.float64) - self.mean) @ self.components.T

    def inverse(self, coords: np.ndarray) -> np.ndarray:
        """``(N, p)`` PC coordinates → ``(N, zdim)`` latent points on the PC subspace."""
        return (self.mean + np.asarray(coords, dtype=np.float64) @ self.components).astype(
            np.float32)

    def to_npz(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "components": self.components,
                "explained_variance_ratio": self.explained_variance_ratio}


def _check_latent(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim != 2 or len(z) == 0:
        raise UserInputError(f"latent vectors must be (N, zdim) with N >= 1, got {z.shape}")
    if not np.isfinite(z).all():
        bad = int((~np.isfinite(z)).any(1).sum())
        raise UserInputError(f"{bad} latent vectors contain NaN or Inf; retrain or re-encode")
    return z


def fit_pca(z: np.ndarray, n_components: int | None = None) -> LatentPCA:
    """Principal axes of ``(N, zdim)`` z; all of them when ``n_components`` is None.

    Axis signs are made deterministic (the largest-magnitude loading is positive), so that a
    region drawn in PC space (see ``hetsiren.analysis.select``) means the same on re-fitting.
    """
    z = _check_latent(z).astype(np.float64)
    p = min(z.shape) if n_components is None else min(n_components, *z.shape)
    pca = PCA(n_components=p, svd_solver="full").fit(z)
    components = pca.components_.copy()
    flip = np.sign(components[np.arange(p), np.abs(components).argmax(1)])
    components *= np.where(flip == 0, 1, flip)[:, None]
    ratio = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
    if not np.any(pca.explained_variance_ > 0):
        log.warning("the latent vectors are all the same: the landscape shows nothing (has the "
                    "training collapsed? see log.jsonl)")
    return LatentPCA(mean=pca.mean_, components=components, explained_variance_ratio=ratio)


def embed_umap(z: np.ndarray, n_components: Literal[2, 3] = 2, seed: int = 0,
               n_neighbors: int = 15) -> np.ndarray:
    """``(N, zdim)`` z → ``(N, n_components)`` UMAP embedding (umap-learn, optional)."""
    z = _check_latent(z)
    try:
        import umap
    except ImportError as exc:
        raise UserInputError(UMAP_HINT) from exc
    n_neighbors = max(2, min(n_neighbors, len(z) - 1))
    reducer = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, random_state=seed)
    return np.asarray(reducer.fit_transform(z), dtype=np.float32)


@dataclass(frozen=True)
class Clustering:
    """KMeans of the latent space with one real particle standing for each cluster."""

    labels: np.ndarray
    """``(N,)`` int cluster of each particle, numbered from 0."""
    centres: np.ndarray
    """``(k, zdim)`` KMeans centres."""
    representatives: np.ndarray
    """``(k,)`` index of the particle nearest each centre."""
    populations: np.ndarray
    """``(k,)`` particles per cluster."""
    seed: int

    @property
    def k(self) -> int:
        return len(self.centres)


def representatives(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(k,)`` index of the particle of ``(N, zdim)`` z nearest each ``(k, zdim)`` centre."""
    out = np.empty(len(centres), dtype=np.int64)
    for i, c in enumerate(np.asarray(centres, dtype=np.float64)):
        out[i] = int(np.argmin(((z - c) ** 2).sum(1)))
    return out


def cluster_latent(z: np.ndarray, k: int = 20, seed: int = 0) -> Clustering:
    """KMeans with ``k`` clusters on the full latent (paper: 20 representatives, Fig. 7)."""
    z = _check_latent(z)
    if k < 1:
        raise UserInputError(f"--k must be >= 1, got {k}")
    if k > len(z):
        raise UserInputError(f"--k {k} is larger than the number of particles ({len(z)})")
    kmeans = KMeans(n_clusters=k, n_init=_KMEANS_INIT, random_state=seed)
    with warnings.catch_warnings():
        # duplicate points: reported below as a user error, with the fix
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = kmeans.fit_predict(z.astype(np.float64)).astype(np.int64)
    centres = kmeans.cluster_centers_.astype(np.float32)
    populations = np.bincount(labels, minlength=k)
    if np.any(populations == 0):
        distinct = int((populations > 0).sum())
        raise UserInputError(
            f"--k {k}: the latent has only {distinct} distinct group(s) of identical vectors, "
            f"so {k - distinct} clusters would be empty; use --k {distinct} or less (a latent "
            "without spread usually means the training collapsed; see log.jsonl)")
    log.info("KMeans: %d clusters, populations %d..%d", k, populations.min(), populations.max())
    return Clustering(labels=labels, centres=centres, representatives=representatives(z, centres),
                      populations=populations, seed=seed)


def nearest_particles(z: np.ndarray, point: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` particles of ``(N, zdim)`` z nearest ``(zdim,)`` point, nearest
    first."""
    z = _check_latent(z)
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape[0] != z.shape[1]:
        raise UserInputError(f"latent point has {point.shape[0]} values, expected {z.shape[1]}")
    n = min(n, len(z))
    d2 = ((z - point) ** 2).sum(1)
    part = np.argpartition(d2, n - 1)[:n] if n < len(z) else np.arange(len(z))
    return part[np.argsort(d2[part], kind="stable")]


def sample_pc(pca: LatentPCA, z: np.ndarray, pc: int, percentiles: tuple[float, float] = (5, 95),
              n_samples: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Latent points evenly spaced along one principal axis (paper Fig. 5).

    Args:
        pca: a PCA of ``z``.
        z: ``(N, zdim)`` latent.
        pc: axis number, 1-based (PC1 = 1).
        percentiles: range of the particles' PC coordinates to cover, in percent.
        n_samples: number of points.

    Returns:
        ``(n_samples, zdim)`` float32 points ``mean + t · axis`` and ``(n_samples,)`` t values
        (the PC coordinate; other PCs at 0, i.e. at the latent mean).
    """
    if not 1 <= pc <= len(pca.components):
        raise UserInputError(f"PC{pc} does not exist: the latent has {len(pca.components)} PCs")
    lo, hi = percentiles
    if not 0 <= lo < hi <= 100:
        raise UserInputError(f"--percentiles must satisfy 0 <= low < high <= 100, got {lo},{hi}")
    if n_samples < 2:
        raise UserInputError(f"--n-samples must be >= 2, got {n_samples}")
    coord = pca.transform(z)[:, pc - 1]
    low, high = np.percentile(coord, [lo, hi])
    t = np.linspace(float(low), float(high), n_samples)
    points = pca.mean + t[:, None] * pca.components[pc - 1]
    return points.astype(np.float32), t
