"""Train HetSIREN on a particle set: conformational latent space + decoder of maps.

Writes RUN/config.json, RUN/model.pt (checkpoint every epoch), RUN/log.jsonl,
RUN/latent.npy (one row per input particle) and, with --refine-pose, RUN/poses_refined.star.
Every option's paper value is shown in brackets. Our defaults for --lr, --batch-size and
--epochs differ from the paper's (1e-5, 8, 50: tuned for ~1e5 particles on a GPU); see
docs/benchmarks.md for the evidence.

examples:
  hetsiren train particles.star -o run --epochs 30
  hetsiren train particles.star -o run --ref consensus.mrc --mask focus.mrc --box 128
  hetsiren train particles.cs -o run --refine-pose --ctf-mode wiener --device cuda
  hetsiren train particles.star -o run --resume          # continue an interrupted run
  hetsiren train particles.star -o run --nproc 4         # 4 GPUs of this machine
  torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
      --rdzv-id myrun -m hetsiren train particles.star -o run  # on each of 2 nodes (README)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

# Fields that are not plain flags, or whose flag is not the kebab-case field name.
_POSITIONAL = "particles"
_SKIPPED = {"extra"}
_FLAG_NAMES = {"pixel_size_A": ["--pixel-size"], "ctf_mode": ["--ctf-mode", "--ctf"]}


def _config_fields():
    from hetsiren.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    return [(f, hints[f.name]) for f in dataclasses.fields(TrainConfig)
            if f.name not in _SKIPPED and f.name != _POSITIONAL]


def _names(text: str) -> list[str]:
    return [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]


def add_args(p: argparse.ArgumentParser) -> None:
    from hetsiren.train.config import RESUME_FREE, TrainConfig, field_help

    helps = field_help()
    p.add_argument("particles", help=helps[_POSITIONAL])
    p.add_argument("-o", "--output", required=True, help="run directory to create")
    p.add_argument("--paper-defaults", action="store_true",
                   help="use the paper's --lr 1e-5, --batch-size 8, --epochs 50 and --omega0 30 "
                        "(set for ~1e5 particles on a GPU) instead of ours")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last complete epoch, with its "
                        f"stored options (only {', '.join('--' + n for n in RESUME_FREE)} may "
                        "differ); a run stopped before its first checkpoint starts again")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N processes of this machine (one per GPU; on the CPU gloo "
                        "processes): starts torchrun --standalone --nproc-per-node N for you. "
                        "Several machines: run torchrun yourself (see the examples)")
    p.add_argument("--allow-change", type=_names, default=[], metavar="NAMES",
                   help="with --resume: options that may differ from the stored ones, e.g. "
                        "lr,batch-size (the change is recorded in config.json)")
    for f, hint in _config_fields():
        flags = _FLAG_NAMES.get(f.name, [f"--{f.name.replace('_', '-')}"])
        default = getattr(TrainConfig, f.name, None) if f.default is dataclasses.MISSING \
            else f.default
        # Every option defaults to None = "not given": a resumed run then keeps its own value,
        # and only what was typed counts as a change.
        kwargs: dict = {"dest": f.name, "help": helps.get(f.name, ""), "default": None}
        args = typing.get_args(hint)
        if hint is bool:
            if default:
                flags = [f"--no-{f.name.replace('_', '-')}"]
                kwargs.update(action="store_false")
            else:
                kwargs.update(action="store_true")
        elif typing.get_origin(hint) is typing.Literal:
            kwargs.update(choices=list(args))
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=int, nargs="+")
            default = " ".join(map(str, default or ()))
        else:
            kwargs.update(type=next((a for a in args if a is not type(None)), hint) if args
                          else hint)
        if default is not None and not isinstance(default, bool):
            kwargs["help"] += f" (default: {default})"
        p.add_argument(*flags, **kwargs)


def _nproc_command(args: argparse.Namespace) -> list[str]:
    """The torchrun command line that runs this command on ``--nproc`` processes."""
    from hetsiren.errors import UserInputError

    if "RANK" in os.environ or "LOCAL_RANK" in os.environ:
        raise UserInputError("--nproc inside torchrun: torchrun already started the processes; "
                             "drop --nproc")
    if args.nproc < 1:
        raise UserInputError(f"--nproc must be >= 1, got {args.nproc}")
    argv, rest = [], list(args.command_line)
    while rest:  # the same command without --nproc
        token = rest.pop(0)
        if token == "--nproc":
            rest.pop(0)
        elif not token.startswith("--nproc="):
            argv.append(token)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(args.nproc), "-m", "hetsiren", *argv]


def main(args: argparse.Namespace) -> int:
    from hetsiren.errors import UserInputError

    if args.nproc is not None:
        return subprocess.run(_nproc_command(args)).returncode
    from hetsiren.rundir import CONFIG, read_record
    from hetsiren.train.config import PAPER_DEFAULTS, TrainConfig
    from hetsiren.train.trainer import train

    given = {f.name: getattr(args, f.name) for f, _ in _config_fields()
             if getattr(args, f.name) is not None}
    if "multires" in given:
        given["multires"] = tuple(given["multires"])
    if args.allow_change and not args.resume:
        raise UserInputError("--allow-change only applies with --resume")
    if args.resume and (Path(args.output) / CONFIG).is_file():
        # The stored options, with what the command line gives on top (checked by train).
        stored = read_record(args.output).train.to_dict()
        cfg = TrainConfig.from_dict({**stored, "particles": args.particles, **given})
    else:
        base = dict(PAPER_DEFAULTS) if args.paper_defaults else {}
        cfg = TrainConfig(particles=args.particles, **{**base, **given})
    result = train(cfg, args.output, resume=args.resume, allow_changes=tuple(args.allow_change))
    if not result.main_process:
        return 0
    new = result.epochs_done - result.first_epoch
    done = (f"trained {new} epochs ({result.first_epoch + 1}-{result.epochs_done})" if new else
            f"no epoch to train: the run already has {result.epochs_done} (give a larger "
            "--epochs to continue it)")
    print(f"{done}; the run has {result.epochs_done} epochs; latent space in "
          f"{result.run_dir}/latent.npy")
    return 0
