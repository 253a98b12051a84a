"""Fixtures for the physics tests: the conformance set, a smooth test map, a reference CTF."""

from __future__ import annotations

import math

import mrcfile
import numpy as np
import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def conformance(conformance_dir):
    """map (D,D,D) float32, images (N,D,D) float32, rotations A (N,3,3), origins (N,2) px."""
    return {
        "map": torch.from_numpy(mrcfile.read(conformance_dir / "map.mrc").astype(np.float32)),
        "images": torch.from_numpy(
            mrcfile.read(conformance_dir / "particles.mrcs").astype(np.float32)),
        "rotations": torch.from_numpy(np.load(conformance_dir / "truth_rotations_A.npy")),
        "origins_px": torch.from_numpy(np.load(conformance_dir / "truth_origin_px.npy")),
    }


def blob_map(box: int, n_blobs: int = 6, sigma_px: float = 2.0, seed: int = 0) -> torch.Tensor:
    """``(D, D, D)`` float64 sum of Gaussian blobs, asymmetric, centres within D/7 of the centre."""
    rng = np.random.default_rng(seed)
    axis = np.arange(box) - box // 2
    zz, yy, xx = np.meshgrid(axis, axis, axis, indexing="ij")
    vol = np.zeros((box,) * 3)
    for i in range(n_blobs):
        c = rng.uniform(-box / 7, box / 7, size=3)
        amp = 1.0 + 0.3 * i
        vol += amp * np.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + (zz - c[2]) ** 2)
                            / (2 * sigma_px**2))
    return torch.from_numpy(vol)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(b, D, D)`` × 2 → ``(b,)`` Pearson correlation per image."""
    a = a - a.mean((-2, -1), keepdim=True)
    b = b - b.mean((-2, -1), keepdim=True)
    return (a * b).sum((-2, -1)) / (a.norm(dim=(-2, -1)) * b.norm(dim=(-2, -1)))


def relion_ctf_numpy(s_x: np.ndarray, s_y: np.ndarray, defocus_u_A, defocus_v_A,
                     angle_rad, voltage_kv, cs_mm, w, phase_shift_rad, bfactor_A2):
    """Independent RELION CTF (ctf.h), frequencies in 1/Å, scalar parameters.

    RELION: K1 = π λ, K2 = π/2 Cs λ³, K3 = atan(Q0 / √(1 − Q0²)), K4 = −B/4, K5 = phase;
    Δf = −[(U+V)/2 + (U−V)/2 cos 2(atan2(y, x) − angle)];
    arg = K1 Δf u² + K2 u⁴ − K5 − K3;  CTF = −sin(arg) · exp(K4 u²).
    """
    volts = voltage_kv * 1e3
    lam = 12.2643247 / math.sqrt(volts * (1 + volts * 0.978466e-6))
    u2 = s_x**2 + s_y**2
    ang = np.arctan2(s_y, s_x) - angle_rad
    deltaf = -(0.5 * (defocus_u_A + defocus_v_A)
               + 0.5 * (defocus_u_A - defocus_v_A) * np.cos(2 * ang))
    k1 = math.pi * lam
    k2 = math.pi / 2 * cs_mm * 1e7 * lam**3
    k3 = math.atan(w / math.sqrt(1 - w * w))
    arg = k1 * deltaf * u2 + k2 * u2 * u2 - phase_shift_rad - k3
    return -np.sin(arg) * np.exp(-bfactor_A2 / 4 * u2)
