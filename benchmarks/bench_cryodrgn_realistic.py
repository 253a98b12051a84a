"""Side by side with cryoDRGN on the realistic suite: equal wall time and equal epochs.

The datasets are ``bench_realistic.py``'s (atomic-model densities of AdK and the PR-LBD dimer,
box 64, SNR 0.1, defocus 0.5-3 µm), made in (or reused from) its work folder ``--store``.
Both tools train at the same box (``--box``, default 32, the suite's training box): hetsiren
with ``--box``, cryoDRGN on the stack that its own ``cryodrgn downsample`` writes (as a
cryoDRGN user does; ``parse_ctf_star -D --Apix`` at the downsampled sampling). Every training
is a process of its own with ``--threads`` threads (CUDA hidden), timed by wall clock, its
peak memory that process's.

- hetsiren: ``hetsiren train --ref auto --box B`` with its defaults (30 epochs), and again with
  ``--epochs E``, E = cryoDRGN's epochs (equal epochs);
- cryoDRGN 4.3.1: ``train_vae`` with its defaults but ``--zdim 10`` (ours) and ``-n E``, a
  checkpoint every epoch (so its latent can be scored after each; the re-encoding is not in
  its epoch times).

Equal wall time: cryoDRGN's latest epoch whose cumulative training time (cryoDRGN's own
``Finished in`` per epoch, without its set-up and re-encodings: in its favour) is within
hetsiren's whole default run (``--ref auto`` reconstruction and final encoding included);
its first epoch when even that took longer. Both are scored by the same code
(``hetsiren.analysis.evaluate`` and the suite's rare-state recall; cryoDRGN's maps from
``eval_vol`` at each true state's mean latent).

Results per dataset and tool go to ``STORE/cryodrgn/``; a rerun reuses them.

    .venv/bin/python benchmarks/bench_cryodrgn_realistic.py --store /tmp/real \\
        --data adk-continuous-snr0.1 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from bench_realistic import BOX, PIXEL_A, _datasets, make_data, rare_recall
from cryodrgn_env import ensure_cryodrgn, run, run_measured, train_vae
from hetsiren.analysis.evaluate import evaluate_latent, evaluate_maps, evaluate_run, load_truth
from hetsiren.rundir import LATENT


def _scores(z: np.ndarray, truth: dict, discrete: bool) -> dict:
    out = evaluate_latent(z, truth)
    if discrete:
        out["rare_recall"] = rare_recall(z, truth["state"])
    return out


def _with_maps(scores: dict, maps: list[dict]) -> dict:
    return {**scores, "maps": maps, "map_fsc_auc_mean": float(np.mean([m["auc"] for m in maps]))}


def hetsiren_run(folder: Path, work: Path, args: argparse.Namespace, env: dict,
                 epochs: int | None) -> dict:
    """One ``hetsiren train`` process (defaults, or ``epochs``), scored."""
    result = work / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    shutil.rmtree(work, ignore_errors=True)  # an interrupted run starts over
    work.mkdir(parents=True)
    cmd = [Path(sys.executable).parent / "hetsiren", "train", folder / "particles.star",
           "-o", work / "run", "--ref", "auto", "--box", args.box, "--seed", args.train_seed,
           "--device", "cpu"]
    if epochs:
        cmd += ["--epochs", epochs]
    cost = run_measured(cmd, work / "train.log", env)
    truth, _ = load_truth(folder)
    metrics = evaluate_run(work / "run", folder, device="cpu")
    if "rare_recall" not in metrics and np.all(truth["state"] >= 0):
        metrics["rare_recall"] = rare_recall(np.load(work / "run" / LATENT), truth["state"])
    n_epochs = len((work / "run" / "log.jsonl").read_text().splitlines())
    record = {"tool": "hetsiren", "epochs": n_epochs, "wall_s": cost.wall_s,
              "train_s": cost.wall_s, "peak_rss_gb": cost.peak_rss_gb, **metrics}
    result.write_text(json.dumps(record))
    return record


def cryodrgn_run(folder: Path, work: Path, venv: Path, args: argparse.Namespace, env: dict,
                 budget_s: float) -> list[dict]:
    """cryoDRGN on the downsampled stack; records after the last epoch and, when earlier,
    after the last epoch within ``budget_s`` of training."""
    result = work / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cryodrgn = venv / "bin" / "cryodrgn"
    star = folder / "particles.star"
    protein = folder.name.split("-")[0]
    apix = PIXEL_A[protein] * BOX / args.box
    stack = work / f"particles.{args.box}.mrcs"
    run([cryodrgn, "downsample", star, "--datadir", folder, "-D", args.box, "-o", stack,
         "--max-threads", args.threads], env)
    run([cryodrgn, "parse_pose_star", star, "-o", work / "pose.pkl"], env)
    run([cryodrgn, "parse_ctf_star", star, "-D", args.box, "--Apix", apix,
         "-o", work / "ctf.pkl"], env)
    vae = train_vae(venv, stack, work / "pose.pkl", work / "ctf.pkl", work, args.zdim,
                    args.epochs, args.train_seed, env, checkpoint=1)
    if len(vae.epoch_s) != args.epochs:
        sys.exit(f"{work / 'train.log'}: {len(vae.epoch_s)} epoch times for {args.epochs} "
                 "epochs")
    truth, meta = load_truth(folder)
    discrete = bool(np.all(truth["state"] >= 0))
    elapsed = np.cumsum(vae.epoch_s)
    within = int(np.searchsorted(elapsed, budget_s, side="right")) - 1
    picks = sorted({max(within, 0), args.epochs - 1})
    records = []
    for epoch in picks:  # 0-based here; cryoDRGN's checkpoints count from 1
        z = vae.latent(epoch + 1)
        maps = evaluate_maps(vae.decoder(venv, apix, env, epoch + 1), z, truth, meta, folder,
                             apix, args.box)
        records.append({"tool": "cryodrgn", "epochs": epoch + 1, "wall_s": vae.cost.wall_s,
                        "train_s": float(elapsed[epoch]), "peak_rss_gb": vae.cost.peak_rss_gb,
                        "per_epoch": [_scores(vae.latent(e + 1), truth, discrete)
                                      for e in range(epoch + 1)] if epoch == picks[-1] else [],
                        **_with_maps(_scores(z, truth, discrete), maps)})
    result.write_text(json.dumps(records))
    return records


def _row(data: str, what: str, r: dict) -> str:
    def f(key: str) -> str:
        return "–" if r.get(key) is None else f"{r[key]:.3f}"

    if "ari_kmeans" in r:
        landscape = (f"ARI {f('ari_kmeans')}, kNN acc {f('knn_accuracy')}, rare recall "
                     f"{f('rare_recall')}")
    else:
        landscape = f"abs(ρ) PC1 {f('spearman_pc1')}, kNN R² {f('knn_r2_coordinate')}"
    return (f"| {data} | {what} | {r['epochs']} | {landscape} | {f('leakage_knn_r2_viewing')} "
            f"| {f('leakage_knn_r2_defocus')} | {r['map_fsc_auc_mean']:.3f} | "
            f"{r['train_s']:.0f} s | {r['wall_s']:.0f} s | {r['peak_rss_gb']:.2f} GB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, required=True,
                   help="bench_realistic.py's work folder (datasets made there when missing)")
    p.add_argument("--data", default="adk-continuous-snr0.1,prlbd-continuous-snr0.1,"
                   "adk-discrete-snr0.1,prlbd-discrete-snr0.1", help="datasets, comma-separated")
    p.add_argument("--n-continuous", type=int, default=2000)
    p.add_argument("--n-discrete", type=int, default=4000)
    p.add_argument("--box", type=int, default=32, help="training box of both (default: 32)")
    p.add_argument("--epochs", type=int, default=3, help="cryoDRGN's epochs (default: 3)")
    p.add_argument("--zdim", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per training")
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--cryodrgn-venv", type=Path, default=Path("/tmp/cdvenv"))
    args = p.parse_args()
    store = args.store.resolve()
    venv = args.cryodrgn_venv.resolve()
    version = ensure_cryodrgn(venv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": ""}
    known = _datasets(args.n_continuous, args.n_discrete)
    rows = []
    for name in args.data.split(","):
        if name not in known:
            p.error(f"unknown dataset {name!r}; known: {', '.join(known)}")
        folder = make_data(store, known[name])
        base = store / "cryodrgn" / f"{folder.name}-box{args.box}-seed{args.train_seed}"
        ours = hetsiren_run(folder, base / "hetsiren-default", args, env, None)
        ours_e = hetsiren_run(folder, base / f"hetsiren-{args.epochs}ep", args, env,
                              args.epochs)
        theirs = cryodrgn_run(folder, base / f"cryodrgn-{args.epochs}ep", venv, args, env,
                              ours["wall_s"])
        rows += [_row(name, "hetsiren (defaults)", ours),
                 _row(name, f"cryoDRGN {version}, at hetsiren's wall time", theirs[0]),
                 _row(name, "hetsiren, equal epochs", ours_e),
                 _row(name, f"cryoDRGN {version}", theirs[-1])]
        print("\n".join(rows[-4:]), flush=True)
    table = (f"Training box {args.box}, zdim {args.zdim}, {args.threads} CPU thread(s) per "
             f"training, training seed {args.train_seed}.\n\n"
             "| data | tool | epochs | landscape | leakage R² view | leakage R² defocus | "
             "map FSC AUC | training time | process wall | peak RSS |\n"
             "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print("\n" + table)
    (store / "cryodrgn" / "table.md").write_text(table)


if __name__ == "__main__":
    main()
