"""Decode maps at chosen latent points of a trained run.

Writes DIR/map_000.mrc, map_001.mrc ... (one per point, in order) at the training pixel size.
The points file is .npy or text with one point per row (zdim values).

examples:
  hetsiren decode run --z points.txt -o maps
  hetsiren decode run --z run/analysis/centres.npy -o maps --device cuda
"""

from __future__ import annotations

import argparse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("--z", required=True, help="latent points: .npy or text, one per row")
    p.add_argument("-o", "--output", required=True, help="folder for the maps")
    p.add_argument("--prefix", default="map", help="file name prefix (default: map)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from hetsiren.train import decode_to_files, read_latent_points
    from hetsiren.train.runio import read_run_config

    zdim = int(read_run_config(args.run)["config"]["zdim"])
    z = read_latent_points(args.z, zdim)
    paths = decode_to_files(args.run, z, args.output, device=args.device, prefix=args.prefix,
                            inputs=[args.z])
    print(f"wrote {len(paths)} maps to {args.output}")
    return 0
