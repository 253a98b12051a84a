"""Post-process two half maps: mask, corrected FSC, resolution, B-factor, sharpening, local res.

As RELION's relion_postprocess: a soft mask (given, or made from the average of the halves:
low-pass, threshold, dilate, soft edge), the FSC inside it corrected by phase randomisation
beyond the shell where the unmasked FSC drops below 0.8, the FSC = 0.143 resolution, the
B-factor fitted to the Guinier plot from 10 Å to that resolution, and the average map weighted
by √(2·FSC/(1+FSC)), sharpened and low-passed at the resolution. Then the local resolution
(windowed FSC of the halves, blocres-style). Writes, in the new folder OUT:
postprocess.mrc, postprocess_masked.mrc, mask.mrc, fsc.png, guinier.png, locres.mrc,
locres.png and postprocess.json (prints its summary).

examples:
  hetsiren reconstruct particles.star -o map.mrc --half-maps
  hetsiren postprocess map_half1.mrc map_half2.mrc -o post
  hetsiren postprocess half1.mrc half2.mrc -o post --mask mask.mrc --bfactor -80
  hetsiren postprocess half1.mrc half2.mrc -o post --mask-threshold 0.02 --no-local-resolution
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hetsiren.errors import UserInputError


def add_args(p: argparse.ArgumentParser) -> None:
    from hetsiren.analysis.postprocess import PostprocessConfig

    d = PostprocessConfig()
    p.add_argument("half1", help="first half map (.mrc)")
    p.add_argument("half2", help="second half map (.mrc), same box and voxel size")
    p.add_argument("-o", "--output", required=True, help="output folder (new or empty)")
    p.add_argument("--mask", help="soft mask (.mrc, values 0..1); default: made from the map")
    p.add_argument("--mask-threshold", type=float, default=None,
                   help="threshold of the low-passed average map for the automatic mask "
                        "(default: 10%% of its maximum above its median)")
    p.add_argument("--mask-lowpass", type=float, default=d.mask_lowpass_A,
                   help="low-pass before thresholding, Å (default: %(default)s)")
    p.add_argument("--mask-extend", type=float, default=d.mask_extend_px,
                   help="dilation of the thresholded map, voxels (default: %(default)s)")
    p.add_argument("--mask-soft-width", type=float, default=d.mask_soft_width_px,
                   help="width of the raised-cosine edge, voxels (default: %(default)s)")
    p.add_argument("--randomise-below", type=float, default=d.randomise_below_fsc,
                   help="randomise phases beyond the shell where the unmasked FSC drops below "
                        "this (default: %(default)s)")
    p.add_argument("--bfactor", type=float, default=None,
                   help="sharpening B-factor in Å², negative sharpens (default: from the "
                        "Guinier plot)")
    p.add_argument("--guinier-lowres", type=float, default=d.guinier_min_resolution_A,
                   help="low-resolution end of the Guinier fit, Å (default: %(default)s)")
    p.add_argument("--no-local-resolution", action="store_true",
                   help="skip the local-resolution estimate")
    p.add_argument("--local-window", type=int, default=d.local_window_px,
                   help="local-resolution window box, voxels, even (default: %(default)s)")
    p.add_argument("--local-step", type=int, default=d.local_step_px,
                   help="spacing of the local-resolution points, voxels (default: "
                        "%(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the random phases (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.postprocess import PostprocessConfig, postprocess_files

    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"-o {out}: exists and is not an empty folder; choose a new one")
    cfg = PostprocessConfig(
        mask_threshold=args.mask_threshold, mask_lowpass_A=args.mask_lowpass,
        mask_extend_px=args.mask_extend, mask_soft_width_px=args.mask_soft_width,
        randomise_below_fsc=args.randomise_below, bfactor_A2=args.bfactor,
        guinier_min_resolution_A=args.guinier_lowres,
        local_resolution=not args.no_local_resolution, local_window_px=args.local_window,
        local_step_px=args.local_step, seed=args.seed)
    result = postprocess_files(args.half1, args.half2, out, cfg, mask=args.mask)
    print(json.dumps(result.summary(), indent=2))
    print(f"maps, plots and postprocess.json in {result.out_dir}")
    return 0
