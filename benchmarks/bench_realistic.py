"""Landscapes at the noise levels of real data: atomic-model densities, real motions, SNR ≤ 0.1.

The phantom benchmark (``bench_landscape.py``, SNR 1-10, box 32) was too easy to choose
defaults with: at SNR 0.1 the defaults of the time collapsed the latent. This suite uses two
real proteins whose atomic models ship with the MDAnalysisTests package (no download at run
time; ``pip install MDAnalysisTests``):

- ``adk``: adenylate kinase (214 residues). Continuous: the closed → open DIMS transition
  (``adk.psf`` + ``adk_dims.dcd``, 98 frames). Discrete: closed, open, open without the LID
  domain (residues 122-159) and, rare, closed without the NMP domain (residues 30-59).
- ``prlbd``: the progesterone-receptor ligand-binding-domain dimer (``1a28.pdb.gz``, 2 × 250
  residues). Continuous: a hinge motion, chain B swung 0-30° about an axis through the dimer
  interface. Discrete: the dimer, chain B swung 30°, chain A alone (B removed) and, rare, the
  dimer without chain A's first 60 residues.

Densities: heavy atoms splatted with their atomic numbers, σ = 0.187 × resolution
(``hetsiren.simulate.density``). Box 64, 1.6 Å/px (adk) and 1.8 Å/px (prlbd), uniform poses,
defocus 0.5-3 µm, astigmatism up to 1,000 Å, shifts up to 2 px, Gaussian noise at the given
SNR. Discrete populations 0.34 / 0.34 / 0.28 / 0.04 (the rare state is 4 %).

Every run is scored by ``hetsiren.analysis.evaluate`` plus the recall of the rare state (the
KMeans cluster matched to it by the Hungarian assignment) and the training log's trajectory
(z std and data term in the first and last epochs). Results go to ``OUT/results.jsonl``, one
run per line, keyed by everything that defines the run, so the suite resumes where it
stopped; ``--report`` writes the table.

    .venv/bin/python benchmarks/bench_realistic.py -o /tmp/real --threads 1
    .venv/bin/python benchmarks/bench_realistic.py -o /tmp/real --data adk-continuous-snr0.1 \\
        --variants default --seeds 1,2,3,4,5
    .venv/bin/python benchmarks/bench_realistic.py -o /tmp/real --report docs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hetsiren.analysis.evaluate import evaluate_latent, evaluate_maps, evaluate_run, load_truth
from hetsiren.rundir import LATENT, LOG, network_changes
from hetsiren.simulate import SimulationSpec, density_from_points, simulate_discrete
from hetsiren.simulate.scenarios import simulate_path
from hetsiren.train.config import LEGACY_OPTIONS, REF_AUTO, TrainConfig
from hetsiren.train.inference import refinement_changes
from hetsiren.train.trainer import consensus_changes, method_changes, train

BOX = 64
PIXEL_A = {"adk": 1.6, "prlbd": 1.8}
RESOLUTION_A = 4.0  # of the simulated densities (Nyquist 3.2-3.6 Å)
POPULATIONS = (0.34, 0.34, 0.28, 0.04)  # the last state is the rare one
_TRAJECTORY_MAPS = 25  # DIMS frames kept for the continuous path (of 98)
_HINGE_DEG = 30.0
_AMINO = {12: 6, 14: 7, 16: 8, 32: 16}  # rounded atomic mass → atomic number (C, N, O, S)

# The network options of issue 10 at their values before it: variants pin them, so that a
# label keeps meaning what was measured when the defaults move on.
PINNED = {"latent_norm": False, "hidden_width": None, "kl_weight": 0.0, "kl_warmup": 0}
OFF = {"pose_decoupling": 0.0, "ctf_decoupling": 0.0}
OLD = {"pose_decoupling": 1.0, "ctf_decoupling": 1.0, **PINNED}  # defaults until issue 10
VARIANTS: dict[str, dict] = {
    "default": {},
    "old defaults (λ 1)": OLD,
    "decoupling off": {**OFF, **PINNED},
    "λ 0.01": {"pose_decoupling": 0.01, "ctf_decoupling": 0.01, **PINNED},
    "CTF decoupling only, λ 1": {"pose_decoupling": 0.0, "ctf_decoupling": 1.0, **PINNED},
    "decoupling off + width 64": {**OFF, **PINNED, "hidden_width": 64},
    "latent norm + decoupling off": {**OFF, **PINNED, "latent_norm": True},
    "latent norm + λ 0.001": {"pose_decoupling": 0.001, "ctf_decoupling": 0.001, **PINNED,
                              "latent_norm": True},
    "latent norm + λ 1": {**OLD, "latent_norm": True},
    "latent norm + lr 1e-3 + decoupling off": {**OFF, **PINNED, "latent_norm": True,
                                               "lr": 1e-3},
    "width 64 + VAE β 0.1 + decoupling off": {**OFF, **PINNED, "hidden_width": 64,
                                              "kl_weight": 0.1},
    "width 64 + VAE β 0.3 + decoupling off": {**OFF, **PINNED, "hidden_width": 64,
                                              "kl_weight": 0.3},
    "width 64 + VAE β 0.1 + λ 0.001": {**PINNED, "hidden_width": 64, "kl_weight": 0.1,
                                       "pose_decoupling": 0.001, "ctf_decoupling": 0.001},
    "width 64 + VAE β 0.1 + CTF decoupling λ 0.01": {**PINNED, "hidden_width": 64,
                                                     "kl_weight": 0.1, "pose_decoupling": 0.0,
                                                     "ctf_decoupling": 0.01},
    "width 64 + VAE β 1 warm-up 10 + decoupling off": {**OFF, **PINNED, "hidden_width": 64,
                                                       "kl_weight": 1.0, "kl_warmup": 10},
    "width 64 + VAE β 1 + decoupling off": {**OFF, **PINNED, "hidden_width": 64,
                                            "kl_weight": 1.0},
    "width 64 + VAE β 1 + λ 0.001": {**PINNED, "hidden_width": 64, "kl_weight": 1.0,
                                    "pose_decoupling": 0.001, "ctf_decoupling": 0.001},
    "width 64 + λ 0.001": {**PINNED, "hidden_width": 64,
                          "pose_decoupling": 0.001, "ctf_decoupling": 0.001},
    "lr 1e-4": {"lr": 1e-4},
}



@dataclass(frozen=True)
class Data:
    protein: Literal["adk", "prlbd"]
    kind: Literal["continuous", "discrete"]
    snr: float
    n: int
    seed: int = 5

    @property
    def name(self) -> str:
        return f"{self.protein}-{self.kind}-snr{self.snr:g}"

    def spec(self) -> dict:
        return {"protein": self.protein, "kind": self.kind, "snr": self.snr, "n": self.n,
                "seed": self.seed, "box": BOX, "pixel_A": PIXEL_A[self.protein],
                "resolution_A": RESOLUTION_A}


def _datasets(n_continuous: int, n_discrete: int) -> dict[str, Data]:
    out = {}
    for protein in ("adk", "prlbd"):
        for snr in (0.1, 0.03):
            for kind, n in (("continuous", n_continuous), ("discrete", n_discrete)):
                d = Data(protein, kind, snr, n)
                out[d.name] = d
    return out


# --- atomic models -----------------------------------------------------------------------

def _adk_frames() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """AdK DIMS frames (closed → open): positions (Å), atomic numbers, residue numbers."""
    import MDAnalysis as mda
    from MDAnalysisTests.datafiles import DCD, PSF

    u = mda.Universe(PSF, DCD)
    atoms = u.select_atoms("protein and not name H*")
    z = np.array([_AMINO[int(round(m))] for m in atoms.masses], dtype=np.float64)
    resid = atoms.resids.copy()
    core = ~(((resid >= 30) & (resid <= 59)) | ((resid >= 122) & (resid <= 159)))
    frames = [atoms.positions.astype(np.float64).copy() for _ in u.trajectory]
    # A refinement aligns the particles on the rigid part: superpose every frame on the
    # first one's CORE domain, so that only the NMP and LID domains move.
    return [_superpose(f, frames[0], core) for f in frames], z, resid


def _superpose(pos: np.ndarray, ref: np.ndarray, on: np.ndarray) -> np.ndarray:
    """``pos`` moved rigidly onto ``ref`` by the least-squares fit (Kabsch) of the atoms
    ``on``."""
    a, b = pos[on] - pos[on].mean(0), ref[on] - ref[on].mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return (pos - pos[on].mean(0)) @ rot + ref[on].mean(0)


def _prlbd() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1a28 protein heavy atoms: positions (Å), atomic numbers, chain ('A'/'B'), residue."""
    import gemmi
    from MDAnalysisTests import datafiles

    path = Path(datafiles.__file__).parent / "data" / "1a28.pdb.gz"
    st = gemmi.read_structure(str(path))
    st.remove_hydrogens()
    pos, z, chain, resid = [], [], [], []
    for ch in st[0]:
        for res in ch:
            if not gemmi.find_tabulated_residue(res.name) or res.het_flag == "H":
                continue
            for a in res:
                pos.append(a.pos.tolist())
                z.append(a.element.atomic_number)
                chain.append(ch.name)
                resid.append(res.seqid.num)
    return np.array(pos), np.array(z, dtype=np.float64), np.array(chain), np.array(resid)


def _hinge(pos: np.ndarray, moving: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate the ``moving`` atoms about an axis through the interface: the axis passes
    through the midpoint of the two parts' closest-approach region and is perpendicular to
    the line joining their centroids (and to the first principal axis of the fixed part)."""
    from scipy.spatial.transform import Rotation

    fixed_c, moving_c = pos[~moving].mean(0), pos[moving].mean(0)
    joint = 0.5 * (fixed_c + moving_c)
    link = (moving_c - fixed_c) / np.linalg.norm(moving_c - fixed_c)
    principal = np.linalg.svd(pos[~moving] - fixed_c, full_matrices=False)[2][0]
    axis = np.cross(link, principal)
    axis /= np.linalg.norm(axis)
    rot = Rotation.from_rotvec(np.radians(angle_deg) * axis).as_matrix()
    out = pos.copy()
    out[moving] = (pos[moving] - joint) @ rot.T + joint
    return out


def _models(protein: str, kind: str) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """Point models ``(positions_A, weights)`` and names for one dataset."""
    if protein == "adk":
        frames, z, resid = _adk_frames()
        if kind == "continuous":
            keep = np.linspace(0, len(frames) - 1, _TRAJECTORY_MAPS).round().astype(int)
            return [(frames[i], z) for i in keep], [f"DIMS frame {i}" for i in keep]
        lid = (resid >= 122) & (resid <= 159)
        nmp = (resid >= 30) & (resid <= 59)
        closed, opened = frames[0], frames[-1]
        return ([(closed, z), (opened, z), (opened[~lid], z[~lid]), (closed[~nmp], z[~nmp])],
                ["closed", "open", "open, LID removed", "closed, NMP removed (rare)"])
    pos, z, chain, resid = _prlbd()
    moving = chain == "B"
    if kind == "continuous":
        angles = np.linspace(0, _HINGE_DEG, _TRAJECTORY_MAPS)
        return [(_hinge(pos, moving, a), z) for a in angles], [f"hinge {a:.1f}°" for a in angles]
    cut = (chain == "A") & (resid < resid[chain == "A"].min() + 60)
    return ([(pos, z), (_hinge(pos, moving, _HINGE_DEG), z), (pos[~moving], z[~moving]),
             (pos[~cut], z[~cut])],
            ["dimer", f"chain B swung {_HINGE_DEG:g}°", "chain A alone",
             "dimer, A's first 60 residues removed (rare)"])


def _maps(protein: str, kind: str) -> tuple[list[np.ndarray], list[str]]:
    models, names = _models(protein, kind)
    pos0, z0 = models[0]
    centre = (pos0 * z0[:, None]).sum(0) / z0.sum()  # every model in the first one's frame
    maps = [density_from_points(p - centre, w, BOX, PIXEL_A[protein], RESOLUTION_A)
            for p, w in models]
    return maps, names


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def make_data(out: Path, data: Data) -> Path:
    folder = out / "data" / f"{data.name}-{_digest(data.spec())[:8]}"
    if (folder / "truth.json").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    maps, names = _maps(data.protein, data.kind)
    spec = SimulationSpec(n_particles=data.n, snr=data.snr, seed=data.seed,
                          pixel_size_A=PIXEL_A[data.protein], defocus_min_A=5_000.0,
                          defocus_max_A=30_000.0, astigmatism_max_A=1_000.0, max_shift_px=2.0)
    if data.kind == "continuous":
        simulate_path(folder, maps, spec, map_names=names, progress=False)
    else:
        simulate_discrete(folder, maps, spec, populations=POPULATIONS, map_names=names,
                          progress=False)
    return folder


# --- runs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """What every run of a work folder shares besides its variant and seed."""

    epochs: int | None = None  # None: TrainConfig's default
    box: int | None = None  # None: train at the images' box (64)


def make_config(overrides: dict, seed: int, schedule: Schedule, folder: Path | None = None
                ) -> TrainConfig:
    cfg = TrainConfig(particles=str(folder / "particles.star") if folder else "", ref=REF_AUTO,
                      device="cpu", seed=seed, box=schedule.box)
    if schedule.epochs:
        cfg = replace(cfg, epochs=schedule.epochs)
    return replace(cfg, **overrides)


def run_key(data: Data, overrides: dict, seed: int, schedule: Schedule) -> str:
    # options added later are left out at the value older runs had: their keys stay
    config = {k: v for k, v in make_config(overrides, seed, schedule).to_dict().items()
              if k not in ("particles", "device") and LEGACY_OPTIONS.get(k, object()) != v}
    key = {"config": config, "data": data.spec()}
    if config.get("refine_latent_steps"):
        key["latent_refinement"] = refinement_changes()
    return _digest({**key, **method_changes()})


def rare_recall(z: np.ndarray, state: np.ndarray, seed: int = 0) -> float:
    """Recall of the rarest state by KMeans(K) on z, clusters matched to states one to one
    (Hungarian assignment on the contingency table)."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    k = len(np.unique(state))
    labels = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
    table = np.array([[np.sum((state == s) & (labels == c)) for c in range(k)]
                      for s in range(k)])
    rows, cols = linear_sum_assignment(-table)
    rare = int(np.argmin(np.bincount(state, minlength=k)))
    cluster = cols[list(rows).index(rare)]
    return float(table[rare, cluster] / table[rare].sum())


def log_summary(run: Path) -> dict[str, float]:
    """The training trajectory: data term and z std of the first and last epochs."""
    entries = [json.loads(line) for line in (run / LOG).read_text().splitlines() if line]
    first, last = entries[0], entries[-1]
    return {"data_first": first["data"], "data_last": last["data"],
            "z_std_first": first["z_std"], "z_std_last": last["z_std"],
            "z_std_min": min(e["z_std"] for e in entries),
            "z_std_max": max(e["z_std"] for e in entries),
            "map_spread_first": first.get("map_spread", float("nan")),
            "map_spread_last": last.get("map_spread", float("nan")),
            "health": last.get("health", "")}


def load_results(out: Path) -> dict[str, dict]:
    path = out / "results.jsonl"
    if not path.is_file():
        return {}
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}


def run_all(out: Path, datasets: list[Data], variants: list[str], seeds: list[int],
            schedule: Schedule, maps: bool) -> None:
    done = load_results(out)
    for data in datasets:
        folder = make_data(out, data)
        for label in variants:
            for seed in seeds:
                key = run_key(data, VARIANTS[label], seed, schedule)
                if key in done:
                    continue
                run = out / "runs" / key
                shutil.rmtree(run, ignore_errors=True)  # an interrupted run starts over
                t0 = time.perf_counter()
                train(make_config(VARIANTS[label], seed, schedule, folder), run,
                      progress=False)
                done[key] = score(out, run, data, label, seed, schedule,
                                  time.perf_counter() - t0, maps)


def score(out: Path, run: Path, data: Data, label: str, seed: int, schedule: Schedule,
          wall: float, maps: bool = True) -> dict:
    """Evaluate a finished run of ``data`` and append its record to the results store."""
    folder = make_data(out, data)
    truth, _ = load_truth(folder)
    key = run_key(data, VARIANTS[label], seed, schedule)
    metrics = evaluate_run(run, folder, maps=maps, device="cpu")
    metrics.pop("maps", None)
    z = np.load(run / LATENT)
    if data.kind == "discrete":
        metrics["rare_recall"] = rare_recall(z, truth["state"])
    (out / "latents").mkdir(parents=True, exist_ok=True)
    np.save(out / "latents" / f"{key}.npy", z)
    record = {"key": key, "data": data.name, "variant": label, "seed": seed,
              "epochs": make_config({}, seed, schedule).epochs, "box": schedule.box,
              "network": network_changes(), "v0": consensus_changes(), "wall_s": wall,
              "refine_latent_steps": make_config(VARIANTS[label], seed,
                                                 schedule).refine_latent_steps,
              **metrics, **log_summary(run)}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"{data.name} | {label} | seed {seed}: {_summary(record)} ({wall:.0f} s)",
          flush=True)
    return record


def refine_stored(out: Path, datasets: list[Data], variants: list[str], seeds: list[int],
                  schedule: Schedule, steps: int) -> None:
    """Score stored runs from before the latent refinement as the same runs would be scored
    today: the run's weights are today's (training does not depend on the refinement), its
    latent refined by ``encode`` with the prior refitted from its encoder latent. Appends a
    record under today's run key (``refined_from``: the stored record's key)."""
    from hetsiren.rundir import open_run
    from hetsiren.train.inference import decode_latent, encode_file

    done = load_results(out)
    for data in datasets:
        folder = make_data(out, data)
        truth, meta = load_truth(folder)
        for label in variants:
            old_variant = {**VARIANTS[label], "refine_latent_steps": 0}
            for seed in seeds:
                old = done.get(run_key(data, old_variant, seed, schedule))
                key = run_key(data, {**VARIANTS[label], "refine_latent_steps": steps}, seed,
                              schedule)
                if old is None or key in done or old["key"] == key:
                    continue
                run = out / "runs" / old["key"]
                t0 = time.perf_counter()
                z = encode_file(run, folder / "particles.star", device="cpu",
                                refine_steps=steps)
                seconds = time.perf_counter() - t0
                opened = open_run(run)
                model = opened.model("cpu")
                maps = evaluate_maps(lambda p, m=model: decode_latent(m, p[None], "cpu")[0], z,
                                     truth, meta, folder, opened.preprocessing.pixel_size_A,
                                     opened.preprocessing.box)
                metrics = {**evaluate_latent(z, truth),
                           "map_fsc_auc_mean": float(np.mean([m["auc"] for m in maps]))}
                if data.kind == "discrete":
                    metrics["rare_recall"] = rare_recall(z, truth["state"])
                np.save(out / "latents" / f"{key}.npy", z)
                record = {**old, **metrics, "key": key, "refined_from": old["key"],
                          "refine_latent_steps": steps, "refine_s": seconds,
                          "wall_s": old["wall_s"] + seconds}
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                done[key] = record
                print(f"{data.name} | {label} | seed {seed} refined: {_summary(record)} "
                      f"(encoder: {_summary(old)}; {seconds:.0f} s)", flush=True)


# --- report ------------------------------------------------------------------------------

_METRICS = {"landscape": ("ari_kmeans", "spearman_pc1"), "knn": ("knn_accuracy",
                                                                  "knn_r2_coordinate"),
            "rare": ("rare_recall", None), "view": ("leakage_knn_r2_viewing",) * 2,
            "defocus": ("leakage_knn_r2_defocus",) * 2, "auc": ("map_fsc_auc_mean",) * 2,
            "z_std": ("z_std_last",) * 2}


def _value(r: dict, metric: str) -> float:
    key = _METRICS[metric][0 if "ari_kmeans" in r else 1]
    return float(r.get(key, np.nan)) if key else np.nan


def _summary(r: dict) -> str:
    return ", ".join(f"{m} {_value(r, m):.3f}" for m in _METRICS if np.isfinite(_value(r, m)))


def _cell(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} ({min(values):.2f})"


def _label(record: dict) -> str:
    """A record's variant, marked when its network or V0 lacks a change of today's (a run
    stored before that change)."""
    missing = sorted(set(network_changes()) - set(record.get("network", {})))
    missing += [f"V0 {v}" for k, v in consensus_changes().items()
                if k not in record.get("v0", {})]
    steps = record.get("refine_latent_steps", 0)  # absent: a run from before it existed
    if steps != make_config(VARIANTS.get(record["variant"], {}), 0,
                            Schedule()).refine_latent_steps:
        missing.append("latent refinement" if not steps else f"latent refinement {steps}")
    return record["variant"] + (f" [before {', '.join(missing)}]" if missing else "")


def report(out: Path, docs: Path) -> None:
    results = list(load_results(out).values())
    lines = ["# Realistic landscape benchmark", "",
             "Written by `benchmarks/bench_realistic.py --report`: mean ± sd over the seeds "
             "listed (the lowest seed value in brackets). ARI / |ρ| PC1, kNN accuracy / "
             "R², rare-state recall, leakage kNN R² of the viewing direction and of "
             "defocus, map FSC AUC, z std in the last epoch.", "",
             "| data | variant | epochs | train box | seeds | ARI / abs(ρ) PC1 | kNN acc / R² "
             "| rare recall | leakage view | leakage defocus | map AUC | z std | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["data"], _label(r), r["epochs"], r["box"] or BOX), []).append(r)
    for (data, variant, epochs, box), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r["seed"])
        cells = [_cell([_value(r, m) for r in runs]) for m in _METRICS]
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| {data} | {variant} | {epochs} | {box} | {seeds} | " + " | ".join(cells)
                     + f" | {np.mean([r['wall_s'] for r in runs]):.0f} |")
    (docs / "realistic_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="work folder: data, runs, results.jsonl (reused when it exists)")
    p.add_argument("--data", help="datasets, comma-separated (default: all)")
    p.add_argument("--variants", default="default",
                   help=f"comma-separated, of: {', '.join(VARIANTS)} (default: default)")
    p.add_argument("--seeds", default="1,2,3,4,5", help="training seeds (default: 1-5)")
    p.add_argument("--n-continuous", type=int, default=2000)
    p.add_argument("--n-discrete", type=int, default=4000)
    p.add_argument("--epochs", type=int, help="override the default epochs")
    p.add_argument("--box", type=int, help="training box (default: the images', 64)")
    p.add_argument("--no-maps", action="store_true", help="skip the map FSC (faster)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--refine-stored", type=int, metavar="STEPS",
                   help="refine the latents of stored runs from before the latent refinement "
                        "(today's default: 20 steps) instead of training")
    p.add_argument("--report", type=Path, metavar="DOCS",
                   help="write realistic_table.md here from the results so far")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:
        report(args.output, args.report)
        return
    known = _datasets(args.n_continuous, args.n_discrete)
    names = args.data.split(",") if args.data else list(known)
    variants = args.variants.split(",")
    for bad in [n for n in names if n not in known] + [v for v in variants if v not in VARIANTS]:
        p.error(f"unknown dataset or variant {bad!r}")
    if args.refine_stored is not None:
        refine_stored(args.output, [known[n] for n in names], variants,
                      [int(s) for s in args.seeds.split(",")], Schedule(args.epochs, args.box),
                      args.refine_stored)
        return
    run_all(args.output, [known[n] for n in names], variants,
            [int(s) for s in args.seeds.split(",")], Schedule(args.epochs, args.box),
            maps=not args.no_maps)


if __name__ == "__main__":
    main()
