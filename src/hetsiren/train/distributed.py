"""Training on several processes (GPUs, nodes) with ``torch.distributed``, started by torchrun.

``torchrun --nproc_per_node N -m hetsiren train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment;
:func:`from_environment` joins them in one process group: NCCL when they train on CUDA, gloo
on the CPU. Without those variables (a plain ``hetsiren train``) everything here is a no-op.

How a run is split:

- every rank draws the same epoch order from ``(seed, epoch)``; each global batch of
  ``--batch-size`` particles is dealt out across the ranks (:func:`rank_batches`), so an
  epoch visits the same particles in the same global batches whatever the number of ranks;
- after each backward pass the gradients are averaged over the global batch (weighted by
  each rank's share) in one all-reduce (:func:`all_reduce_gradients`), then clipped and
  applied identically everywhere, so the replicas never drift apart. Not
  ``DistributedDataParallel``: a step runs the encoder, the clean and CTF encoders and the
  decoder as separate calls (Supplementary Fig. 6), not through one ``forward``, and the
  decoupling encoders are unused when their weights are 0; DDP's hooks want a single forward
  over every parameter;
- rank 0 alone writes the run folder (config, checkpoints, log, snapshots, latent); the
  others wait at the points where they need its results (:func:`on_main`);
- the latent of the whole set is encoded in contiguous shares and gathered in input order
  (:func:`gather_rows`).

A checkpoint holds the one model and optimiser state, so ``--resume`` works with any world
size.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as td

from hetsiren.errors import UserInputError

__all__ = ["Dist", "all_reduce_gradients", "broadcast_module", "check_split",
           "from_environment", "gather_rows", "on_main", "rank_batches", "share", "shutdown",
           "sum_across"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Waiting ranks sit in a collective while rank 0 builds the image cache or V0: allow hours
# (1e6 particles at 256 px take ~1 h to cache on a few cores), not torch's default 30 min.
_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise UserInputError(f"environment variable {name}={value!r}: expected an integer "
                             "(set by torchrun)") from exc


def from_environment(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes in the environment (if any).

    Returns this process's :class:`Dist` and its device: with CUDA, ``cuda:LOCAL_RANK``
    (one GPU per process).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist(), device
    dist = Dist(rank=_env_int("RANK", 0), world_size=world,
                local_rank=_env_int("LOCAL_RANK", 0))
    if device.type == "cuda":
        if dist.local_rank >= torch.cuda.device_count():
            raise UserInputError(
                f"LOCAL_RANK {dist.local_rank}: this node has {torch.cuda.device_count()} "
                "GPUs; start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not td.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        td.init_process_group(backend=backend, timeout=_TIMEOUT, **kwargs)
    log.info("rank %d of %d on %s (%s)", dist.rank, world, device, td.get_backend())
    return dist, device


def shutdown(dist: Dist) -> None:
    if dist.active and td.is_initialized():
        td.destroy_process_group()


def rank_batches(order: np.ndarray, batch_size: int, dist: Dist) -> list[np.ndarray]:
    """This rank's share of each global batch of ``order`` (particle indices).

    Global batch k is ``order[k*B:(k+1)*B]``; rank r gets its elements ``r, r+W, ...``. A last
    batch too small to give every rank two particles joins the one before it, so that every
    rank takes part in every step (each step is one all-reduce) with at least two particles
    (the decoupling shuffles need two).
    """
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if dist.active and len(chunks) > 1 and len(chunks[-1]) < 2 * dist.world_size:
        chunks[-2:] = [np.concatenate(chunks[-2:])]
    return [c[dist.rank::dist.world_size] for c in chunks]


def check_split(n_particles: int, batch_size: int, dist: Dist) -> None:
    """Refuse a world too large for the batch or the data set."""
    if dist.active and batch_size < 2 * dist.world_size:
        raise UserInputError(
            f"--batch-size {batch_size} over {dist.world_size} processes leaves fewer than "
            f"2 particles per process and step; use --batch-size {2 * dist.world_size} or more "
            "(it is the global batch, split across the processes)")
    if dist.active and n_particles < 2 * dist.world_size:
        raise UserInputError(f"{n_particles} particles cannot be split over "
                             f"{dist.world_size} processes")


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], count: int, finite: bool,
                         dist: Dist) -> tuple[int, bool]:
    """Average gradients over the global batch: ``Σ_r count_r · g_r / Σ_r count_r``, in place.

    ``g_r`` is rank r's gradient of its mean loss over ``count_r`` particles. One flat
    all-reduce carries the gradients, the counts and whether every rank's loss was finite.
    Returns the global count and finiteness.
    """
    if not dist.active:
        return count, finite
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    device = grads[0].device
    flat = torch.cat([g.reshape(-1).float() * count for g in grads]
                     + [torch.tensor([float(count), 0.0 if finite else 1.0], device=device)])
    td.all_reduce(flat)
    total, bad = int(round(float(flat[-2]))), float(flat[-1]) > 0
    flat = flat[:-2] / max(total, 1)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        k = g.numel()
        p.grad = flat[offset:offset + k].view_as(g).to(g.dtype)
        offset += k
    return total, not bad


def sum_across(values: dict[str, float], dist: Dist, device: torch.device) -> dict[str, float]:
    """Sums of per-rank values (same keys on every rank)."""
    if not dist.active:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    td.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


def share(n: int, dist: Dist) -> np.ndarray:
    """This rank's contiguous share of ``range(n)`` (encoding: gathered back in order)."""
    bounds = np.linspace(0, n, dist.world_size + 1).round().astype(np.int64)
    return np.arange(bounds[dist.rank], bounds[dist.rank + 1])


def gather_rows(local: np.ndarray, n: int, dist: Dist, device: torch.device) -> np.ndarray:
    """The rows of every rank's :func:`share`, concatenated in rank order = input order."""
    if not dist.active:
        return local
    bounds = np.linspace(0, n, dist.world_size + 1).round().astype(np.int64)
    biggest = int(np.diff(bounds).max())
    padded = torch.zeros((biggest, *local.shape[1:]), dtype=torch.float32, device=device)
    padded[:len(local)] = torch.from_numpy(np.ascontiguousarray(local, dtype=np.float32))
    parts = [torch.empty_like(padded) for _ in range(dist.world_size)]
    td.all_gather(parts, padded)
    return np.concatenate([p[:hi - lo].cpu().numpy() for p, lo, hi in
                           zip(parts, bounds[:-1], bounds[1:], strict=True)]).astype(local.dtype)


def on_main(fn: Callable[[], T], dist: Dist) -> T:
    """Run ``fn`` on rank 0 and hand its result (pickled) to every rank; an error there is
    raised on every rank (the others would otherwise wait for it until the timeout)."""
    if not dist.active:
        return fn()
    box: list[Any] = [None]
    if dist.is_main:
        try:
            box = [("ok", fn())]
        except UserInputError as exc:
            box = [("error", str(exc))]
            td.broadcast_object_list(box, src=0)
            raise
        except BaseException as exc:
            box = [("error", f"{type(exc).__name__}: {exc}")]
            td.broadcast_object_list(box, src=0)
            raise
    td.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        if dist.is_main:
            raise RuntimeError(value)  # unreachable: rank 0 re-raised above
        raise UserInputError(f"rank 0 stopped: {value}")
    return value


def broadcast_module(module: torch.nn.Module, dist: Dist) -> None:
    """Every rank takes rank 0's parameters and buffers (identical replicas from step 0)."""
    if not dist.active:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        td.broadcast(t.data, src=0)
