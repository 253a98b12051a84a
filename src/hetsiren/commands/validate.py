"""Check a decoded map against a reconstruction from the particles nearest it (paper Fig. 10).

Reconstructs the N particles nearest a latent point (half maps, FSC) by Wiener backprojection
at their consensus poses and reports the FSC between that reconstruction and the map the
decoder produces there. Output in RUN/analysis/validate/<cluster_NN or name>/.

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
                   help="particles nearest the point to reconstruct (default: %(default)s)")
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
