"""The landscape in volume space: PCA and clustering of many decoded maps.

Latent PCA describes the encoder's coordinates; how the *maps* vary is what a structural
biologist wants (cryoDRGN's ``analyze_landscape`` idea). Here:

1. KMeans with ``n_points`` centres (default 500) on the full latent; each particle belongs to
   its nearest centre, and each centre carries its cluster's population.
2. A map is decoded at every centre and Fourier-cropped to at most ``ANALYSIS_BOX`` voxels
   (memory: 500 maps of 64³ float32 are 0.5 GB); only voxels inside the inscribed sphere
   are used.
3. PCA of those maps (each centre weighted once; the populations are shown, not used). The
   map-space PCs are shown as movies: mean map + t · PC for t between the 5th and 95th
   percentile of the centres' coordinates.
4. Ward clustering of the centres on their first ``_CLUSTER_PCS`` map-space PCs into
   ``states`` states; a particle's state is its centre's. Each state's map is the mean of
   its centres' maps (weighted by population).

Writes ``RUN/analysis/landscape/`` (``analysis.EEE/landscape`` for a snapshot)::

    map_pca.npz              explained_variance_ratio, coords (n_points, p), centres_z,
                             populations, state of each centre
    particle_states.npy      (N,) int64 map-space state of every particle
    state_NN.txt             0-based indices of the particles in state NN (export --indices)
    states/state_NN.mrc      mean map of each state
    pcN/pcN_NN.mrc           maps along map-space PC N
    map_landscape.png        centres on map PC1/PC2 (size = population, colour = state)
    chimerax.cxc             states tiled, PC movies as volume series
    summary.json             parameters, explained variance, populations, files
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hetsiren import __version__
from hetsiren.errors import UserInputError
from hetsiren.rundir import (
    LANDSCAPE_DIR,
    analysis_folder,
    atomic_write,
    load_latent,
    load_snapshot_latent,
    write_json,
    write_npy,
)

__all__ = ["ANALYSIS_BOX", "MapLandscape", "analyze_map_landscape"]

log = logging.getLogger(__name__)

ANALYSIS_BOX = 64
"""Largest box the maps are analysed at (Fourier-cropped above it)."""
# Map-space PCs the states are clustered on: beyond ~10 the components are mostly noise.
_CLUSTER_PCS = 10
_DECODE_CHUNK = 16


@dataclass
class MapLandscape:
    """What ``analyze_map_landscape`` computed and where it wrote it."""

    out_dir: Path
    explained_variance_ratio: np.ndarray
    coords: np.ndarray
    """``(n_points, p)`` map-space PC coordinates of the centres."""
    centre_states: np.ndarray
    """``(n_points,)`` state of each centre."""
    particle_states: np.ndarray
    """``(N,)`` state of each particle."""
    populations: np.ndarray
    """``(states,)`` particles per state."""
    files: dict[str, Path] = field(default_factory=dict)


def _sphere(box: int) -> np.ndarray:
    from hetsiren.geometry import sphere_mask

    return np.asarray(sphere_mask(box), dtype=bool)


def _decode_cropped(model, z: np.ndarray, device, box: int) -> np.ndarray:
    from hetsiren.physics import resample_map
    from hetsiren.train.inference import decode_latent

    out = []
    for start in range(0, len(z), _DECODE_CHUNK):
        for volume in decode_latent(model, z[start:start + _DECODE_CHUNK], device):
            if volume.shape[0] != box:
                volume = resample_map(torch.from_numpy(volume), 1.0, volume.shape[0] / box,
                                      box).numpy()
            out.append(volume.astype(np.float32))
    maps = np.stack(out)
    if not np.isfinite(maps).all():
        raise UserInputError("a decoded map contains NaN or Inf; the model has probably "
                             "diverged (see log.jsonl)")
    return maps


def analyze_map_landscape(run_dir: str | Path, n_points: int = 500, states: int = 5,
                          pcs: int = 3, n_samples: int = 7, device: str = "auto",
                          seed: int = 0, epoch: int | None = None) -> MapLandscape:
    """PCA and clustering of maps decoded over the landscape (module docstring).

    Args:
        run_dir: a trained run.
        n_points: KMeans centres on the latent where maps are decoded (cryoDRGN: 500).
        states: map-space states (Ward clusters of the centres).
        pcs: map-space PCs shown as movies.
        n_samples: maps per PC movie.
        device: where to decode.
        seed: KMeans seed.
        epoch: use the snapshot after this epoch instead of the final model.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.decomposition import PCA

    from hetsiren.analysis.chimerax import MapSeries, contour_level, write_chimerax_script
    from hetsiren.analysis.landscape import cluster_latent
    from hetsiren.analysis.plots import cluster_colours, plot_map_landscape
    from hetsiren.io import write_map
    from hetsiren.train.inference import load_run

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    z = load_latent(run_dir) if epoch is None else load_snapshot_latent(run_dir, epoch)
    n = len(z)
    if n_points < 3:
        raise UserInputError(f"--points must be >= 3, got {n_points}")
    n_points = min(n_points, n)
    if not 2 <= states <= n_points:
        raise UserInputError(f"--states must be between 2 and the number of points "
                             f"({n_points}), got {states}")
    if not 1 <= pcs < n_points:
        raise UserInputError(f"--pcs must be between 1 and {n_points - 1}, got {pcs}")
    if n_samples < 2:
        raise UserInputError(f"--n-samples must be >= 2, got {n_samples}")

    _, prep, model, dev = load_run(run_dir, device, epoch=epoch)
    box = min(prep.box, ANALYSIS_BOX)
    pixel_A = prep.pixel_size_A * prep.box / box
    log.info("landscape in map space: KMeans with %d centres, decoding %d maps at %d px",
             n_points, n_points, box)
    kmeans = cluster_latent(z, n_points, seed=seed)
    maps = _decode_cropped(model, kmeans.centres, dev, box)
    inside = _sphere(box)
    x = maps[:, inside]  # [n_points, voxels in the sphere]
    n_comp = min(max(pcs, _CLUSTER_PCS), n_points - 1)
    pca = PCA(n_components=n_comp, random_state=seed).fit(x)
    coords = pca.transform(x).astype(np.float32)
    ratio = pca.explained_variance_ratio_.astype(np.float64)
    centre_states = AgglomerativeClustering(n_clusters=states, linkage="ward").fit_predict(
        coords[:, :_CLUSTER_PCS]).astype(np.int64)
    # number states by decreasing population
    particle_states = centre_states[kmeans.labels]
    order = np.argsort(-np.bincount(particle_states, minlength=states), kind="stable")
    renumber = np.empty(states, dtype=np.int64)
    renumber[order] = np.arange(states)
    centre_states, particle_states = renumber[centre_states], renumber[particle_states]
    populations = np.bincount(particle_states, minlength=states)

    out = analysis_folder(run_dir, epoch) / LANDSCAPE_DIR
    out.mkdir(parents=True, exist_ok=True)
    result = MapLandscape(out_dir=out, explained_variance_ratio=ratio, coords=coords,
                          centre_states=centre_states, particle_states=particle_states,
                          populations=populations)
    files = result.files

    def save_npz(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, explained_variance_ratio=ratio, coords=coords,
                     centres_z=kmeans.centres, populations=kmeans.populations,
                     centre_states=centre_states)

    files["map_pca"] = atomic_write(out / "map_pca.npz", save_npz)
    files["particle_states"] = write_npy(out / "particle_states.npy", particle_states)
    state_maps = []
    for s in range(states):
        members = np.flatnonzero(centre_states == s)
        weights = kmeans.populations[members].astype(np.float64)
        mean = np.tensordot(weights / weights.sum(), maps[members], axes=1).astype(np.float32)
        path = out / "states" / f"state_{s:02d}.mrc"
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda p, v=mean: write_map(p, v, pixel_A))
        state_maps.append((path, contour_level(mean)))
        rows = np.flatnonzero(particle_states == s)
        files[f"state_{s:02d}"] = atomic_write(
            out / f"state_{s:02d}.txt",
            lambda p, r=rows, k=s: p.write_text(
                f"# particles in map-space state {k} (0-based rows of the run's particle "
                f"file); hetsiren export RUN --indices {p.name} -o state_{k:02d}.star\n"
                + "\n".join(map(str, r.tolist())) + "\n"))
    mean_map = np.zeros((box,) * 3, dtype=np.float32)
    mean_map[inside] = pca.mean_
    series = [MapSeries("states", [p for p, _ in state_maps],
                        float(np.median([lv for _, lv in state_maps])), trajectory=False,
                        colours=cluster_colours(states))]
    pc_t = {}
    for pc in range(1, pcs + 1):
        t = np.linspace(*np.percentile(coords[:, pc - 1], [5, 95]), n_samples)
        pc_t[pc] = t.tolist()
        paths, levels = [], []
        for i, ti in enumerate(t):
            volume = mean_map.copy()
            volume[inside] += ti * pca.components_[pc - 1]
            path = out / f"pc{pc}" / f"pc{pc}_{i:02d}.mrc"
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, lambda p, v=volume: write_map(p, v, pixel_A))
            paths.append(path)
            levels.append(contour_level(volume))
        series.append(MapSeries(f"pc{pc}", paths, float(np.median(levels)), trajectory=True))
    files["chimerax"] = write_chimerax_script(out / "chimerax.cxc", series)
    files["plot"] = plot_map_landscape(coords, kmeans.populations, centre_states, ratio,
                                       out / "map_landscape.png")
    write_json(out / "summary.json", {
        "hetsiren_version": __version__,
        "parameters": {"n_points": n_points, "states": states, "pcs": pcs,
                       "n_samples": n_samples, "seed": seed, "epoch": epoch,
                       "analysis_box": box, "pixel_size_A": pixel_A},
        "explained_variance_ratio": ratio.tolist(),
        "state_populations": populations.tolist(),
        "pc_coordinates": {f"pc{pc}": t for pc, t in pc_t.items()},
        "files": {k: p.relative_to(out).as_posix() for k, p in files.items()},
        "seconds": time.perf_counter() - t0,
    })
    log.info("map-space PCs 1..%d explain %s of the maps' variance", min(3, n_comp),
             ", ".join(f"{100 * r:.1f}%" for r in ratio[:3]))
    return result
