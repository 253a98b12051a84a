"""Every FFT / fftshift combination of hetsiren lives here.

Conventions
-----------
- Images are ``(b, D, D)`` ``[y, x]``, volumes ``(D, D, D)`` ``[z, y, x]``; the real-space
  origin is index ``D // 2`` (RELION/FFT convention, even and odd D).
- "rfft layout" is ``torch.fft.rfft2`` output with no fftshift: ``(b, D, D // 2 + 1)``, rows
  frequency ``fftfreq(D)``, columns ``rfftfreq(D)``. CTFs and other real, centro-symmetric
  filters are given in this layout (:func:`rfft2_frequencies_per_A` gives its frequencies).
- Resampling (:func:`fourier_crop`, :func:`fourier_pad`, :func:`resample_map`) keeps the field
  of view and **preserves pixel values**: a constant image stays the same constant, a
  band-limited signal keeps its amplitude. The centre pixel D//2 maps to the centre of the new
  box. At an even box's Nyquist frequency the two aliased halves (±N) are summed when
  cropping and split evenly when padding, so ``fourier_crop(fourier_pad(x, B), D) == x``.
- Shifts are ``(b, 2)`` (x, y) in pixels; :func:`fourier_shift` moves content by ``+shift``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "centered_fftn",
    "centered_ifftn",
    "downsample",
    "filter_images",
    "fourier_crop",
    "fourier_pad",
    "fourier_shift",
    "lowpass",
    "resample_map",
    "rfft_to_centered_full",
    "rfft2_frequencies_per_A",
    "shift_phase",
]


# --------------------------------------------------------------------------------------------
# layouts and frequencies
# --------------------------------------------------------------------------------------------
def rfft2_frequencies_per_A(box_size: int, pixel_size_A: float | torch.Tensor = 1.0,
                            dtype: torch.dtype = torch.float64, device=None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial frequencies of the rfft layout.

    Args:
        box_size: D.
        pixel_size_A: scalar pixel size in Å (1 gives cycles per pixel), or a ``(b,)`` tensor.

    Returns:
        ``(sx, sy)``, each ``(D, D // 2 + 1)`` (or ``(b, D, D // 2 + 1)`` for a tensor pixel
        size) in cycles/Å: sx along x (columns), sy along y (rows).
    """
    fy = torch.fft.fftfreq(box_size, dtype=dtype, device=device)
    fx = torch.fft.rfftfreq(box_size, dtype=dtype, device=device)
    sy, sx = torch.meshgrid(fy, fx, indexing="ij")
    if isinstance(pixel_size_A, torch.Tensor) and pixel_size_A.ndim > 0:
        p = pixel_size_A.to(dtype=dtype, device=device).reshape(-1, 1, 1)
        return sx / p, sy / p
    return sx / float(pixel_size_A), sy / float(pixel_size_A)


def centered_fftn(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Complex FFT over the last ``ndim`` axes with the origin at D//2 in both spaces."""
    dims = tuple(range(-ndim, 0))
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims),
                              dim=dims)


def centered_ifftn(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Inverse of :func:`centered_fftn` (complex result)."""
    dims = tuple(range(-ndim, 0))
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(x, dim=dims), dim=dims),
                              dim=dims)


def rfft_to_centered_full(ctf: torch.Tensor) -> torch.Tensor:
    """``(b, D, D//2+1)`` real, centro-symmetric filter (a CTF) in rfft layout → ``(b, D, D)``
    full layout with DC at D//2 (the negative-kx half by Friedel symmetry)."""
    d = ctf.shape[-2]
    fy = torch.fft.fftfreq(d, device=ctf.device) * d
    fx = torch.fft.fftshift(fy)  # centred x frequencies as integers
    col = fx.abs().long()  # |kx| column of the rfft layout
    rows_pos = torch.fft.fftshift(torch.arange(d, device=ctf.device))  # row of +ky (centred)
    rows_neg = torch.fft.fftshift((-torch.arange(d, device=ctf.device)) % d)  # row of -ky
    # C(ky, kx) = C(ky, |kx|) for kx ≥ 0, and C(-ky, -kx) (Friedel) for kx < 0
    rows = torch.where(fx[None, :] >= 0, rows_pos[:, None], rows_neg[:, None])  # [D, D]
    return ctf[:, rows, col[None, :].expand(d, d)]


def filter_images(images: torch.Tensor, filter_rfft: torch.Tensor) -> torch.Tensor:
    """Multiply images by a real filter in Fourier space.

    Args:
        images: ``(b, D, D)`` real images ``[y, x]``.
        filter_rfft: ``(b, D, D // 2 + 1)`` or ``(D, D // 2 + 1)`` real filter, rfft layout.

    Returns:
        ``(b, D, D)`` ``irfft2(rfft2(images) · filter)``; differentiable in both arguments.
    """
    d = images.shape[-1]
    spec = torch.fft.rfft2(images)
    return torch.fft.irfft2(spec * filter_rfft.to(spec.real.dtype), s=(d, d))


def shift_phase(shifts_px: torch.Tensor, box_size: int) -> torch.Tensor:
    """``(b, 2)`` (x, y) shifts in pixels → ``(b, D, D//2+1)`` complex phase ramps (rfft
    layout) that move content by ``+shift`` when multiplied into a spectrum."""
    sx, sy = rfft2_frequencies_per_A(box_size, 1.0, dtype=shifts_px.dtype,
                                     device=shifts_px.device)
    arg = sx * shifts_px[:, 0, None, None] + sy * shifts_px[:, 1, None, None]
    return torch.polar(torch.ones_like(arg), -2 * math.pi * arg)


def fourier_shift(images: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Sub-pixel, periodic shift of images.

    Args:
        images: ``(b, D, D)`` real images ``[y, x]``.
        shifts_px: ``(b, 2)`` (x, y) in pixels; content moves by ``+shifts_px``.

    Returns:
        ``(b, D, D)``; differentiable in both arguments.
    """
    d = images.shape[-1]
    spec = torch.fft.rfft2(images)
    phase = shift_phase(shifts_px.to(spec.real.dtype), d)
    return torch.fft.irfft2(spec * phase, s=(d, d))


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------
def _resize_full_axis(spec: torch.Tensor, dim: int, d_in: int, d_out: int) -> torch.Tensor:
    """Crop or zero-pad one full (fft, not rfft) frequency axis of a spectrum."""
    x = torch.fft.fftshift(spec, dim=dim)  # frequency k at index d_in//2 + k
    c_in, c_out = d_in // 2, d_out // 2
    if d_out < d_in:
        out = x.narrow(dim, c_in - c_out, d_out).clone()
        if d_out % 2 == 0:  # fold +N onto -N (index 0): the two alias to one frequency
            out.narrow(dim, 0, 1).add_(x.narrow(dim, c_in + c_out, 1))
    elif d_out > d_in:
        shape = list(x.shape)
        shape[dim] = d_out
        out = x.new_zeros(shape)
        out.narrow(dim, c_out - c_in, d_in).copy_(x)
        if d_in % 2 == 0:  # split the input's Nyquist evenly between -N and +N
            half = x.narrow(dim, 0, 1) * 0.5
            out.narrow(dim, c_out - c_in, 1).copy_(half)
            out.narrow(dim, c_out + c_in, 1).copy_(half)
    else:
        out = x
    return torch.fft.ifftshift(out, dim=dim)


def _resize_half_axis(spec: torch.Tensor, d_in: int, d_out: int) -> torch.Tensor:
    """Crop or zero-pad the last (rfft) frequency axis."""
    n_out = d_out // 2 + 1
    if d_out < d_in:
        out = spec[..., :n_out].clone()
        if d_out % 2 == 0:  # the real Nyquist column stands for +N and its mirror -N
            out[..., -1] *= 2
    elif d_out > d_in:
        out = spec.new_zeros(*spec.shape[:-1], n_out)
        out[..., : spec.shape[-1]] = spec
        if d_in % 2 == 0:
            out[..., d_in // 2] *= 0.5
    else:
        out = spec
    return out


def _resample(x: torch.Tensor, box: int, ndim: int) -> torch.Tensor:
    """Band-limited resampling of the last ``ndim`` axes from D to ``box`` samples."""
    d = x.shape[-1]
    if box == d:
        return x
    dims = tuple(range(-ndim, 0))
    spec = torch.fft.rfftn(torch.fft.ifftshift(x, dim=dims), dim=dims)
    for dim in dims[:-1]:
        spec = _resize_full_axis(spec, dim, d, box)
    spec = _resize_half_axis(spec, d, box)
    out = torch.fft.irfftn(spec, s=(box,) * ndim, dim=dims)
    return torch.fft.fftshift(out, dim=dims) * (box / d) ** ndim


def fourier_crop(images: torch.Tensor, box: int) -> torch.Tensor:
    """Downsample by cropping the spectrum (no aliasing); pixel values are preserved.

    Args:
        images: ``(b, D, D)`` real images ``[y, x]``.
        box: output size, ``<= D``; pixel size becomes ``pixel_size · D / box``.

    Returns:
        ``(b, box, box)``.
    """
    if box > images.shape[-1]:
        raise ValueError(f"fourier_crop: box {box} > input box {images.shape[-1]}")
    return _resample(images, box, 2)


def fourier_pad(images: torch.Tensor, box: int) -> torch.Tensor:
    """Upsample (band-limited interpolation) by zero-padding the spectrum; values preserved.

    Args:
        images: ``(b, D, D)`` real images ``[y, x]``.
        box: output size, ``>= D``; the field of view is unchanged.

    Returns:
        ``(b, box, box)``.
    """
    if box < images.shape[-1]:
        raise ValueError(f"fourier_pad: box {box} < input box {images.shape[-1]}")
    return _resample(images, box, 2)


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """L_ω of Eq. 10: ideal low-pass at the new Nyquist then downsampling.

    Args:
        images: ``(b, D, D)``.
        factor: integer downsampling factor.

    Returns:
        ``(b, D // factor, D // factor)`` (values preserved, see :func:`fourier_crop`).
    """
    if factor == 1:
        return images
    return fourier_crop(images, images.shape[-1] // factor)


def lowpass(images: torch.Tensor, cutoff_A: float, pixel_size_A: float,
            edge_width_per_A: float | None = None) -> torch.Tensor:
    """Low-pass filter with a raised-cosine edge.

    Args:
        images: ``(b, D, D)``.
        cutoff_A: resolution (Å) where the filter reaches 0.5.
        pixel_size_A: Å/pixel.
        edge_width_per_A: full width of the cosine edge in 1/Å; default 2/(D·pixel) (two
            Fourier shells).

    Returns:
        ``(b, D, D)`` filtered images.
    """
    d = images.shape[-1]
    sx, sy = rfft2_frequencies_per_A(d, pixel_size_A, dtype=images.dtype, device=images.device)
    s = torch.sqrt(sx**2 + sy**2)
    width = edge_width_per_A if edge_width_per_A is not None else 2.0 / (d * pixel_size_A)
    t = ((s - 1.0 / cutoff_A) / width + 0.5).clamp(0.0, 1.0)
    return filter_images(images, 0.5 * (1 + torch.cos(math.pi * t)))


def resample_map(volume: torch.Tensor, voxel_size_A_in: float, pixel_size_A_out: float,
                 box_out: int) -> torch.Tensor:
    """Bring a map to another voxel size and box.

    The spectrum is cropped (coarser voxels) or zero-padded (finer voxels) to
    ``round(D · voxel_in / pixel_out)`` samples, which keeps the field of view and the voxel
    values; the result is then centre-cropped or zero-padded in real space to ``box_out``
    (centre voxel D//2 stays at the centre). When ``D · voxel_in / pixel_out`` is not an
    integer the effective voxel size differs from ``pixel_size_A_out`` by < 1/(2·D) relative.

    Args:
        volume: ``(D, D, D)`` map ``[z, y, x]``.
        voxel_size_A_in: its voxel size in Å.
        pixel_size_A_out: wanted voxel size in Å.
        box_out: wanted box in voxels.

    Returns:
        ``(box_out, box_out, box_out)`` tensor, dtype of ``volume`` (float32 for integer maps).
    """
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"resample_map: expected a cubic (D, D, D) map, got {tuple(volume.shape)}")
    if not volume.is_floating_point():
        volume = volume.float()
    d = volume.shape[-1]
    box_fourier = max(1, round(d * voxel_size_A_in / pixel_size_A_out))
    vol = _resample(volume, box_fourier, 3)
    return _center_crop_or_pad(vol, box_out)


def _center_crop_or_pad(volume: torch.Tensor, box: int) -> torch.Tensor:
    """Real-space crop or zero-pad of a cube keeping index D//2 at index box//2."""
    d = volume.shape[-1]
    if d == box:
        return volume
    out = volume.new_zeros(box, box, box)
    lo_in = max(0, d // 2 - box // 2)
    lo_out = max(0, box // 2 - d // 2)
    n = min(d - lo_in, box - lo_out)
    out[lo_out:lo_out + n, lo_out:lo_out + n, lo_out:lo_out + n] = \
        volume[lo_in:lo_in + n, lo_in:lo_in + n, lo_in:lo_in + n]
    return out
