"""Homogeneous reconstruction by Fourier-space backprojection (the adjoint of Eq. 1's projector).

Each image is shifted back by its origin, optionally zero-padded (``oversampling``), Fourier
transformed and its spectrum inserted, by trilinear gridding, on the central section rotated
by Aᵀ: by the projection-slice theorem the 2D frequency (kx, ky) of an image
``∫ V(Aᵀ r) dz`` is the 3D frequency ``Aᵀ (kx, ky, 0) = kx·A[0] + ky·A[1]`` of V. The
accumulators are ``Σ CTF·F`` (numerator) and ``Σ CTF²`` (weights) (``CTF ≡ 1`` without CTF),
and the map is the Wiener-regularised ratio ``num / (weights + ε)``, ε = ``regularisation`` ×
the mean weight inside the Nyquist sphere, transformed back, cropped to D and divided by the
radial gridding correction sinc(|x|/P) (see :func:`_gridding_correction`).

Accumulators are centred spectra of size ``P = oversampling · D`` (index P//2 = DC), the
numerator stored as ``(P, P, P, 2)`` float64 (real, imaginary), the weights ``(P, P, P)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hetsiren.physics.ctf import compute_ctf
from hetsiren.physics.fourier import centered_fftn, centered_ifftn, filter_images, fourier_crop
from hetsiren.physics.fourier import fourier_shift as _fourier_shift
from hetsiren.physics.fsc import FSCCurve, fsc

__all__ = [
    "DEFAULT_OVERSAMPLING",
    "DEFAULT_REGULARISATION",
    "ReconstructionResult",
    "backproject",
    "finalize_reconstruction",
    "new_accumulators",
    "reconstruct",
    "reconstruct_particles",
]

log = logging.getLogger(__name__)

# Zero-padding factor of the images before insertion: 2 halves the trilinear gridding error
# (RELION pads by 2 as well).
DEFAULT_OVERSAMPLING = 2
# Wiener constant relative to the mean weight inside the Nyquist sphere: small enough to leave
# well-sampled frequencies untouched, large enough to damp empty or CTF-zero voxels.
DEFAULT_REGULARISATION = 1e-2
_DEFAULT_BATCH = 128


def new_accumulators(box_size: int, oversampling: int = DEFAULT_OVERSAMPLING, device=None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty ``(numerator (P,P,P,2), weights (P,P,P))`` float64 accumulators, P = o·D."""
    p = oversampling * box_size
    return (torch.zeros(p, p, p, 2, dtype=torch.float64, device=device),
            torch.zeros(p, p, p, dtype=torch.float64, device=device))


def _centered_full_ctf(ctf: torch.Tensor) -> torch.Tensor:
    """``(b, D, D//2+1)`` rfft-layout CTF → ``(b, D, D)`` full layout, DC at D//2."""
    d = ctf.shape[-2]
    fy = torch.fft.fftfreq(d, device=ctf.device) * d
    fx = torch.fft.fftshift(fy)  # centred x frequencies as integers
    col = fx.abs().long()  # |kx| column of the rfft layout
    rows_pos = torch.fft.fftshift(torch.arange(d, device=ctf.device))  # row of +ky (centred)
    rows_neg = torch.fft.fftshift((-torch.arange(d, device=ctf.device)) % d)  # row of -ky
    # C(ky, kx) = C(ky, |kx|) for kx ≥ 0, and C(-ky, -kx) (Friedel) for kx < 0
    rows = torch.where(fx[None, :] >= 0, rows_pos[:, None], rows_neg[:, None])  # [D, D]
    return ctf[:, rows, col[None, :].expand(d, d)]


def _ctf_on_padded_grid(ctf: torch.Tensor, oversampling: int) -> torch.Tensor:
    """``(b, D, D//2+1)`` CTF → ``(b, P, P)`` centred, bilinear in frequency on the P grid."""
    full = _centered_full_ctf(ctf)  # [b, D, D]
    if oversampling == 1:
        return full
    d = full.shape[-1]
    p = oversampling * d
    k = (torch.arange(p, dtype=full.dtype, device=full.device) - p // 2) / oversampling
    g = (k + d // 2) * (2.0 / (d - 1)) - 1.0
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(full.shape[0], p, p, 2)
    return F.grid_sample(full[:, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=True)[:, 0]


def backproject(
    images: torch.Tensor,
    rotations: torch.Tensor,
    shifts_px: torch.Tensor,
    ctf: torch.Tensor | None = None,
    oversampling: int = DEFAULT_OVERSAMPLING,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Insert images into Fourier accumulators.

    Args:
        images: ``(b, D, D)`` particle images ``[y, x]`` (content at minus the origin).
        rotations: ``(b, 3, 3)`` RELION matrices A.
        shifts_px: ``(b, 2)`` RELION origins (x, y) in pixels.
        ctf: ``(b, D, D//2+1)`` CTF of each image (rfft layout) or None for none.
        oversampling: zero-padding factor o (accumulators of size P = o·D).
        out: accumulators to add into (from :func:`new_accumulators`); new ones when None.

    Returns:
        ``(numerator (P,P,P,2), weights (P,P,P))`` float64 on the images' device; the
        numerator holds Σ CTF·F (real, imaginary), the weights Σ CTF² (trilinear gridding).
    """
    b, d = images.shape[0], images.shape[-1]
    p = oversampling * d
    device = images.device
    num, wt = out if out is not None else new_accumulators(d, oversampling, device)
    work = torch.float64 if images.dtype == torch.float64 else torch.float32
    images = _fourier_shift(images.to(work), shifts_px.to(device=device, dtype=work))
    if ctf is not None:
        ctf = ctf.to(device=device, dtype=work)
        images = filter_images(images, ctf)
        weight2d = _ctf_on_padded_grid(ctf, oversampling) ** 2  # [b, P, P]
    if oversampling > 1:
        lo = p // 2 - d // 2
        padded = images.new_zeros(b, p, p)
        padded[:, lo:lo + d, lo:lo + d] = images
        images = padded
    spec = centered_fftn(images, 2)  # [b, P, P], DC at P//2

    axis = torch.arange(p, dtype=work, device=device) - p // 2
    ky, kx = torch.meshgrid(axis, axis, indexing="ij")
    inside = (kx**2 + ky**2) <= (p // 2) ** 2  # up to Nyquist
    kx, ky = kx[inside], ky[inside]  # [m]
    values = torch.view_as_real(spec[:, inside])  # [b, m, 2]
    w2 = weight2d[:, inside] if ctf is not None else None
    rot = rotations.to(device=device, dtype=work)
    # 3D frequency of each sample: kx·A[0] + ky·A[1], in P-grid units, [b, m, 3] (x, y, z)
    pos = kx[None, :, None] * rot[:, None, 0, :] + ky[None, :, None] * rot[:, None, 1, :]
    pos = pos + p // 2
    base = torch.floor(pos)
    frac = pos - base
    base = base.long()
    num_flat, wt_flat = num.view(-1, 2), wt.view(-1)
    for corner in range(8):
        offs = [(corner >> a) & 1 for a in range(3)]  # x, y, z offsets
        w = torch.ones_like(frac[..., 0])
        idx = torch.zeros_like(base[..., 0])
        for a, stride in ((2, p * p), (1, p), (0, 1)):
            o = offs[a]
            w = w * (frac[..., a] if o else 1 - frac[..., a])
            idx = idx + ((base[..., a] + o) % p) * stride  # periodic: +N ≡ −N
        idx = idx.reshape(-1)
        ww = w if w2 is None else w * w2
        num_flat.index_add_(0, idx, (w[..., None] * values).reshape(-1, 2).to(torch.float64))
        wt_flat.index_add_(0, idx, ww.reshape(-1).to(torch.float64))
    return num, wt


def _gridding_correction(d: int, p: int, dtype, device) -> torch.Tensor:
    """``(D, D, D)`` real-space gridding correction ``sinc(|x| / P)`` (radial, first power).

    Measured on the conformance set (500 projections, D = 64, oversampling 2): the radial
    sinc brings the reconstructed map's sum to within 0.1% of the true map's (no correction:
    −1.7%), while sinc² (radial or per axis, the dense-sampling limit of trilinear gridding)
    over-corrects the edges (+1.6%, up to +19% without oversampling) and lowers the FSC.
    """
    a = torch.arange(d, dtype=dtype, device=device) - d // 2
    r = torch.sqrt(a[:, None, None] ** 2 + a[None, :, None] ** 2 + a[None, None, :] ** 2)
    return torch.sinc(r / p)


def finalize_reconstruction(
    numerator: torch.Tensor,
    weights: torch.Tensor,
    box_size: int,
    regularisation: float = DEFAULT_REGULARISATION,
) -> torch.Tensor:
    """Map from accumulators: ``num / (weights + ε)`` → real space → crop → gridding correction.

    Args:
        numerator: ``(P, P, P, 2)`` Σ CTF·F (real, imaginary), centred.
        weights: ``(P, P, P)`` Σ CTF², centred.
        box_size: D of the output (P must be a multiple of it).
        regularisation: ε relative to the mean weight inside the Nyquist sphere.

    Returns:
        ``(D, D, D)`` float32 map ``[z, y, x]``, origin at D//2.
    """
    p, d = weights.shape[-1], box_size
    axis = torch.arange(p, device=weights.device, dtype=torch.float64) - p // 2
    zz, yy, xx = torch.meshgrid(axis, axis, axis, indexing="ij")
    sphere = (xx**2 + yy**2 + zz**2) <= (p // 2) ** 2
    mean_weight = weights[sphere].mean()
    eps = regularisation * mean_weight if mean_weight > 0 else 1.0
    spec = torch.view_as_complex(numerator.contiguous()) / (weights + eps)
    spec = torch.where(sphere, spec, 0)
    vol = centered_ifftn(spec, 3).real
    lo = p // 2 - d // 2
    vol = vol[lo:lo + d, lo:lo + d, lo:lo + d]
    vol = vol / _gridding_correction(d, p, vol.dtype, vol.device)
    return vol.float()


def reconstruct(
    images: torch.Tensor,
    rotations: torch.Tensor,
    shifts_px: torch.Tensor,
    ctf: torch.Tensor | None = None,
    oversampling: int = DEFAULT_OVERSAMPLING,
    regularisation: float = DEFAULT_REGULARISATION,
    batch_size: int = _DEFAULT_BATCH,
) -> torch.Tensor:
    """Wiener backprojection of in-memory images.

    Args:
        images: ``(N, D, D)`` images; rotations ``(N, 3, 3)`` A; shifts_px ``(N, 2)`` origins;
            ctf ``(N, D, D//2+1)`` or None.
        oversampling, regularisation: see :func:`backproject`, :func:`finalize_reconstruction`.
        batch_size: images inserted at a time.

    Returns:
        ``(D, D, D)`` float32 map.
    """
    d = images.shape[-1]
    acc = new_accumulators(d, oversampling, images.device)
    for start in range(0, images.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        backproject(images[sl], rotations[sl], shifts_px[sl],
                    None if ctf is None else ctf[sl], oversampling, out=acc)
    return finalize_reconstruction(*acc, d, regularisation)


@dataclass
class ReconstructionResult:
    """Output of :func:`reconstruct_particles`."""

    map: np.ndarray
    """``(D, D, D)`` float32 map from all particles."""
    half1: np.ndarray | None
    """``(D, D, D)`` map of the even-numbered selected particles (half_maps only)."""
    half2: np.ndarray | None
    """``(D, D, D)`` map of the odd-numbered selected particles (half_maps only)."""
    fsc: FSCCurve | None
    """FSC between the half maps (half_maps only)."""
    pixel_size_A: float
    """Voxel size of the maps in Å."""


def reconstruct_particles(
    particles,
    indices: np.ndarray | None = None,
    box: int | None = None,
    half_maps: bool = False,
    batch_size: int = _DEFAULT_BATCH,
    device: str | torch.device | None = None,
    progress: bool = True,
    oversampling: int = DEFAULT_OVERSAMPLING,
    regularisation: float = DEFAULT_REGULARISATION,
) -> ReconstructionResult:
    """Homogeneous reconstruction of a particle set at its poses (and CTF when present).

    Images are read lazily, ``batch_size`` at a time, with ``particles.images.read``.

    Args:
        particles: ``hetsiren.io.ParticleSet`` with images and poses.
        indices: ``(n,)`` particles to use; all by default.
        box: reconstruct at this box (images Fourier-cropped); the images' box by default.
        half_maps: also reconstruct two halves (alternate particles) and their FSC.
        batch_size: images per batch.
        device: ``"auto"``/None, ``"cpu"``, ``"cuda[:N]"`` or a torch.device.
        progress: show a progress bar (only when stderr is a terminal).
        oversampling, regularisation: see :func:`backproject`, :func:`finalize_reconstruction`.

    Returns:
        :class:`ReconstructionResult`.
    """
    import sys

    from tqdm import tqdm

    from hetsiren.devices import resolve_device
    from hetsiren.errors import UserInputError

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if particles.images is None:
        raise UserInputError("the particle file has no images to reconstruct from")
    if particles.rotations is None:
        raise UserInputError("the particle file has no poses (angles): cannot reconstruct")
    pixel_sizes = np.asarray(particles.pixel_size_A, dtype=np.float64).reshape(-1)
    if np.ptp(pixel_sizes) > 1e-3 * pixel_sizes.max():
        raise UserInputError(
            f"particles have different pixel sizes ({pixel_sizes.min():g}–"
            f"{pixel_sizes.max():g} Å): reconstruct one optics group at a time")
    d_in = int(particles.box_size)
    d = d_in if box is None else int(box)
    if d > d_in or d < 4:
        raise UserInputError(f"--box {d}: expected 4 ≤ box ≤ the images' box {d_in}")
    pixel_A = float(pixel_sizes[0]) * d_in / d
    sel = np.arange(particles.n_particles) if indices is None else np.asarray(indices)
    if len(sel) == 0:
        raise UserInputError("no particles selected")
    shifts_A = (np.zeros((particles.n_particles, 2)) if particles.shifts_A is None
                else np.asarray(particles.shifts_A, dtype=np.float64))
    rotations = np.asarray(particles.rotations, dtype=np.float64)

    n_acc = 2 if half_maps else 1
    accs = [new_accumulators(d, oversampling, dev) for _ in range(n_acc)]
    bar = tqdm(total=len(sel), desc="backprojecting", unit="img",
               disable=not (progress and sys.stderr.isatty()), leave=False)
    for start in range(0, len(sel), batch_size):
        chunk = sel[start:start + batch_size]
        order = np.argsort(chunk, kind="stable")  # read in file order, then restore
        raw = np.empty((len(chunk), d_in, d_in), dtype=np.float32)
        raw[order] = particles.images.read(chunk[order])
        imgs = torch.from_numpy(raw).to(dev)
        if d != d_in:
            imgs = fourier_crop(imgs, d)
        rot = torch.from_numpy(rotations[chunk]).to(dev)
        shifts = torch.from_numpy(shifts_A[chunk] / pixel_A).to(dev)
        ctf = None
        if particles.ctf is not None:
            sub = particles.ctf.subset(chunk)
            params = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)).to(dev)
                      for k, v in vars(sub).items()}
            ctf = compute_ctf(**params, box_size=d, pixel_size_A=pixel_A).float()
        if half_maps:
            half = (np.arange(start, start + len(chunk)) % 2).astype(bool)
            for h, m in ((0, ~half), (1, half)):
                if m.any():
                    mt = torch.from_numpy(m).to(dev)
                    backproject(imgs[mt], rot[mt], shifts[mt], None if ctf is None else ctf[mt],
                                oversampling, out=accs[h])
        else:
            backproject(imgs, rot, shifts, ctf, oversampling, out=accs[0])
        bar.update(len(chunk))
    bar.close()

    if not half_maps:
        vol = finalize_reconstruction(*accs[0], d, regularisation)
        return ReconstructionResult(vol.cpu().numpy(), None, None, None, pixel_A)
    h1 = finalize_reconstruction(*accs[0], d, regularisation)
    h2 = finalize_reconstruction(*accs[1], d, regularisation)
    num = accs[0][0].add_(accs[1][0])
    wt = accs[0][1].add_(accs[1][1])
    vol = finalize_reconstruction(num, wt, d, regularisation)
    curve = fsc(h1, h2, pixel_A)
    return ReconstructionResult(vol.cpu().numpy(), h1.cpu().numpy(), h2.cpu().numpy(), curve,
                                pixel_A)
