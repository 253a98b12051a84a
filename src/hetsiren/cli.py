"""Command line: ``hetsiren <command> ...``.

Each command is a module in ``hetsiren.commands`` with a docstring (first line = help, rest =
epilog with examples), ``add_args(parser)`` and ``main(args) -> int | None``. This layer only
parses, configures logging and turns user errors (exit 2) and operating-system errors (exit 1)
into one clear line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

# Before torch is imported: large CPU tensors on transparent huge pages (fewer page faults in
# the training step; see hetsiren.devices.tune_cpu_allocator). A user's setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from hetsiren import __version__
from hetsiren.errors import UserInputError
from hetsiren.outputs import describe_os_error

# Order in `hetsiren --help`: the workflow order. Modules not listed come after, sorted.
_ORDER = ("info", "simulate", "reconstruct", "postprocess", "train", "convergence", "encode",
          "decode", "analyze", "landscape", "trajectory", "validate", "export", "evaluate",
          "demo")


def _command_modules():
    import hetsiren.commands as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    return [(n, importlib.import_module(f"hetsiren.commands.{n}")) for n in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetsiren",
        description="HetSIREN: real-space heterogeneous reconstruction of cryo-EM data.",
    )
    parser.add_argument("--version", action="version", version=f"hetsiren {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _command_modules():
        doc = (module.__doc__ or name).strip()
        summary, _, epilog = doc.partition("\n")
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=epilog.strip() or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_args(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = argv  # as typed, for a command that starts itself again (train --nproc)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._main(args) or 0)
    except UserInputError as exc:
        print(f"hetsiren {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions changed during the run...: one line
        print(f"hetsiren {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hetsiren {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
