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
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

# Fields that are not plain flags, or whose flag is not the kebab-case field name.
_POSITIONAL = "particles"
_SKIPPED = {"extra"}
_FLAG_NAMES = {"pixel_size_A": ["--pixel-size"], "ctf_mode": ["--ctf-mode", "--ctf"]}
# Options a resumed run takes from the command line only when given (--epochs to extend it).
_KEPT_ON_RESUME = ("epochs",)


def _config_fields():
    from hetsiren.train.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    return [(f, hints[f.name]) for f in dataclasses.fields(TrainConfig)
            if f.name not in _SKIPPED and f.name != _POSITIONAL]


def add_args(p: argparse.ArgumentParser) -> None:
    from hetsiren.train.config import TrainConfig, field_help

    helps = field_help()
    p.add_argument("particles", help=helps[_POSITIONAL])
    p.add_argument("-o", "--output", required=True, help="run directory to create")
    p.add_argument("--paper-defaults", action="store_true",
                   help="use the paper's --lr 1e-5, --batch-size 8, --epochs 50 and --omega0 30 "
                        "(set for ~1e5 particles on a GPU) instead of ours")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output from its last complete epoch")
    for f, hint in _config_fields():
        flags = _FLAG_NAMES.get(f.name, [f"--{f.name.replace('_', '-')}"])
        kwargs: dict = {"dest": f.name, "help": helps.get(f.name, "")}
        default = getattr(TrainConfig, f.name, None) if f.default is dataclasses.MISSING \
            else f.default
        args = typing.get_args(hint)
        if hint is bool:
            if default:
                flags = [f"--no-{f.name.replace('_', '-')}"]
                kwargs.update(action="store_false")
            else:
                kwargs.update(action="store_true")
        elif typing.get_origin(hint) is typing.Literal:
            kwargs.update(choices=list(args), default=default)
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=int, nargs="+", default=list(default))
        else:
            base = next((a for a in args if a is not type(None)), hint) if args else hint
            kwargs.update(type=base, default=default)
        if "help" in kwargs and kwargs.get("default") is not None and not isinstance(
                kwargs.get("default"), bool):
            kwargs["help"] += " (default: %(default)s)"
        if f.name in _KEPT_ON_RESUME:
            # None = "not given": a resumed run keeps its own value unless asked otherwise.
            kwargs["help"] = kwargs["help"].replace("%(default)s", str(default))
            kwargs["default"] = None
        p.add_argument(*flags, **kwargs)


def main(args: argparse.Namespace) -> int:
    from hetsiren.train import PAPER_DEFAULTS, TrainConfig, train
    from hetsiren.train.runio import read_run_config

    values = {f.name: getattr(args, f.name) for f, _ in _config_fields()}
    for name in _KEPT_ON_RESUME:
        if values[name] is None:
            stored = read_run_config(args.output)["config"] if args.resume else {}
            values[name] = stored.get(name, getattr(TrainConfig, name))
    values["multires"] = tuple(values["multires"])
    if args.paper_defaults:
        values.update(PAPER_DEFAULTS)
    cfg = TrainConfig(particles=args.particles, **values)
    result = train(cfg, args.output, resume=args.resume)
    print(f"trained {result.epochs_done} epochs; latent space in {result.run_dir}/latent.npy")
    return 0
