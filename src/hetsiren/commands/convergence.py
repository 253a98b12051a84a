"""Has training converged? Compare the latent and decoded maps between a run's snapshots.

Needs at least two snapshots (train keeps one every --snapshot-every epochs, default 5, and
one after the last). Writes RUN/analysis/convergence/convergence.png and convergence.json:
per interval between snapshots, the latent variance no affine map of the previous latent
explains, the share of nearest neighbours kept, and how much the maps decoded at fixed
particles changed; prints whether the run looks settled or should train longer.

examples:
  hetsiren convergence run
  hetsiren convergence run --n-maps 16 --device cuda
"""

from __future__ import annotations

import argparse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("--n-maps", type=int, default=8,
                   help="particles whose maps are compared (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="KMeans/sampling seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.convergence import analyze_convergence

    result = analyze_convergence(args.run, n_maps=args.n_maps, device=args.device,
                                 seed=args.seed)
    print(f"snapshots of epochs {', '.join(map(str, result.epochs))}: {result.verdict}")
    print(f"plot: {result.files['plot']}")
    return 0
