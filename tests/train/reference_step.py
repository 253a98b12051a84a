"""The training step as it was before the fast step (issue 11): plain autograd projector and
volume terms, one projection per pass, separate CTF FFTs, V0 added after the decoder. Kept as
the reference the fast step (``trainer._Step``) is checked against; it computes in the
parameters' dtype (float64 in the tests). The variational latent (issue 10, after the fast
step) is written here the plain way: sample, decode, KL term."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from hetsiren.data import batch_ctf
from hetsiren.model import refine_pose
from hetsiren.physics import apply_ctf, downsample, wiener_filter
from hetsiren.train import losses as L

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "physics"))
from reference_losses import l1_loss, negativity_loss, tv_losses  # noqa: E402
from reference_splat import reference_project_points  # noqa: E402


def _project(model, values, rotations, shifts):
    vol, d = model.volume, model.box_size
    images = reference_project_points(values, vol.coords_px, rotations, shifts, d)
    if vol.has_static:
        images = images + reference_project_points(vol.static_values, vol.static_coords_px,
                                                   rotations, shifts, d)
    return images


def reference_step(step, batch, generator) -> dict[str, torch.Tensor]:
    """``step``: a ``trainer._Step`` (its model, config, preprocessing and masks)."""
    cfg, model, net = step.cfg, step.model, step.model.net
    ctf = None if cfg.ctf_mode == "none" else batch_ctf(batch, step.prep)
    images = batch.images
    target = images if (ctf is None or cfg.ctf_mode != "wiener") else wiener_filter(images, ctf)
    z, logvar, d_euler, d_shift = net.encode_posterior(target)
    decoded = z  # the sample of z, from the step's noise for these particles
    if logvar is not None:
        noise = step.latent_noise[batch.indices.cpu()].to(z.device)
        decoded = z + noise * (logvar / 2).exp()
    rotations, shifts = batch.rotations, batch.shifts_px
    if cfg.refine_pose:
        rotations, shifts = refine_pose(rotations, shifts, d_euler, d_shift)
    values = model.volume.values(net.decode(decoded))
    clean = _project(model, values, rotations, shifts)
    pred = apply_ctf(clean, ctf) if (ctf is not None and cfg.ctf_mode == "apply") else clean

    out: dict[str, torch.Tensor] = {}
    out["data"] = L.multires_image_loss(pred, target, cfg.multires, cfg.data_loss,
                                        downsample, step.masks)
    out["l1"] = cfg.l1_weight * l1_loss(values)
    out["negativity"] = cfg.negativity_weight * negativity_loss(values)
    tv1, tv2 = tv_losses(model.volume, values)
    out["tv_l1"], out["tv_l2"] = cfg.tv_l1_weight * tv1, cfg.tv_l2_weight * tv2
    if step.focus:
        out["focus"] = cfg.focus_stats_weight * L.focus_stats_loss(model.volume, values)
    if logvar is not None:
        n_pixels = (step.masks[1] > 0).sum()
        out["kl"] = step.kl_weight * L.kl_loss(z, logvar) / n_pixels
    b = len(batch.indices)
    if cfg.pose_decoupling > 0:
        perm = torch.randperm(b, generator=generator)
        clean_perm = _project(model, values, rotations[perm], shifts[perm])
        z_t, z_pt = net.encode_clean(clean), net.encode_clean(clean_perm)
        out["pose_decoupling"] = cfg.pose_decoupling * L.decoupling_loss(z, z_t, z_pt)
    if cfg.ctf_decoupling > 0 and ctf is not None and cfg.ctf_mode == "apply":
        perm = torch.randperm(b, generator=generator)
        pred_perm = apply_ctf(clean, ctf[perm])
        z_c, z_pc = net.encode_ctf(pred), net.encode_ctf(pred_perm)
        out["ctf_decoupling"] = cfg.ctf_decoupling * L.decoupling_loss(z, z_c, z_pc)
    out["total"] = sum(out.values())
    return out
