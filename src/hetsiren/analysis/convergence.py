"""Has training converged? How much the latent and the decoded maps still change between the
snapshots a run kept (``train --snapshot-every``).

Between consecutive snapshots e₁ < e₂:

- latent, unexplained: the share of z(e₂)'s variance that no affine map of z(e₁) explains
  (1 − R² of a least-squares fit). A latent that only rotates, shifts or rescales scores 0; a
  rearranged one approaches 1.
- latent, neighbours kept: the mean share of each particle's ``_KNN`` nearest neighbours in
  z(e₁) that are still among its nearest in z(e₂) (on a sample of particles). 1 = the same
  landscape; random ≈ k / N.
- maps: the maps decoded at a fixed set of particles (the representatives of KMeans on the
  last snapshot's latent), each at its own z(e) with epoch e's decoder: the relative RMS
  difference ‖V(e₂) − V(e₁)‖ / ‖V(e₂)‖ and 1 − their correlation, averaged over particles.

Writes ``RUN/analysis/convergence/``: ``convergence.json`` (every number), ``convergence.png``
(both panels against the epoch) and prints a verdict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hetsiren.errors import UserInputError
from hetsiren.rundir import (
    CONVERGENCE_DIR,
    analysis_folder,
    load_snapshot_latent,
    snapshot_epochs,
    write_json,
)

__all__ = ["ConvergenceResult", "analyze_convergence"]

log = logging.getLogger(__name__)

_KNN = 10
# Particles sampled for the neighbour and affine-fit measures: enough for a stable mean
# (standard error < 1% at 5000), and the kNN search stays well under a second.
_SAMPLE = 5000
# "Settled" when, over the last interval, the latent's unexplained share and the maps'
# relative change are both below 5% and 90% of neighbours are kept: a judgement (changes
# that small are below what the landscape plots and map thumbnails show), not a test.
_SETTLED_LATENT = 0.05
_SETTLED_NEIGHBOURS = 0.9
_SETTLED_MAPS = 0.05


@dataclass
class ConvergenceResult:
    """Change between consecutive snapshots (one value per interval ``epochs[i] → [i+1]``)."""

    epochs: list[int]
    latent_unexplained: list[float]
    neighbours_kept: list[float]
    map_relative_change: list[float]
    map_decorrelation: list[float]
    anchors: np.ndarray
    """``(m,)`` particles whose maps are compared."""
    settled: bool
    verdict: str
    files: dict[str, Path] = field(default_factory=dict)


def _unexplained(z1: np.ndarray, z2: np.ndarray) -> float:
    """1 − R² of the least-squares affine map from ``(n, d)`` z1 to ``(n, d)`` z2."""
    a = np.c_[z1.astype(np.float64), np.ones(len(z1))]
    target = z2.astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, target, rcond=None)
    residual = ((target - a @ coef) ** 2).sum()
    total = ((target - target.mean(0)) ** 2).sum()
    return float(residual / total) if total > 0 else 0.0


def _neighbours_kept(z1: np.ndarray, z2: np.ndarray, k: int) -> float:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(z1) - 1)
    n1 = NearestNeighbors(n_neighbors=k + 1).fit(z1).kneighbors(return_distance=False)
    n2 = NearestNeighbors(n_neighbors=k + 1).fit(z2).kneighbors(return_distance=False)
    shared = [len(np.intersect1d(a, b)) - 1 for a, b in zip(n1, n2, strict=True)]  # minus self
    return float(np.mean(shared) / k)


def _map_change(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean over ``(m, D, D, D)`` map pairs of (‖b − a‖/‖b‖, 1 − corr(a, b))."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    rel = np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-30)
    corr = [np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else 0.0
            for x, y in zip(a, b, strict=True)]
    return float(rel.mean()), float(1 - np.mean(corr))


def _verdict(result: ConvergenceResult) -> tuple[bool, str]:
    lat, nb = result.latent_unexplained[-1], result.neighbours_kept[-1]
    maps = result.map_relative_change[-1]
    last = f"epochs {result.epochs[-2]}→{result.epochs[-1]}"
    numbers = (f"latent {100 * lat:.1f}% unexplained, {100 * nb:.0f}% of neighbours kept, "
               f"maps changed {100 * maps:.1f}%")
    if lat < _SETTLED_LATENT and nb > _SETTLED_NEIGHBOURS and maps < _SETTLED_MAPS:
        return True, f"settled over {last} ({numbers})"
    return False, (f"still changing over {last} ({numbers}): train longer with "
                   "`hetsiren train ... -o RUN --resume --epochs N`")


def analyze_convergence(run_dir: str | Path, n_maps: int = 8, device: str = "auto",
                        seed: int = 0) -> ConvergenceResult:
    """Compare a run's snapshots (module docstring) and write ``RUN/analysis/convergence``.

    Args:
        run_dir: a training run with at least two snapshots (``RUN/snapshots``).
        n_maps: particles whose maps are compared (KMeans representatives).
        device: where to decode.
        seed: KMeans and sampling seed.
    """
    from hetsiren.analysis.landscape import cluster_latent
    from hetsiren.analysis.plots import plot_convergence
    from hetsiren.train.inference import decode_latent, load_run

    run_dir = Path(run_dir)
    epochs = snapshot_epochs(run_dir)
    if len(epochs) < 2:
        raise UserInputError(
            f"{run_dir / 'snapshots'}: {len(epochs)} snapshot(s); comparing needs at least 2 "
            "(train with --snapshot-every N, N smaller than --epochs)")
    latents = [load_snapshot_latent(run_dir, e) for e in epochs]
    n = len(latents[-1])
    if any(len(z) != n for z in latents):
        raise UserInputError(f"{run_dir / 'snapshots'}: snapshots hold different numbers of "
                             "particles")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, _SAMPLE), replace=False))
    anchors = cluster_latent(latents[-1], min(n_maps, n), seed=seed).representatives
    maps = []
    for e, z in zip(epochs, latents, strict=True):
        _, _, model, dev = load_run(run_dir, device, epoch=e)
        maps.append(decode_latent(model, z[anchors], dev))
    result = ConvergenceResult(epochs=epochs, latent_unexplained=[], neighbours_kept=[],
                               map_relative_change=[], map_decorrelation=[], anchors=anchors,
                               settled=False, verdict="")
    for i in range(len(epochs) - 1):
        z1, z2 = latents[i][sample], latents[i + 1][sample]
        result.latent_unexplained.append(_unexplained(z1, z2))
        result.neighbours_kept.append(_neighbours_kept(z1, z2, _KNN))
        rel, decor = _map_change(maps[i], maps[i + 1])
        result.map_relative_change.append(rel)
        result.map_decorrelation.append(decor)
    result.settled, result.verdict = _verdict(result)
    log.info("convergence: %s", result.verdict)

    out = analysis_folder(run_dir) / CONVERGENCE_DIR
    out.mkdir(parents=True, exist_ok=True)
    result.files["plot"] = plot_convergence(result, out / "convergence.png")
    result.files["json"] = write_json(out / "convergence.json", {
        "epochs": epochs, "intervals": [list(p) for p in zip(epochs[:-1], epochs[1:], strict=True)],
        "latent_unexplained": result.latent_unexplained,
        "neighbours_kept": result.neighbours_kept, "neighbours_k": _KNN,
        "map_relative_change": result.map_relative_change,
        "map_decorrelation": result.map_decorrelation,
        "anchor_particles": anchors.tolist(), "settled": result.settled,
        "verdict": result.verdict,
    })
    return result
