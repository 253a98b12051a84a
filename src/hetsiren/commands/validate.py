"""Check a decoded map against a reconstruction from the particles nearest it (paper Fig. 10).

Reconstructs the N particles nearest a latent point (SNR-weighted, two half maps) at their
consensus poses and compares it with the map the decoder produces there, inside a soft mask
made from the reconstruction: the FSC corrected by phase randomisation, read at 0.5 (a map
against a reference), and the local agreement; the half maps' own FSC (at 0.143) and local
resolution say how far the particles can judge. Also writes the decoded map low-passed at the
supported resolution and sharpened. Output in RUN/analysis/validate/<cluster_NN or name>/.

examples:
  hetsiren validate run --cluster 3
  hetsiren validate run --z point.txt --n 5000
"""

from __future__ import annotations

import argparse
import json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--cluster", type=int, help="cluster number from `hetsiren analyze`")
    where.add_argument("--z", help="latent point: .npy or text (first row used)")
    p.add_argument("--n", type=int, default=2000,
                   help="particles nearest the point to reconstruct (default: %(default)s); "
                        "with --cluster at most the cluster's size (all its particles, with a "
                        "warning, when it has fewer); fewer than 1000 give a warning")
    p.add_argument("--k", type=int,
                   help="KMeans clusters when the run has not been analysed (default: the k "
                        "`hetsiren analyze` stored)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.validate import validate_run

    result = validate_run(args.run, cluster=args.cluster, z_file=args.z, n_particles=args.n,
                          device=args.device, k=args.k)
    print(json.dumps(result.summary(), indent=2))
    print(f"maps, FSC plot and validation.json in {result.out_dir}")
    return 0
