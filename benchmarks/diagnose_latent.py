"""Where does the latent's spread go, and does the decoder use it? One line per snapshot.

For each epoch a run kept (``RUN/snapshots``, every ``--snapshot-every`` epochs and the last):

- the spread of z per dimension (standard deviations, largest first) and the fraction of its
  variance on the first principal axis;
- the decoder's response: the RMS over voxels of the standard deviation, across 64 particles'
  latents, of their decoded maps, relative to the RMS of the mean decoded map ("map spread").
  Zero: the decoder ignores z. With ``--truth`` (a simulated dataset) the true maps' spread
  is printed for comparison;
- the data term and z std of that epoch's ``log.jsonl`` line.

    .venv/bin/python benchmarks/diagnose_latent.py RUN [RUN...] [--truth DATA]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from hetsiren.analysis.evaluate import load_truth
from hetsiren.io import read_map
from hetsiren.rundir import load_snapshot_latent, open_run, snapshot_epochs
from hetsiren.train.inference import decode_latent

_SAMPLE = 64


def map_spread(maps: np.ndarray) -> float:
    """RMS over voxels of the spread across maps, relative to the RMS of their mean."""
    return float(np.sqrt(maps.var(0).mean()) / np.sqrt((maps.mean(0) ** 2).mean()))


def truth_spread(truth_dir: Path) -> float:
    _, meta = load_truth(truth_dir)
    return map_spread(np.stack([read_map(truth_dir / rel)[0] for rel in meta["truth_maps"]]))


def diagnose(run: Path) -> list[dict]:
    opened = open_run(run)
    log = {e["epoch"]: e for e in opened.log()}
    rows = []
    for epoch in snapshot_epochs(run):
        z = load_snapshot_latent(run, epoch).astype(np.float64)
        dev = torch.device("cpu")
        model = opened.model(dev, epoch=epoch)
        centred = z - z.mean(0)
        s = np.linalg.svd(centred, compute_uv=False)
        pick = np.random.default_rng(0).choice(len(z), size=min(_SAMPLE, len(z)), replace=False)
        maps = decode_latent(model, z[pick], dev)
        rows.append({"epoch": epoch, "z_std_dims": sorted(z.std(0).round(4).tolist(),
                                                          reverse=True),
                     "pc1_fraction": float(s[0] ** 2 / (s ** 2).sum()),
                     "map_spread": map_spread(maps), "data": log[epoch]["data"],
                     "z_std": log[epoch]["z_std"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--truth", type=Path, help="simulated dataset: print its maps' spread")
    args = p.parse_args()
    if args.truth:
        print(f"true maps' spread {truth_spread(args.truth):.4f}")
    for run in args.runs:
        for r in diagnose(run):
            dims = " ".join(f"{v:.3g}" for v in r["z_std_dims"])
            print(f"{run.name} epoch {r['epoch']}: data {r['data']:.4f}, z std {r['z_std']:.3g}"
                  f" (per dimension {dims}; PC1 {r['pc1_fraction']:.2f}), map spread "
                  f"{r['map_spread']:.4f}", flush=True)


if __name__ == "__main__":
    main()
