"""Measure a trained run against simulated ground truth (``hetsiren simulate``'s truth files).

Metrics (all computed on the full latent z, not on a 2D embedding):

- continuous heterogeneity: |Spearman ρ| between the true coordinate and z's first principal
  component; 5-fold kNN R² of the coordinate predicted from z.
- discrete states: adjusted Rand index of KMeans(K = number of states) against the states;
  5-fold kNN accuracy of the state predicted from z.
- leakage: 5-fold kNN R² of the true viewing direction (the beam direction in the map's
  frame, third row of A) and of the mean defocus predicted from z. 0 means the landscape
  carries no pose/CTF information; that is what decoupling (Eqs. 3-4) aims at.
- maps: FSC between maps decoded at each state's mean latent (or at the mean latent of the
  particles near each truth point of a path) and the true maps, both inside the sphere
  inscribed in the box (our decoder's domain; other tools' maps have background outside it,
  which would otherwise count against them); resolution at FSC 0.5 and 0.143, and the area
  under the FSC curve up to Nyquist (normalised to [0, 1], as CryoBench reports it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

from hetsiren.errors import UserInputError
from hetsiren.geometry import sphere_mask
from hetsiren.io import read_map
from hetsiren.outputs import check_outputs
from hetsiren.physics import fsc, resample_map, resolution_at
from hetsiren.rundir import LATENT, run_inputs, write_json
from hetsiren.train.inference import decode_latent, load_run

__all__ = ["evaluate_latent", "evaluate_maps", "evaluate_run", "knn_r2", "load_truth"]

_FOLDS = 5
_NEIGHBOURS = 10
# Particles within this distance (in path coordinate) of a truth point define its mean latent.
_PATH_WINDOW = 0.05


def load_truth(truth_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``truth.npz`` arrays and ``truth.json`` description of a simulated dataset."""
    truth_dir = Path(truth_dir)
    try:
        arrays = dict(np.load(truth_dir / "truth.npz"))
        meta = json.loads((truth_dir / "truth.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(
            f"{truth_dir}: not a simulated dataset (expected truth.npz and truth.json from "
            f"hetsiren simulate): {exc}") from exc
    return arrays, meta


def knn_r2(z: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """5-fold cross-validated R² of ``target`` ((N,) or (N, k)) predicted from z by kNN."""
    target = target.reshape(len(target), -1)
    folds = KFold(_FOLDS, shuffle=True, random_state=seed)
    pred = cross_val_predict(KNeighborsRegressor(_NEIGHBOURS), z, target, cv=folds)
    residual = ((target - pred) ** 2).sum(0)
    total = ((target - target.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - residual / np.maximum(total, 1e-12)))


def evaluate_latent(z: np.ndarray, truth: dict[str, np.ndarray], seed: int = 0
                    ) -> dict[str, float]:
    """Landscape metrics of ``(N, zdim)`` z against the per-particle truth."""
    if len(z) != len(truth["state"]):
        raise UserInputError(
            f"the run has {len(z)} particles but the truth has {len(truth['state'])}: was the "
            "run trained on this simulated dataset?")
    out: dict[str, float] = {}
    state, coordinate = truth["state"], truth["coordinate"]
    if np.all(state >= 0):
        k = len(np.unique(state))
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
        out["ari_kmeans"] = float(adjusted_rand_score(state, labels))
        folds = KFold(_FOLDS, shuffle=True, random_state=seed)
        pred = cross_val_predict(KNeighborsClassifier(_NEIGHBOURS), z, state, cv=folds)
        out["knn_accuracy"] = float(np.mean(pred == state))
    else:
        pc1 = PCA(1).fit_transform(z)[:, 0] if z.shape[1] > 1 else z[:, 0]
        out["spearman_pc1"] = float(abs(spearmanr(pc1, coordinate).statistic))
        out["knn_r2_coordinate"] = knn_r2(z, coordinate, seed)
    viewing = truth["rotations"][:, 2, :]  # beam direction in the map frame: Aᵀ e_z
    out["leakage_knn_r2_viewing"] = knn_r2(z, viewing, seed)
    defocus = 0.5 * (truth["defocus_u_A"] + truth["defocus_v_A"])
    if np.ptp(defocus) > 0:
        out["leakage_knn_r2_defocus"] = knn_r2(z, defocus, seed)
    return out


def _fsc_summary(decoded: np.ndarray, true: np.ndarray, pixel_size_A: float) -> dict[str, Any]:
    curve = fsc(torch.from_numpy(decoded), torch.from_numpy(true), pixel_size_A)
    freq, values = curve.frequency_per_A, curve.fsc  # shells 1..D//2 (no DC term)
    return {
        "resolution_0.5_A": resolution_at(curve, 0.5),
        "resolution_0.143_A": resolution_at(curve, 0.143),
        "auc": float(np.clip(values, 0, 1).mean()),
        "frequency_per_A": freq.tolist(),
        "fsc": values.tolist(),
    }


def evaluate_maps(decode: Callable[[np.ndarray], np.ndarray], z: np.ndarray,
                  truth: dict[str, np.ndarray], meta: dict[str, Any], truth_dir: Path,
                  pixel_size_A: float, box: int) -> list[dict[str, Any]]:
    """FSC of decoded maps against each true map, at ``box`` px of ``pixel_size_A``.

    Args:
        decode: ``(zdim,)`` latent point → ``(box, box, box)`` map. Any method's decoder
            (``benchmarks/bench_cryodrgn.py`` passes cryoDRGN's), so that every method is
            measured by the same code.
        z: ``(N, zdim)`` latent of the particles.
        truth, meta: the dataset's ``truth.npz`` arrays and ``truth.json`` (:func:`load_truth`).
        truth_dir: the dataset's folder (the true maps are read from it).
        pixel_size_A, box: the decoded maps' sampling; the true maps are resampled to it.

    Returns:
        One dict per true map with particles: ``truth_map``, ``index``, ``n_particles`` and
        the FSC summary (``resolution_0.5_A``, ``resolution_0.143_A``, ``auc``, the curve).
    """
    inside = sphere_mask(box).numpy()
    state, coordinate = truth["state"], truth["coordinate"]
    members = []
    if np.all(state >= 0):
        for k in range(len(meta["truth_maps"])):
            members.append(state == k)
    else:
        for t in meta["truth_map_coordinates"]:
            members.append(np.abs(coordinate - t) <= _PATH_WINDOW)
    results = []
    for i, (sel, rel_path) in enumerate(zip(members, meta["truth_maps"], strict=True)):
        if not sel.any():
            continue
        true, voxel_A = read_map(truth_dir / rel_path, "true map")
        true_t = resample_map(torch.from_numpy(true), voxel_A, pixel_size_A, box)
        decoded = decode(z[sel].mean(0))
        if decoded.shape != (box,) * 3:
            raise ValueError(f"decoded map is {decoded.shape}, expected {(box,) * 3}")
        summary = _fsc_summary(np.where(inside, decoded, 0).astype(np.float32),
                               np.where(inside, true_t.numpy(), 0), pixel_size_A)
        results.append({"truth_map": rel_path, "index": i, "n_particles": int(sel.sum()),
                        **summary})
    return results


def evaluate_run(run_dir: str | Path, truth_dir: str | Path, maps: bool = True,
                 device: str = "auto", output: str | Path | None = None) -> dict[str, Any]:
    """All metrics of a run against its simulated truth, as a JSON-able dict (also written to
    ``output`` as JSON when given; checked against the files read before any work)."""
    run_dir, truth_dir = Path(run_dir), Path(truth_dir)
    if output is not None:
        truth_files = [p for p in truth_dir.rglob("*") if p.is_file()] if truth_dir.is_dir() \
            else []
        check_outputs(files=[output], inputs=[*run_inputs(run_dir), *truth_files])
    latent_path = run_dir / LATENT
    if not latent_path.is_file():
        raise UserInputError(f"{latent_path}: not found; has training finished?")
    z = np.load(latent_path)
    truth, meta = load_truth(truth_dir)
    report: dict[str, Any] = {"run": str(run_dir), "truth": str(truth_dir),
                              "kind": meta.get("kind"), **evaluate_latent(z, truth)}
    if maps:
        _, prep, model, dev = load_run(run_dir, device)
        per_map = evaluate_maps(lambda point: decode_latent(model, point[None], dev)[0], z,
                                truth, meta, truth_dir, prep.pixel_size_A, prep.box)
        report["maps"] = per_map
        if per_map:
            report["map_fsc_auc_mean"] = float(np.mean([m["auc"] for m in per_map]))
    if output is not None:
        write_json(output, report)
    return report
