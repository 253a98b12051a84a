"""``analyze_run``: the landscape of a trained run, its clusters, maps, plots and report.

What it writes under ``RUN/analysis/`` (paper Figs. 2, 5, 7):

    pca.npz                   mean, components, explained_variance_ratio of the latent PCA
    pca_coords.npy            (N, p) float32 PC coordinates of every particle
    umap.npy                  (N, 2|3) UMAP embedding (only with umap=True)
    labels.npy                (N,) int64 KMeans cluster of every particle (from 0)
    clusters.json, .csv       k, seed, populations, representative particle and map per cluster
    clusters/cluster_NN.mrc   map decoded at each cluster's representative particle
    surfaces/cluster_NN.png   its isosurface at the suggested level, seen down z, y and x
    pcN/pcN_NN.mrc            maps sampled along PC N between the chosen percentiles
    pc_samples.json           the latent points and PC coordinates of those samples
    *.png                     landscape, density, explained variance, training curves
    chimerax.cxc              opens the maps in ChimeraX (cluster maps tiled, PC trajectories)
    report.html               one self-contained page with all of the above
    hetsiren_analysis.ipynb   a Jupyter notebook loading this run through the Python API
    summary.json              the parameters of this analysis and the files it wrote

KMeans runs on the full latent; the representative of a cluster is the real particle nearest
its centre, so its map is decoded at a latent point the encoder actually produced.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hetsiren import __version__
from hetsiren.analysis.chimerax import MapSeries, contour_level, write_chimerax_script
from hetsiren.analysis.landscape import (
    Clustering,
    LatentPCA,
    cluster_latent,
    embed_umap,
    fit_pca,
    sample_pc,
)
from hetsiren.analysis.notebook import write_notebook
from hetsiren.analysis.plots import (
    cluster_colours,
    map_thumbnail,
    plot_density,
    plot_explained_variance,
    plot_landscape,
    plot_training_curves,
)
from hetsiren.analysis.surface import render_surface
from hetsiren.errors import UserInputError
from hetsiren.outputs import check_outputs
from hetsiren.rundir import (
    ANALYSIS_FILES,
    analysis_folder,
    atomic_write,
    load_latent,
    load_snapshot_latent,
    locks_run,
    pc_map_name,
    read_run_config,
    read_training_log,
    write_json,
    write_npy,
)
from hetsiren.train.health import training_health

__all__ = ["AnalysisResult", "DecodedMap", "analyze_run"]

log = logging.getLogger(__name__)

_FILES = ANALYSIS_FILES
# Maps decoded per network call: bounds memory at large boxes (one 400^3 map is 256 MB).
_DECODE_CHUNK = 4


@dataclass
class DecodedMap:
    """One decoded map and what the report shows of it."""

    path: Path
    z: np.ndarray
    """``(zdim,)`` latent point it was decoded at."""
    level: float
    """Suggested surface level."""
    thumbnail_png: bytes
    surface_png: bytes | None = None
    """Isosurface rendering at ``level`` (cluster maps)."""


@dataclass
class AnalysisResult:
    """What ``analyze_run`` computed and where it wrote it."""

    out_dir: Path
    pca: LatentPCA
    clustering: Clustering
    umap: np.ndarray | None
    cluster_maps: list[DecodedMap] = field(default_factory=list)
    pc_maps: dict[int, list[DecodedMap]] = field(default_factory=dict)
    pc_coords: dict[int, np.ndarray] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def report(self) -> Path | None:
        """``report.html``, when written."""
        return self.files.get("report")


def _decode_series(run_dir: Path, points: np.ndarray, paths: list[Path], device: str,
                   model_cache: dict[str, Any], epoch: int | None = None,
                   surfaces: Path | None = None) -> list[DecodedMap]:
    """Decode, write and describe maps; with ``surfaces``, also render each map's isosurface
    to ``surfaces/<map name>.png``."""
    from hetsiren.io import write_map
    from hetsiren.train.inference import decode_latent, load_run

    if "model" not in model_cache:
        _, prep, model, dev = load_run(run_dir, device, epoch=epoch)
        model_cache.update(model=model, device=dev, pixel_size_A=prep.pixel_size_A)
    model, dev, pixel_A = model_cache["model"], model_cache["device"], model_cache["pixel_size_A"]
    out = []
    for start in range(0, len(points), _DECODE_CHUNK):
        maps = decode_latent(model, points[start:start + _DECODE_CHUNK], dev)
        for j, volume in enumerate(maps):
            i = start + j
            if not np.isfinite(volume).all():
                raise UserInputError(
                    f"{run_dir}: the map decoded for {paths[i].name} contains NaN or Inf; the "
                    "model has probably diverged (see log.jsonl). Analyse the latent alone with "
                    "--no-decode, or retrain with a lower --lr")
            atomic_write(paths[i], lambda p, v=volume: write_map(p, v, pixel_A))
            level = contour_level(volume)
            surface = None
            if surfaces is not None:
                surface = render_surface(volume, level)
                surfaces.mkdir(parents=True, exist_ok=True)
                atomic_write(surfaces / f"{paths[i].stem}.png",
                             lambda p, b=surface: p.write_bytes(b))
            out.append(DecodedMap(path=paths[i], z=np.asarray(points[i], dtype=np.float32),
                                  level=level, thumbnail_png=map_thumbnail(volume),
                                  surface_png=surface))
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _clear_stale(folder: Path, prefix: str, keep: list[Path]) -> None:
    """Remove maps of an earlier analysis with more samples/clusters than this one."""
    if folder.is_dir():
        for old in folder.glob(f"{prefix}_*.mrc"):
            if old not in keep:
                old.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def _clear_stale_surfaces(folder: Path, keep: list[str]) -> None:
    if folder.is_dir():
        for old in folder.glob("cluster_*.png"):
            if old.stem not in keep:
                old.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


# Outputs of an earlier analysis that this one may not rewrite (no --umap, --no-decode, fewer
# PCs, --no-report): removed so that nothing in RUN/analysis contradicts the new clustering.
_OPTIONAL_OUTPUTS = tuple(ANALYSIS_FILES[key] for key in (
    "umap", "landscape_umap", "density_umap", "pc_samples", "chimerax", "report",
    "training_curves"))


def _clear_previous(out: Path, written: dict[str, Path], pcs: int, decode: bool) -> None:
    """Run once this analysis has succeeded: a failed one leaves the previous one intact."""
    for name in _OPTIONAL_OUTPUTS:
        if out / name not in written.values():
            (out / name).unlink(missing_ok=True)
    if not decode:
        _clear_stale(out / _FILES["cluster_maps"], "cluster", [])
        _clear_stale_surfaces(out / _FILES["surfaces"], [])
    for folder in out.glob("pc*"):
        if folder.is_dir() and folder.name[2:].isdigit() and (
                not decode or int(folder.name[2:]) > pcs):
            _clear_stale(folder, folder.name, [])


def _write_clusters_table(path: Path, clustering: Clustering, maps: list[Path | None]) -> Path:
    n = clustering.populations.sum()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["cluster", "population", "fraction", "representative_particle", "map"])
    for i in range(clustering.k):
        writer.writerow([i, int(clustering.populations[i]),
                         f"{clustering.populations[i] / n:.6f}",
                         int(clustering.representatives[i]),
                         "" if maps[i] is None else maps[i].as_posix()])
    text = buf.getvalue()
    return atomic_write(path, lambda p: p.write_text(text))


@locks_run
def analyze_run(run_dir: str | Path, k: int = 20, pcs: int = 2, umap: bool = False,
                umap_dims: Literal[2, 3] = 2, percentiles: tuple[float, float] = (5.0, 95.0),
                n_samples: int = 5, decode: bool = True, device: str = "auto", seed: int = 0,
                report: bool = True, epoch: int | None = None) -> AnalysisResult:
    """Analyse the latent landscape of a trained run (see the module docstring for outputs).

    Args:
        run_dir: a training run directory (``config.json``, ``latent.npy``, ``model.pt``).
        k: KMeans clusters (paper: 20 representatives).
        pcs: principal components to sample maps along (PC1..PC``pcs``).
        umap: also compute a UMAP embedding (needs umap-learn).
        umap_dims: 2 or 3 UMAP dimensions (the first two are plotted).
        percentiles: range of each PC covered by the sampled maps, in percent of particles.
        n_samples: maps per PC.
        decode: decode maps (needs ``model.pt``); False writes only the latent analysis.
        device: where to decode (auto, cpu, cuda, cuda:N).
        seed: KMeans and UMAP seed.
        report: write ``report.html``.
        epoch: analyse the snapshot kept after this epoch (``RUN/snapshots``) instead of the
            final model, into ``RUN/analysis.EEE``.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    z = load_latent(run_dir) if epoch is None else load_snapshot_latent(run_dir, epoch)
    n, zdim = z.shape
    if pcs < 0:
        raise UserInputError(f"--pcs must be >= 0, got {pcs}")
    if pcs > zdim:
        raise UserInputError(f"--pcs {pcs}: the latent has only {zdim} dimensions")
    # checked here, before anything is written, rather than where they are used
    if umap_dims not in (2, 3):
        raise UserInputError(f"--umap-dims must be 2 or 3, got {umap_dims}")
    if decode and pcs:
        lo, hi = percentiles
        if not 0 <= lo < hi <= 100:
            raise UserInputError(
                f"--percentiles must satisfy 0 <= low < high <= 100, got {lo} {hi}")
        if n_samples < 2:
            raise UserInputError(f"--n-samples must be >= 2, got {n_samples}")
    out = analysis_folder(run_dir, epoch)
    check_outputs(folders=[out])
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    # --- reductions -------------------------------------------------------------------------
    pca = fit_pca(z)
    coords = pca.transform(z).astype(np.float32)
    files["pca"] = atomic_write(out / _FILES["pca"], lambda p: _save_npz(p, pca.to_npz()))
    files["pca_coords"] = write_npy(out / _FILES["pca_coords"], coords)
    log.info("PCA: PC1..PC%d explain %s of the latent variance", min(3, len(pca.components)),
             ", ".join(f"{100 * r:.1f}%" for r in pca.explained_variance_ratio[:3]))
    embedding = None
    if umap:
        log.info("UMAP (%dD) of %d points...", umap_dims, n)
        embedding = embed_umap(z, umap_dims, seed=seed)
        files["umap"] = write_npy(out / _FILES["umap"], embedding)

    # --- clusters ---------------------------------------------------------------------------
    clustering = cluster_latent(z, k, seed=seed)
    files["labels"] = write_npy(out / _FILES["labels"], clustering.labels)
    result = AnalysisResult(out_dir=out, pca=pca, clustering=clustering, umap=embedding,
                            files=files)

    # --- maps -------------------------------------------------------------------------------
    model_cache: dict[str, Any] = {}
    if decode:
        cluster_paths = [out / _FILES["cluster_maps"] / f"cluster_{i:02d}.mrc" for i in range(k)]
        _clear_stale(out / _FILES["cluster_maps"], "cluster", cluster_paths)
        _clear_stale_surfaces(out / _FILES["surfaces"], [p.stem for p in cluster_paths])
        log.info("decoding %d cluster maps...", k)
        result.cluster_maps = _decode_series(run_dir, z[clustering.representatives],
                                             cluster_paths, device, model_cache, epoch,
                                             surfaces=out / _FILES["surfaces"])
        for pc in range(1, pcs + 1):
            points, t = sample_pc(pca, z, pc, percentiles, n_samples)
            paths = [out / pc_map_name(pc, i) for i in range(n_samples)]
            _clear_stale(out / f"pc{pc}", f"pc{pc}", paths)
            log.info("decoding %d maps along PC%d...", n_samples, pc)
            result.pc_maps[pc] = _decode_series(run_dir, points, paths, device, model_cache,
                                                epoch)
            result.pc_coords[pc] = t
        write_json(out / _FILES["pc_samples"], {
            "percentiles": list(percentiles),
            "pcs": {f"pc{pc}": {"pc_coordinate": result.pc_coords[pc].tolist(),
                                "z": [m.z.tolist() for m in result.pc_maps[pc]],
                                "maps": [m.path.relative_to(out).as_posix()
                                         for m in result.pc_maps[pc]]}
                    for pc in result.pc_maps}})
        files["pc_samples"] = out / _FILES["pc_samples"]

    rel_maps: list[Path | None] = [m.path.relative_to(out) for m in result.cluster_maps] or [
        None] * k
    files["clusters"] = write_json(out / _FILES["clusters"], {
        "k": k, "seed": seed, "n_particles": n, "space": f"latent ({zdim}D)",
        "populations": clustering.populations.tolist(),
        "fractions": (clustering.populations / n).tolist(),
        "representatives": clustering.representatives.tolist(),
        "centres": clustering.centres.tolist(),
        "representative_z": z[clustering.representatives].tolist(),
        "maps": [None if p is None else p.as_posix() for p in rel_maps],
        "labels": _FILES["labels"],
    })
    files["clusters_csv"] = _write_clusters_table(out / _FILES["clusters_csv"], clustering,
                                                  rel_maps)

    # --- plots ------------------------------------------------------------------------------
    xy = coords[:, :2] if coords.shape[1] >= 2 else np.c_[coords[:, 0], np.zeros(n)]
    ratio = pca.explained_variance_ratio
    axis_names = (f"PC1 ({100 * ratio[0]:.0f}%)",
                  f"PC2 ({100 * ratio[1]:.0f}%)" if len(ratio) > 1 else "PC2")
    files["landscape_pca"] = plot_landscape(xy, clustering.labels, out / _FILES["landscape_pca"],
                                            axis_names, clustering.representatives,
                                            f"PCA, KMeans k={k}")
    files["density_pca"] = plot_density(xy, out / _FILES["density_pca"], axis_names,
                                        "Particle density (PCA)")
    if embedding is not None:
        files["landscape_umap"] = plot_landscape(embedding[:, :2], clustering.labels,
                                                 out / _FILES["landscape_umap"], ("UMAP1", "UMAP2"),
                                                 clustering.representatives,
                                                 f"UMAP, KMeans k={k} on the full latent")
        files["density_umap"] = plot_density(embedding[:, :2], out / _FILES["density_umap"],
                                             ("UMAP1", "UMAP2"), "Particle density (UMAP)")
    files["explained_variance"] = plot_explained_variance(ratio, out / _FILES["explained_variance"])
    log_entries = read_training_log(run_dir)
    health = training_health(log_entries)
    if health:
        log.warning("%s: %s", run_dir, health)
    curves = plot_training_curves(log_entries, out / _FILES["training_curves"])
    if curves is not None:
        files["training_curves"] = curves

    # --- ChimeraX, report, summary ----------------------------------------------------------
    if decode:
        colours = cluster_colours(k)
        series = [MapSeries("clusters", [m.path for m in result.cluster_maps],
                            float(np.median([m.level for m in result.cluster_maps])),
                            trajectory=False, colours=colours)]
        for pc, maps in result.pc_maps.items():
            series.append(MapSeries(f"pc{pc}", [m.path for m in maps],
                                    float(np.median([m.level for m in maps])), trajectory=True))
        files["chimerax"] = write_chimerax_script(out / _FILES["chimerax"], series)
    files["notebook"] = write_notebook(out)
    if report:
        from hetsiren.analysis.report import write_report

        files["report"] = write_report(out / _FILES["report"], run_dir, record, result, z,
                                       log_entries)
    _clear_previous(out, files, pcs, decode)
    write_json(out / _FILES["summary"], {
        "hetsiren_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "parameters": {"k": k, "pcs": pcs, "umap": umap, "umap_dims": umap_dims,
                       "percentiles": list(percentiles), "n_samples": n_samples,
                       "decode": decode, "seed": seed, "epoch": epoch},
        "n_particles": n, "zdim": zdim, "training_health": health,
        "explained_variance_ratio": ratio.tolist(),
        "files": {key: p.relative_to(out).as_posix() for key, p in files.items()},
        "seconds": time.perf_counter() - t0,
    })
    return result
