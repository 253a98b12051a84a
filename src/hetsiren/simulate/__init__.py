"""Ground-truth datasets: phantoms, maps and atomic models → particles with known states."""

from hetsiren.simulate.dataset import SimulationSpec, simulate_dataset
from hetsiren.simulate.density import density_from_points, read_atomic_models
from hetsiren.simulate.phantoms import Phantom, discrete_phantom_maps
from hetsiren.simulate.scenarios import (
    maps_from_atomic_models,
    simulate_discrete,
    simulate_path,
    simulate_phantom,
)

__all__ = [
    "Phantom",
    "SimulationSpec",
    "density_from_points",
    "discrete_phantom_maps",
    "maps_from_atomic_models",
    "read_atomic_models",
    "simulate_dataset",
    "simulate_discrete",
    "simulate_path",
    "simulate_phantom",
]
