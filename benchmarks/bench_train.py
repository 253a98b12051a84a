"""Training throughput: images/s and peak memory, this tree against another revision and cryoDRGN.

For each box (simulated phantom data, CTF, SNR 0.1), each decoupling setting (on at λ
0.001, and off, the default) and each thread count, one fresh process trains ``--epochs``
epochs and reports the last epoch's images/s (from ``log.jsonl``: reading, preprocessing and
the step, as a user sees it) and its peak resident memory. With ``--compare REV`` the same
runs are made with the package as it is at git revision REV (checked out in a temporary
worktree), interleaved with this tree's runs so that a busy machine slows both alike; the
table gives the ratio per row.
With ``--cryodrgn-venv`` cryoDRGN's ``train_vae`` (its defaults) trains on the same STAR at the
first box: its per-epoch time is the difference between a 1-epoch and a 3-epoch run.

``--profile`` instead prints where one step's time goes (torch profiler, one thread, batch
16): projection, the volume terms, encoders, decoder, CTF/FFT, optimiser.

    .venv/bin/python benchmarks/bench_train.py --compare HEAD~5
    .venv/bin/python benchmarks/bench_train.py --compare e5e3953 --cryodrgn-venv /tmp/cdvenv
    .venv/bin/python benchmarks/bench_train.py --profile --boxes 64,128
    .venv/bin/python benchmarks/bench_train.py --device cuda --boxes 128,256 --threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# particles per measured run: enough for a steady epoch, few enough for box 128 on a CPU
DEFAULT_N = {64: 256, 128: 64}
# Decoupling has been off by default since issue 10; its cost does not depend on its weight
# (e5e3953, the baseline of issue 11, defaulted to weight 1 and is given 0.001 here too).
DECOUPLING = {"pose_decoupling": 0.001, "ctf_decoupling": 0.001}
SETTINGS = {"decoupling on (λ 0.001)": DECOUPLING, "defaults (decoupling off)": {}}


# --------------------------------------------------------------------------------------------
# worker: one training run in a fresh process (the package comes from PYTHONPATH)
# --------------------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    """This process's peak resident memory. Not ru_maxrss: across fork + exec Linux keeps
    the parent's high-water mark there; VmHWM belongs to the new address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(spec: dict) -> None:
    from hetsiren.train.config import TrainConfig
    from hetsiren.train.trainer import train

    run_dir = Path(spec["run_dir"])
    cfg = TrainConfig(particles=spec["particles"], epochs=spec["epochs"], device=spec["device"],
                      **spec["overrides"])
    train(cfg, run_dir, progress=False)
    last = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    print(json.dumps({"images_per_s": last["images_per_s"],
                      "peak_rss_mb": _peak_rss_mb()}))


def _run_worker(src: Path, spec: dict, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    if spec["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"run failed ({src}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# throughput table
# --------------------------------------------------------------------------------------------
def _simulate(out: Path, box: int, n: int) -> Path:
    from hetsiren.simulate import SimulationSpec, simulate_phantom

    simulate_phantom(out, "discrete", box, SimulationSpec(n_particles=n, snr=0.1,
                                                          pixel_size_A=160 / box),
                     progress=False)
    return out / "particles.star"


def _checkout(rev: str, tmp: Path) -> Path:
    where = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                   check=True, capture_output=True)
    return where


def _cryodrgn_epoch_seconds(venv: Path, star: Path, tmp: Path, threads: int) -> float:
    from cryodrgn_env import run, run_measured

    cryodrgn = venv / "bin" / "cryodrgn"
    run([cryodrgn, "parse_pose_star", star, "-o", tmp / "pose.pkl"])
    run([cryodrgn, "parse_ctf_star", star, "-o", tmp / "ctf.pkl"])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": ""}
    walls = {}
    for epochs in (1, 3):
        out = tmp / f"cryodrgn{epochs}"
        walls[epochs] = run_measured(
            [cryodrgn, "train_vae", star, "--datadir", star.parent, "--poses", tmp / "pose.pkl",
             "--ctf", tmp / "ctf.pkl", "--zdim", 10, "-n", epochs, "--no-analysis",
             "--checkpoint", epochs, "-o", out], tmp / f"cryodrgn{epochs}.log", env).wall_s
    return (walls[3] - walls[1]) / 2


def throughput(args: argparse.Namespace) -> None:
    import torch

    print(f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, "
          f"{args.epochs} epochs per run (the last is timed), median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        impls = {"this tree": ROOT / "src"}
        if args.compare:
            impls = {args.compare: _checkout(args.compare, tmp) / "src", **impls}
        try:
            rows = []
            for box in map(int, args.boxes.split(",")):
                n = args.n or DEFAULT_N.get(box, 32)
                star = _simulate(tmp / f"sim{box}", box, n)
                for threads in map(int, args.threads.split(",")):
                    for setting, overrides in SETTINGS.items():
                        results: dict[str, list[dict]] = {name: [] for name in impls}
                        for rep in range(args.repeats):
                            for name, src in impls.items():  # interleaved
                                spec = {"particles": str(star), "epochs": args.epochs,
                                        "device": args.device, "overrides": overrides,
                                        "run_dir": str(tmp / f"run{len(rows)}{rep}{len(name)}")}
                                results[name].append(_run_worker(src, spec, threads))
                        row = {"box": box, "threads": threads, "setting": setting, "n": n}
                        for name, res in results.items():
                            row[name] = {k: statistics.median(r[k] for r in res)
                                         for k in res[0]}
                        rows.append(row)
                        _print_row(row, impls)
            if args.cryodrgn_venv:
                box = int(args.boxes.split(",")[0])
                threads = int(args.threads.split(",")[0])
                seconds = _cryodrgn_epoch_seconds(args.cryodrgn_venv.resolve(),
                                                  tmp / f"sim{box}" / "particles.star", tmp,
                                                  threads)
                n = args.n or DEFAULT_N.get(box, 32)
                ours = next(r for r in rows if r["box"] == box and r["threads"] == threads
                            and r["setting"] == next(iter(SETTINGS)))["this tree"]
                ratio = ours["images_per_s"] * seconds / n
                print(f"cryoDRGN train_vae (defaults), box {box}, {threads} thread(s): "
                      f"{n / seconds:.1f} img/s; hetsiren (default) "
                      f"{ours['images_per_s']:.1f} img/s = {ratio:.1f}x")
        finally:
            if args.compare:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / "baseline")], capture_output=True)


def _print_row(row: dict, impls: dict) -> None:
    parts = [f"box {row['box']:4d}  {row['threads']} thr  {row['setting']:26s}"]
    for name in impls:
        r = row[name]
        parts.append(f"{name}: {r['images_per_s']:7.1f} img/s {r['peak_rss_mb']:6.0f} MB")
    if len(impls) == 2:
        old, new = (row[name] for name in impls)
        parts.append(f"speed-up {new['images_per_s'] / old['images_per_s']:.2f}x, memory "
                     f"{new['peak_rss_mb'] / old['peak_rss_mb']:.2f}x")
    print("  ".join(parts), flush=True)


# --------------------------------------------------------------------------------------------
# per-part profile of one step
# --------------------------------------------------------------------------------------------
# (part, predicate on a profiler event name); the first match wins. The custom autograd
# functions and the optimiser are top-level events; encoder/decoder work is matched by op.
_PARTS = [
    ("projection (splat fwd + bwd)", lambda n: n in ("_Splat", "_SplatBackward")),
    ("L1 + negativity + TV (fwd + bwd)",
     lambda n: n in ("_Regularizers", "_RegularizersBackward")),
    ("optimiser", lambda n: n.startswith("Optimizer.step")),
]


def profile(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from scipy.spatial.transform import Rotation
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from hetsiren.data import Batch, Preprocessing
    from hetsiren.model.forward import build_model
    from hetsiren.train import trainer
    from hetsiren.train.config import TrainConfig

    torch.set_num_threads(1)
    for box in map(int, args.boxes.split(",")):
        b = 16
        cfg = TrainConfig(particles="-", **DECOUPLING)
        prep = Preprocessing(box_in=box, box=box, pixel_size_in_A=160 / box, noise_std=1.0)
        model = build_model(cfg.network(box), None, None)
        step = trainer._Step(model, cfg, prep, torch.device("cpu"))
        opt = trainer._adam(model, cfg)
        step.begin_epoch(0, b)
        rng = np.random.default_rng(0)
        f32 = torch.float32
        ctf = {k: torch.full((b,), v, dtype=f32) for k, v in
               (("voltage_kv", 300.0), ("cs_mm", 2.7), ("amplitude_contrast", 0.1),
                ("phase_shift_rad", 0.0), ("bfactor_A2", 0.0))}
        ctf.update(defocus_u_A=torch.as_tensor(rng.uniform(8e3, 2.5e4, b), dtype=f32),
                   defocus_v_A=torch.as_tensor(rng.uniform(8e3, 2.5e4, b), dtype=f32),
                   astigmatism_angle_rad=torch.as_tensor(rng.uniform(0, 3, b), dtype=f32))
        batch = Batch(indices=torch.arange(b), images=torch.randn(b, box, box),
                      rotations=torch.as_tensor(Rotation.random(b, random_state=0).as_matrix(),
                                                dtype=f32),
                      shifts_px=torch.randn(b, 2), ctf=ctf)
        gen = torch.Generator().manual_seed(0)

        def one(step=step, batch=batch, gen=gen, opt=opt):
            out = step(batch, gen)
            opt.zero_grad(set_to_none=True)
            out["total"].backward()
            opt.step()

        one()
        steps = 3
        t0 = time.thread_time()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                one()
        total_ms = (time.thread_time() - t0) * 1e3 / (steps * b)
        events = prof.key_averages()
        print(f"box {box}: {total_ms:.2f} ms CPU per image under the profiler "
              "(batch 16, decoupling on, 1 thread)")
        for part, match in _PARTS:
            ms = sum(e.cpu_time_total for e in events if match(e.key)) / 1e3 / (steps * b)
            print(f"  {part:36s} {ms:7.2f} ms/img")
        by_op = sorted(((e.self_cpu_time_total, e.key) for e in events), reverse=True)[:8]
        print("  heaviest ops (self time): " + ", ".join(
            f"{k} {t / 1e3 / (steps * b):.2f}" for t, k in by_op))
        if os.environ.get("BENCH_PROFILE_TABLE"):
            print(events.table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boxes", default="64,128")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--n", type=int, default=None,
                   help=f"particles per run (default per box: {DEFAULT_N})")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="runs per row (median)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare", metavar="REV", help="git revision to measure side by side")
    p.add_argument("--cryodrgn-venv", type=Path, help="venv with cryoDRGN (bench_cryodrgn.py)")
    p.add_argument("--profile", action="store_true", help="per-part breakdown of one step")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _worker(json.loads(args.worker))
    elif args.profile:
        profile(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
