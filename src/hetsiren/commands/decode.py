"""Decode maps at chosen latent points of a trained run.

Writes DIR/map_000.mrc, map_001.mrc ... (one per point, in order) at the training box and
pixel size, or with --original-size at the particles' own box and pixel size (the map is
Fourier-padded: it overlays the consensus map, but holds no detail beyond the training
box's Nyquist). The points file is .npy or text with one point per row (zdim values).
Existing maps are not replaced unless --force is given.

examples:
  hetsiren decode run --z points.txt -o maps
  hetsiren decode run --z run/analysis/centres.npy -o maps --device cuda
  hetsiren decode run --z points.txt -o maps_full --original-size --flip   # wrong hand
"""

from __future__ import annotations

import argparse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("--z", required=True, help="latent points: .npy or text, one per row")
    p.add_argument("-o", "--output", required=True, help="folder for the maps")
    p.add_argument("--prefix", default="map", help="file name prefix (default: map)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--original-size", action="store_true",
                   help="write maps at the particles' original box and pixel size")
    p.add_argument("--flip", action="store_true", help="mirror the maps (change handedness)")
    p.add_argument("--invert", action="store_true", help="invert the maps' contrast")
    p.add_argument("--force", action="store_true", help="replace existing maps in --output")


def main(args: argparse.Namespace) -> int:
    from hetsiren.rundir import read_run_config
    from hetsiren.train.inference import MapOutput, decode_to_files, read_latent_points

    zdim = int(read_run_config(args.run)["config"]["zdim"])
    z = read_latent_points(args.z, zdim)
    output = MapOutput(original_size=args.original_size, flip=args.flip, invert=args.invert)
    paths = decode_to_files(args.run, z, args.output, device=args.device, prefix=args.prefix,
                            output=output, overwrite=args.force, inputs=[args.z])
    print(f"wrote {len(paths)} maps to {args.output}")
    return 0
