"""Landscape and map quality of training variants on simulated data with known truth.

Reproduces, in spirit and at CPU scale, the paper's validation experiments, each over several
training seeds (one run says little: the same configuration scatters by tenths of ARI):

- decoupling: pose/CTF decoupling (Eqs. 3-4) off vs on, on a continuous motion and on two
  discrete states (Supplementary Fig. 6);
- denoising: the L1 / negativity / TV losses (Eqs. 7-9) on vs off at three noise levels
  (Supplementary Fig. 11);
- decoder: SIREN vs ReLU hidden layers (Supplementary Fig. 10);
- focus: the Eq. 12 statistics loss on vs off in a focused run (mask on the moving arm;
  Supplementary Fig. 12);
- defaults: ours vs the paper's ω0 = 30 and optimiser (lr 1e-5, batch 8, constant);
- scatter: tests/train/test_trainer.py's run over seeds, with and without ``--latent-norm``,
  at lr 1e-3 and with a wider decoder (its dataset: ``--data-seed 3``).

Every run is scored by ``hetsiren.analysis.evaluate`` (what ``hetsiren evaluate`` prints) and
timed. Results go to ``OUT/results.jsonl`` one run per line, so an interrupted benchmark
resumes where it stopped and runs shared by experiments are trained once. ``--report`` then
writes a Markdown table (mean ± sd over seeds) and the plots.

    .venv/bin/python benchmarks/bench_landscape.py -o /tmp/landscape --threads 1
    .venv/bin/python benchmarks/bench_landscape.py -o /tmp/landscape --report docs
    .venv/bin/python benchmarks/bench_landscape.py -o /tmp/ls --only decoder --seeds 1,2,3,4,5

Data: the built-in two-domain phantom (a body and a hinged arm) at box 32, 5 Å/px, CTF
(defocus 1-2.5 µm), 1,000 particles, simulation seed 11 (``--n``, ``--data-seed``): three
states (arm closed, open, absent), two states (closed, open) or a continuous arm swing.
``--ref auto`` throughout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hetsiren.analysis.evaluate import evaluate_run, load_truth
from hetsiren.devices import resolve_device
from hetsiren.io import read_map, write_map
from hetsiren.rundir import LATENT, open_run
from hetsiren.simulate import SimulationSpec, simulate_phantom
from hetsiren.simulate.phantoms import discrete_phantom_maps
from hetsiren.simulate.scenarios import simulate_discrete
from hetsiren.train.config import LEGACY_OPTIONS, PAPER_DEFAULTS, REF_AUTO, TrainConfig
from hetsiren.train.inference import decode_latent
from hetsiren.train.trainer import method_changes, train

BOX = 32
PIXEL_A = 5.0
# A voxel belongs to the focus mask when the states' maps differ there by more than this
# fraction of the largest difference (then dilated by _MASK_DILATE voxels).
_MASK_LEVEL = 0.1
_MASK_DILATE = 2

OFF = {"pose_decoupling": 0.0, "ctf_decoupling": 0.0}
ON = {"pose_decoupling": 1.0, "ctf_decoupling": 1.0}
# The network options of issue 10 at their values before it: variants pin them, so that a
# label keeps meaning what was measured when the defaults move on.
PINNED = {"latent_norm": False, "hidden_width": None, "kl_weight": 0.0, "kl_warmup": 0}
NO_DENOISING = {"l1_weight": 0.0, "negativity_weight": 0.0, "tv_l1_weight": 0.0,
                "tv_l2_weight": 0.0}
PAPER_OPTIMISER = {k: v for k, v in PAPER_DEFAULTS.items() if k != "epochs"}


@dataclass(frozen=True)
class Scale:
    """A work folder's dataset size and seed, and its epochs override (None: per experiment)."""

    n: int = 1000
    data_seed: int = 11
    epochs: int | None = None


@dataclass(frozen=True)
class Data:
    kind: Literal["discrete", "two-state", "continuous"]  # discrete = three states
    snr: float

    @property
    def name(self) -> str:
        return f"{self.kind}-snr{self.snr:g}"

    def spec(self, scale: Scale) -> dict:
        """Everything that defines the dataset (part of every run's key)."""
        return {"kind": self.kind, "snr": self.snr, "n": scale.n, "seed": scale.data_seed,
                "box": BOX, "pixel_A": PIXEL_A}


@dataclass(frozen=True)
class Experiment:
    title: str
    data: tuple[Data, ...]
    variants: dict[str, dict]
    seeds: tuple[int, ...]
    zdim: int = 4
    epochs: int = 30
    focus: bool = False
    note: str = ""
    plot: tuple[str, ...] = field(default=("landscape",))


EXPERIMENTS = {
    "decoupling": Experiment(
        "Pose/CTF decoupling (Eqs. 3-4) off vs on", (Data("continuous", 5), Data("two-state", 5)),
        {"off": {**OFF, **PINNED}, "on, λ 1 (default until issue 10)": {**ON, **PINNED},
         "on, λ 0.001 (default)": {"pose_decoupling": 0.001, "ctf_decoupling": 0.001,
                                   **PINNED},
         "off + latent norm": {**OFF, **PINNED, "latent_norm": True},
         "off + width 64 + VAE β 0.3": {**OFF, **PINNED, "hidden_width": 64,
                                        "kl_weight": 0.3},
         "off + width 64 + VAE β 1": {**OFF, **PINNED, "hidden_width": 64, "kl_weight": 1.0},
         "off + width 64 + VAE β 1 warm-up 10": {**OFF, **PINNED, "hidden_width": 64,
                                                 "kl_weight": 1.0, "kl_warmup": 10}},
        seeds=(1, 2, 3), zdim=10, epochs=20,
        note="SNR 5 and zdim 10 (the paper's), where the encoder can see pose and defocus",
        plot=("landscape", "leakage_defocus")),
    "denoising": Experiment(
        "Denoising losses (Eqs. 7-9) on vs off at three noise levels",
        (Data("discrete", 10), Data("discrete", 1), Data("discrete", 0.1)),
        {"losses on (default)": ON, "losses off": {**ON, **NO_DENOISING}}, seeds=(1, 2),
        plot=("auc", "landscape")),
    "decoder": Experiment(
        "SIREN vs ReLU decoder", (Data("discrete", 1),),
        {"SIREN (default)": ON, "ReLU": {**ON, "activation": "relu"}}, seeds=(1, 2, 3),
        plot=("landscape", "auc")),
    "focus": Experiment(
        "Focused run (mask on the arm): Eq. 12 statistics loss on vs off", (Data("discrete", 1),),
        {"stats loss on, λ5 10 (default)": ON, "stats loss off": {**ON,
                                                                   "focus_stats_weight": 0.0}},
        seeds=(1, 2), focus=True, plot=("auc", "mask_corr")),
    "defaults": Experiment(
        "Our optimiser vs the paper's", (Data("discrete", 1),),
        {"ours (lr 3e-4 cosine, batch 16, ω0 5)": ON, "ω0 30 (paper)": {**ON, "omega0": 30.0},
         "paper optimiser (lr 1e-5, batch 8, ω0 30)": {**ON, **PAPER_OPTIMISER}},
        seeds=(1, 2), plot=("landscape", "auc")),
    "scatter": Experiment(
        "Seed scatter of the CI-sized run: latent normalisation, lr, decoder width",
        (Data("discrete", 2),),
        {"width = zdim (paper)": {**OFF, **PINNED},
         "width 64": {**OFF, **PINNED, "hidden_width": 64},
         "lr 1e-3": {**OFF, **PINNED, "lr": 1e-3},
         "latent norm": {**OFF, **PINNED, "latent_norm": True},
         "latent norm + width 64": {**OFF, **PINNED, "latent_norm": True, "hidden_width": 64},
         "latent norm + lr 1e-3": {**OFF, **PINNED, "latent_norm": True, "lr": 1e-3},
         "width 64 + VAE β 0.1": {**OFF, **PINNED, "hidden_width": 64, "kl_weight": 0.1},
         "width 64 + VAE β 0.3": {**OFF, **PINNED, "hidden_width": 64, "kl_weight": 0.3},
         "width 64 + VAE β 1": {**OFF, **PINNED, "hidden_width": 64, "kl_weight": 1.0},
         "width 64 + VAE β 1 warm-up 10": {**OFF, **PINNED, "hidden_width": 64,
                                           "kl_weight": 1.0, "kl_warmup": 10}},
        seeds=(1, 2, 3), note="decoupling off, as tests/train/test_trainer.py (its dataset with "
        "`--data-seed 3`)"),
}


def _digest(obj: object) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def data_dir(out: Path, data: Data, scale: Scale) -> Path:
    return out / "data" / f"{data.name}-{_digest(data.spec(scale))[:8]}"


def make_data(out: Path, data: Data, scale: Scale) -> Path:
    folder = data_dir(out, data, scale)
    if (folder / "truth.json").is_file():
        return folder
    spec = SimulationSpec(n_particles=scale.n, snr=data.snr, seed=scale.data_seed,
                          pixel_size_A=PIXEL_A, max_shift_px=1.0)
    if data.kind == "two-state":
        maps = discrete_phantom_maps(BOX, PIXEL_A, seed=scale.data_seed)[:2]
        simulate_discrete(folder, list(maps), spec, map_names=["arm closed", "arm open"],
                          progress=False)
    else:
        simulate_phantom(folder, data.kind, BOX, spec, progress=False)
    return folder


def focus_mask(data_dir: Path) -> Path:
    """Where the true states differ (the arm), dilated: the focused run's mask."""
    path = data_dir / "focus_mask.mrc"
    if not path.is_file():
        _, meta = load_truth(data_dir)
        maps = np.stack([read_map(data_dir / rel)[0] for rel in meta["truth_maps"]])
        spread = maps.std(0)
        mask = torch.from_numpy(spread > _MASK_LEVEL * spread.max()).float()[None, None]
        mask = torch.nn.functional.max_pool3d(mask, 2 * _MASK_DILATE + 1, 1, _MASK_DILATE)
        write_map(path, mask[0, 0].numpy(), PIXEL_A)
    return path


def focus_metrics(run: Path, data_dir: Path, mask_path: Path) -> dict[str, float]:
    """Inside the mask: correlation of decoded and true maps, and their contrast ratio.

    Contrast = std inside the mask / std outside; its ratio decoded/true is 1 when the refined
    region keeps the value distribution of the rest of the map (what Eq. 12 is for).
    """
    truth, meta = load_truth(data_dir)
    z = np.load(run / LATENT)
    dev = resolve_device("cpu")
    model = open_run(run).model(dev)
    inside = read_map(mask_path)[0] > 0.5
    corr, contrast = [], []
    for k, rel in enumerate(meta["truth_maps"]):
        true = read_map(data_dir / rel)[0]
        decoded = decode_latent(model, z[truth["state"] == k].mean(0, keepdims=True), dev)[0]
        corr.append(np.corrcoef(decoded[inside], true[inside])[0, 1])
        contrast.append((decoded[inside].std() / decoded[~inside].std())
                        / (true[inside].std() / true[~inside].std()))
    return {"mask_corr": float(np.mean(corr)), "mask_contrast_ratio": float(np.mean(contrast))}


def _scale(out: Path, wanted: Scale) -> Scale:
    """The work folder's scale, fixed by its first run."""
    path = out / "settings.json"
    if path.is_file():
        stored = Scale(**json.loads(path.read_text()))
        if stored != wanted:
            raise SystemExit(f"{out} was made with {stored}, not {wanted}: use another folder "
                             "or the same --n/--data-seed/--epochs")
        return stored
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(wanted)))
    return wanted


def make_config(exp: Experiment, overrides: dict, seed: int, folder: Path | None = None
                ) -> TrainConfig:
    """The training configuration of one run (``folder``: its dataset, None for the key)."""
    return replace(TrainConfig(
        particles=str(folder / "particles.star") if folder else "", zdim=exp.zdim,
        epochs=exp.epochs, ref=REF_AUTO, device="cpu", seed=seed,
        mask=str(focus_mask(folder)) if folder and exp.focus else None), **overrides)


def run_key(data: Data, overrides: dict, exp: Experiment, seed: int, scale: Scale) -> str:
    """Hash of everything that defines a run: the resolved configuration and the dataset."""
    # options added later are left out at the value older runs had: their keys stay
    config = {k: v for k, v in make_config(exp, overrides, seed).to_dict().items()
              if k not in ("particles", "mask", "device")
              and LEGACY_OPTIONS.get(k, object()) != v}
    mask = {"level": _MASK_LEVEL, "dilate": _MASK_DILATE} if exp.focus else None
    key = {"config": config, "data": data.spec(scale), "mask": mask}
    return _digest({**key, **method_changes()})


def log_summary(run: Path) -> dict[str, float]:
    """The training trajectory: data term and z std of the first and last epochs."""
    entries = open_run(run).log()
    return {"data_first": entries[0]["data"], "data_last": entries[-1]["data"],
            "z_std_first": entries[0]["z_std"], "z_std_last": entries[-1]["z_std"],
            "map_spread_first": entries[0].get("map_spread", float("nan")),
            "map_spread_last": entries[-1].get("map_spread", float("nan")),
            "health": entries[-1].get("health", "")}


def load_results(out: Path) -> dict[str, dict]:
    path = out / "results.jsonl"
    if not path.is_file():
        return {}
    return {r["key"]: r for r in map(json.loads, path.read_text().splitlines())}


def run_all(out: Path, chosen: list[str], seeds: tuple[int, ...] | None, scale: Scale,
            variants: list[str] | None = None, datasets: list[str] | None = None) -> None:
    done = load_results(out)
    (out / "latents").mkdir(parents=True, exist_ok=True)
    for name in chosen:
        exp = EXPERIMENTS[name]
        for data in exp.data:
            if datasets and data.name not in datasets:
                continue
            folder = make_data(out, data, scale)
            for label, overrides in exp.variants.items():
                if variants and label not in variants:
                    continue
                for seed in seeds or exp.seeds:
                    key = run_key(data, overrides, exp, seed, scale)
                    if key in done:
                        continue
                    run = out / "runs" / key
                    shutil.rmtree(run, ignore_errors=True)  # an interrupted run starts over
                    t0 = time.perf_counter()
                    train(make_config(exp, overrides, seed, folder), run, progress=False)
                    wall = time.perf_counter() - t0
                    metrics = {**evaluate_run(run, folder, device="cpu"), **log_summary(run)}
                    if exp.focus:
                        metrics.update(focus_metrics(run, folder, focus_mask(folder)))
                    np.save(out / "latents" / f"{key}.npy", np.load(run / LATENT))
                    record = {"key": key, "experiment": name, "data": data.name,
                              "variant": label, "seed": seed, "wall_s": wall, **metrics}
                    with open(out / "results.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    done[key] = record
                    print(f"{name} | {data.name} | {label} | seed {seed}: "
                          f"{_summary(record)} ({wall:.0f} s)", flush=True)


# --- report ------------------------------------------------------------------------------

def _value(r: dict, metric: str) -> float:
    """A named metric of one run (landscape/knn are the discrete or continuous ones)."""
    discrete = "ari_kmeans" in r
    key = {"landscape": "ari_kmeans" if discrete else "spearman_pc1",
           "knn": "knn_accuracy" if discrete else "knn_r2_coordinate",
           "leakage_view": "leakage_knn_r2_viewing", "leakage_defocus": "leakage_knn_r2_defocus",
           "auc": "map_fsc_auc_mean"}.get(metric, metric)
    return float(r.get(key, np.nan))


_LABELS = {"landscape": "ARI (discrete) / |ρ| PC1 (continuous)",
           "knn": "kNN accuracy / kNN R² of the coordinate",
           "leakage_defocus": "defocus leakage R²", "auc": "map FSC AUC",
           "mask_corr": "correlation in the mask", "mask_contrast_ratio": "contrast ratio"}


def _summary(r: dict) -> str:
    return ", ".join(f"{m} {_value(r, m):.3f}" for m in ("landscape", "knn", "leakage_view",
                                                          "leakage_defocus", "auc"))


def _cell(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _groups(results: dict[str, dict], exp: Experiment, scale: Scale):
    """``(data, variant label, runs)``: every stored run of that configuration, any seed."""
    for data in exp.data:
        for label, overrides in exp.variants.items():
            runs = sorted((r for r in results.values()
                           if r["key"] == run_key(data, overrides, exp, r["seed"], scale)),
                          key=lambda r: r["seed"])
            yield data, label, runs


def report(out: Path, docs: Path, scale: Scale) -> None:
    results = load_results(out)
    lines = [f"# Landscape benchmark ({scale.n} particles per dataset, simulation seed "
             f"{scale.data_seed})", "",
             "Written by `benchmarks/bench_landscape.py --report`; mean ± sd over the seeds "
             "listed. See docs/benchmarks.md for how to read it.", ""]
    for name, exp in EXPERIMENTS.items():
        groups = [g for g in _groups(results, exp, scale) if g[2]]
        if not groups:
            continue
        extra = " | mask corr. | mask contrast ratio" if exp.focus else ""
        lines += [f"### {exp.title}", "",
                  f"`--only {name}`: zdim {exp.zdim}, {exp.epochs} epochs"
                  + (f"; {exp.note}" if exp.note else "") + ".", "",
                  "| data | variant | seeds | ARI / abs(ρ) PC1 | kNN acc / R² | leakage R² view "
                  f"| leakage R² defocus | map FSC AUC{extra} | wall per run (s) |",
                  "|---|---|---|---|---|---|---|---|" + ("---|---|" if exp.focus else "") + "---|"]
        for data, label, runs in groups:
            cells = [_cell([_value(r, m) for r in runs]) for m in
                     ("landscape", "knn", "leakage_view", "leakage_defocus", "auc")]
            if exp.focus:
                cells += [_cell([_value(r, m) for r in runs])
                          for m in ("mask_corr", "mask_contrast_ratio")]
            seeds = ",".join(str(r["seed"]) for r in runs)
            lines.append(f"| {data.name} | {label} | {seeds} | " + " | ".join(cells)
                         + f" | {np.mean([r['wall_s'] for r in runs]):.0f} |")
        lines.append("")
    (docs / "landscape_table.md").write_text("\n".join(lines))
    print("\n".join(lines))
    _plot_metrics(results, docs / "bench_landscape.png", scale)
    _plot_decoupling(results, out, docs / "bench_decoupling_landscapes.png", scale)


def _plot_metrics(results: dict[str, dict], path: Path, scale: Scale) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, exp, metric) for name, exp in EXPERIMENTS.items() for metric in exp.plot
              if any(runs for _, _, runs in _groups(results, exp, scale))]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, exp, metric) in zip(axes.flat, panels, strict=False):
        width = 0.8 / len(exp.variants)
        for data, label, runs in _groups(results, exp, scale):
            v = list(exp.variants).index(label)
            x = [d.name for d in exp.data].index(data.name) + (v - (len(exp.variants) - 1) / 2
                                                               ) * width
            values = np.array([_value(r, metric) for r in runs])
            if len(values):
                jitter = np.linspace(-0.25, 0.25, len(values)) * width if len(values) > 1 else 0
                ax.scatter(x + jitter, values, color=f"C{v}", s=18, zorder=3)
                ax.hlines(np.nanmean(values), x - 0.4 * width, x + 0.4 * width, color=f"C{v}",
                          lw=2, label=label if data == exp.data[0] else None)
        ax.set_xticks(range(len(exp.data)), [d.name for d in exp.data], fontsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(f"{name}: {_LABELS.get(metric, metric)}", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("bench_landscape.py: one dot per training seed, bar = mean", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_decoupling(results: dict[str, dict], out: Path, path: Path, scale: Scale) -> None:
    """PCA of the continuous latent, decoupling off vs on (first seed), by motion and defocus."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    exp = EXPERIMENTS["decoupling"]
    data = exp.data[0]
    shown = [(label, results.get(run_key(data, overrides, exp, exp.seeds[0], scale)))
             for label, overrides in exp.variants.items()]
    shown = [(label, r) for label, r in shown if r]
    if not shown:
        return
    truth, _ = load_truth(data_dir(out, data, scale))
    defocus = 0.5 * (truth["defocus_u_A"] + truth["defocus_v_A"]) / 1e4
    fig, axes = plt.subplots(len(shown), 2, figsize=(8, 3.6 * len(shown)), squeeze=False)
    for (label, r), row in zip(shown, axes, strict=True):
        pcs = PCA(2).fit_transform(np.load(out / "latents" / f"{r['key']}.npy"))
        for ax, colour, what in ((row[0], truth["coordinate"], "true motion coordinate"),
                                 (row[1], defocus, "defocus (µm)")):
            sc = ax.scatter(pcs[:, 0], pcs[:, 1], c=colour, s=4, cmap="viridis")
            fig.colorbar(sc, ax=ax, label=what)
            ax.set_title(f"decoupling {label.split(' (')[0]}: {what.split(' (')[0]}", fontsize=9)
            ax.set_xlabel("PC1")
            ax.set_ylabel("PC2")
    fig.suptitle(f"{data.name}, zdim {exp.zdim}, seed {exp.seeds[0]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="work folder: data, runs, results.jsonl (reused when it exists)")
    p.add_argument("--only", help=f"experiments, comma-separated (of {', '.join(EXPERIMENTS)})")
    p.add_argument("--seeds", help="training seeds, comma-separated (default: per experiment)")
    p.add_argument("--n", type=int, default=Scale.n,
                   help=f"particles per dataset (default: {Scale.n})")
    p.add_argument("--data-seed", type=int, default=Scale.data_seed,
                   help=f"simulation seed of every dataset (default: {Scale.data_seed})")
    p.add_argument("--epochs", type=int, help="override every experiment's epochs (smoke tests)")
    p.add_argument("--variants", help="only these variants (labels, comma-separated)")
    p.add_argument("--data", help="only these datasets (e.g. two-state-snr5, comma-separated)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--report", type=Path, metavar="DOCS",
                   help="write landscape_table.md and the plots here from the results so far")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = args.only.split(",") if args.only else list(EXPERIMENTS)
    unknown = set(chosen) - set(EXPERIMENTS)
    if unknown:
        p.error(f"unknown experiment(s) {', '.join(sorted(unknown))}")
    scale = _scale(args.output, Scale(args.n, args.data_seed, args.epochs))
    if scale.epochs:
        for name, exp in EXPERIMENTS.items():
            EXPERIMENTS[name] = replace(exp, epochs=scale.epochs)
    if args.report:
        report(args.output, args.report, scale)
        return
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    run_all(args.output, chosen, seeds, scale,
            args.variants.split(",") if args.variants else None,
            args.data.split(",") if args.data else None)


if __name__ == "__main__":
    main()
