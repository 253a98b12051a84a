"""Training: the library function behind ``hetsiren train``.

One epoch = one pass over the particles in an order drawn from ``(seed, epoch)``; the
checkpoint written atomically at the end of each epoch therefore lets ``resume`` reproduce an
uninterrupted run exactly, and an interruption loses at most the current epoch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hetsiren.devices import resolve_device, tune_cpu_allocator
from hetsiren.errors import UserInputError
from hetsiren.io import input_files, read_map, read_particles, write_cs, write_star
from hetsiren.io.indices import read_indices
from hetsiren.io.particles import ParticleSet
from hetsiren.model import refine_pose
from hetsiren.model.forward import HetSIREN
from hetsiren.outputs import check_outputs
from hetsiren.physics import (
    Weighting,
    apply_ctf,
    downsample,
    reconstruct_particles,
    resample_map,
    wiener_filter,
)
from hetsiren.train import losses as L
from hetsiren.train.config import REF_AUTO, TrainConfig, resume_changes
from hetsiren.train.data import (
    Batch,
    Preprocessing,
    estimate_preprocessing,
    iterate_batches,
    load_batch,
)
from hetsiren.train.health import training_health
from hetsiren.train.inference import (
    build_model,
    ctf_of,
    encode_particles,
    model_from_state,
    progress_enabled,
)
from hetsiren.train.runio import (
    CONFIG,
    LATENT,
    LOG,
    MODEL,
    POSES,
    RUN_FILES,
    SUBSET,
    RunLock,
    atomic_write,
    load_checkpoint,
    read_run_config,
    read_training_log,
    remove_stale_temporaries,
    run_record,
    save_checkpoint,
    save_snapshot,
    write_json,
    write_npy,
)

__all__ = ["TrainResult", "TrainingDiverged", "train"]

log = logging.getLogger(__name__)

# Particles used to fit the scale between projections of V0 and the images.
_SCALE_FIT_SAMPLE = 512
# Particles backprojected for V0 with --ref auto: beyond ~2e4 the consensus map's FSC gains
# little at training boxes, and the time grows linearly.
_CONSENSUS_SAMPLE = 20_000
# Smallest image the multiresolution loss may downsample to: below 8 px an image holds a
# handful of Fourier coefficients and the mask of the loss (inscribed circle) almost none.
_MIN_MULTIRES_BOX = 8


class TrainingDiverged(UserInputError):
    """A loss became NaN/Inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    """Epochs the run holds now."""
    latent: np.ndarray
    first_epoch: int = 0
    """Epochs it held before this call (0 for a new run): this call trained the rest."""


# Weighting of the --ref auto V0. Still the fixed Wiener constant: with the SNR-weighted V0
# ("ssnr") the CI training test's latent collapsed (tests/train/test_trainer.py
# test_latent_separates_states: adjusted Rand index 0.08 instead of >= 0.9, issue 14); the
# cause is not yet understood.
_CONSENSUS_WEIGHTING: Weighting = "wiener"


def _read_input_map(path: str, prep: Preprocessing, what: str) -> torch.Tensor:
    volume, voxel_size_A = read_map(path, what)
    return resample_map(torch.from_numpy(volume), voxel_size_A, prep.pixel_size_A, prep.box)


def _read_mask(path: str, prep: Preprocessing) -> torch.Tensor:
    mask = _read_input_map(path, prep, "mask") > 0.5
    if not mask.any():
        raise UserInputError(
            f"{path}: no voxel of the mask is above 0.5 at the training box ({prep.box} px); "
            "expected a mask with values from 0 (outside) to 1 (inside)")
    return mask


def _consensus_map(particles: ParticleSet, prep: Preprocessing, cfg: TrainConfig,
                   device: torch.device, progress: bool | None) -> torch.Tensor:
    """``--ref auto``: V0 = backprojection of (a sample of) the particles at their consensus
    poses, at the training box, with :data:`_CONSENSUS_WEIGHTING`."""
    n = particles.n_particles
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(n, size=min(n, _CONSENSUS_SAMPLE), replace=False))
    log.info("reconstructing V0 from %d particles (--ref auto)", len(sample))
    result = reconstruct_particles(particles, indices=sample, box=prep.box, device=device,
                                   progress=progress_enabled(progress),
                                   weighting=_CONSENSUS_WEIGHTING)
    return torch.from_numpy(result.map)


def _fit_reference_scale(model: HetSIREN, particles: ParticleSet, prep: Preprocessing,
                         cfg: TrainConfig, device: torch.device) -> float:
    """Least-squares scale α of the projections of V0 onto the images (images ≈ α·CTF·P V0)."""
    rng = np.random.default_rng(cfg.seed)
    n = particles.n_particles
    sample = np.sort(rng.choice(n, size=min(n, _SCALE_FIT_SAMPLE), replace=False))
    num = den = 0.0
    with torch.no_grad():
        for start in range(0, len(sample), 64):
            batch = load_batch(particles, prep, sample[start:start + 64], device)
            values = model.volume.v0.expand(len(batch.indices), -1)
            pred = model.project(values, model.projection_plan(batch.rotations,
                                                               batch.shifts_px))
            pred, target = _compare_pair(pred, batch, prep, cfg)
            num += float((pred * target).sum())
            den += float((pred * pred).sum())
    if den == 0:
        raise UserInputError(f"{cfg.ref}: the reference projects to zero inside the box")
    return num / den


# --------------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------------
def _compare_pair(clean: torch.Tensor, batch: Batch, prep: Preprocessing, cfg: TrainConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) for the data term under the CTF mode (Supplementary Fig. 4)."""
    ctf = ctf_of(batch, prep, cfg)
    if ctf is None:
        return clean, batch.images
    if cfg.ctf_mode == "apply":
        return apply_ctf(clean, ctf), batch.images
    return clean, wiener_filter(batch.images, ctf)


def _full(t: torch.Tensor) -> torch.Tensor:
    """An autocast (bfloat16) output back in float32; float32/float64 tensors unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _circle(box: int, device) -> torch.Tensor:
    axis = torch.arange(box, device=device) - box // 2
    return (axis[None, :] ** 2 + axis[:, None] ** 2 <= (box // 2) ** 2).float()


class _Step:
    """The training step of Supplementary Figs. 4 and 6, with its fixed tensors."""

    def __init__(self, model: HetSIREN, cfg: TrainConfig, prep: Preprocessing,
                 device: torch.device):
        self.model, self.cfg, self.prep, self.device = model, cfg, prep, device
        self.masks = {f: _circle(prep.box // f, device) for f in cfg.multires}
        self.amp = cfg.amp and device.type == "cuda"
        self.focus = cfg.mask is not None and cfg.ref is not None and cfg.focus_stats_weight > 0

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, model, net = self.cfg, self.model, self.model.net
        ctf = ctf_of(batch, self.prep, cfg)
        images = batch.images
        target = images if (ctf is None or cfg.ctf_mode != "wiener") else wiener_filter(images,
                                                                                          ctf)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            z, d_euler, d_shift = net.encode(target)
        z = _full(z)
        rotations, shifts = batch.rotations, batch.shifts_px
        if cfg.refine_pose:
            rotations, shifts = refine_pose(rotations, shifts, _full(d_euler), _full(d_shift))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            values = model.decode_values(z)
        plan = model.projection_plan(rotations, shifts)
        clean = model.project(values, plan)
        b = len(batch.indices)
        apply = ctf is not None and cfg.ctf_mode == "apply"
        # shuffles drawn in this order (pose, then CTF) so that a seed gives the same run
        pose_perm = (torch.randperm(b, generator=generator).to(self.device)
                     if cfg.pose_decoupling > 0 else None)
        ctf_perm = (torch.randperm(b, generator=generator).to(self.device)
                    if apply and cfg.ctf_decoupling > 0 else None)
        if ctf_perm is not None:
            # the data term's CTF and the shuffled one of Eq. 4 share one FFT of the clean images
            pred, pred_perm = apply_ctf(clean, torch.stack([ctf, ctf[ctf_perm]])).unbind(0)
        elif apply:
            pred = apply_ctf(clean, ctf)
        else:
            pred = clean

        out: dict[str, torch.Tensor] = {}
        out["data"] = L.multires_image_loss(pred, target, cfg.multires, cfg.data_loss,
                                            downsample, self.masks)
        reg = L.volume_regularizers(model.volume, values)
        out["l1"] = cfg.l1_weight * reg.l1
        out["negativity"] = cfg.negativity_weight * reg.negativity
        out["tv_l1"], out["tv_l2"] = cfg.tv_l1_weight * reg.tv_l1, cfg.tv_l2_weight * reg.tv_l2
        if self.focus:
            out["focus"] = cfg.focus_stats_weight * L.focus_stats_loss(model.volume, values)

        if pose_perm is not None:
            clean_perm = model.project(values, plan, pose_perm)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                z_t = _full(net.encode_clean(clean))
                z_pt = _full(net.encode_clean(clean_perm))
            out["pose_decoupling"] = cfg.pose_decoupling * L.decoupling_loss(z, z_t, z_pt)
        if ctf_perm is not None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                z_c = _full(net.encode_ctf(pred))
                z_pc = _full(net.encode_ctf(pred_perm))
            out["ctf_decoupling"] = cfg.ctf_decoupling * L.decoupling_loss(z, z_c, z_pc)
        out["total"] = sum(out.values())
        # Diagnostic, not a loss: the latent's spread over the batch. A spread that keeps
        # growing while the data term stalls means the decoder sees z as noise (measured with
        # decoupling off on two states: z std 4-3000, gradient norm 1e2-1e9, no landscape).
        out["z_std"] = z.detach().std(0, correction=0).mean()
        # Diagnostic: how much the decoded maps differ across the batch (RMS over voxels of
        # their spread, relative to the mean map's RMS). Near 0: the decoder ignores z.
        v = values.detach()
        out["map_spread"] = (v.var(0, correction=0).mean() / v.mean(0).pow(2).mean()).sqrt()
        return out


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def _truncate_log(run_dir: Path, last_epoch: int) -> None:
    """Drop log lines of epochs after the checkpoint (an interruption between the log line and
    the checkpoint would otherwise leave a duplicate epoch after resuming), and a line cut by
    an interruption."""
    if not (run_dir / LOG).is_file():
        return
    lines = [json.dumps(e) for e in read_training_log(run_dir)
             if e.get("epoch", 0) <= last_epoch]
    atomic_write(run_dir / LOG, lambda p: p.write_text("".join(f"{line}\n" for line in lines)))


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Adam's step size in ``epoch`` (0-based): cosine decay from ``lr`` to
    ``lr_final_fraction · lr`` over the run (1 = constant, the paper's schedule). Late
    epochs at full lr undo good landscapes (measured: loss 1.30 → 1.39 between epochs 35 and
    40 at lr 3e-4); the decay keeps the end of the run stable."""
    if cfg.epochs <= 1:
        return cfg.lr
    floor = cfg.lr_final_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / (cfg.epochs - 1))))


def _adam(model: HetSIREN, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the networks' parameters, fused (one kernel for all of them, 3-8x faster
    than the per-parameter loop) where this torch build has it for the device."""
    params = list(model.net.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):  # torch < 2.4 on the CPU
        return torch.optim.Adam(params, lr=cfg.lr)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute input paths, so that the run can be analysed from any working directory."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else path

    return replace(cfg, particles=absolute(cfg.particles) or "", datadir=absolute(cfg.datadir),
                   indices=absolute(cfg.indices),
                   ref=cfg.ref if cfg.ref == REF_AUTO else absolute(cfg.ref),
                   mask=absolute(cfg.mask))


def _check_multires(cfg: TrainConfig, prep: Preprocessing) -> None:
    too_far = [f for f in cfg.multires if prep.box // f < _MIN_MULTIRES_BOX]
    if too_far:
        raise UserInputError(
            f"--multires {' '.join(map(str, cfg.multires))}: factor {too_far[0]} would shrink "
            f"the {prep.box} px training images to {prep.box // too_far[0]} px; expected "
            f"factors that leave at least {_MIN_MULTIRES_BOX} px")


def _diverged(run_dir: Path, epoch: int, losses: dict[str, torch.Tensor]) -> TrainingDiverged:
    """The error for a non-finite loss in epoch ``epoch + 1``: what is kept, and what to do."""
    total = float(losses["total"].detach())
    terms = ", ".join(f"{k}={float(v.detach()):.3g}" for k, v in losses.items())
    if (run_dir / MODEL).is_file():
        kept = (f"the checkpoint of epoch {epoch} is kept in {run_dir / MODEL}: lower --lr and "
                "continue with --resume --allow-change lr")
    else:
        kept = (f"no checkpoint was written yet: {run_dir} can be started again (the same "
                "command, or --resume)")
    return TrainingDiverged(
        f"loss became {total} in epoch {epoch + 1} (terms: {terms}); the images are finite "
        f"(checked as they are read), so the step size is the likely cause: try a lower --lr. "
        f"{kept}")


def _check_trainable(particles: ParticleSet, cfg: TrainConfig) -> None:
    where = cfg.particles
    if not particles.has_poses:
        raise UserInputError(
            f"{where}: no poses (rlnAngleRot/Tilt/Psi or alignments3D/pose); HetSIREN needs a "
            "consensus refinement's poses")
    if cfg.ctf_mode != "none" and not particles.has_ctf:
        raise UserInputError(
            f"{where}: no CTF parameters; pass --ctf-mode none if the images are CTF-free or "
            "already corrected")


def _train_on_subset(particles: ParticleSet, cfg: TrainConfig, run_dir: Path
                     ) -> tuple[ParticleSet, TrainConfig]:
    """``--indices``: write the chosen rows to ``RUN/particles_subset.*`` (stack paths relative
    to it) and train on that file, so every later command sees the subset as the run's
    particles."""
    if (run_dir / CONFIG).exists():
        raise UserInputError(f"{run_dir} already holds a run: use --resume, or another -o")
    rows = read_indices(cfg.indices, particles.n_particles)
    fmt = "cs" if particles.metadata.get("format") == "cs" else "star"
    path = run_dir / f"{SUBSET}.{fmt}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (write_cs if fmt == "cs" else write_star)(path, particles, rows=rows)
    log.info("training on %d of %d particles (%s); they are in %s", len(rows),
             particles.n_particles, cfg.indices, path)
    extra = {**cfg.extra, "particles_source": cfg.particles, "n_particles_source":
             particles.n_particles}
    cfg = replace(cfg, particles=str(path.resolve()), datadir=None, extra=extra)
    return read_particles(path, pixel_size_A=cfg.pixel_size_A), cfg


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False,
          progress: bool | None = None, allow_changes: tuple[str, ...] = ()) -> TrainResult:
    """Train HetSIREN on ``cfg.particles`` and write the run directory.

    The folder is locked for the whole call (:class:`~hetsiren.train.runio.RunLock`). A folder
    left by a run interrupted before its first checkpoint (``config.json``, no ``model.pt``)
    is started again from scratch, with a warning, by a plain call or by ``resume``.

    Args:
        cfg: the run's configuration (validated here). With ``resume``: the stored
            configuration with the caller's changes on top.
        run_dir: output folder (DESIGN.md's run-directory contract).
        resume: continue from ``run_dir/model.pt``. Options that differ from the stored ones
            are refused unless in :data:`~hetsiren.train.config.RESUME_FREE` or
            ``allow_changes``; ``cfg.epochs`` may not be below the epochs already trained.
        progress: show a progress bar (default: when stderr is a terminal).
        allow_changes: option names a resumed run may change (e.g. ``("lr",)``).
    """
    run_dir = Path(run_dir)
    cfg = _resolve_paths(cfg)
    cfg.validate()
    particles = read_particles(cfg.particles, datadir=cfg.datadir, pixel_size_A=cfg.pixel_size_A)
    if cfg.indices and not resume:
        particles, cfg = _train_on_subset(particles, cfg, run_dir)
    _check_trainable(particles, cfg)
    check_outputs(files=[run_dir / name for name in RUN_FILES], folders=[run_dir],
                  inputs=[cfg.particles, cfg.mask, None if cfg.ref == REF_AUTO else cfg.ref,
                          *input_files(particles)])
    with RunLock(run_dir):
        remove_stale_temporaries(run_dir)
        return _train_locked(cfg, run_dir, particles, resume, progress, allow_changes)


def _train_locked(cfg: TrainConfig, run_dir: Path, particles: ParticleSet, resume: bool,
                  progress: bool | None, allow_changes: tuple[str, ...]) -> TrainResult:
    has_record, has_checkpoint = (run_dir / CONFIG).is_file(), (run_dir / MODEL).is_file()
    if resume and not has_record:
        raise UserInputError(f"{run_dir}: no run to resume (no {CONFIG}); start it without "
                             "--resume")
    if not resume and has_checkpoint:
        raise UserInputError(f"{run_dir} already holds a run: use --resume, or another -o")
    record = read_run_config(run_dir) if has_record else None
    if record is not None and not (isinstance(record, dict) and "hetsiren_version" in record
                                   and isinstance(record.get("config"), dict)):
        raise UserInputError(f"{run_dir / CONFIG}: not a hetsiren run record; this folder "
                             "belongs to something else: use another -o")
    if resume:
        stored = TrainConfig.from_dict(record["config"])
        changes = resume_changes(stored, cfg, allow_changes)
        cfg = replace(cfg, extra=stored.extra)
    if has_record and not has_checkpoint:
        log.warning("%s holds a run that stopped before its first checkpoint (%s, no %s): "
                    "%s starts it again from scratch%s", run_dir, CONFIG, MODEL,
                    "--resume" if resume else "this run",
                    " with its stored options" if resume else ", with this command's options")
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        cfg = replace(cfg, extra={})
        resume = False
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(cfg.seed)

    start_epoch = 0
    if resume:
        prep = Preprocessing(**record["preprocessing"])
        trained_on = cfg.extra.get("n_particles")
        if trained_on is not None and trained_on != particles.n_particles:
            raise UserInputError(f"{cfg.particles}: {particles.n_particles} particles, but "
                                 f"{run_dir} was trained on {trained_on}")
        state = load_checkpoint(run_dir, map_location="cpu")
        model = model_from_state(cfg, prep.box, state["model"], run_dir / MODEL).to(device)
        optimizer = _adam(model, cfg)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise UserInputError(f"{run_dir / MODEL}: the optimiser state does not fit the "
                                 f"model ({exc})") from exc
        start_epoch = int(state["epoch"])
        if cfg.epochs < start_epoch:
            raise UserInputError(f"--epochs {cfg.epochs}: {run_dir} has already trained "
                                 f"{start_epoch} epochs; give --epochs {start_epoch} or more "
                                 "to continue it")
        _truncate_log(run_dir, start_epoch)
        if changes:
            history = record.get("resumed", []) + [{
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "after_epoch": start_epoch,
                "changes": {k: list(v) for k, v in changes.items()}}]
            write_json(run_dir / CONFIG, {**record, "config": cfg.to_dict(), "resumed": history})
        log.info("resuming %s after epoch %d of %d", run_dir, start_epoch, cfg.epochs)
    else:
        prep = estimate_preprocessing(particles, cfg.box, seed=cfg.seed)
        _check_multires(cfg, prep)
        if cfg.ref == REF_AUTO:
            v0 = _consensus_map(particles, prep, cfg, device, progress)
        else:
            v0 = _read_input_map(cfg.ref, prep, "reference map") if cfg.ref else None
        mask = _read_mask(cfg.mask, prep) if cfg.mask else None
        model = build_model(cfg, prep.box, v0, mask).to(device)
        extra = {**cfg.extra, "n_particles": particles.n_particles}
        if v0 is not None:
            scale = _fit_reference_scale(model, particles, prep, cfg, device)
            if scale <= 0:
                raise UserInputError(
                    f"{cfg.ref}: projections of the reference anti-correlate with the images "
                    f"(fitted scale {scale:.3g}); is the map's or the particles' contrast "
                    "inverted, or the poses from another refinement?")
            log.info("reference scaled by %.4g to match the images", scale)
            model = build_model(cfg, prep.box, v0 * scale, mask).to(device)
            extra["reference_scale"] = scale
        cfg = replace(cfg, extra=extra)
        optimizer = _adam(model, cfg)
        write_json(run_dir / CONFIG, run_record(cfg.to_dict(), prep.to_dict()))

    step = _Step(model, cfg, prep, device)
    n = particles.n_particles
    # One bar for the whole run: tqdm's rate and time left then cover every remaining epoch.
    bar = tqdm(total=n * (cfg.epochs - start_epoch), unit="img", leave=False,
               disable=not progress_enabled(progress))
    history = read_training_log(run_dir) if resume else []
    warned = (training_health(history) or "").split(":")[0] or None
    for epoch in range(start_epoch, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, epoch)
        gen = _epoch_generator(cfg.seed, epoch)
        order = torch.randperm(n, generator=gen).numpy()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        model.train()
        bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
        for batch in iterate_batches(particles, prep, order, cfg.batch_size, device):
            losses = step(batch, gen)
            total = losses["total"]
            if not torch.isfinite(total):
                raise _diverged(run_dir, epoch, losses)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
            optimizer.step()
            b = len(batch.indices)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * b
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm) * b
            bar.update(b)
            bar.set_postfix(loss=f"{float(total.detach()):.4g}",
                            z_std=f"{float(losses['z_std']):.3g}")
        seconds = time.perf_counter() - t0
        entry = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                 "seconds": seconds, "images_per_s": n / seconds}
        history.append(entry)
        warning = training_health(history)
        if warning:
            entry["health"] = warning
        with open(run_dir / LOG, "a") as fh:  # before the checkpoint: see _truncate_log
            fh.write(json.dumps(entry) + "\n")
        save_checkpoint(run_dir, model, optimizer, epoch + 1)
        if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0 and epoch + 1 < cfg.epochs:
            save_snapshot(run_dir, epoch + 1, encode_particles(
                model, particles, prep, cfg, device, progress=False)[0], model)
        log.info("epoch %d/%d  loss %.5g  data %.5g  z std %.3g  %.1f img/s", epoch + 1,
                 cfg.epochs, entry["total"], entry["data"], entry["z_std"],
                 entry["images_per_s"])
        kind = warning.split(":")[0] if warning else None  # warn once per failure
        if kind and kind != warned:
            log.warning("epoch %d: %s", epoch + 1, warning)
        warned = kind
    bar.close()

    z, d_euler, d_shift = encode_particles(model, particles, prep, cfg, device,
                                           progress=progress)
    write_npy(run_dir / LATENT, z)
    if cfg.snapshot_every:
        save_snapshot(run_dir, cfg.epochs, z, model)
    if cfg.refine_pose:
        _write_refined_poses(run_dir, particles, prep, d_euler, d_shift)
    return TrainResult(run_dir=run_dir, epochs_done=cfg.epochs, latent=z,
                       first_epoch=start_epoch)


def _write_refined_poses(run_dir: Path, particles: ParticleSet, prep: Preprocessing,
                         d_euler: np.ndarray, d_shift_px: np.ndarray) -> None:
    rotations, shifts_px = refine_pose(
        torch.from_numpy(particles.rotations),
        torch.from_numpy(particles.shifts_A / prep.pixel_size_A),
        torch.from_numpy(d_euler).double(), torch.from_numpy(d_shift_px).double())
    write_star(run_dir / POSES, particles, rotations=rotations.numpy(),
               shifts_A=shifts_px.numpy() * prep.pixel_size_A)
