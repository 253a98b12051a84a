"""Building, loading and using a trained model: encode particles, decode latent points.

These are the library functions behind ``hetsiren encode`` and ``hetsiren decode``; the
trainer uses the same builders so that a run rebuilds exactly from its ``config.json`` and
``model.pt``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hetsiren.devices import resolve_device
from hetsiren.errors import UserInputError
from hetsiren.geometry import mirror_handedness
from hetsiren.io import input_files, read_particles, write_map
from hetsiren.io.particles import ParticleSet
from hetsiren.model import HetSIRENNet, NetworkConfig
from hetsiren.model.forward import HetSIREN
from hetsiren.model.volume import MaskedVolume
from hetsiren.outputs import check_outputs
from hetsiren.physics import compute_ctf, resample_map, wiener_filter
from hetsiren.train.config import TrainConfig
from hetsiren.train.data import Batch, Preprocessing, iterate_batches
from hetsiren.train.runio import (
    MODEL,
    load_checkpoint,
    load_snapshot_decoder,
    read_run_config,
    run_inputs,
    write_npy,
)

__all__ = [
    "MapOutput", "build_model", "check_new_output", "ctf_of", "decode_latent", "decode_to_files",
    "encode_file", "encode_particles", "finish_map", "load_run", "model_from_state",
    "progress_enabled", "read_latent_points",
]


def progress_enabled(progress: bool | None) -> bool:
    """Progress bars by default only when stderr is a terminal."""
    return sys.stderr.isatty() if progress is None else progress


# --------------------------------------------------------------------------------------------
# building the model
# --------------------------------------------------------------------------------------------
def network_config(cfg: TrainConfig, box: int) -> NetworkConfig:
    return NetworkConfig(
        box_size=box,
        zdim=cfg.zdim,
        encoder=cfg.encoder,
        hidden_width=cfg.decoder_width,
        activation=cfg.activation,
        omega0=cfg.omega0,
        refine_pose=cfg.refine_pose,
        decoupling=cfg.pose_decoupling > 0 or cfg.ctf_decoupling > 0,
        latent_norm=cfg.latent_norm,
    ).validate()


def build_model(cfg: TrainConfig, box: int, v0: torch.Tensor | None,
                 mask: torch.Tensor | None) -> HetSIREN:
    volume = MaskedVolume(box, v0=v0, mask=mask)
    net = HetSIRENNet(network_config(cfg, box), n_voxels=volume.n_voxels)
    return HetSIREN(net, volume)


def model_from_state(cfg: TrainConfig, box: int, state: dict, source: str | Path = "model.pt"
                     ) -> HetSIREN:
    """Rebuild the module from a checkpoint's state dict (V0 and mask are in it).

    Raises :class:`UserInputError` naming ``source`` when the weights do not fit ``cfg``.
    """
    try:
        v0 = state["volume.v0_grid"]
        mask = torch.zeros(box**3, dtype=torch.bool)
        mask[state["volume.decoder_index"]] = True
        model = build_model(cfg, box, v0, mask.reshape(box, box, box))
        model.load_state_dict(state)
    except (KeyError, RuntimeError, IndexError, TypeError) as exc:
        detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise UserInputError(f"{source}: the weights do not fit the run's configuration "
                             f"({detail}); is it this run's checkpoint?") from exc
    return model


def ctf_of(batch: Batch, prep: Preprocessing, cfg: TrainConfig) -> torch.Tensor | None:
    if cfg.ctf_mode == "none" or batch.ctf is None:
        return None
    return compute_ctf(**batch.ctf, box_size=prep.box, pixel_size_A=prep.pixel_size_A)


@torch.no_grad()
def encode_particles(model: HetSIREN, particles: ParticleSet, prep: Preprocessing,
                     cfg: TrainConfig, device: torch.device, batch_size: int = 64,
                     progress: bool | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent vectors (and pose corrections) of every particle, in input order.

    Returns:
        ``(N, zdim)`` float32 z, ``(N, 3)`` Δangles (radians), ``(N, 2)`` Δshifts (pixels).
    """
    model.eval()
    n = particles.n_particles
    zs, des, dss = [], [], []
    bar = tqdm(total=n, desc="encoding", unit="img", disable=not progress_enabled(progress),
               leave=False)
    for batch in iterate_batches(particles, prep, np.arange(n), batch_size, device):
        ctf = ctf_of(batch, prep, cfg)
        images = batch.images if (ctf is None or cfg.ctf_mode != "wiener") else wiener_filter(
            batch.images, ctf)
        z, de, ds = model.net.encode(images)
        zs.append(z.float().cpu())
        des.append(de.float().cpu())
        dss.append(ds.float().cpu())
        bar.update(len(batch.indices))
    bar.close()
    return (torch.cat(zs).numpy().astype(np.float32), torch.cat(des).numpy(),
            torch.cat(dss).numpy())


def load_run(run_dir: str | Path, device: str = "auto", epoch: int | None = None
             ) -> tuple[TrainConfig, Preprocessing, HetSIREN, torch.device]:
    """Rebuild a trained model from its run directory; with ``epoch``, its decoder as it was
    after that epoch (``RUN/snapshots``)."""
    record = read_run_config(run_dir)
    cfg = TrainConfig.from_dict(record["config"])
    prep = Preprocessing(**record["preprocessing"])
    dev = resolve_device(device)
    state = load_checkpoint(run_dir, map_location="cpu")
    model = model_from_state(cfg, prep.box, state["model"], Path(run_dir) / MODEL)
    if epoch is not None:
        unexpected = model.load_state_dict(load_snapshot_decoder(run_dir, epoch),
                                           strict=False).unexpected_keys
        if unexpected:
            raise UserInputError(f"{run_dir}: the epoch-{epoch} snapshot does not fit this "
                                 f"run's model ({unexpected[0]})")
    return cfg, prep, model.to(dev).eval(), dev


@torch.no_grad()
def decode_latent(model: HetSIREN, z: np.ndarray, device: torch.device) -> np.ndarray:
    """``(k, zdim)`` latent points → ``(k, D, D, D)`` float32 maps."""
    z_t = torch.as_tensor(np.asarray(z, dtype=np.float32), device=device)
    if z_t.ndim != 2 or z_t.shape[1] != model.net.config.zdim:
        raise UserInputError(
            f"latent points must be (k, {model.net.config.zdim}), got {tuple(z_t.shape)}")
    maps = [model.decode_maps(z_t[i:i + 8]).cpu() for i in range(0, len(z_t), 8)]
    return torch.cat(maps).numpy().astype(np.float32)


def encode_file(run_dir: str | Path, particles_path: str | Path, datadir: str | None = None,
                pixel_size_A: float | None = None, device: str = "auto",
                batch_size: int = 64, output: str | Path | None = None) -> np.ndarray:
    """Latent vectors of the particles in a file, preprocessed as the run's training data.

    With ``output``, also write them there (``.npy``, float32 ``(N, zdim)``); the path is
    checked against every file read (run, particle file, stacks) before encoding starts.
    """
    if batch_size < 1:
        raise UserInputError(f"--batch-size {batch_size}: expected a positive integer")
    cfg, prep, model, dev = load_run(run_dir, device)
    particles = read_particles(particles_path, datadir=datadir, pixel_size_A=pixel_size_A,
                               require_images=True)
    if particles.images is None:
        raise UserInputError(f"{particles_path}: no images to encode")
    if output is not None:
        check_outputs(files=[output], inputs=[*run_inputs(run_dir), *input_files(particles)])
    if particles.box_size != prep.box_in:
        raise UserInputError(
            f"{particles_path}: images are {particles.box_size} px but {run_dir} was trained "
            f"on {prep.box_in} px images; re-extract or train a new run")
    if not np.allclose(particles.pixel_size_A, prep.pixel_size_in_A, rtol=1e-3):
        raise UserInputError(
            f"{particles_path}: pixel size {float(particles.pixel_size_A[0]):.4g} Å differs "
            f"from the training data's {prep.pixel_size_in_A:.4g} Å")
    z, _, _ = encode_particles(model, particles, prep, cfg, dev, batch_size=batch_size)
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise UserInputError(
            f"{particles_path}: the encoder gave NaN/Inf latent vectors for {int(bad.sum())} "
            f"particles (first: particle {int(np.flatnonzero(bad)[0]) + 1}) although their "
            f"images are finite: the weights in {run_dir}/{MODEL} are probably not finite")
    if output is not None:
        write_npy(output, z)
    return z


def read_latent_points(path: str | Path, zdim: int) -> np.ndarray:
    """``.npy`` or text (one point per row) → ``(k, zdim)`` float32."""
    path = Path(path)
    try:
        z = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: cannot read latent points ({exc})") from exc
    z = np.atleast_2d(np.asarray(z, dtype=np.float32))
    if z.ndim != 2 or z.shape[1] != zdim:
        raise UserInputError(f"{path}: expected rows of {zdim} values, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise UserInputError(f"{path}: contains NaN or Inf")
    return z


@dataclass(frozen=True)
class MapOutput:
    """How decoded maps are written (``hetsiren decode``, trajectories)."""

    original_size: bool = False
    """Fourier-pad the map from the training box to the particles' own box and pixel size."""
    flip: bool = False
    """Mirror the map (z → -z) to change its handedness."""
    invert: bool = False
    """Multiply the map by -1 (contrast: white-on-black particles give negative density)."""


def finish_map(volume: np.ndarray, prep: Preprocessing, output: MapOutput
               ) -> tuple[np.ndarray, float]:
    """``(D, D, D)`` decoded map at the training box → the map to write and its voxel size (Å).

    ``original_size`` resamples band-limited (spectrum zero-padded) to ``prep.box_in`` voxels
    of ``prep.pixel_size_in_A``: no information is added above the training Nyquist, but the
    map overlays the consensus refinement's map voxel for voxel.
    """
    pixel_A = prep.pixel_size_A
    if output.original_size and prep.box_in != prep.box:
        volume = resample_map(torch.from_numpy(np.ascontiguousarray(volume)), pixel_A,
                              prep.pixel_size_in_A, prep.box_in).numpy()
        pixel_A = prep.pixel_size_in_A
    if output.flip:
        volume = mirror_handedness(volume)
    if output.invert:
        volume = -volume
    return np.ascontiguousarray(volume, dtype=np.float32), pixel_A


def check_new_output(paths: list[Path], overwrite: bool, flag: str = "--force") -> None:
    """Refuse to replace existing files unless ``overwrite``; the message names one."""
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise UserInputError(
            f"{existing[0]}: already exists ({len(existing)} of the {len(paths)} output files "
            f"do); choose another output folder or pass {flag} to replace them")


def decode_to_files(run_dir: str | Path, z: np.ndarray, out_dir: str | Path,
                    device: str = "auto", prefix: str = "map",
                    output: MapOutput = MapOutput(), overwrite: bool = False,
                    inputs: Sequence[str | Path] = ()) -> list[Path]:
    """Decode latent points to ``OUT/{prefix}_NNN.mrc`` maps.

    Args:
        run_dir: the trained run.
        z: ``(k, zdim)`` latent points.
        out_dir: output folder (created).
        device: where to decode.
        prefix: file name prefix.
        output: size, hand and contrast of the written maps (:class:`MapOutput`).
        overwrite: replace existing ``{prefix}_NNN.mrc`` files (otherwise an error, before
            anything is written).
        inputs: other files the caller read (e.g. the points file); the map paths are
            checked against them and the run's files before decoding.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / f"{prefix}_{i:03d}.mrc" for i in range(len(z))]
    check_outputs(files=paths, inputs=[*run_inputs(run_dir), *inputs], folders=[out_dir])
    check_new_output(paths, overwrite)
    _, prep, model, dev = load_run(run_dir, device)
    maps = decode_latent(model, z, dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, volume in zip(paths, maps, strict=True):
        volume, pixel_A = finish_map(volume, prep, output)
        write_map(path, volume, pixel_A)
    return paths
