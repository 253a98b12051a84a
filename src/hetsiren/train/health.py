"""Is training finding a landscape? Read the epoch log for the three ways it fails.

A run whose decoder never picks up z keeps the data term at the consensus map's level while
the latent's spread over a batch (``z_std`` in ``log.jsonl``) either collapses towards zero
(the decoupling terms of Eqs. 3-4 are then trivially minimised by a constant z) or runs away
(the encoder's output is noise to the decoder), or, with the latent normalised, the decoded
maps stay alike (``map_spread``). All three were measured (docs/benchmarks.md,
benchmarks/bench_realistic.py); this module names them in words with what to do next, for
the progress bar, ``log.jsonl`` and ``hetsiren analyze``'s report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["COLLAPSE_Z_STD", "FLAT_DATA_FRACTION", "MAP_SPREAD_FLOOR", "RUNAWAY_Z_STD",
           "training_health"]

COLLAPSE_Z_STD = 0.01
"""z std below which the latent has collapsed when it has also fallen to under
``_COLLAPSE_FALL`` of its peak: collapsed runs measured 0.0017-0.0075, working ones 0.05-0.5."""
_COLLAPSE_FALL = 0.25
RUNAWAY_Z_STD = 10.0
"""z std above which the latent has run away (measured 14-3,000 in failed runs)."""
_RUNAWAY_GROWTH = 4.0
FLAT_DATA_FRACTION = 0.005
"""The data term is flat when its best epoch is within this fraction of its first one
(collapsed runs: 0.2-0.4 %; working runs at SNR 0.1: 2-4 % within 4 epochs)."""
MAP_SPREAD_FLOOR = 0.03
"""``map_spread`` (how much the decoded maps differ across a batch, relative to the mean map)
below which the decoder ignores z: a runaway phantom run stayed at 0.010-0.014 for 10 epochs,
working runs reach 0.05-0.2 by epoch 4 on the CI phantom, by 10 on PR-LBD at SNR 0.1
(issue 10). With ``--latent-norm`` z can neither collapse nor run away, so this is how such a
run fails."""
_IGNORED_EPOCHS = 10
"""Epochs before a flat data term with flat maps is called a failure: working runs spent up
to 3 epochs there at SNR 2 (CI phantom) and up to 9 at SNR 0.1 (PR-LBD's hinge, defaults)
before the decoder picked z up."""


def training_health(entries: Sequence[dict[str, Any]]) -> str | None:
    """A warning in words when the epochs so far show a collapsed or runaway latent with a
    flat data term; None when they do not (or too few epochs were logged to tell).

    Args:
        entries: ``log.jsonl`` lines in epoch order (``data`` and ``z_std`` are read).
    """
    entries = [e for e in entries if "z_std" in e and "data" in e]
    if len(entries) < 2:
        return None
    z = [float(e["z_std"]) for e in entries]
    data = [float(e["data"]) for e in entries]
    gain = (data[0] - min(data)) / abs(data[0]) if data[0] else 0.0
    if gain >= FLAT_DATA_FRACTION:
        return None
    flat = (f"the data term stayed at {data[-1]:.4g} ({100 * gain:.2f} % below epoch 1), so "
            "the decoded maps do not depend on z and the landscape carries no conformations")
    if z[-1] < COLLAPSE_Z_STD and z[-1] < _COLLAPSE_FALL * max(z):
        return (f"latent collapsed: z std fell from {max(z):.3g} to {z[-1]:.3g} by epoch "
                f"{len(z)} and {flat}. Try --pose-decoupling 0 --ctf-decoupling 0 (or smaller "
                "weights; 0 is the default), a smaller --kl-weight, --latent-norm, another "
                "--seed, or check that poses and CTF match the images.")
    if z[-1] > RUNAWAY_Z_STD and z[-1] > _RUNAWAY_GROWTH * z[0]:
        return (f"latent ran away: z std grew from {z[0]:.3g} to {z[-1]:.3g} by epoch "
                f"{len(z)} and {flat}. Try a larger --kl-weight (its prior holds z's scale; "
                "1 is the default), --latent-norm (z standardised: no runaway), a lower --lr, "
                "another --seed, or check that poses and CTF match the images.")
    spread = entries[-1].get("map_spread")
    if len(entries) >= _IGNORED_EPOCHS and spread is not None and spread < MAP_SPREAD_FLOOR:
        return (f"decoder ignores z: the decoded maps differ by {spread:.3g} across particles "
                f"(relative to the mean map; working runs reach 0.05-0.2) and {flat}. Try "
                "another --seed, a lower --lr, or check that poses and CTF match the images.")
    return None
