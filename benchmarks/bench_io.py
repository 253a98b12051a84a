"""Data layer at scale: read a 1,000,000-particle STAR over 1,000 stacks, then random batches.

Builds, in a temporary folder, 1,000 MRC stacks of 1,000 images each at box 64 and a RELION 3.1
STAR (with poses, shifts and CTF) referencing every image. The stacks are *sparse* files made
with ``mrcfile.new_mmap`` (a real 16 MB header+data layout each, 16 GB in all, but no disk
blocks, so the data reads as zeros): reading them exercises our header checks, memory maps,
LRU of open stacks and per-stack grouping, not the disk. With ``--dense`` a fraction of each
stack gets real random data written (the page cache then holds it: a warm-cache figure).

Each measurement runs in a fresh Python process so peak RSS (``ru_maxrss``) belongs to it;
``tracemalloc`` gives the peak of Python allocations in a second, separate run.

With ``--loader`` it measures the training loader instead: ``--loader-images`` dense random
images at ``--loader-box-in`` px (real data on disk, page cache warm), Fourier-cropped to
``--loader-box``, delivered in training batches (poses, shifts, CTF as tensors) by
``hetsiren.data.loader.iterate_batches``: one epoch from the original stacks, the cache
build, then epochs from the cache (images/s of the loader alone, no training step).

    .venv/bin/python benchmarks/bench_io.py                      # 1M particles, 1000 stacks
    .venv/bin/python benchmarks/bench_io.py --stacks 100 --per-stack 1000 --box 128
    .venv/bin/python benchmarks/bench_io.py --loader              # 256 -> 128 px, 4096 images
    .venv/bin/python benchmarks/bench_io.py --loader --device cuda   # pinned, non-blocking
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


def build_dense(folder: Path, n: int, box: int, per_stack: int = 512) -> Path:
    """Stacks of random images (real bytes on disk) and a STAR with poses and CTF."""
    from scipy.spatial.transform import Rotation

    from hetsiren.io import CTFParams, write_new_star

    rng = np.random.default_rng(0)
    names = []
    for k in range(-(-n // per_stack)):
        m = min(per_stack, n - k * per_stack)
        with mrcfile.new(folder / f"dense_{k:03d}.mrcs", overwrite=True) as f:
            f.set_data(rng.normal(size=(m, box, box)).astype(np.float32))
            f.set_image_stack()
            f.voxel_size = 1.5
        names += [f"{i + 1:06d}@dense_{k:03d}.mrcs" for i in range(m)]
    ctf = CTFParams(defocus_u_A=rng.uniform(8e3, 2.5e4, n), defocus_v_A=rng.uniform(8e3, 2.5e4, n),
                    astigmatism_angle_rad=rng.uniform(-np.pi, np.pi, n),
                    voltage_kv=np.full(n, 300.0), cs_mm=np.full(n, 2.7),
                    amplitude_contrast=np.full(n, 0.1), phase_shift_rad=np.zeros(n),
                    bfactor_A2=np.zeros(n))
    return write_new_star(folder / "dense.star", names, 1.5, box,
                          Rotation.random(n, random_state=1).as_matrix(),
                          rng.normal(scale=3.0, size=(n, 2)), ctf)


def measure_loader(star: Path, box: int, batch_size: int, workers: int, device: str,
                   cache_root: Path) -> dict:
    """Images/s of iterate_batches from the stacks and from the cache (one child process)."""
    import torch

    from hetsiren.data.batch import estimate_preprocessing
    from hetsiren.data.cache import open_cache
    from hetsiren.data.loader import iterate_batches
    from hetsiren.io import read_particles

    dev = torch.device(device)
    particles = read_particles(star)
    n = particles.n_particles
    order = np.random.default_rng(0).permutation(n)
    chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]

    def epoch(images) -> float:
        t0 = time.perf_counter()
        for batch in iterate_batches(particles, prep, chunks, dev, images=images,
                                     workers=workers):
            assert batch.images.shape[-1] == box
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    prep = estimate_preprocessing(particles, box)
    from_stacks = epoch(None)
    t0 = time.perf_counter()
    cache = open_cache(particles, box, cache_root)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache = open_cache(particles, box, cache_root)
    reopen_s = time.perf_counter() - t0
    prep = cache.prep
    from_cache = [epoch(cache) for _ in range(3)]
    return {"n_images": n, "box_in": particles.box_size, "box": box, "batch_size": batch_size,
            "workers": workers, "device": device,
            "epoch_from_stacks_img_per_s": from_stacks,
            "cache_build_s": build_s, "cache_build_img_per_s": n / build_s,
            "cache_reopen_s": reopen_s,
            "epoch_from_cache_img_per_s (best of 3)": max(from_cache),
            "cache_vs_stacks_speedup": max(from_cache) / from_stacks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stacks", type=int, default=1000)
    ap.add_argument("--per-stack", type=int, default=1000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--dense", action="store_true", help="write real data into each stack")
    ap.add_argument("--loader", action="store_true", help="measure the training loader")
    ap.add_argument("--loader-images", type=int, default=4096)
    ap.add_argument("--loader-box-in", type=int, default=256)
    ap.add_argument("--loader-box", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="loader batch (training default)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--loader-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.tracemalloc)))
        return
    if args.loader_child:
        print(json.dumps(measure_loader(args.loader_child, args.loader_box, args.batch_size,
                                        args.workers, args.device,
                                        args.loader_child.parent / "cache")))
        return
    if args.loader:
        with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
            t0 = time.perf_counter()
            star = build_dense(Path(tmp), args.loader_images, args.loader_box_in)
            print(f"wrote {args.loader_images} random {args.loader_box_in}-px images in "
                  f"{time.perf_counter() - t0:.1f} s")
            cmd = [sys.executable, __file__, "--loader-child", str(star),
                   "--loader-box", str(args.loader_box), "--batch-size", str(args.batch_size),
                   "--workers", str(args.workers), "--device", args.device]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True)
            for key, value in json.loads(res.stdout.strip().splitlines()[-1]).items():
                print(f"  {key:40s} {value:.3f}" if isinstance(value, float)
                      else f"  {key:40s} {value}")
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
