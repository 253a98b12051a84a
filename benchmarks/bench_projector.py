"""Forward + backward time per image: masked splat (project_points) vs the reference projector.

Each image has its own volume (as in HetSIREN training): project_points takes (b, n) values on
the voxels of the inscribed sphere, the reference (grid_sample + sum along z) one (D, D, D)
map per image. Gradients flow to the values/map and to the rotations and shifts.

    .venv/bin/python benchmarks/bench_projector.py [--boxes 64 128] [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.spatial.transform import Rotation

from hetsiren.geometry import grid_coordinates, sphere_mask
from hetsiren.physics import project_points, project_volume_reference


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def bench(box: int, batch: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best-of-``repeats`` seconds per image for (splat, reference), forward + backward."""
    mask = sphere_mask(box)
    coords = grid_coordinates(box)[mask].to(device)
    rot = torch.from_numpy(Rotation.random(batch, random_state=0).as_matrix()).float()
    rot = rot.to(device)
    shifts = torch.zeros(batch, 2, device=device)

    def splat():
        values = torch.rand(batch, coords.shape[0], device=device, requires_grad=True)
        r = rot.clone().requires_grad_(True)
        s = shifts.clone().requires_grad_(True)
        project_points(values, coords, r, s, box).square().sum().backward()

    def reference():
        r = rot.clone().requires_grad_(True)
        s = shifts.clone().requires_grad_(True)
        total = 0.0
        for i in range(batch):  # one volume per image
            vol = torch.rand(box, box, box, device=device, requires_grad=True)
            total = total + project_volume_reference(vol, r[i:i + 1], s[i:i + 1]).square().sum()
        total.backward()

    return _time(splat, device, repeats) / batch, _time(reference, device, repeats) / batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boxes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"batch {args.batch}, best of {args.repeats}")
    print(f"{'device':6} {'box':>4} {'voxels':>8} {'splat ms/img':>13} {'ref ms/img':>11} "
          f"{'ratio':>6}")
    for device in devices:
        for box in args.boxes:
            n = int(sphere_mask(box).sum())
            t_splat, t_ref = bench(box, args.batch, args.repeats, device)
            print(f"{device.type:6} {box:4d} {n:8d} {t_splat * 1e3:13.2f} {t_ref * 1e3:11.2f} "
                  f"{t_ref / t_splat:6.1f}")


if __name__ == "__main__":
    main()
