"""Training: the library function behind ``hetsiren train``.

One epoch = one pass over the particles in an order drawn from ``(seed, epoch)``; the
checkpoint written atomically at the end of each epoch therefore lets ``resume`` reproduce an
uninterrupted run exactly, and an interruption loses at most the current epoch.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hetsiren.data import (
    Batch,
    ImageCache,
    Preprocessing,
    StackImages,
    estimate_preprocessing,
    iterate_batches,
    load_batch,
    open_cache,
    reconstruct_particles,
)
from hetsiren.data.batch import PreprocessedImages
from hetsiren.devices import resolve_device, tune_cpu_allocator
from hetsiren.errors import UserInputError
from hetsiren.geometry import shifts_A_to_px, shifts_px_to_A
from hetsiren.io import input_files, read_map, read_particles, write_cs, write_star
from hetsiren.io.indices import read_indices
from hetsiren.io.particles import ParticleSet
from hetsiren.model import refine_pose
from hetsiren.model.forward import HetSIREN, build_model, model_from_state
from hetsiren.outputs import check_outputs
from hetsiren.physics import (
    Weighting,
    apply_ctf,
    downsample,
    resample_map,
)
from hetsiren.rundir import (
    CACHE,
    CONFIG,
    MODEL,
    POSES,
    RUN_FILES,
    SUBSET,
    LatentPrior,
    RunLock,
    RunRecord,
    append_log,
    clear_run_files,
    load_checkpoint,
    network_changes,
    read_record,
    read_training_log,
    remove_stale_temporaries,
    save_checkpoint,
    save_snapshot,
    truncate_log,
    write_latent,
    write_latent_prior,
    write_record,
)
from hetsiren.train import distributed as D
from hetsiren.train import losses as L
from hetsiren.train.config import REF_AUTO, TrainConfig, resume_changes
from hetsiren.train.health import training_health
from hetsiren.train.inference import (
    cache_root,
    ctf_roles,
    encode_particles,
    progress_enabled,
    refine_latent,
)

__all__ = ["CONSENSUS_WEIGHTING", "TrainResult", "TrainingDiverged", "consensus_changes",
           "method_changes", "train"]

log = logging.getLogger(__name__)

# Particles used to fit the scale between projections of V0 and the images.
_SCALE_FIT_SAMPLE = 512
# Particles encoded to set a new run's initial latent spread, and that spread: the realistic
# screens of issue 10 that found their landscapes started at 0.13-0.26 (AdK, SNR 0.1); the
# phantom seed that ran away started at 1.1.
_LATENT_INIT_SAMPLE = 256
_LATENT_INIT_STD = 0.2
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
    main_process: bool = True
    """False in the other processes of a multi-process run (rank 0 reports)."""


# Weighting of the --ref auto V0: the SNR-weighted, FSC-weighted map (issue 14). Runs before
# it used the fixed Wiener constant, whose V0 holds amplified noise in its high shells (power
# 50x the true map's at Nyquist, SNR 0.1). The CI training run's seed scatter (ARI, seeds 1-3,
# one thread): "ssnr" 0.58 / 0.97 / 0.87, kNN accuracy 0.98-0.99; "wiener" (CTF still applied
# on the D grid) 0.86 / 0.93 / 0.70, 0.97-0.99. The realistic suite's landscapes and maps are
# the same with both (docs/benchmarks.md). (The SNR-weighted map before C_ref weighting, whose
# high shells were damped below the signal, collapsed that run's latent: ARI 0.08.)
CONSENSUS_WEIGHTING: Weighting = "ssnr"
_CONSENSUS_WEIGHTING_BEFORE: Weighting = "wiener"


def consensus_changes() -> dict[str, str]:
    """How the ``--ref auto`` V0 differs from that of the runs stored before issue 14 (what a
    benchmark's run key must hold so that a stored result with an older V0 is not taken for
    today's): its weighting, and the CTF applied on the padded grid by the backprojection."""
    changes = {"v0_ctf": "CTF on the padded grid"}
    if CONSENSUS_WEIGHTING != _CONSENSUS_WEIGHTING_BEFORE:
        changes["v0_weighting"] = CONSENSUS_WEIGHTING
    return changes


def method_changes() -> dict[str, dict]:
    """``{"network": network_changes(), "v0": consensus_changes()}`` without the empty ones:
    what a benchmark adds to a run's key (empty for a run from before any change, whose key
    then stays as it was)."""
    changes = {"network": network_changes(), "v0": consensus_changes()}
    return {k: v for k, v in changes.items() if v}


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
    poses, at the training box, with :data:`CONSENSUS_WEIGHTING`."""
    n = particles.n_particles
    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(n, size=min(n, _CONSENSUS_SAMPLE), replace=False))
    log.info("reconstructing V0 from %d particles (--ref auto)", len(sample))
    result = reconstruct_particles(particles, indices=sample, box=prep.box, device=device,
                                   progress=progress_enabled(progress),
                                   weighting=CONSENSUS_WEIGHTING)
    return torch.from_numpy(result.map)


def _fit_reference_scale(model: HetSIREN, particles: ParticleSet, prep: Preprocessing,
                         cfg: TrainConfig, device: torch.device,
                         images: PreprocessedImages) -> float:
    """Least-squares scale α of the projections of V0 onto the images (images ≈ α·CTF·P V0)."""
    rng = np.random.default_rng(cfg.seed)
    n = particles.n_particles
    sample = np.sort(rng.choice(n, size=min(n, _SCALE_FIT_SAMPLE), replace=False))
    num = den = 0.0
    with torch.no_grad():
        for start in range(0, len(sample), 64):
            batch = load_batch(particles, prep, sample[start:start + 64], device, images)
            values = model.volume.v0.expand(len(batch.indices), -1)
            pred = model.project(values, model.projection_plan(batch.rotations,
                                                               batch.shifts_px))
            pred, target = _compare_pair(pred, batch, prep, cfg)
            num += float((pred * target).sum())
            den += float((pred * pred).sum())
    if den == 0:
        raise UserInputError(f"{cfg.ref}: the reference projects to zero inside the box")
    return num / den


def _calibrate_latent(model: HetSIREN, particles: ParticleSet, prep: Preprocessing,
                      cfg: TrainConfig, device: torch.device,
                      images: PreprocessedImages) -> None:
    """A new run's latent layer rescaled on a sample of its particles to the spread
    :data:`_LATENT_INIT_STD` (``HetSIRENNet.calibrate_latent``)."""
    rng = np.random.default_rng(cfg.seed)
    n = particles.n_particles
    sample = np.sort(rng.choice(n, size=min(n, _LATENT_INIT_SAMPLE), replace=False))
    batch = load_batch(particles, prep, sample, device, images)
    target, _ = ctf_roles(batch, prep, cfg.ctf_mode)
    model.net.calibrate_latent(target, _LATENT_INIT_STD)


# --------------------------------------------------------------------------------------------
# one step
# --------------------------------------------------------------------------------------------
def _compare_pair(clean: torch.Tensor, batch: Batch, prep: Preprocessing, cfg: TrainConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) for the data term under the CTF mode (Supplementary Fig. 4)."""
    target, ctf = ctf_roles(batch, prep, cfg.ctf_mode)
    return (clean if ctf is None else apply_ctf(clean, ctf)), target


def _full(t: torch.Tensor) -> torch.Tensor:
    """An autocast (bfloat16) output back in float32; float32/float64 tensors unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class _Step:
    """The training step of Supplementary Figs. 4 and 6, with its fixed tensors."""

    def __init__(self, model: HetSIREN, cfg: TrainConfig, prep: Preprocessing,
                 device: torch.device):
        self.model, self.cfg, self.prep, self.device = model, cfg, prep, device
        self.masks = L.loss_masks(prep.box, cfg.multires, device)
        self.n_pixels = float(self.masks[1].sum())  # the KL term's scale
        self.amp = cfg.amp and device.type == "cuda"
        self.focus = cfg.mask is not None and cfg.ref is not None and cfg.focus_stats_weight > 0
        self.kl_weight = cfg.kl_weight  # this epoch's β: begin_epoch
        self.latent_noise: torch.Tensor | None = None  # (N, zdim) ε of this epoch: begin_epoch

    def begin_epoch(self, epoch: int, n_particles: int) -> None:
        """This epoch's β and, for a variational latent, its noise ε: one row per particle,
        drawn from (seed, epoch) alone, so that a particle's sample is the same whatever the
        number of processes sharing the batch (n x zdim x 4 bytes: 40 MB for 1e6 particles)."""
        self.kl_weight = kl_weight(self.cfg, epoch)
        if self.model.net.config.variational:
            gen = torch.Generator().manual_seed(_NOISE_SEED_OFFSET + _epoch_seed(self.cfg.seed,
                                                                                 epoch))
            self.latent_noise = torch.randn(n_particles, self.model.net.config.zdim,
                                            generator=gen)

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg, model, net = self.cfg, self.model, self.model.net
        target, ctf = ctf_roles(batch, self.prep, cfg.ctf_mode)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            z, logvar, d_euler, d_shift = net.encode_posterior(target)
        z = _full(z)
        z_decoded = z
        if logvar is not None:
            logvar = _full(logvar)
            if self.latent_noise is None:
                raise RuntimeError("begin_epoch() draws the variational latent's noise")
            noise = self.latent_noise[batch.indices.cpu()].to(self.device)
            z_decoded = z + noise * torch.exp(0.5 * logvar)
        rotations, shifts = batch.rotations, batch.shifts_px
        if cfg.refine_pose:
            rotations, shifts = refine_pose(rotations, shifts, _full(d_euler), _full(d_shift))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            values = model.decode_values(z_decoded)
        plan = model.projection_plan(rotations, shifts)
        clean = model.project(values, plan)
        b = len(batch.indices)
        apply = ctf is not None
        # shuffles drawn in this order (pose, then CTF) so that a seed gives the same run
        pose_perm = (torch.randperm(b, generator=generator).to(self.device)
                     if cfg.pose_decoupling > 0 else None)
        ctf_perm = (torch.randperm(b, generator=generator).to(self.device)
                    if apply and cfg.ctf_decoupling > 0 else None)
        if ctf_perm is not None and ctf is not None:
            # the data term's CTF and the shuffled one of Eq. 4 share one FFT of the clean images
            pred_both = apply_ctf(clean, torch.stack([ctf, ctf[ctf_perm]]))  # [2, b, D, D]
            pred = pred_both[0]
        elif ctf is not None:
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
        if logvar is not None:
            out["kl"] = self.kl_weight * L.kl_loss(z, logvar) / self.n_pixels

        # each decoupling encoder sees its two image sets (own pose / CTF and shuffled) as one
        # batch of 2b: one pass instead of two
        if pose_perm is not None:
            clean_perm = model.project(values, plan, pose_perm)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                z_t, z_pt = _full(net.encode_clean(torch.cat([clean, clean_perm]))).chunk(2)
            out["pose_decoupling"] = cfg.pose_decoupling * L.decoupling_loss(z, z_t, z_pt)
        if ctf_perm is not None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
                z_c, z_pc = _full(net.encode_ctf(pred_both.flatten(0, 1))).chunk(2)
            out["ctf_decoupling"] = cfg.ctf_decoupling * L.decoupling_loss(z, z_c, z_pc)
        out["total"] = functools.reduce(operator.add, out.values())
        # Diagnostic, not a loss: the latent's spread over the batch. A spread that keeps
        # growing while the data term stalls means the decoder sees z as noise (measured with
        # decoupling off on two states: z std 4-3000, gradient norm 1e2-1e9, no landscape).
        out["z_std"] = z.detach().std(0, correction=0).mean()
        if logvar is not None:
            # Diagnostic: the variational latent's noise σ, against z std the signal's spread.
            out["z_sigma"] = torch.exp(0.5 * logvar.detach()).mean()
        # Diagnostic: how much the decoded maps differ across the batch (RMS over voxels of
        # their spread, relative to the mean map's RMS). Near 0: the decoder ignores z.
        # (centred by hand: ``var(0)`` reduces across rows at a tenth of the speed, and
        # took 15 % of a box-64 step)
        v = values.detach()
        mean_map = v.mean(0)
        out["map_spread"] = ((v - mean_map).square_().mean() / mean_map.square().mean()).sqrt()
        return out


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Adam's step size in ``epoch`` (0-based): cosine decay from ``lr`` to
    ``lr_final_fraction · lr`` over the run (1 = constant, the paper's schedule). Late
    epochs at full lr undo good landscapes (measured: loss 1.30 → 1.39 between epochs 35 and
    40 at lr 3e-4); the decay keeps the end of the run stable."""
    if cfg.epochs <= 1:
        return cfg.lr
    floor = cfg.lr_final_fraction
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / (cfg.epochs - 1))))


def kl_weight(cfg: TrainConfig, epoch: int) -> float:
    """β in ``epoch`` (0-based): ``kl_weight`` / 10 for the first ``kl_warmup`` epochs, then
    rising linearly to ``kl_weight`` over as many more, then constant (``kl_warmup`` 0:
    constant). On PR-LBD at SNR 0.1 the decoder took 6-8 epochs to pick z up at β 0.1; a β of
    0.3-1 in those epochs shrank z to a constant first (posterior collapse)."""
    if cfg.kl_warmup <= 0:
        return cfg.kl_weight
    ramp = min(1.0, max(0.0, (epoch + 1 - cfg.kl_warmup) / cfg.kl_warmup))
    return cfg.kl_weight * (0.1 + 0.9 * ramp)


def _adam(model: HetSIREN, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over the networks' parameters, fused (one kernel for all of them, 3-8x faster
    than the per-parameter loop) where this torch build has it for the device."""
    params = list(model.net.parameters())
    try:
        return torch.optim.Adam(params, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):  # torch < 2.4 on the CPU
        return torch.optim.Adam(params, lr=cfg.lr)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


_NOISE_SEED_OFFSET = 7_919  # the latent noise's generator: apart from the order's


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch))


def _resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute input paths, so that the run can be analysed from any working directory."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else path

    return replace(cfg, particles=absolute(cfg.particles) or "", datadir=absolute(cfg.datadir),
                   indices=absolute(cfg.indices),
                   ref=cfg.ref if cfg.ref == REF_AUTO else absolute(cfg.ref),
                   mask=absolute(cfg.mask), cache_dir=absolute(cfg.cache_dir))


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


def _train_on_subset(particles: ParticleSet, cfg: TrainConfig, run_dir: Path, indices: str
                     ) -> tuple[ParticleSet, TrainConfig]:
    """``--indices``: write the chosen rows to ``RUN/particles_subset.*`` (stack paths relative
    to it) and train on that file, so every later command sees the subset as the run's
    particles."""
    if (run_dir / CONFIG).exists():
        raise UserInputError(f"{run_dir} already holds a run: use --resume, or another -o")
    rows = read_indices(indices, particles.n_particles)
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

    The folder is locked for the whole call (:class:`~hetsiren.rundir.RunLock`). A folder
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
    dist, device = D.from_environment(resolve_device(cfg.device))
    try:
        return _train_process(cfg, run_dir, resume, progress, allow_changes, dist, device)
    finally:
        D.shutdown(dist)


def _train_process(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool | None,
                   allow_changes: tuple[str, ...], dist: D.Dist, device: torch.device
                   ) -> TrainResult:
    """One process's part of :func:`train` (the only one without torchrun)."""
    particles = read_particles(cfg.particles, datadir=cfg.datadir, pixel_size_A=cfg.pixel_size_A)
    if cfg.indices and not resume:
        subset: dict[str, ParticleSet] = {}
        indices = cfg.indices

        def write_subset() -> TrainConfig:
            subset["particles"], new = _train_on_subset(particles, cfg, run_dir, indices)
            return new

        cfg = D.on_main(write_subset, dist)
        particles = subset.get("particles") or read_particles(cfg.particles,
                                                              pixel_size_A=cfg.pixel_size_A)
    _check_trainable(particles, cfg)
    D.check_split(particles.n_particles, cfg.batch_size, dist)
    if not dist.is_main:  # rank 0 checks the folder, locks it and writes it
        return _train_locked(cfg, run_dir, particles, resume, progress, allow_changes, dist,
                             device)
    check_outputs(files=[run_dir / name for name in RUN_FILES], folders=[run_dir],
                  inputs=[cfg.particles, cfg.mask, None if cfg.ref == REF_AUTO else cfg.ref,
                          *input_files(particles)])
    with RunLock(run_dir):
        remove_stale_temporaries(run_dir)
        return _train_locked(cfg, run_dir, particles, resume, progress, allow_changes, dist,
                             device)


def _images(cfg: TrainConfig, run_dir: Path, particles: ParticleSet, prep: Preprocessing | None,
            progress: bool | None) -> tuple[ImageCache | StackImages, Preprocessing]:
    """Where the training images come from: the cache (built first if needed) or the stacks;
    and the preprocessing (the run's own, or, for a new run, the cache's)."""
    if not cfg.cache:
        prep = prep or estimate_preprocessing(particles, cfg.box)
        return StackImages(particles, prep), prep
    cache = open_cache(particles, prep.box if prep else cfg.box, cache_root(cfg, run_dir),
                       cfg.cache_dtype, progress=progress_enabled(progress),
                       workers=cfg.workers)
    prep = prep or cache.prep
    return cache.for_preprocessing(prep), prep


def _read_own_record(run_dir: Path) -> RunRecord:
    """The record of the run in ``run_dir``, or an error saying the folder is someone else's."""
    try:
        return read_record(run_dir)
    except UserInputError as exc:
        raise UserInputError(f"{exc}; this folder belongs to something else: use another -o"
                             ) from exc


def _train_locked(cfg: TrainConfig, run_dir: Path, particles: ParticleSet, resume: bool,
                  progress: bool | None, allow_changes: tuple[str, ...], dist: D.Dist,
                  device: torch.device) -> TrainResult:
    kept: dict[str, Any] = {}

    def set_up() -> tuple:
        own_cache = run_dir / CACHE
        made_cache = cfg.cache and not cfg.cache_dir and not own_cache.exists()
        try:
            new_cfg, prep, start, model, optimizer = _set_up(cfg, run_dir, particles, resume,
                                                             progress, allow_changes, device)
        except BaseException:
            if made_cache and not (run_dir / CONFIG).exists():
                shutil.rmtree(own_cache, ignore_errors=True)  # a refused run leaves nothing
            raise
        kept.update(model=model, optimizer=optimizer)
        # what the other ranks need to start from the same state (CPU copies, pickled once)
        state = ({"network": model.net.config,
                  "model": {k: v.cpu() for k, v in model.state_dict().items()},
                  "optimizer": optimizer.state_dict()} if dist.active else None)
        return new_cfg, prep, start, state

    cfg, prep, start_epoch, state = D.on_main(set_up, dist)
    if dist.is_main:
        model, optimizer = kept["model"], kept["optimizer"]
    else:
        model = model_from_state(state["network"], state["model"], run_dir / MODEL).to(device)
        optimizer = _adam(model, cfg)
        optimizer.load_state_dict(state["optimizer"])
    images, _ = _images(cfg, run_dir, particles, prep, progress if dist.is_main else False)
    return _train_epochs(cfg, run_dir, particles, prep, model, optimizer, start_epoch, images,
                         resume, progress, dist, device)


def _set_up(cfg: TrainConfig, run_dir: Path, particles: ParticleSet, resume: bool,
            progress: bool | None, allow_changes: tuple[str, ...], device: torch.device
            ) -> tuple[TrainConfig, Preprocessing, int, HetSIREN, torch.optim.Adam]:
    """Rank 0: check the folder, start or resume the run, write its record."""
    has_record, has_checkpoint = (run_dir / CONFIG).is_file(), (run_dir / MODEL).is_file()
    if resume and not has_record:
        raise UserInputError(f"{run_dir}: no run to resume (no {CONFIG}); start it without "
                             "--resume")
    if not resume and has_checkpoint:
        raise UserInputError(f"{run_dir} already holds a run: use --resume, or another -o")
    record = _read_own_record(run_dir) if has_record else None
    if resume:
        assert record is not None  # resume without a record was refused above
        stored = record.train
        changes = resume_changes(stored, cfg, allow_changes)
        cfg = replace(cfg, extra=stored.extra)
    if has_record and not has_checkpoint:
        log.warning("%s holds a run that stopped before its first checkpoint (%s, no %s): "
                    "%s starts it again from scratch%s", run_dir, CONFIG, MODEL,
                    "--resume" if resume else "this run",
                    " with its stored options" if resume else ", with this command's options")
        clear_run_files(run_dir)
        cfg = replace(cfg, extra={})
        resume = False
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(cfg.seed)

    start_epoch = 0
    if resume:
        assert record is not None  # resume without a record was refused above
        prep = record.preprocessing
        if cfg.cache:  # built now if it is missing (another --cache-dir, deleted)
            _images(cfg, run_dir, particles, prep, progress)
        trained_on = cfg.extra.get("n_particles")
        if trained_on is not None and trained_on != particles.n_particles:
            raise UserInputError(f"{cfg.particles}: {particles.n_particles} particles, but "
                                 f"{run_dir} was trained on {trained_on}")
        state = load_checkpoint(run_dir, map_location="cpu")
        model = model_from_state(record.network, state["model"], run_dir / MODEL).to(device)
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
        truncate_log(run_dir, start_epoch)
        if changes:
            write_record(run_dir, record.resumed_with(cfg, start_epoch, changes))
        log.info("resuming %s after epoch %d of %d", run_dir, start_epoch, cfg.epochs)
    else:
        images, prep = _images(cfg, run_dir, particles, None, progress)
        _check_multires(cfg, prep)
        v0: torch.Tensor | None
        if cfg.ref == REF_AUTO:
            v0 = _consensus_map(particles, prep, cfg, device, progress)
        else:
            v0 = _read_input_map(cfg.ref, prep, "reference map") if cfg.ref else None
        mask = _read_mask(cfg.mask, prep) if cfg.mask else None
        network = cfg.network(prep.box)
        model = build_model(network, v0, mask).to(device)
        extra = {**cfg.extra, "n_particles": particles.n_particles}
        if v0 is not None:
            scale = _fit_reference_scale(model, particles, prep, cfg, device, images)
            if scale <= 0:
                raise UserInputError(
                    f"{cfg.ref}: projections of the reference anti-correlate with the images "
                    f"(fitted scale {scale:.3g}); is the map's or the particles' contrast "
                    "inverted, or the poses from another refinement?")
            log.info("reference scaled by %.4g to match the images", scale)
            model = build_model(network, v0 * scale, mask).to(device)
            extra["reference_scale"] = scale
        _calibrate_latent(model, particles, prep, cfg, device, images)
        cfg = replace(cfg, extra=extra)
        optimizer = _adam(model, cfg)
        write_record(run_dir, RunRecord.new(cfg, network, prep))
    return cfg, prep, start_epoch, model, optimizer


def _train_epochs(cfg: TrainConfig, run_dir: Path, particles: ParticleSet, prep: Preprocessing,
                  model: HetSIREN, optimizer: torch.optim.Adam, start_epoch: int,
                  images: PreprocessedImages, resume: bool, progress: bool | None,
                  dist: D.Dist, device: torch.device) -> TrainResult:
    step = _Step(model, cfg, prep, device)
    n = particles.n_particles
    # One bar for the whole run: tqdm's rate and time left then cover every remaining epoch.
    bar = tqdm(total=n * (cfg.epochs - start_epoch), unit="img", leave=False,
               disable=not (dist.is_main and progress_enabled(progress)))
    history = read_training_log(run_dir) if resume else []
    params = list(model.net.parameters())
    warned = (training_health(history) or "").split(":")[0] or None
    for epoch in range(start_epoch, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, epoch)
        step.begin_epoch(epoch, n)
        gen = _epoch_generator(cfg.seed, epoch)
        order = torch.randperm(n, generator=gen).numpy()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        model.train()
        bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
        chunks = D.rank_batches(order, cfg.batch_size, dist)
        for batch in iterate_batches(particles, prep, chunks, device, images=images,
                                     workers=cfg.workers):
            losses = step(batch, gen)
            total = losses["total"]
            finite = bool(torch.isfinite(total))
            if not finite and not dist.active:
                raise _diverged(run_dir, epoch, losses)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            b = len(batch.indices)
            # several processes: the global batch's mean gradient, everywhere (no-op alone)
            b_all, finite = D.all_reduce_gradients(params, b, finite, dist)
            if not finite:
                raise _diverged(run_dir, epoch, losses)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * b
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm) * b
            bar.update(b_all)
            bar.set_postfix(loss=f"{float(total.detach()):.4g}",
                            z_std=f"{float(losses['z_std']):.3g}")
        sums = D.sum_across(sums, dist, device)
        seconds = time.perf_counter() - t0
        entry: dict[str, Any] = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()},
                                 "seconds": seconds, "images_per_s": n / seconds}
        if device.type == "cuda":  # rank 0's GPU; the ranks' loads are alike
            entry["gpu_memory_peak_GB"] = torch.cuda.max_memory_allocated(device) / 1e9
        history.append(entry)
        warning = training_health(history)
        if warning:
            entry["health"] = warning
        if dist.is_main:
            append_log(run_dir, entry)  # before the checkpoint: see rundir.truncate_log
            save_checkpoint(run_dir, model, optimizer, epoch + 1)
        if cfg.snapshot_every and (epoch + 1) % cfg.snapshot_every == 0 and epoch + 1 < cfg.epochs:
            z = encode_particles(model, particles, prep, cfg, device, progress=False,
                                 images=images, dist=dist)[0]
            if dist.is_main:
                save_snapshot(run_dir, epoch + 1, z, model)
        if dist.is_main:
            log.info("epoch %d/%d  loss %.5g  data %.5g  z std %.3g  %.1f img/s", epoch + 1,
                     cfg.epochs, entry["total"], entry["data"], entry["z_std"],
                     entry["images_per_s"])
        kind = warning.split(":")[0] if warning else None  # warn once per failure
        if kind and kind != warned and dist.is_main:
            log.warning("epoch %d: %s", epoch + 1, warning)
        warned = kind
    bar.close()

    shown = progress if dist.is_main else False
    z_encoder, d_euler, d_shift = encode_particles(model, particles, prep, cfg, device,
                                                   progress=shown, images=images, dist=dist)
    prior = LatentPrior.fit(z_encoder, history[-1]["data"])
    z = z_encoder
    if cfg.refine_latent_steps:
        z = refine_latent(model, particles, prep, cfg, device, z_encoder, prior,
                          cfg.refine_latent_steps, d_euler, d_shift, progress=shown,
                          images=images, dist=dist)
    if dist.is_main:
        write_latent_prior(run_dir, prior)
        write_latent(run_dir, z)
        if cfg.snapshot_every:
            save_snapshot(run_dir, cfg.epochs, z_encoder, model)
        if cfg.refine_pose:
            _write_refined_poses(run_dir, particles, prep, d_euler, d_shift)
    return TrainResult(run_dir=run_dir, epochs_done=cfg.epochs, latent=z,
                       first_epoch=start_epoch, main_process=dist.is_main)


def _write_refined_poses(run_dir: Path, particles: ParticleSet, prep: Preprocessing,
                         d_euler: np.ndarray, d_shift_px: np.ndarray) -> None:
    if particles.rotations is None:
        raise UserInputError(f"{particles.metadata.get('path')}: no poses to refine")
    shifts_A = (np.zeros((particles.n_particles, 2)) if particles.shifts_A is None
                else particles.shifts_A)
    rotations, shifts_px = refine_pose(
        torch.from_numpy(particles.rotations),
        torch.from_numpy(shifts_A_to_px(shifts_A, prep.pixel_size_A)),
        torch.from_numpy(d_euler).double(), torch.from_numpy(d_shift_px).double())
    write_star(run_dir / POSES, particles, rotations=rotations.numpy(),
               shifts_A=shifts_px_to_A(shifts_px.numpy(), prep.pixel_size_A))
