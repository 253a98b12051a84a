"""Choosing the torch device: CUDA when present, the CPU otherwise, ``--device`` to override."""

from __future__ import annotations

import torch

from hetsiren.errors import UserInputError

__all__ = ["resolve_device"]


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
