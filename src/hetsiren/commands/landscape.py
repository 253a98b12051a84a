"""The landscape in volume space: PCA and clustering of maps decoded over the whole latent.

Decodes maps at --points KMeans centres of the latent (default 500), runs PCA on the maps
themselves (inside the inscribed sphere, at most 64 px: larger maps are Fourier-cropped) and
groups them into --states states by Ward clustering of their map-space PCs (cryoDRGN's
analyze_landscape idea). Writes RUN/analysis/landscape/: the state maps, movies along the
map-space PCs (ChimeraX script), a plot, each particle's state, and one particle-index file
per state for `hetsiren export --indices`.

examples:
  hetsiren landscape run
  hetsiren landscape run --points 200 --states 8 --pcs 3 --device cuda
  hetsiren export run --indices run/analysis/landscape/state_01.txt -o state1.star
"""

from __future__ import annotations

import argparse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("--points", type=int, default=500,
                   help="latent KMeans centres where maps are decoded (default: %(default)s)")
    p.add_argument("--states", type=int, default=5,
                   help="map-space states (default: %(default)s)")
    p.add_argument("--pcs", type=int, default=3,
                   help="map-space PCs shown as movies (default: %(default)s)")
    p.add_argument("--n-samples", type=int, default=7,
                   help="maps per PC movie (default: %(default)s)")
    p.add_argument("--epoch", type=int,
                   help="use the snapshot after this epoch instead of the final model")
    p.add_argument("--seed", type=int, default=0, help="KMeans seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.map_landscape import analyze_map_landscape

    result = analyze_map_landscape(args.run, n_points=args.points, states=args.states,
                                   pcs=args.pcs, n_samples=args.n_samples, device=args.device,
                                   seed=args.seed, epoch=args.epoch)
    ratio = result.explained_variance_ratio
    print(f"map-space PC1..PC{min(3, len(ratio))} explain "
          + ", ".join(f"{100 * r:.1f}%" for r in ratio[:3])
          + f" of the maps' variance; state populations {result.populations.tolist()}")
    print(f"written to {result.out_dir} (ChimeraX: open {result.files['chimerax']})")
    return 0
