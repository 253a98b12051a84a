"""Summarise a particle file (RELION .star, cryoSPARC .cs or .mrcs stack) without reading images.

Reports the particle count, box and pixel size, optics groups, whether poses and CTF are
present, and which image stacks are missing.

examples:
  hetsiren info run_data.star
  hetsiren info J24_particles.cs --datadir /data/P12
  hetsiren info particles.star --pixel-size 1.06 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hetsiren.io import describe_particles

_SHOW_MISSING = 5


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="particle file: .star, .cs or .mrcs")
    p.add_argument("--datadir", type=Path, default=None,
                   help="folder holding the image stacks (default: the file's folder)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="A",
                   help="pixel size in Å, for files that have none (default: from the file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _fmt(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, list):
        return ", ".join(f"{v:g}" for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_summary(info: dict[str, Any]) -> str:
    """The readable form of :func:`hetsiren.io.describe_particles`'s dict."""
    lines = [
        f"file:          {info['path']} ({info['format']})",
        f"particles:     {info['n_particles']}",
        f"box:           {_fmt(info['box_size'])} px",
        f"pixel size:    {_fmt(info['pixel_size_A'])} Å",
        f"poses:         {'yes' if info['has_poses'] else 'no'}"
        f"{'' if info['has_shifts'] else ' (no shifts)'}",
        f"CTF:           {'yes' if info['has_ctf'] else 'no'}",
        f"optics groups: {len(info['optics_groups'])}",
    ]
    for g in info["optics_groups"]:
        lines.append(f"  {g['number']:>3} {g['name']}: {g['n_particles']} particles, "
                     f"{_fmt(g['pixel_size_A'])} Å/px, {_fmt(g['voltage_kv'])} kV, "
                     f"Cs {_fmt(g['cs_mm'])} mm, amplitude contrast "
                     f"{_fmt(g['amplitude_contrast'])}")
    lines.append(f"image stacks:  {info['stacks_found']} of {info['n_stacks']} found")
    missing = info["missing_stacks"]
    if missing:
        lines.append(f"  missing ({len(missing)}; pass --datadir if they live elsewhere):")
        lines += [f"    {m}" for m in missing[:_SHOW_MISSING]]
        if len(missing) > _SHOW_MISSING:
            lines.append(f"    ... and {len(missing) - _SHOW_MISSING} more")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    info = describe_particles(args.file, datadir=args.datadir, pixel_size_A=args.pixel_size)
    print(json.dumps(info) if args.json else format_summary(info))
    return 0
