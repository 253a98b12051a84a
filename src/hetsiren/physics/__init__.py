"""Image formation: projectors, CTF, Fourier resampling and filters, FSC, backprojection."""

from hetsiren.physics.ctf import (
    DEFAULT_WIENER_SNR,
    apply_ctf,
    compute_ctf,
    electron_wavelength_A,
    phase_flip,
    wiener_filter,
)
from hetsiren.physics.fourier import (
    downsample,
    fourier_crop,
    fourier_pad,
    fourier_shift,
    lowpass,
    resample_map,
)
from hetsiren.physics.fsc import FSCCurve, fsc, resolution_at
from hetsiren.physics.projection import SplatPlan, project_points, project_volume_reference
from hetsiren.physics.reconstruct import (
    DEFAULT_WEIGHTING,
    HalfMaps,
    ReconstructionResult,
    Weighting,
    backproject,
    finalize_half_maps,
    finalize_reconstruction,
    new_accumulators,
    reconstruct,
    reconstruct_batches,
    shell_regularisation_from_fsc,
)

__all__ = [
    "DEFAULT_WEIGHTING",
    "DEFAULT_WIENER_SNR",
    "FSCCurve",
    "HalfMaps",
    "SplatPlan",
    "ReconstructionResult",
    "Weighting",
    "backproject",
    "finalize_half_maps",
    "finalize_reconstruction",
    "fsc",
    "new_accumulators",
    "reconstruct",
    "reconstruct_batches",
    "resolution_at",
    "shell_regularisation_from_fsc",
    "apply_ctf",
    "compute_ctf",
    "downsample",
    "electron_wavelength_A",
    "fourier_crop",
    "fourier_pad",
    "fourier_shift",
    "lowpass",
    "phase_flip",
    "project_points",
    "project_volume_reference",
    "resample_map",
    "wiener_filter",
]
