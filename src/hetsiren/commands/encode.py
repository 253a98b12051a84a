"""Encode particles with a trained run: one latent vector per particle.

The particles are preprocessed exactly as the run's training data (same box, Fourier crop
and normalisation); they must have the training images' box and pixel size. Each latent
vector is then refined as the run's own were (train --refine-latent-steps, default 20: Adam
steps on the particle's data term under the decoder plus the run's latent prior).

examples:
  hetsiren encode run new_particles.star -o z_new.npy
  hetsiren encode run particles.cs -o z.npy --datadir /data/J42 --device cpu
"""

from __future__ import annotations

import argparse


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("particles", help="STAR, .cs or .mrcs with the particles to encode")
    p.add_argument("-o", "--output", required=True, help="output .npy, float32 [N, zdim]")
    p.add_argument("--datadir", help="folder holding the image stacks named in the file")
    p.add_argument("--pixel-size", type=float, help="pixel size in Å if the file lacks it")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--refine-steps", type=int, default=None,
                   help="latent refinement steps (default: the run's; 0: the encoder's z)")


def main(args: argparse.Namespace) -> int:
    from hetsiren.train.inference import encode_file

    z = encode_file(args.run, args.particles, datadir=args.datadir,
                    pixel_size_A=args.pixel_size, device=args.device,
                    batch_size=args.batch_size, output=args.output,
                    refine_steps=args.refine_steps)
    print(f"wrote {z.shape[0]} latent vectors ({z.shape[1]} dims) to {args.output}")
    return 0
