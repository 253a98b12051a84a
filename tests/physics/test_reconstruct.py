"""Backprojection: the conformance map from its particles, and a CTF + noise simulation
against an independent textbook Wiener backprojection."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import blob_map, relion_ctf_numpy
from hetsiren.data import reconstruct_particles
from hetsiren.io import read_particles
from hetsiren.io.particles import CTFParams, ParticleSet
from hetsiren.physics import (
    apply_ctf,
    backproject,
    compute_ctf,
    fsc,
    project_volume_reference,
    reconstruct,
    resolution_at,
)


def test_reconstruct_conformance_map(conformance):
    vol = conformance["map"]
    d = vol.shape[-1]
    rec = reconstruct(conformance["images"], conformance["rotations"].float(),
                      conformance["origins_px"].float())
    curve = fsc(rec, vol, 1.0)
    upto = int(0.8 * (d // 2))
    print(f"conformance FSC vs map.mrc: min shells 1..{upto} {curve.fsc[:upto].min():.4f}, "
          f"min shells 1..{d // 2 - 1} {curve.fsc[:d // 2 - 1].min():.4f}, "
          f"Nyquist shell {curve.fsc[-1]:.3f}; sum ratio {rec.sum() / vol.sum():.4f}")
    assert curve.fsc[:upto].min() > 0.95
    assert curve.fsc[:d // 2 - 1].min() > 0.9
    assert float(rec.sum() / vol.sum()) == pytest.approx(1.0, abs=0.02)
    # the opposite origin sign is clearly worse at high resolution
    wrong = reconstruct(conformance["images"], conformance["rotations"].float(),
                        -conformance["origins_px"].float(), oversampling=1)
    assert fsc(wrong, vol, 1.0).fsc[upto // 2:upto].mean() < 0.5


# ---- simulated CTF + noise data ----------------------------------------------------------
BOX, PIXEL_A, N_PARTICLES, SNR = 32, 3.0, 2000, 0.1


class _MemorySource:
    def __init__(self, images: np.ndarray):
        self._images = images
        self.box_size = images.shape[-1]

    def __len__(self) -> int:
        return len(self._images)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self._images[np.asarray(indices)]


@pytest.fixture(scope="module")
def simulated():
    rng = np.random.default_rng(0)
    truth = blob_map(BOX, n_blobs=8, sigma_px=1.5, seed=3).float()
    rot = Rotation.random(N_PARTICLES, random_state=4).as_matrix()
    shifts_px = rng.uniform(-2, 2, (N_PARTICLES, 2))
    du = rng.uniform(8000, 25000, N_PARTICLES)
    ctf = CTFParams(
        defocus_u_A=du, defocus_v_A=du - rng.uniform(0, 1000, N_PARTICLES),
        astigmatism_angle_rad=rng.uniform(0, np.pi, N_PARTICLES),
        voltage_kv=np.full(N_PARTICLES, 300.0), cs_mm=np.full(N_PARTICLES, 2.7),
        amplitude_contrast=np.full(N_PARTICLES, 0.1), phase_shift_rad=np.zeros(N_PARTICLES),
        bfactor_A2=np.zeros(N_PARTICLES))
    params = {k: torch.from_numpy(v).float() for k, v in vars(ctf).items()}
    ctf_t = compute_ctf(**params, box_size=BOX, pixel_size_A=PIXEL_A)
    clean = apply_ctf(project_volume_reference(truth, torch.from_numpy(rot).float(),
                                               torch.from_numpy(shifts_px).float()), ctf_t)
    noise_std = float(clean.std()) / np.sqrt(SNR)
    images = (clean + noise_std * torch.randn(clean.shape, generator=torch.Generator()
                                              .manual_seed(5))).numpy()
    return {"truth": truth, "rot": rot, "shifts_px": shifts_px, "ctf": ctf, "ctf_t": ctf_t,
            "images": images}


def _textbook_wiener(images, rot, shifts_px, ctf: CTFParams, eps_rel: float) -> np.ndarray:
    """Independent numpy reference: nearest-neighbour Fourier insertion, no padding,
    V = Σ c F / (Σ c² + ε), ε = eps_rel × mean weight inside the Nyquist sphere."""
    n, d, _ = images.shape
    k = np.arange(d) - d // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    keep = kx**2 + ky**2 <= (d // 2) ** 2
    kxk, kyk = kx[keep], ky[keep]  # (m,)
    f = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(images, axes=(1, 2))), axes=(1, 2))
    # content sits at minus the origin: move it back by +origin
    f = f[:, keep] * np.exp(-2j * np.pi * (kxk * shifts_px[:, :1] + kyk * shifts_px[:, 1:]) / d)
    c = relion_ctf_numpy(kxk / (d * PIXEL_A), kyk / (d * PIXEL_A), ctf.defocus_u_A[:, None],
                         ctf.defocus_v_A[:, None], ctf.astigmatism_angle_rad[:, None], 300.0,
                         2.7, 0.1, 0.0, 0.0)  # (n, m)
    p = kxk[None, :, None] * rot[:, None, 0] + kyk[None, :, None] * rot[:, None, 1]  # (n,m,3)
    iz, iy, ix = [(np.round(p[..., a]).astype(int) + d // 2) % d for a in (2, 1, 0)]
    num = np.zeros((d, d, d), complex)
    wt = np.zeros((d, d, d))
    np.add.at(num, (iz, iy, ix), c * f)
    np.add.at(wt, (iz, iy, ix), c**2)
    kz = k[:, None, None]
    sphere = kz**2 + k[None, :, None] ** 2 + k[None, None, :] ** 2 <= (d // 2) ** 2
    spec = np.where(sphere, num / (wt + eps_rel * wt[sphere].mean()), 0)
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(spec))).real


def test_ctf_noise_reconstruction_matches_textbook_wiener(simulated):
    s = simulated
    truth = s["truth"]
    ours = reconstruct(torch.from_numpy(s["images"]), torch.from_numpy(s["rot"]).float(),
                       torch.from_numpy(s["shifts_px"]).float(), s["ctf_t"])
    textbook = _textbook_wiener(s["images"], s["rot"], s["shifts_px"], s["ctf"], 1e-2)
    no_ctf = reconstruct(torch.from_numpy(s["images"]), torch.from_numpy(s["rot"]).float(),
                         torch.from_numpy(s["shifts_px"]).float())
    f_ours, f_text = fsc(ours, truth, PIXEL_A), fsc(textbook, truth, PIXEL_A)
    f_none = fsc(no_ctf, truth, PIXEL_A)
    print("FSC vs truth (shells 1..16): ours", np.round(f_ours.fsc, 3))
    print("                       textbook", np.round(f_text.fsc, 3))
    print("               no CTF correction", np.round(f_none.fsc, 3))
    print(f"resolution at 0.5: ours {resolution_at(f_ours, 0.5):.2f} Å, textbook "
          f"{resolution_at(f_text, 0.5):.2f} Å, no CTF {resolution_at(f_none, 0.5):.2f} Å")
    informative = f_text.fsc > 0.2
    assert (f_ours.fsc[informative] >= f_text.fsc[informative] - 0.05).all()
    assert resolution_at(f_ours, 0.5) <= resolution_at(f_text, 0.5) + 0.5
    assert f_none.fsc[2:8].mean() < f_ours.fsc[2:8].mean() - 0.2


def test_reconstruct_particles_half_maps(simulated):
    s = simulated
    n = len(s["images"])
    particles = ParticleSet(
        n_particles=n, box_size=BOX, pixel_size_A=np.full(n, PIXEL_A),
        images=_MemorySource(s["images"]), rotations=s["rot"],
        shifts_A=s["shifts_px"] * PIXEL_A, ctf=s["ctf"])
    result = reconstruct_particles(particles, half_maps=True, batch_size=500, device="cpu",
                                   progress=False, oversampling=1, weighting="wiener")
    assert result.map.shape == (BOX,) * 3 and result.half1.shape == (BOX,) * 3
    assert result.pixel_size_A == PIXEL_A
    full = fsc(result.map, s["truth"], PIXEL_A).fsc
    half = result.fsc.fsc
    # Rosenthal & Henderson: FSC(full map, truth) ≈ √(2 FSC_half / (1 + FSC_half))
    predicted = np.sqrt(np.clip(2 * half / (1 + half), 0, None))
    print("half-map FSC", np.round(half, 3))
    print(f"half-map 0.143: {resolution_at(result.fsc, 0.143):.2f} Å; max |FSC_truth − "
          f"√(2F/(1+F))| over shells with F > 0.1: "
          f"{np.abs(full - predicted)[half > 0.1].max():.3f}")
    assert np.abs(full - predicted)[half > 0.1].max() < 0.1
    # a cropped box reconstructs at the coarser pixel
    small = reconstruct_particles(particles, indices=np.arange(0, n, 8), box=16,
                                  device="cpu", progress=False, oversampling=1,
                                  weighting="wiener")
    assert small.map.shape == (16,) * 3 and small.pixel_size_A == pytest.approx(2 * PIXEL_A)
    assert small.half1 is None and small.fsc is None


def _particles(s, subset=None) -> ParticleSet:
    n = len(s["images"])
    return ParticleSet(
        n_particles=n, box_size=BOX, pixel_size_A=np.full(n, PIXEL_A),
        images=_MemorySource(s["images"]), rotations=s["rot"],
        shifts_A=s["shifts_px"] * PIXEL_A, ctf=s["ctf"], random_subset=subset)


def _shell_power(vol: np.ndarray) -> np.ndarray:
    """``(D//2,)`` mean |F|² of shells 1 … D//2 (numpy alone)."""
    d = vol.shape[-1]
    f = np.fft.fftfreq(d) * d
    r = np.round(np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2
                         + f[None, None, :] ** 2)).astype(int).reshape(-1)
    p = (np.abs(np.fft.fftn(vol)) ** 2).reshape(-1)
    keep = r <= d // 2
    return (np.bincount(r[keep], p[keep]) / np.bincount(r[keep]))[1:]


def _rscc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.fixture(scope="module")
def both_weightings(simulated):
    particles = _particles(simulated)
    return {w: reconstruct_particles(particles, half_maps=True, batch_size=500, device="cpu",
                                     progress=False, weighting=w)
            for w in ("wiener", "ssnr")}


def test_ssnr_weighting_suppresses_noise_where_the_halves_disagree(simulated, both_weightings):
    truth = simulated["truth"].numpy()
    wiener, ssnr = both_weightings["wiener"], both_weightings["ssnr"]
    assert ssnr.weighting == "ssnr" and ssnr.split == "random"
    corr = {w: _rscc(r.map, truth) for w, r in both_weightings.items()}
    auc = {w: fsc(r.map, truth, PIXEL_A).fsc.mean() for w, r in both_weightings.items()}
    ratio = {w: _shell_power(r.map) / _shell_power(truth) for w, r in both_weightings.items()}
    k143 = int(BOX * PIXEL_A / resolution_at(ssnr.fsc, 0.143))
    print(f"real-space correlation with the truth {corr}; FSC-AUC {auc}")
    print("power / truth, wiener", np.round(ratio["wiener"], 2))
    print("power / truth, ssnr  ", np.round(ratio["ssnr"], 2), f"(0.143 at shell {k143})")
    assert corr["ssnr"] > corr["wiener"] + 0.05
    assert auc["ssnr"] >= auc["wiener"] - 0.01
    # up to the resolution the power is within 2x of the truth's (FSC weighting keeps the
    # signal's power, where a Wiener filter would fall to a quarter at FSC 0.143); beyond it,
    # noise is damped (the smooth truth has almost no power there, so compare with the
    # fixed-Wiener map's power)
    assert ratio["ssnr"][:k143].max() < 2.0 and ratio["ssnr"][:k143].min() > 0.5
    damping = _shell_power(ssnr.map)[k143 + 1:] / _shell_power(wiener.map)[k143 + 1:]
    print("power ssnr / wiener beyond the resolution", np.round(damping, 3))
    assert damping.max() < 0.2
    # and the full map's FSC with the truth still follows the halves' (Rosenthal & Henderson)
    half = ssnr.fsc.fsc
    predicted = np.sqrt(np.clip(2 * half / (1 + half), 0, None))
    full = fsc(ssnr.map, truth, PIXEL_A).fsc
    assert np.abs(full - predicted)[half > 0.3].max() < 0.1


def test_corner_samples_that_leave_the_cube_are_dropped():
    # one image, rotated 45° about z: its spectrum's corners (kx = ky = ±P/2) would land at
    # x = ±P/√2, outside the cube; every sample inside spreads a total weight of 1
    d, o = 16, 2
    p = o * d
    c = np.sqrt(0.5)
    rot = torch.tensor([[[c, -c, 0.0], [c, c, 0.0], [0.0, 0.0, 1.0]]])
    image = torch.randn(1, d, d, generator=torch.Generator().manual_seed(0))
    _, weights = backproject(image, rot, torch.zeros(1, 2), oversampling=o)
    k = np.arange(p) - p // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    x, y = c * kx + c * ky, -c * kx + c * ky  # kx·A[0] + ky·A[1], x and y components
    kept = ((np.abs(x) <= p // 2) & (np.abs(y) <= p // 2)).sum()
    assert kept < p * p and kx.size - kept > 0.1 * p * p
    assert float(weights.sum()) == pytest.approx(float(kept), rel=1e-9)


def test_ssnr_reconstruction_keeps_the_corners_the_images_hold(conformance_dir):
    # map.mrc holds 28% of its power beyond the Nyquist sphere, in the corners of the cube;
    # its noise-free projections carry part of it in their spectra's corners
    truth = mrcfile.read(conformance_dir / "map.mrc").astype(np.float64)
    particles = read_particles(conformance_dir / "particles.star")
    kw = {"device": "cpu", "progress": False}
    maps = {w: reconstruct_particles(particles, weighting=w, **kw) for w in ("wiener", "ssnr")}
    corr = {w: _rscc(r.map, truth) for w, r in maps.items()}
    corners = {w: fsc(r.map, truth, 1.0, through_corners=True).fsc[32:38]
               for w, r in maps.items()}
    print(f"correlation with map.mrc {corr}; FSC vs map.mrc beyond Nyquist (shells 33..38) "
          f"{ {w: np.round(c, 2) for w, c in corners.items()} }")
    assert corr["ssnr"] > corr["wiener"] + 0.03
    # the sphere-limited map holds there only what its crop leaks from inside
    assert corners["ssnr"].min() > 0.7 and corners["wiener"].max() < 0.5


def test_halves_come_from_the_files_random_subsets(simulated):
    n = len(simulated["images"])
    subset = np.where(np.random.default_rng(9).random(n) < 0.3, 1, 2)
    particles = _particles(simulated, subset)
    sel = np.arange(0, n, 4)
    kw = {"batch_size": 500, "device": "cpu", "progress": False, "oversampling": 1,
          "weighting": "wiener"}
    halves = reconstruct_particles(particles, indices=sel, half_maps=True, **kw)
    assert halves.split == "file"
    first = reconstruct_particles(particles, indices=sel[subset[sel] == 1], **kw)
    second = reconstruct_particles(particles, indices=sel[subset[sel] == 2], **kw)
    np.testing.assert_allclose(halves.half1, first.map, atol=1e-5 * np.abs(first.map).max())
    np.testing.assert_allclose(halves.half2, second.map, atol=1e-5 * np.abs(second.map).max())
    # a selection inside one subset falls back to a seeded random split of equal halves
    only_one = sel[subset[sel] == 2]
    again = reconstruct_particles(particles, indices=only_one, half_maps=True, **kw)
    assert again.split == "random"
    repeat = reconstruct_particles(particles, indices=only_one, half_maps=True, **kw)
    np.testing.assert_array_equal(again.half1, repeat.half1)
