"""Data layer at scale: read a 1,000,000-particle STAR over 1,000 stacks, then random batches.

Builds, in a temporary folder, 1,000 MRC stacks of 1,000 images each at box 64 and a RELION 3.1
STAR (with poses, shifts and CTF) referencing every image. The stacks are *sparse* files made
with ``mrcfile.new_mmap`` (a real 16 MB header+data layout each, 16 GB in all, but no disk
blocks, so the data reads as zeros): reading them exercises our header checks, memory maps,
LRU of open stacks and per-stack grouping, not the disk. With ``--dense`` a fraction of each
stack gets real random data written (the page cache then holds it: a warm-cache figure).

Each measurement runs in a fresh Python process so peak RSS (``ru_maxrss``) belongs to it;
``tracemalloc`` gives the peak of Python allocations in a second, separate run.

    .venv/bin/python benchmarks/bench_io.py                      # 1M particles, 1000 stacks
    .venv/bin/python benchmarks/bench_io.py --stacks 100 --per-stack 1000 --box 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import mrcfile
import numpy as np

BATCH = 256


def build(folder: Path, n_stacks: int, per_stack: int, box: int, dense: bool) -> Path:
    from scipy.spatial.transform import Rotation

    from hetsiren.io import CTFParams, write_new_star

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for k in range(n_stacks):
        with mrcfile.new_mmap(folder / f"stack_{k:04d}.mrcs", shape=(per_stack, box, box),
                              mrc_mode=2, overwrite=True) as m:
            m.set_image_stack()
            m.voxel_size = 1.5
            if dense:
                m.data[:8] = rng.normal(size=(8, box, box)).astype(np.float32)
    t_stacks = time.perf_counter() - t0
    n = n_stacks * per_stack
    names = [f"{i + 1:06d}@stack_{k:04d}.mrcs" for k in range(n_stacks) for i in range(per_stack)]
    ctf = CTFParams(defocus_u_A=rng.uniform(8e3, 2.5e4, n), defocus_v_A=rng.uniform(8e3, 2.5e4, n),
                    astigmatism_angle_rad=rng.uniform(-np.pi, np.pi, n),
                    voltage_kv=np.full(n, 300.0), cs_mm=np.full(n, 2.7),
                    amplitude_contrast=np.full(n, 0.1), phase_shift_rad=np.zeros(n),
                    bfactor_A2=np.zeros(n))
    t0 = time.perf_counter()
    star = write_new_star(folder / "particles.star", names, 1.5, box,
                          Rotation.random(n, random_state=1).as_matrix(),
                          rng.normal(scale=3.0, size=(n, 2)), ctf)
    t_star = time.perf_counter() - t0
    print(f"built {n_stacks} sparse stacks ({per_stack} x {box}^2) in {t_stacks:.1f} s; "
          f"wrote {n:,}-row STAR ({star.stat().st_size / 1e6:.0f} MB) in {t_star:.1f} s")
    return star


def _peak_rss_MB() -> float:
    """High-water RSS of this process (VmHWM; ru_maxrss is inherited from the parent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    try:  # Linux >= 4.0: reset the high-water mark to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def measure(star: Path, use_tracemalloc: bool) -> dict:
    """Run in a child process: time and memory of read_particles and of random batches."""
    _reset_peak_rss()
    rss0 = _peak_rss_MB()
    from hetsiren.io import read_particles  # imports torch (geometry)

    rss_import = _peak_rss_MB()
    if use_tracemalloc:
        tracemalloc.start()
    t0 = time.perf_counter()
    particles = read_particles(star)
    t_read = time.perf_counter() - t0
    peak_read = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
    rss_read = _peak_rss_MB()
    if use_tracemalloc:
        tracemalloc.reset_peak()
    rng = np.random.default_rng(0)
    times = []
    for _ in range(20):
        idx = rng.choice(particles.n_particles, BATCH, replace=False)
        t0 = time.perf_counter()
        images = particles.images.read(idx)
        times.append(time.perf_counter() - t0)
    peak_batch = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
    rss_batch = _peak_rss_MB()
    assert images.shape == (BATCH, particles.box_size, particles.box_size)
    return {
        "n_particles": particles.n_particles,
        "n_stacks": len(particles.images.stack_paths),
        "read_particles_s": t_read,
        "batch_first_s": times[0],
        "batch_median_s": float(np.median(times[1:])),
        "rss_peak_before_import_MB": rss0,
        "rss_peak_after_import_MB": rss_import,
        "rss_peak_delta_read_particles_MB": rss_read - rss_import,
        "rss_peak_delta_batches_MB": rss_batch - rss_read,
        "rss_peak_MB": rss_batch,
        "tracemalloc_peak_read_particles_MB": None if peak_read is None else peak_read / 1e6,
        "tracemalloc_peak_batches_MB": None if peak_batch is None else peak_batch / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=1000)
    ap.add_argument("--per-stack", type=int, default=1000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--dense", action="store_true", help="write real data into each stack")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.tracemalloc)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        star = build(Path(tmp), args.stacks, args.per_stack, args.box, args.dense)
        for traced in (False, True):
            cmd = [sys.executable, __file__, "--child", str(star)]
            res = subprocess.run(cmd + (["--tracemalloc"] if traced else []), check=True,
                                 capture_output=True, text=True)
            result = json.loads(res.stdout.strip().splitlines()[-1])
            label = "with tracemalloc (slower)" if traced else "plain"
            print(f"\n[{label}]")
            for key, value in result.items():
                if value is not None and not (traced and key.startswith(("rss", "batch"))):
                    print(f"  {key:38s} {value:.3f}" if isinstance(value, float)
                          else f"  {key:38s} {value}")


if __name__ == "__main__":
    main()
