"""Measure a trained run against the ground truth of a simulated dataset (JSON).

Latent metrics: |Spearman| of the continuous coordinate vs PC1, kNN R² of the coordinate,
KMeans adjusted Rand index and kNN accuracy of discrete states; leakage: kNN R² of the viewing
direction and of defocus predicted from z; maps: FSC of maps decoded at each state's mean
latent against the true maps, inside the sphere inscribed in the box (0.5 / 0.143
resolutions, area under the curve).

examples:
  hetsiren evaluate run --truth sim
  hetsiren evaluate run --truth sim --no-maps -o metrics.json
"""

from __future__ import annotations

import argparse
import json


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run directory")
    p.add_argument("--truth", required=True, help="folder written by `hetsiren simulate`")
    p.add_argument("--no-maps", action="store_true", help="skip the map FSCs (faster)")
    p.add_argument("-o", "--output", help="also write the JSON to this file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from hetsiren.analysis.evaluate import evaluate_run

    report = evaluate_run(args.run, args.truth, maps=not args.no_maps, device=args.device,
                          output=args.output)
    print(json.dumps(report, indent=2))
    return 0
