"""Homogeneous reconstruction of a particle set at its poses (SNR-weighted backprojection).

Reads images lazily, corrects the CTF when the file has one (Wiener-weighted Fourier
insertion), and writes the map. By default (--weighting ssnr, as RELION) two half maps are
reconstructed from the file's random subsets (rlnRandomSubset / cryoSPARC alignments3D/split;
a seeded random split when the file has none), their FSC sets the regularisation of every
shell (RELION's τ²), and the map is weighted per shell by the FSC (C_ref, Rosenthal &
Henderson), so that shells without signal are damped instead of amplified and its power follows
the signal's; the corners of the Fourier cube, beyond Nyquist, are kept where the halves agree.
--weighting wiener uses one fixed Wiener constant inside the Nyquist sphere instead. The
half-map FSC resolutions (0.143 and 0.5) are printed; --half-maps also writes the half maps
(not weighted per shell, as RELION's *_unfil half maps) for `hetsiren postprocess`.

examples:
  hetsiren reconstruct particles.star -o consensus.mrc
  hetsiren reconstruct particles.star -o map.mrc --box 128 --half-maps
  hetsiren postprocess map_half1.mrc map_half2.mrc -o post/   # mask, FSC, B-factor, local res
  hetsiren reconstruct particles.cs -o map.mrc --datadir /data/J24 --device cuda:0
  hetsiren reconstruct particles.star -o plain.mrc --weighting wiener
  hetsiren reconstruct stack.mrcs ...   # needs poses: use a STAR or .cs file
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hetsiren.errors import UserInputError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("particles", help="particle file with poses: RELION .star or cryoSPARC .cs")
    p.add_argument("-o", "--output", required=True, help="output map (.mrc)")
    p.add_argument("--box", type=int, default=None,
                   help="reconstruct at this box in pixels (images are Fourier-cropped; "
                        "default: the images' box)")
    p.add_argument("--half-maps", action="store_true",
                   help="also write OUTPUT_half1/_half2.mrc (with --weighting wiener: also "
                        "reconstruct them and print their FSC resolutions)")
    p.add_argument("--weighting", choices=("ssnr", "wiener"), default="ssnr",
                   help="ssnr: per-shell regularisation and weighting from the half-map FSC "
                        "(RELION's τ², C_ref); wiener: one fixed Wiener constant "
                        "(default: %(default)s)")
    p.add_argument("--split-seed", type=int, default=0,
                   help="seed of the random half split when the file has no random subsets "
                        "(default: %(default)s)")
    p.add_argument("--datadir", default=None,
                   help="folder holding the image stacks named in the particle file")
    p.add_argument("--pixel-size", type=float, default=None, dest="pixel_size_A",
                   help="pixel size in Å when the file has none (e.g. RELION 3.0 STAR)")
    p.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def _half_path(output: Path, n: int) -> Path:
    return output.with_name(f"{output.stem}_half{n}{output.suffix}")


def main(args: argparse.Namespace) -> int:
    from hetsiren.data import reconstruct_particles
    from hetsiren.io import input_files, read_particles, write_map
    from hetsiren.outputs import check_outputs
    from hetsiren.physics import resolution_at

    output = Path(args.output)
    if output.suffix.lower() not in (".mrc", ".map"):
        raise UserInputError(f"-o {output}: expected an .mrc (or .map) file name")
    outputs = [output] + ([_half_path(output, 1), _half_path(output, 2)] if args.half_maps
                          else [])
    if any(o.resolve() == Path(args.particles).resolve() for o in outputs):
        raise UserInputError(f"-o {output}: would overwrite the particle file")
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size {args.batch_size}: expected a positive integer")
    particles = read_particles(args.particles, datadir=args.datadir,
                               pixel_size_A=args.pixel_size_A, require_images=True)
    outputs = [output] + ([_half_path(output, 1), _half_path(output, 2)] if args.half_maps
                          else [])
    check_outputs(files=outputs, inputs=input_files(particles))
    result = reconstruct_particles(particles, box=args.box, half_maps=args.half_maps,
                                   batch_size=args.batch_size, device=args.device,
                                   progress=True, weighting=args.weighting,
                                   split_seed=args.split_seed)
    # write_map writes atomically (temporary file + rename).
    write_map(output, result.map, result.pixel_size_A)
    print(f"wrote {output} ({result.map.shape[0]}³ voxels, {result.pixel_size_A:.4g} Å/voxel)")
    if args.half_maps:
        for n, half in ((1, result.half1), (2, result.half2)):
            if half is not None:  # asked for: reconstruct_particles built them
                write_map(_half_path(output, n), half, result.pixel_size_A)
        print(f"wrote {_half_path(output, 1)} and {_half_path(output, 2)}")
    if result.fsc is not None:
        res_0143 = resolution_at(result.fsc, 0.143)
        res_05 = resolution_at(result.fsc, 0.5)
        where = "the file's random subsets" if result.split == "file" else "a random split"
        print(f"half-map FSC resolution (halves from {where}, unmasked): {res_0143:.2f} Å at "
              f"0.143, {res_05:.2f} Å at 0.5")
    return 0
