"""Decode a trajectory: a straight line between two latent points, or a path through the data.

--z-start/--z-end: -n maps evenly spaced on the line between two latent points (zdim values
each). --graph START END: the shortest path between two particles (0-based indices) through
a --knn nearest-neighbour graph of the latent, which stays where particles are (cryoDRGN's
graph traversal); -n keeps that many of its particles, evenly spaced along it. Writes
OUT/traj_NNN.mrc, trajectory.json, z.txt and movie.cxc (ChimeraX: plays the series and
records traj.mp4). Existing trajectory files are not replaced unless --force is given.

examples:
  hetsiren trajectory run -o traj_line --z-start -1 0 0 0 --z-end 1 0 0 0 -n 10
  hetsiren trajectory run -o traj_graph --graph 1207 88410 -n 20 --original-size
  hetsiren trajectory run -o traj_e10 --graph 12 345 --epoch 10   # with a snapshot's decoder
  (then in ChimeraX: open traj_graph/movie.cxc)
"""

from __future__ import annotations

import argparse

from hetsiren.errors import UserInputError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("-o", "--output", required=True, help="folder for the maps and movie script")
    p.add_argument("--z-start", type=float, nargs="+", metavar="Z",
                   help="latent point where the line starts (zdim values)")
    p.add_argument("--z-end", type=float, nargs="+", metavar="Z",
                   help="latent point where the line ends (zdim values)")
    p.add_argument("--graph", type=int, nargs=2, metavar=("START", "END"),
                   help="0-based particle indices joined by a path through the data")
    p.add_argument("-n", type=int,
                   help="maps along a line (default: 10); at most this many along a graph path "
                        "(default: one per particle on it)")
    p.add_argument("--knn", type=int, default=10,
                   help="neighbours per particle in the graph (default: %(default)s); raise it "
                        "when two regions are not connected")
    p.add_argument("--epoch", type=int,
                   help="use the snapshot after this epoch (latent and decoder) instead of the "
                        "final model")
    p.add_argument("--original-size", action="store_true",
                   help="write maps at the particles' original box and pixel size")
    p.add_argument("--flip", action="store_true", help="mirror the maps (change handedness)")
    p.add_argument("--invert", action="store_true", help="invert the maps' contrast")
    p.add_argument("--force", action="store_true", help="replace an existing trajectory there")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.trajectory import trajectory_from_run, write_trajectory
    from hetsiren.train.inference import MapOutput

    line = args.z_start is not None or args.z_end is not None
    if line == (args.graph is not None):
        raise UserInputError("give either --z-start and --z-end, or --graph START END")
    if line and (args.z_start is None or args.z_end is None):
        raise UserInputError("a line needs both --z-start and --z-end")
    trajectory = trajectory_from_run(args.run, z_start=args.z_start, z_end=args.z_end,
                                     graph=args.graph, n=args.n, knn=args.knn, epoch=args.epoch)
    output = MapOutput(original_size=args.original_size, flip=args.flip, invert=args.invert)
    paths = write_trajectory(args.run, trajectory, args.output, device=args.device,
                             output=output, overwrite=args.force, epoch=args.epoch)
    print(f"wrote {len(paths)} maps ({trajectory.kind}) to {args.output}; in ChimeraX: "
          f"open {args.output}/movie.cxc")
    return 0
