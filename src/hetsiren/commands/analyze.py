"""Analyse a run's landscape: PCA/UMAP, KMeans states, decoded maps, plots and a report.

Writes RUN/analysis/: PCA (explained variance), optional UMAP, KMeans with --k clusters and
the real particle nearest each centre as its representative, maps decoded there, maps along
PC1..PC{--pcs} between percentiles, populations, PNG plots, isosurface pictures of the cluster
maps, a ChimeraX .cxc script, a Jupyter notebook (hetsiren_analysis.ipynb: the run through
the Python API) and report.html (self-contained: open it in any browser).

examples:
  hetsiren analyze run
  hetsiren analyze run --k 10 --pcs 3 --umap
  hetsiren analyze run --no-decode          # latent analysis only, no maps
  hetsiren analyze run --epoch 10           # the snapshot after epoch 10 → run/analysis.010
"""

from __future__ import annotations

import argparse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("--k", type=int, default=20,
                   help="KMeans clusters (default: %(default)s, as the paper's 20 states)")
    p.add_argument("--pcs", type=int, default=2, help="PCs to sample maps along (default: 2)")
    p.add_argument("--umap", action="store_true", help="also embed with UMAP (umap-learn)")
    p.add_argument("--umap-dims", type=int, choices=[2, 3], default=2)
    p.add_argument("--percentiles", type=float, nargs=2, default=[5.0, 95.0],
                   metavar=("LO", "HI"), help="PC range sampled, in %% (default: 5 95)")
    p.add_argument("--n-samples", type=int, default=5, help="maps per PC (default: 5)")
    p.add_argument("--no-decode", action="store_true", help="do not decode maps")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--seed", type=int, default=0, help="KMeans/UMAP seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epoch", type=int,
                   help="analyse the snapshot kept after this epoch (RUN/snapshots) into "
                        "RUN/analysis.EEE (default: the final model, into RUN/analysis)")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.analyze import AnalysisConfig, analyze_run

    cfg = AnalysisConfig(k=args.k, pcs=args.pcs, umap=args.umap, umap_dims=args.umap_dims,
                         percentiles=tuple(args.percentiles), n_samples=args.n_samples,
                         decode=not args.no_decode, device=args.device, seed=args.seed,
                         report=not args.no_report, epoch=args.epoch)
    result = analyze_run(args.run, cfg)
    print(f"analysis written to {result.out_dir}")
    if not args.no_report:
        print(f"open {result.report} in a browser")
    return 0
