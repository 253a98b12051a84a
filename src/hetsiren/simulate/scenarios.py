"""Heterogeneity scenarios: discrete maps with populations, continuous paths, phantoms, atoms.

Each function draws the per-particle state and hands the projection and writing to
:func:`hetsiren.simulate.dataset.simulate_dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from hetsiren.errors import UserInputError
from hetsiren.simulate.dataset import SimulationSpec, simulate_dataset
from hetsiren.simulate.density import density_from_points, read_atomic_models
from hetsiren.simulate.phantoms import Phantom, discrete_phantom_maps

__all__ = [
    "maps_from_atomic_models",
    "simulate_discrete",
    "simulate_path",
    "simulate_phantom",
]

# Continuous coordinates are quantised to this many path samples so that particles sharing a
# sample are projected together (a 1/200 step is far below what any landscape resolves).
_PATH_SAMPLES = 200
# Points along a continuous path whose maps are written as ground truth.
_TRUTH_PATH_POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _check_maps(maps: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    names = names or [f"map {i}" for i in range(len(maps))]
    if len(maps) == 0:
        raise UserInputError("no maps given")
    shape = maps[0].shape
    for m, name in zip(maps, names, strict=True):
        if m.ndim != 3 or len(set(m.shape)) != 1:
            raise UserInputError(f"{name}: expected a cubic 3D map, got shape {m.shape}")
        if m.shape != shape:
            raise UserInputError(
                f"{name}: shape {m.shape} differs from {names[0]}'s {shape}; all maps must "
                "share one box")
        if not np.isfinite(m).all():
            raise UserInputError(f"{name}: contains NaN or Inf values")
    return np.stack([np.asarray(m, dtype=np.float32) for m in maps])


def _parse_populations(populations: Sequence[float] | None, k: int) -> np.ndarray:
    if populations is None:
        return np.full(k, 1.0 / k)
    p = np.asarray(populations, dtype=np.float64)
    if len(p) != k:
        raise UserInputError(f"--populations has {len(p)} values for {k} maps")
    if np.any(p < 0) or p.sum() <= 0:
        raise UserInputError(f"--populations must be non-negative with a positive sum, got {p}")
    return p / p.sum()


def simulate_discrete(out_dir: str | Path, maps: Sequence[np.ndarray], spec: SimulationSpec,
                      populations: Sequence[float] | None = None,
                      map_names: Sequence[str] | None = None,
                      progress: bool | None = None) -> Path:
    """Discrete (and compositional) heterogeneity: each particle is one of ``maps``.

    The states are drawn with the given populations and seed; a rare state of a few percent
    is simply a small population.
    """
    stack = _check_maps(maps, map_names)
    p = _parse_populations(populations, len(stack))
    rng = np.random.default_rng([spec.seed, 7])
    state = rng.choice(len(stack), size=spec.n_particles, p=p)
    return simulate_dataset(
        out_dir, lambda k: stack[k], len(stack), state, spec,
        truth={"state": state.astype(np.int64),
               "coordinate": np.full(spec.n_particles, np.nan)},
        describe={"kind": "discrete", "populations": p.tolist(),
                  "maps": list(map_names) if map_names else None},
        truth_maps=list(stack), progress=progress)


def _interpolate_series(series: np.ndarray, t: float) -> np.ndarray:
    s = t * (len(series) - 1)
    i = min(int(np.floor(s)), len(series) - 2)
    f = s - i
    return ((1 - f) * series[i] + f * series[i + 1]).astype(np.float32)


def simulate_path(out_dir: str | Path, maps: Sequence[np.ndarray], spec: SimulationSpec,
                  map_names: Sequence[str] | None = None,
                  progress: bool | None = None) -> Path:
    """Continuous heterogeneity along a series of maps (piecewise-linear between neighbours).

    Each particle's coordinate t is uniform in [0, 1] (0 = first map, 1 = last).
    """
    series = _check_maps(maps, map_names)
    if len(series) < 2:
        raise UserInputError("a continuous path needs at least two maps")
    return _simulate_continuous(out_dir, lambda t: _interpolate_series(series, t), spec,
                                {"kind": "continuous", "path": "linear between maps",
                                 "maps": list(map_names) if map_names else None}, progress)


def _simulate_continuous(out_dir, volume_at, spec: SimulationSpec, describe: dict,
                         progress) -> Path:
    rng = np.random.default_rng([spec.seed, 7])
    sample = rng.integers(0, _PATH_SAMPLES, spec.n_particles)
    coordinate = sample / (_PATH_SAMPLES - 1)
    return simulate_dataset(
        out_dir, lambda k: volume_at(k / (_PATH_SAMPLES - 1)), _PATH_SAMPLES, sample, spec,
        truth={"state": np.full(spec.n_particles, -1, dtype=np.int64),
               "coordinate": coordinate},
        describe={**describe, "truth_map_coordinates": list(_TRUTH_PATH_POINTS)},
        truth_maps=[volume_at(t) for t in _TRUTH_PATH_POINTS], progress=progress)


def simulate_phantom(out_dir: str | Path, kind: Literal["discrete", "continuous"],
                     box_size: int, spec: SimulationSpec,
                     populations: Sequence[float] | None = None,
                     progress: bool | None = None) -> Path:
    """The built-in two-domain phantom: three discrete states or a continuous swing."""
    if kind == "discrete":
        maps = discrete_phantom_maps(box_size, spec.pixel_size_A, seed=spec.seed)
        return simulate_discrete(out_dir, list(maps), spec, populations,
                                 map_names=["arm closed", "arm open", "arm absent"],
                                 progress=progress)
    phantom = Phantom(seed=spec.seed)
    return _simulate_continuous(
        out_dir, lambda t: phantom.density(t, box_size, spec.pixel_size_A), spec,
        {"kind": "continuous", "path": f"phantom arm swing 0-{phantom.max_swing_deg:g} deg"},
        progress)


def maps_from_atomic_models(paths: Sequence[str | Path], box_size: int, pixel_size_A: float,
                            resolution_A: float) -> tuple[list[np.ndarray], list[str]]:
    """Every model of every file (a multi-model file is a trajectory) → maps.

    All models are centred on the centre of mass of the first one, so that the motion between
    models is kept.
    """
    models, names = [], []
    for path in paths:
        for i, model in enumerate(read_atomic_models(path)):
            models.append(model)
            names.append(f"{Path(path).name}#{i + 1}")
    pos0, z0 = models[0]
    centre = (pos0 * z0[:, None]).sum(0) / z0.sum()
    maps = [density_from_points(pos - centre, z, box_size, pixel_size_A, resolution_A)
            for pos, z in models]
    return maps, names
