"""Independent-reader check: cryoDRGN reconstructs a ``hetsiren simulate`` dataset correctly.

Simulates a homogeneous dataset (the built-in phantom's first state as a single map, CTF,
random poses and shifts, SNR 1) with the ``hetsiren`` CLI, then with cryoDRGN's own CLI, in a
separate virtual environment: ``parse_pose_star`` and ``parse_ctf_star`` read the RELION 3.1
STAR, and ``backproject_voxel`` reconstructs from the parsed poses and CTF. The FSC between
cryoDRGN's map and the true map checks every convention at once: Euler angles, shift sign and
units, pixel size, CTF (defocus, astigmatism angle, sign), image sign and map handedness.

cryoDRGN's CTF is negative in its first lobe (protein-dark images) and it inverts the data by
default, which is right for RELION's protein-bright particles, so the main run uses the
defaults. Controls that must fail show the check is sharp: ``--uninvert-data`` (image sign),
transposed rotation matrices (inverse poses), negated shifts and a negated astigmatism angle.
The angle matters little at this resolution, hence the large default astigmatism (at 500 Å the
negated angle still gives a min FSC of 0.95; at 5000 Å about 0.72 against 0.95).

    .venv/bin/python benchmarks/bench_cryodrgn_conventions.py --cryodrgn-venv /tmp/cdvenv \\
        -o /tmp/cdbench

When ``--cryodrgn-venv`` holds no cryoDRGN it is created there: ``torch==2.13.0`` first (the
CPU wheel; a bare ``torch`` requirement would pull a multi-GB CUDA build), then ``cryodrgn``.
Exits 1 when the main run's FSC with the truth drops below 0.5 up to 0.8 Nyquist, or when a
control's minimum is not at least 0.1 below the main run's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cryodrgn_env import add_common_args, prepare, run
from hetsiren.io.mrc import read_map
from hetsiren.physics import fsc, resolution_at

FSC_PASS = 0.5
CONTROL_MARGIN = 0.1
NYQUIST_FRACTION = 0.8

CONTROL_POSES = ("import pickle, sys; rot, trans = pickle.load(open(sys.argv[1], 'rb')); "
                 "pickle.dump((rot.transpose(0, 2, 1), trans), open(sys.argv[2], 'wb')); "
                 "pickle.dump((rot, -trans), open(sys.argv[3], 'wb'))")
CONTROL_CTF = ("import pickle, sys; ctf = pickle.load(open(sys.argv[1], 'rb')); ctf[:, 4] *= -1; "
               "pickle.dump(ctf, open(sys.argv[2], 'wb'))")


def simulate(out: Path, n: int, snr: float, seed: int, box: int, astigmatism: float) -> Path:
    """Simulate the single-map dataset in ``out/sim``; return its folder."""
    hetsiren = Path(sys.executable).parent / "hetsiren"
    run([hetsiren, "simulate", "-o", out / "phantom", "--n", "10", "--box", box])
    run([hetsiren, "simulate", "-o", out / "sim", "--map",
         out / "phantom" / "truth_maps" / "state_00.mrc", "--n", n, "--snr", snr, "--seed", seed,
         "--astigmatism", astigmatism])
    return out / "sim"


def summary(rec_path: Path, truth: np.ndarray, pixel_A: float) -> dict[str, float]:
    """FSC and real-space correlation of a reconstruction with the true map."""
    rec, rec_pixel_A = read_map(rec_path)
    if rec.shape != truth.shape or not np.isclose(rec_pixel_A, pixel_A):
        sys.exit(f"{rec_path}: {rec.shape} at {rec_pixel_A} Å/px, truth {truth.shape} at "
                 f"{pixel_A} Å/px")
    curve = fsc(rec, truth, pixel_A)
    shells = curve.frequency_per_A <= NYQUIST_FRACTION * 0.5 / pixel_A
    return {"min_fsc": float(curve.fsc[shells].min()),
            "res_05": resolution_at(curve, 0.5),
            "res_0143": resolution_at(curve, 0.143),
            "corr": float(np.corrcoef(rec.ravel(), truth.ravel())[0, 1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--n", type=int, default=3000, help="particles (default: 3000)")
    parser.add_argument("--snr", type=float, default=1.0, help="SNR (default: 1)")
    parser.add_argument("--seed", type=int, default=1, help="simulation seed (default: 1)")
    parser.add_argument("--box", type=int, default=64, help="box in px (default: 64)")
    parser.add_argument("--astigmatism", type=float, default=5000.0,
                        help="max |U−V|/2 in Å, large so the angle's convention shows "
                             "(default: 5000)")
    args = parser.parse_args()
    out, venv, version = prepare(args)
    cryodrgn = venv / "bin" / "cryodrgn"

    t0 = time.perf_counter()
    sim = simulate(out, args.n, args.snr, args.seed, args.box, args.astigmatism)
    t_sim = time.perf_counter() - t0

    work = out / "cryodrgn"
    work.mkdir()
    star = sim / "particles.star"
    run([cryodrgn, "parse_pose_star", star, "-o", work / "pose.pkl"])
    run([cryodrgn, "parse_ctf_star", star, "-o", work / "ctf.pkl"])
    run([venv / "bin" / "python", "-c", CONTROL_POSES, work / "pose.pkl",
         work / "pose_transposed.pkl", work / "pose_negated_shifts.pkl"])
    run([venv / "bin" / "python", "-c", CONTROL_CTF, work / "ctf.pkl",
         work / "ctf_negated_angle.pkl"])
    runs = {"cryoDRGN defaults (inverts data)": ("pose.pkl", "ctf.pkl", []),
            "control: --uninvert-data": ("pose.pkl", "ctf.pkl", ["--uninvert-data"]),
            "control: transposed rotations": ("pose_transposed.pkl", "ctf.pkl", []),
            "control: negated shifts": ("pose_negated_shifts.pkl", "ctf.pkl", []),
            "control: negated astigmatism angle": ("pose.pkl", "ctf_negated_angle.pkl", [])}
    truth, pixel_A = read_map(sim / "truth_maps" / "state_00.mrc")
    results = {}
    t0 = time.perf_counter()
    for i, (name, (poses, ctf, extra)) in enumerate(runs.items()):
        rec_dir = work / f"backproject_{i}"
        run([cryodrgn, "backproject_voxel", star, "--datadir", sim, "--poses", work / poses,
             "--ctf", work / ctf, "-o", rec_dir, "--no-half-maps", *extra])
        results[name] = summary(rec_dir / "backproject.mrc", truth, pixel_A)
    t_cryodrgn = time.perf_counter() - t0

    print(f"\ncryoDRGN {version}; {args.n} particles, box {truth.shape[0]}, {pixel_A} Å/px, "
          f"SNR {args.snr}, astigmatism ≤ {args.astigmatism} Å, seed {args.seed}; "
          f"simulate {t_sim:.0f} s, cryoDRGN {t_cryodrgn:.0f} s")
    print(f"FSC with the true map (min over shells up to {NYQUIST_FRACTION} Nyquist = "
          f"{2 * pixel_A / NYQUIST_FRACTION:.2f} Å; Nyquist {2 * pixel_A:.2f} Å)")
    print(f"{'reconstruction':<36} {'min FSC':>8} {'FSC=0.5':>9} {'FSC=0.143':>10} {'corr':>7}")
    for name, r in results.items():
        print(f"{name:<36} {r['min_fsc']:8.3f} {r['res_05']:7.2f} Å {r['res_0143']:8.2f} Å "
              f"{r['corr']:7.3f}")
    main, *controls = (r["min_fsc"] for r in results.values())
    missed = sum(c > main - CONTROL_MARGIN for c in controls)
    ok = main >= FSC_PASS and missed == 0
    print(f"\n{'PASS' if ok else 'FAIL'}: min FSC of cryoDRGN's defaults {main:.3f} (needs >= "
          f"{FSC_PASS}); {missed} of {len(controls)} controls within {CONTROL_MARGIN} of it "
          "(should be 0)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
