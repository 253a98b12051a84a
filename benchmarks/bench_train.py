"""Training throughput: images/s and peak memory at box 64 and 128, and one epoch's wall time.

Simulates a phantom dataset per box (kept in a temporary folder), then times training steps
with the default configuration (decoupling on) and with decoupling off.

    .venv/bin/python benchmarks/bench_train.py                 # box 64 and 128, CPU
    .venv/bin/python benchmarks/bench_train.py --epoch-10k     # + one epoch of 10,000 at box 64
    .venv/bin/python benchmarks/bench_train.py --device cuda

cryoDRGN's ``train_vae`` (default architecture) runs at about 4-5 images/s on this 2-core CPU
at box 64 (issue 4); the target is 10x that.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from hetsiren.simulate import SimulationSpec, simulate_phantom
from hetsiren.train import TrainConfig, train
from hetsiren.train.runio import LOG


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _throughput(particles: Path, run_dir: Path, cfg: TrainConfig) -> dict:
    train(replace(cfg, particles=str(particles)), run_dir, progress=False)
    entries = [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]
    last = entries[-1]
    return {"images_per_s": round(last["images_per_s"], 1),
            "epoch_seconds": round(last["seconds"], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--boxes", default="64,128")
    p.add_argument("--n", type=int, default=512, help="particles per throughput run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epoch-10k", action="store_true", help="time one epoch of 10,000 at 64")
    args = p.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for box in map(int, args.boxes.split(",")):
            data = tmp / f"sim{box}"
            spec = SimulationSpec(n_particles=args.n, snr=0.1, pixel_size_A=160 / box)
            simulate_phantom(data, "discrete", box, spec)
            base = TrainConfig(particles="", epochs=1, device=args.device)
            for name, cfg in (("default (decoupling 1)", base),
                              ("decoupling off", replace(base, pose_decoupling=0.0,
                                                         ctf_decoupling=0.0))):
                t0 = time.perf_counter()
                res = _throughput(data / "particles.star", tmp / f"run{box}{len(name)}", cfg)
                print(f"box {box:4d}  {name:24s} {res['images_per_s']:8.1f} img/s  "
                      f"(epoch of {args.n}: {res['epoch_seconds']} s, wall incl. set-up "
                      f"{time.perf_counter() - t0:.1f} s)  peak RSS {_peak_rss_mb():.0f} MB")
        if args.epoch_10k:
            data = tmp / "sim10k"
            simulate_phantom(data, "discrete", 64, SimulationSpec(n_particles=10_000, snr=0.1,
                                                                   pixel_size_A=2.5))
            res = _throughput(data / "particles.star", tmp / "run10k",
                              TrainConfig(particles="", epochs=1, device=args.device))
            print(f"one epoch, 10,000 particles, box 64: {res['epoch_seconds']} s "
                  f"({res['images_per_s']} img/s), peak RSS {_peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
