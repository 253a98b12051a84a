"""Simulate a particle dataset with ground truth (discrete, continuous or from atomic models).

Uniformly random poses (or drawn from a real dataset's with --poses-from, keeping its preferred
orientations), random shifts, a CTF with a defocus range and astigmatism, Gaussian noise at
--snr (signal variance over noise variance). Written as a RELION 3.1 STAR + MRCS
stack, with the truth in DIR/truth.npz (per-particle state or path coordinate, poses, shifts,
defocus), DIR/truth.json (parameters) and DIR/truth_maps/. Without --map/--pdb the built-in
two-domain phantom is used. Seeded and reproducible.

examples:
  hetsiren simulate -o sim --n 5000 --snr 0.1 --seed 1                # phantom, 3 states
  hetsiren simulate -o sim --phantom continuous --n 5000 --box 64
  hetsiren simulate -o sim --map closed.mrc --map open.mrc --populations 0.95,0.05
  hetsiren simulate -o sim --path --map a.mrc --map b.mrc --map c.mrc
  hetsiren simulate -o sim --map state.mrc --poses-from run_data.star   # real angular spread
  hetsiren simulate -o sim --pdb traj.pdb --box 96 --pixel-size 1.5 --resolution 6 --path
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hetsiren.errors import UserInputError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}"
                                         ) from None


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="new folder for the dataset")
    p.add_argument("--n", type=int, default=5000, help="particles (default: %(default)s)")
    p.add_argument("--snr", type=float, default=0.1, help="signal/noise variance (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    src = p.add_argument_group("heterogeneity source (one of)")
    src.add_argument("--map", action="append", default=[], metavar="MRC",
                     help="a state's map; repeat for several states")
    src.add_argument("--pdb", action="append", default=[], metavar="MODEL",
                     help="PDB/mmCIF atomic model(s); a multi-model file is a trajectory")
    src.add_argument("--phantom", choices=["discrete", "continuous"], default="discrete",
                     help="built-in phantom when no --map/--pdb (default: discrete)")
    p.add_argument("--path", action="store_true",
                   help="continuous motion along the maps/models in order, not discrete states")
    p.add_argument("--populations", type=_floats,
                   help="state populations, e.g. 0.7,0.3 (normalised; default: equal)")
    p.add_argument("--box", type=int, default=64,
                   help="box in px for the phantom or atomic models (default: 64)")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="Å/px for the phantom or models (default: 2.5; maps keep their own)")
    p.add_argument("--resolution", type=float, default=None,
                   help="resolution in Å of densities from atomic models (default: 2×pixel)")
    acq = p.add_argument_group("acquisition")
    acq.add_argument("--defocus", type=float, nargs=2, default=[10_000.0, 25_000.0],
                     metavar=("MIN", "MAX"), help="defocus range in Å (default: 10000 25000)")
    acq.add_argument("--astigmatism", type=float, default=500.0,
                     help="max |U−V|/2 in Å (default: 500)")
    acq.add_argument("--voltage", type=float, default=300.0, help="kV (default: 300)")
    acq.add_argument("--cs", type=float, default=2.7, help="mm (default: 2.7)")
    acq.add_argument("--amplitude-contrast", type=float, default=0.1, help="(default: 0.1)")
    acq.add_argument("--max-shift", type=float, default=3.0, help="px (default: 3)")
    acq.add_argument("--no-ctf", action="store_true", help="no CTF (projections + noise)")
    acq.add_argument("--poses-from", metavar="PARTICLES",
                     help="draw each pose from the poses in this STAR/.cs file (keeping "
                          "its preferred orientations) instead of uniformly")


def main(args: argparse.Namespace) -> int:
    from hetsiren.io import read_map
    from hetsiren.simulate import (
        SimulationSpec,
        maps_from_atomic_models,
        simulate_discrete,
        simulate_path,
        simulate_phantom,
    )

    if args.map and args.pdb:
        raise UserInputError("give either --map or --pdb, not both")
    pixel_size = args.pixel_size
    maps, names = [], []
    if args.map:
        loaded = [read_map(path) for path in args.map]
        voxel_sizes = {round(v, 4) for _, v in loaded}
        if len(voxel_sizes) != 1:
            raise UserInputError(f"the maps have different voxel sizes {sorted(voxel_sizes)} Å")
        maps, names = [m for m, _ in loaded], list(args.map)
        if pixel_size is not None and abs(pixel_size - loaded[0][1]) > 1e-3:
            raise UserInputError(f"--pixel-size {pixel_size} differs from the maps' voxel "
                                 f"size {loaded[0][1]:.4g} Å; leave it out")
        pixel_size = loaded[0][1]
    elif args.pdb:
        pixel_size = pixel_size or 2.5
        maps, names = maps_from_atomic_models(args.pdb, args.box, pixel_size,
                                              args.resolution or 2 * pixel_size)
    pixel_size = pixel_size or 2.5
    spec = SimulationSpec(
        n_particles=args.n, snr=args.snr, seed=args.seed, pixel_size_A=pixel_size,
        defocus_min_A=args.defocus[0], defocus_max_A=args.defocus[1],
        astigmatism_max_A=args.astigmatism, voltage_kv=args.voltage, cs_mm=args.cs,
        amplitude_contrast=args.amplitude_contrast, max_shift_px=args.max_shift,
        ctf=not args.no_ctf,
        poses_from=str(Path(args.poses_from).resolve()) if args.poses_from else None)
    if maps and args.path:
        out = simulate_path(args.output, maps, spec, map_names=names)
    elif maps:
        out = simulate_discrete(args.output, maps, spec, args.populations, map_names=names)
    else:
        out = simulate_phantom(args.output, "continuous" if args.path else args.phantom,
                               args.box, spec, args.populations)
    print(f"wrote {args.n} particles to {out}/particles.star (truth in {out}/truth.npz)")
    return 0
