"""Side by side with cryoDRGN: same simulated dataset, same epochs, same metrics.

For each dataset (the built-in phantom: three discrete states, and/or a continuous arm
swing; box 32, 5 Å/px, CTF, SNR 1 by default) both tools are trained from the same RELION 3.1
STAR with their own defaults except the latent size and the number of epochs, which are
shared:

- hetsiren: ``hetsiren train --ref auto`` (decoupling on, its default);
- cryoDRGN: ``parse_pose_star`` + ``parse_ctf_star`` + ``train_vae`` (its default 3×1024
  encoder and decoder, default data inversion, which is right for RELION particles).

Each training runs as its own process on the CPU (CUDA hidden from both), with the same number
of threads (``OMP_NUM_THREADS``), timed by wall clock (hetsiren's includes its ``--ref auto``
reconstruction); peak memory is that process's ``ru_maxrss``. Both write their latent and
weights once, at the end (cryoDRGN's ``--checkpoint`` set to the number of epochs; its default
re-encodes every particle each epoch, which would count against it). Then
both are measured by the same code (``hetsiren.analysis.evaluate``): landscape metrics on the
full latent (z.pkl for cryoDRGN, its posterior means) and the FSC of maps decoded at each
state's mean latent (``cryodrgn eval_vol`` for cryoDRGN) against the true maps.

    .venv/bin/python benchmarks/bench_cryodrgn.py -o /tmp/cdside --cryodrgn-venv /tmp/cdvenv
    .venv/bin/python benchmarks/bench_cryodrgn.py -o /tmp/cdside2 --kinds continuous --epochs 30

cryoDRGN is installed in ``--cryodrgn-venv`` when missing (torch==2.13.0 first, then
cryodrgn). Prints a Markdown table and writes it, with every metric, to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from cryodrgn_env import add_common_args, prepare, run, run_measured, train_vae
from hetsiren.analysis.evaluate import evaluate_latent, evaluate_maps, evaluate_run, load_truth

BOX = 32
PIXEL_A = 5.0


def simulate(out: Path, kind: str, n: int, snr: float, seed: int) -> Path:
    hetsiren = Path(sys.executable).parent / "hetsiren"
    run([hetsiren, "simulate", "-o", out, "--phantom", kind, "--n", n, "--box", BOX,
         "--pixel-size", PIXEL_A, "--snr", snr, "--seed", seed, "--max-shift", 1])
    return out


def train_hetsiren(data: Path, work: Path, args: argparse.Namespace, env: dict) -> dict:
    hetsiren = Path(sys.executable).parent / "hetsiren"
    cost = run_measured([hetsiren, "train", data / "particles.star", "-o", work / "run",
                         "--zdim", args.zdim, "--epochs", args.epochs, "--ref", "auto",
                         "--seed", args.train_seed, "--device", "cpu"],
                        work / "train.log", env)
    metrics = evaluate_run(work / "run", data, device="cpu")
    return {"wall_s": cost.wall_s, "peak_rss_gb": cost.peak_rss_gb, **metrics}


def train_cryodrgn(data: Path, work: Path, venv: Path, args: argparse.Namespace,
                   env: dict) -> dict:
    cryodrgn = venv / "bin" / "cryodrgn"
    star = data / "particles.star"
    run([cryodrgn, "parse_pose_star", star, "-o", work / "pose.pkl"])
    run([cryodrgn, "parse_ctf_star", star, "-o", work / "ctf.pkl"])
    vae = train_vae(venv, star, work / "pose.pkl", work / "ctf.pkl", work, args.zdim,
                    args.epochs, args.train_seed, env, datadir=data)
    z = vae.latent()
    truth, meta = load_truth(data)
    maps = evaluate_maps(vae.decoder(venv, PIXEL_A, env), z, truth, meta, data, PIXEL_A, BOX)
    if not maps:
        sys.exit(f"{data}: no state has particles to decode a map at")
    return {"wall_s": vae.cost.wall_s, "peak_rss_gb": vae.cost.peak_rss_gb,
            **evaluate_latent(z, truth), "maps": maps,
            "map_fsc_auc_mean": float(np.mean([m["auc"] for m in maps]))}


def row(kind: str, tool: str, m: dict, epochs: int, n: int) -> str:
    def f(key: str) -> str:
        return "–" if m.get(key) is None else f"{m[key]:.3f}"

    landscape = (f"ARI {f('ari_kmeans')}, kNN acc {f('knn_accuracy')}" if kind == "discrete"
                 else f"abs(ρ) PC1 {f('spearman_pc1')}, kNN R² {f('knn_r2_coordinate')}")
    res = min(x["resolution_0.5_A"] for x in m["maps"])
    return (f"| {kind} | {tool} | {landscape} | {f('leakage_knn_r2_viewing')} | "
            f"{f('leakage_knn_r2_defocus')} | {m['map_fsc_auc_mean']:.3f} | {res:.1f} | "
            f"{m['wall_s']:.0f} s ({n * epochs / m['wall_s']:.1f} img/s) | "
            f"{m['peak_rss_gb']:.2f} GB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--kinds", default="discrete,continuous",
                   help="phantom datasets, comma-separated (default: discrete,continuous)")
    p.add_argument("--n", type=int, default=1000, help="particles (default: 1000)")
    p.add_argument("--snr", type=float, default=1.0, help="SNR (default: 1)")
    p.add_argument("--epochs", type=int, default=20,
                   help="epochs for both tools (default: 20, cryoDRGN's default)")
    p.add_argument("--zdim", type=int, default=10, help="latent size for both (default: 10)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for each training (default: 1)")
    p.add_argument("--seed", type=int, default=11, help="simulation seed (default: 11)")
    p.add_argument("--train-seed", type=int, default=1, help="training seed (default: 1)")
    args = p.parse_args()
    out, venv, version = prepare(args)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": ""}
    header = ("| data | tool | landscape | leakage R² view | leakage R² defocus | "
              "map FSC AUC | best map res. 0.5 (Å) | training wall | peak RSS |\n"
              "|---|---|---|---|---|---|---|---|---|")
    rows, results = [], {}
    for kind in args.kinds.split(","):
        data = simulate(out / kind / "data", kind, args.n, args.snr, args.seed)
        for tool in ("hetsiren", "cryodrgn"):
            work = out / kind / tool
            work.mkdir(parents=True)
            results[f"{kind}/{tool}"] = m = (
                train_hetsiren(data, work, args, env) if tool == "hetsiren"
                else train_cryodrgn(data, work, venv, args, env))
            rows.append(row(kind, "hetsiren" if tool == "hetsiren" else f"cryoDRGN {version}",
                            m, args.epochs, args.n))
            print(rows[-1], flush=True)
    table = (f"{args.n} particles, box {BOX}, {PIXEL_A} Å/px, SNR {args.snr}, {args.epochs} "
             f"epochs, zdim {args.zdim}, {args.threads} CPU thread(s) per training.\n\n"
             f"{header}\n" + "\n".join(rows) + "\n")
    print("\n" + table)
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
