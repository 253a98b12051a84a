"""Trajectories through the landscape, decoded as map series with a ChimeraX movie script.

Two kinds:

- interpolation: evenly spaced points on the straight line between two latent points (as
  cryoDRGN's ``eval_vol --z-start/--z-end -n``). The line may cross empty regions where no
  particle sits, so its middle maps can be unsupported by data.
- graph: the shortest path between two particles through a k-nearest-neighbour graph of the
  latent (edges weighted by Euclidean distance; cryoDRGN's ``graph_traversal`` idea). Each
  step goes to a nearby particle, so the path stays where the data are; its maps are decoded
  at the latent vectors of the particles on it.

Writes, in the output folder::

    traj_NNN.mrc       one map per point, in order
    trajectory.json    kind, latent points, particle indices (graph), distances
    z.txt              the latent points, one per row (for ``hetsiren decode``)
    movie.cxc          ChimeraX: open the series, play it, and record traj.mp4
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from hetsiren.analysis.chimerax import MapSeries, contour_level, write_movie_script
from hetsiren.errors import UserInputError
from hetsiren.rundir import atomic_write, load_latent, load_snapshot_latent, write_json
from hetsiren.train.inference import MapOutput

__all__ = ["Trajectory", "graph_path", "interpolate", "trajectory_from_run", "write_trajectory"]

# Maps along a line when -n is not given (cryoDRGN's eval_vol default is 10 too).
DEFAULT_LINE_POINTS = 10

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trajectory:
    """Points along a path in the latent space."""

    kind: Literal["interpolation", "graph"]
    z: np.ndarray
    """``(n, zdim)`` latent points, in order."""
    particles: np.ndarray | None = None
    """``(n,)`` particle indices of the points (graph paths)."""
    length: float = 0.0
    """Length of the path in latent units (sum of the steps of the full path)."""


def interpolate(z_start: np.ndarray, z_end: np.ndarray, n: int) -> Trajectory:
    """``n`` evenly spaced points from ``z_start`` to ``z_end`` (both ``(zdim,)``), ends
    included."""
    z_start, z_end = np.asarray(z_start, np.float32), np.asarray(z_end, np.float32)
    if z_start.shape != z_end.shape or z_start.ndim != 1:
        raise UserInputError(f"--z-start and --z-end must have the same number of values, got "
                             f"{z_start.size} and {z_end.size}")
    if n < 2:
        raise UserInputError(f"-n must be >= 2 (the two ends), got {n}")
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return Trajectory("interpolation", (1 - t) * z_start + t * z_end,
                      length=float(np.linalg.norm(z_end - z_start)))


def graph_path(z: np.ndarray, start: int, end: int, knn: int = 10,
               n: int | None = None) -> Trajectory:
    """Shortest path from particle ``start`` to particle ``end`` through the kNN graph of the
    ``(N, zdim)`` latent ``z``.

    Args:
        z: ``(N, zdim)`` latent vectors.
        start, end: 0-based particle indices.
        knn: neighbours per particle; the graph is made symmetric (an edge when either end
            lists the other).
        n: keep at most ``n`` points, spread evenly along the path's length (ends kept);
            default all the particles on the path.
    """
    from scipy.sparse.csgraph import dijkstra
    from sklearn.neighbors import NearestNeighbors

    z = np.asarray(z, dtype=np.float32)
    count = len(z)
    for name, i in (("start", start), ("end", end)):
        if not 0 <= i < count:
            raise UserInputError(f"graph {name} particle {i}: the run has {count} particles, "
                                 f"numbered 0..{count - 1}")
    if start == end:
        raise UserInputError("the graph path needs two different particles")
    if not 1 <= knn < count:
        raise UserInputError(f"--knn must be between 1 and {count - 1}, got {knn}")
    graph = NearestNeighbors(n_neighbors=knn + 1).fit(z).kneighbors_graph(mode="distance")
    graph = graph.maximum(graph.T)
    dist, pred = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    if not np.isfinite(dist[end]):
        raise UserInputError(
            f"particles {start} and {end} are in parts of the landscape that the {knn}-"
            "nearest-neighbour graph does not connect; pass a larger --knn")
    path = [end]
    while path[-1] != start:
        path.append(int(pred[path[-1]]))
    path = np.asarray(path[::-1], dtype=np.int64)
    along = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(z[path], axis=0), axis=1))]
    if n is not None and n < len(path):
        if n < 2:
            raise UserInputError(f"-n must be >= 2 (the two ends), got {n}")
        targets = np.linspace(0.0, along[-1], n)
        keep = np.unique(np.abs(along[None, :] - targets[:, None]).argmin(axis=1))
        path = path[keep]
    log.info("graph path: %d particles, length %.3g", len(path), along[-1])
    return Trajectory("graph", z[path], particles=path, length=float(along[-1]))


def trajectory_from_run(run_dir: str | Path, z_start: Sequence[float] | None = None,
                        z_end: Sequence[float] | None = None,
                        graph: tuple[int, int] | None = None, n: int | None = None,
                        knn: int = 10, epoch: int | None = None) -> Trajectory:
    """A line (``z_start``, ``z_end``; ``n`` points, default 10) or a graph path (``graph`` =
    two particle indices; at most ``n`` points) in the latent of a run (of its snapshot after
    ``epoch`` when given)."""

    z = load_latent(run_dir) if epoch is None else load_snapshot_latent(run_dir, epoch)
    zdim = z.shape[1]
    if graph is not None:
        return graph_path(z, int(graph[0]), int(graph[1]), knn=knn, n=n)
    if z_start is None or z_end is None:
        raise UserInputError("give --z-start and --z-end, or --graph START END")
    for name, values in (("--z-start", z_start), ("--z-end", z_end)):
        if len(values) != zdim:
            raise UserInputError(f"{name}: the latent of {run_dir} has {zdim} dimensions, got "
                                 f"{len(values)} values")
    return interpolate(np.asarray(z_start), np.asarray(z_end), DEFAULT_LINE_POINTS if n is None
                       else n)


def write_trajectory(run_dir: str | Path, trajectory: Trajectory, out_dir: str | Path,
                     device: str = "auto", output: MapOutput | None = None,
                     overwrite: bool = False,
                     epoch: int | None = None) -> list[Path]:
    """Decode ``trajectory`` to ``out_dir`` (module docstring) and return the map paths.

    Args:
        run_dir: the trained run.
        trajectory: from :func:`interpolate` or :func:`graph_path`.
        out_dir: output folder (created).
        device: where to decode.
        output: size, hand and contrast of the maps (default: as trained).
        overwrite: replace an earlier trajectory's files there.
        epoch: decode with the decoder of this epoch's snapshot.
    """
    from hetsiren.io import write_map
    from hetsiren.train.inference import check_new_output, decode_latent, finish_map, load_run

    out_dir = Path(out_dir)
    n = len(trajectory.z)
    paths = [out_dir / f"traj_{i:03d}.mrc" for i in range(n)]
    extra = [out_dir / name for name in ("trajectory.json", "z.txt", "movie.cxc")]
    check_new_output(paths + extra, overwrite)
    _, prep, model, dev = load_run(run_dir, device, epoch=epoch)
    maps = decode_latent(model, trajectory.z, dev)
    if not np.isfinite(maps).all():
        raise UserInputError(f"{run_dir}: a decoded map contains NaN or Inf; the model has "
                             "probably diverged (see log.jsonl)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("traj_*.mrc"):  # a longer earlier trajectory (only with overwrite)
        if old not in paths:
            old.unlink()
    levels = []
    for path, volume in zip(paths, maps, strict=True):
        volume, pixel_A = finish_map(volume, prep, output or MapOutput())
        atomic_write(path, lambda p, v=volume, a=pixel_A: write_map(p, v, a))
        levels.append(contour_level(volume))
    record = {"kind": trajectory.kind, "n": n, "length": trajectory.length,
              "z": trajectory.z.tolist(), "maps": [p.name for p in paths], "epoch": epoch}
    if trajectory.particles is not None:
        record["particles"] = trajectory.particles.tolist()
    write_json(extra[0], record)
    atomic_write(extra[1], lambda p: np.savetxt(p, trajectory.z, fmt="%.6g"))
    write_movie_script(extra[2], MapSeries("trajectory", paths, float(np.median(levels)),
                                           trajectory=True), movie="traj.mp4")
    return paths
