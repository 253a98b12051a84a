"""Choosing the torch device: CUDA when present, the CPU otherwise, ``--device`` to override."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

import torch

from hetsiren.errors import UserInputError

__all__ = ["resolve_device", "tune_cpu_allocator"]

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h) and the values set by tune_cpu_allocator: blocks up to
# 1 GiB come from the heap instead of fresh mmap pages, and freed memory is kept (trimmed only
# above 2 GiB free at the top of the heap).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 1 << 30
_TRIM_THRESHOLD_BYTES = (1 << 31) - 1


def resolve_device(name: str | None = "auto") -> torch.device:
    """``"auto"``/None → ``cuda`` when available else ``cpu``; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` are checked against what this machine has."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserInputError(f"--device {name!r} is not a device (use auto, cpu, cuda or "
                             "cuda:N)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"--device {name}: this machine has no CUDA device (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserInputError(f"--device {name}: only {torch.cuda.device_count()} CUDA "
                                 "device(s) present")
    elif device.type != "cpu":
        raise UserInputError(f"--device {name}: only cpu and cuda are supported")
    return device


@functools.cache
def tune_cpu_allocator() -> bool:
    """Stop the page-fault storm of a CPU training step (once per process; glibc only).

    Each step allocates and frees tensors of tens of MB; glibc serves those with fresh mmap
    pages that the kernel zero-fills on first touch, which was ~30 % of a box-64 step and
    ~65 % at box 128 (issue 11). Raising malloc's mmap and trim thresholds keeps the freed
    blocks in the process for the next step; peak memory is unchanged (the same blocks are
    reused). The command line also sets ``THP_MEM_ALLOC_ENABLE=1`` before torch starts, so
    torch backs large tensors with transparent huge pages (another 30 % fewer faults).

    Returns:
        Whether the thresholds were set (False on a C library without ``mallopt``).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    ok = (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
          and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1)
    log.debug("malloc thresholds %s", "set" if ok else "not accepted")
    return ok
