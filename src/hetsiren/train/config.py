"""Training configuration: every option of ``hetsiren train``, with the paper's defaults.

Defaults cite Herreros et al., Nat. Commun. 2025 ("paper") or, where the paper is silent, the
authors' Flexutils-Toolkit implementation ("original code"). Where we depart from the paper
for small datasets (see ``benchmarks/bench_defaults.py``) both values are given.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from hetsiren.data.cache import CacheDtype
from hetsiren.errors import UserInputError, check_choice
from hetsiren.model.decoder import Activation
from hetsiren.model.encoders import EncoderKind
from hetsiren.model.network import NetworkConfig

__all__ = ["LEGACY_OPTIONS", "PAPER_DEFAULTS", "REF_AUTO", "RESUME_FIXED", "RESUME_FREE",
           "TrainConfig", "field_help", "resume_changes"]

REF_AUTO = "auto"
"""``--ref auto``: V0 is a homogeneous reconstruction of the particles themselves."""

RESUME_FREE = ("epochs", "device", "amp", "cache", "cache_dir", "cache_dtype", "workers",
               "refine_latent_steps")
"""Options a resumed run takes from the command line without being asked: how long and where
it runs. Any other change (particle file, --lr...) must be allowed by name."""

RESUME_FIXED = ("zdim", "box", "encoder", "hidden_width", "activation", "refine_pose", "ref",
                "mask", "pixel_size_A", "latent_norm", "kl_weight")
"""Options a resumed run can never change: they shape the weights, or are already inside the
checkpoint (V0 and the mask) or its preprocessing (box, pixel size)."""

LEGACY_OPTIONS: dict[str, Any] = {"kl_weight": 0.0, "kl_warmup": 0, "refine_latent_steps": 0}
"""Options added after runs were recorded whose default differs from what those runs trained
with: a config.json without one reads as the run it was, whatever today's default."""

CTFMode = Literal["apply", "wiener", "none"]
DataLoss = Literal["mse", "corr"]

# The paper's optimiser settings (Methods, "HetSIREN cost function"), tuned for ~1e5 particles
# x 50 epochs on a GPU. Ours differ for small datasets; see TrainConfig.lr / batch_size.
PAPER_DEFAULTS = {"lr": 1e-5, "batch_size": 8, "epochs": 50, "omega0": 30.0,
                  "lr_final_fraction": 1.0}


@dataclass(frozen=True)
class TrainConfig:
    """All parameters of one training run. Paths are stored as strings (JSON-friendly)."""

    # --- inputs ---------------------------------------------------------------------------
    particles: str = ""
    """STAR, cryoSPARC .cs or .mrcs with the particles (poses and CTF read from it)."""
    datadir: str | None = None
    """Folder where the image stacks named in the particle file are looked for."""
    pixel_size_A: float | None = None
    """Pixel size of the input images in Å, for files that do not carry it."""
    ref: str | None = None
    """Reference map V0 (refinement, Eq. 2), or 'auto' to reconstruct V0 from the particles
    at their poses (SNR-weighted backprojection of at most 20,000 of them, as ``hetsiren
    reconstruct``; what to use without a consensus map). Not given: V0 = 0, the paper's full
    heterogeneous reconstruction."""
    indices: str | None = None
    """Train on these particles only: 0-based rows of the particle file, as .npy or text (as
    `export --indices`). The subset is written to RUN/particles_subset.star (or .cs) and the
    run refers to it, so latent.npy row i is row i of that file."""
    mask: str | None = None
    """Focus mask: the decoder covers only its voxels (Eq. 11) and Eq. 12 applies."""

    # --- data -----------------------------------------------------------------------------
    box: int | None = None
    """Training box in pixels (images are Fourier-cropped to it); not given: the images' own
    box."""
    ctf_mode: CTFMode = "apply"
    """apply: corrupt projections with the CTF; wiener: Wiener-filter images before encoding;
    none: images are CTF-corrected already (Supplementary Fig. 4)."""
    cache: bool = True  # not in the paper
    """Preprocess (crop, normalise) every image once into a memory-mapped cache that every
    epoch, --resume, encode and every process read; --no-cache re-reads the stacks each
    epoch (N x box² x 2 bytes of disk saved: 32 GB for 1e6 particles at 128 px)."""
    cache_dir: str | None = None
    """Folder of image caches, shared by runs on the same particles and box; not given:
    RUN/cache."""
    cache_dtype: CacheDtype = "float16"
    """Storage type of the cached images (float16: 11 significant bits, far below the noise
    of normalised images)."""
    workers: int = 2
    """Threads preparing batches ahead of the training step."""

    # --- network (Methods, "HetSIREN network architecture") --------------------------------
    zdim: int = 10  # paper: latent space dimension defaults to 10
    """Latent dimension."""
    encoder: EncoderKind = "conv"  # paper: residual convolutional encoder by default
    """Encoder architecture: conv (residual, default) or mlp (3 x 1024)."""
    hidden_width: int | None = 64  # paper: neurons = latent dimension (issue 10: too narrow)
    """Width of the decoder's meta-sinusoidal hidden layers (the paper's: --zdim). With the
    paper's width the decoded maps span only zdim basis maps and train slowly: at SNR 0.1 on
    two proteins (30 epochs) width 64 raised abs(ρ PC1) 0.74 → 0.89-0.91 (docs/benchmarks.md)."""
    activation: Activation = "siren"  # paper; relu for the ablation of Supplementary Fig. 10
    """Decoder activation."""
    omega0: float = 5.0  # paper / SIREN: 30; with 30 z barely moves the maps (docs/benchmarks)
    """ω0 of the decoder's sine layers. The first layer's input is the latent z, so ω0 sets how
    fast the decoded map may change along the landscape."""
    refine_pose: bool = False
    """Learn per-particle Δangles and Δshifts (Supplementary Fig. 4)."""
    latent_norm: bool = False  # not in the paper (issue 10: an option, not the default)
    """Standardise z over each batch (one mean per dimension, one scale for all), so that z
    can neither collapse to a constant nor run away, the two ways the decoder was seen to stop
    using z. On the CI phantom (three states, SNR 2, seeds 1-3) ARI 0.65 / 0.50 / 0.42 with
    it, a runaway (ARI 0.05) in seed 2 without; but on AdK at SNR 0.1 more defocus leaks into
    z (kNN R² 0.45-0.58 against 0.16-0.31), so it is off by default (docs/benchmarks.md)."""

    kl_weight: float = 1.0  # not in the paper (issue 10); cryoDRGN's VAE: β = 1 / zdim
    """β of a variational latent; 0 = the paper's deterministic z. The encoder also gives a
    σ per dimension, training decodes z = μ + σ ε and adds β · KL(N(μ, σ²) ‖ N(0, 1)) / n,
    n the pixels inside the loss's circle (cryoDRGN's scaling; β = 2 is the evidence bound
    for unit noise variance); encode, analyze and decode use μ. The prior holds z's scale
    (a deterministic z collapsed or ran away with the data term flat) and the noise squeezes
    out what the decoder does not need: on AdK at SNR 0.1 (30 epochs, seed 3) defocus leakage
    kNN R² 0.038 at β 1, 0.18 at 0.3, 0.26 at 0.1, 0.30 deterministic (docs/benchmarks.md)."""

    kl_warmup: int = 10  # not in the paper (issue 10); the usual cure of posterior collapse
    """Epochs at β = --kl-weight / 10 before β rises linearly to --kl-weight over as many
    more (0: constant β). The decoder first learns to use z, then the full β squeezes out
    what it does not need: at β 1 from the first epoch, or rising from the first epoch over
    10, PR-LBD's hinge collapsed (z std 0.03, abs(ρ) 0.01-0.05)."""

    # --- losses (Methods, Eqs. 3-12) --------------------------------------------------------
    data_loss: DataLoss = "mse"  # paper: MSE by default, correlation as an alternative
    """Image comparison."""
    l1_weight: float = 1.0  # paper Eq. 7: λ1 = 1
    """λ1, L1 norm of V (denoising)."""
    negativity_weight: float = 1.0  # paper Eq. 8: λ2 = 1
    """λ2, L1 norm of the negative part of V."""
    tv_l1_weight: float = 0.1  # paper Eq. 9: λ3 = 0.1
    """λ3, L1 norm of the spatial gradient of V."""
    tv_l2_weight: float = 0.1  # paper Eq. 9: λ4 = 0.1
    """λ4, squared L2 norm of the spatial gradient of V."""
    focus_stats_weight: float = 10.0  # paper Eq. 12 gives no value; original code uses 10
    """λ5, Eq. 12 statistics of V inside the focus mask vs the reference (needs --ref, --mask)."""
    multires: tuple[int, ...] = (1, 2)  # paper: full (R) and half (2R) resolution suffice
    """Downsampling factors of the multiresolution loss (Eq. 10)."""
    pose_decoupling: float = 0.0  # paper: no value; Flexutils 1; Scipion reportedly 0.001
    """λp, pose disentanglement (Eq. 3); 0 (default) turns it off and builds no clean-image
    encoder (2.7-3.5x faster per image). At SNR 0.1 a weight of 1 collapsed z to a constant
    (the terms' trivial minimum) in every run measured; with the variational latent, 0.001
    did not lower the (nil) pose leakage nor the defocus leakage (docs/benchmarks.md)."""
    ctf_decoupling: float = 0.0  # paper: no value; Flexutils 1; Scipion reportedly 0.001
    """λc, CTF disentanglement (Eq. 4); 0 (default) turns it off. With the variational
    latent, λc 0.01 or 0.001 left AdK's defocus leakage at 0.33 (0.26 without; --kl-weight
    is what removes it) for 3x the time per image (docs/benchmarks.md)."""

    # --- optimisation ----------------------------------------------------------------------
    epochs: int = 30
    """Passes over the particles (paper: 50 on ~1e5 particles)."""
    batch_size: int = 16
    """Particles per step (paper: 8)."""
    lr: float = 3e-4
    """Adam learning rate (paper: 1e-5, set for ~1e5 particles x 50 epochs on a GPU)."""
    lr_final_fraction: float = 0.05  # not in the paper (constant lr there)
    """Cosine decay of the learning rate to this fraction of --lr by the last epoch."""
    grad_clip: float = 1.0  # not in the paper
    """Clip the gradient's global norm to this value (log.jsonl records the norm before
    clipping); stops the occasional spike of the hypernetwork from undoing a landscape."""
    seed: int = 0
    """Seed for weights, shuffling and decoupling permutations."""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda or cuda:N."""
    amp: bool = True
    """Mixed precision (bfloat16 autocast) on CUDA; ignored on CPU."""
    refine_latent_steps: int = 20  # not in the paper (issue 10)
    """After training, each particle's z is refined from the encoder's by this many Adam
    steps on its own posterior: its data term under the trained decoder (scaled by the last
    epoch's) plus a Gaussian prior fitted to the encoder's latent (RUN/latent_prior.npz);
    0 keeps the encoder's z (the paper). The encoder's amortised guess is a compromise over
    all particles; at SNR 0.1 (two proteins, 5 seeds) refining raised the discrete states' ARI
    and kNN accuracy, AdK's rare-state recall (seeds 1-2: 0.71-0.81 → 0.91-0.93)
    and lowered the defocus leakage (docs/benchmarks.md), for about a tenth of the training
    time. ``encode`` refines the same way."""
    snapshot_every: int = 5  # not in the paper (cryoDRGN keeps z every epoch)
    """Keep the latent (float16) and the decoder's weights every N epochs and after the last,
    in RUN/snapshots, for `analyze --epoch` and `convergence`; 0 keeps none. Snapshots hold
    the encoder's latent (not refined), so that every epoch's is alike."""

    extra: dict[str, Any] = field(default_factory=dict)
    """Resolved values recorded at run time (normalisation, pixel sizes, version...)."""

    @property
    def decoder_width(self) -> int:
        return self.hidden_width or self.zdim

    def network(self, box: int, **fixed: Any) -> NetworkConfig:
        """The architecture these options build at a training box of ``box`` px; ``fixed``
        overrides NetworkConfig's constants (a run recorded before config.json stored them
        passes the values it was built with)."""
        return NetworkConfig(
            box_size=box, zdim=self.zdim, encoder=self.encoder, hidden_width=self.decoder_width,
            activation=self.activation, omega0=self.omega0, refine_pose=self.refine_pose,
            decoupling=self.pose_decoupling > 0 or self.ctf_decoupling > 0,
            latent_norm=self.latent_norm, variational=self.kl_weight > 0, **fixed,
        ).validate()

    def validate(self) -> TrainConfig:
        """Reject impossible combinations with a message the user can act on."""

        def bad(msg: str) -> None:
            raise UserInputError(msg)

        if not self.particles:
            bad("no particle file given")
        if self.zdim < 1:
            bad(f"--zdim must be >= 1, got {self.zdim}")
        if self.box is not None and (self.box < 16 or self.box % 2):
            bad(f"--box must be an even number of pixels >= 16, got {self.box}")
        if self.epochs < 1 or self.batch_size < 2:
            bad("--epochs must be >= 1 and --batch-size >= 2 (decoupling shuffles in a batch)")
        if not 0 < self.lr_final_fraction <= 1:
            bad(f"--lr-final-fraction must be in (0, 1], got {self.lr_final_fraction}")
        if not self.grad_clip > 0:
            bad(f"--grad-clip must be positive, got {self.grad_clip}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                bad(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        if self.kl_weight < 0:
            bad(f"--kl-weight must be >= 0 (0 = deterministic latent), got {self.kl_weight}")
        if self.kl_warmup < 0:
            bad(f"--kl-warmup must be >= 0 epochs (0 = constant β), got {self.kl_warmup}")
        if self.workers < 1:
            bad(f"--workers must be >= 1, got {self.workers}")
        if self.refine_latent_steps < 0:
            bad("--refine-latent-steps must be >= 0 (0 = the encoder's latent), got "
                f"{self.refine_latent_steps}")
        if self.snapshot_every < 0:
            bad(f"--snapshot-every must be >= 0 (0 = no snapshots), got {self.snapshot_every}")
        if self.lr <= 0:
            bad(f"--lr must be positive, got {self.lr}")
        if not self.multires or any(f < 1 for f in self.multires) or self.multires[0] != 1:
            bad(f"--multires must start at 1 (full resolution), got {self.multires}")
        for name in ("l1_weight", "negativity_weight", "tv_l1_weight", "tv_l2_weight",
                     "focus_stats_weight", "pose_decoupling", "ctf_decoupling"):
            if getattr(self, name) < 0:
                bad(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            if typing.get_origin(hints[f.name]) is Literal:
                check_choice(_option(f.name), getattr(self, f.name), hints[f.name])
        if self.ctf_decoupling > 0 and self.ctf_mode == "none":
            bad("--ctf-decoupling needs a CTF: use --ctf-mode apply, or --ctf-decoupling 0")
        return self

    # --- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**LEGACY_OPTIONS, **{k: v for k, v in data.items() if k in known}}
        if "multires" in values:
            values["multires"] = tuple(values["multires"])
        return cls(**values)


def _option(name: str) -> str:
    return "particle file" if name == "particles" else f"--{name.replace('_', '-')}"


def resume_changes(stored: TrainConfig, requested: TrainConfig,
                   allowed: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """The options ``requested`` changes from a run's ``stored`` configuration, checked.

    Returns ``{name: (stored value, requested value)}`` for every difference. Raises
    :class:`UserInputError` for a difference outside :data:`RESUME_FREE` and ``allowed``:
    resuming with another particle file, latent size or learning rate would silently train a
    different run than the one its folder records.
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)} - {"extra"}
    unknown = sorted(set(allowed) - known)
    if unknown:
        raise UserInputError(f"--allow-change {','.join(unknown)}: not an option of train "
                             f"(expected names such as lr, batch_size, particles)")
    changes = {name: (getattr(stored, name), getattr(requested, name)) for name in sorted(known)
               if getattr(stored, name) != getattr(requested, name)}

    def detail(names: list[str]) -> str:
        return "; ".join(f"{_option(n)} {changes[n][1]} (the run has {changes[n][0]})"
                         for n in names)

    fixed = [name for name in changes if name in RESUME_FIXED]
    if fixed:
        raise UserInputError(f"--resume with different options: {detail(fixed)}. These define "
                             "the trained model and cannot change: drop them, or start a new "
                             "run in another folder")
    refused = [name for name in changes if name not in RESUME_FREE and name not in allowed]
    if refused:
        raise UserInputError(
            f"--resume with different options: {detail(refused)}. A resumed run keeps its own "
            f"options: drop these, or allow the change with --allow-change {','.join(refused)}")
    return changes


def field_help() -> dict[str, str]:
    """Each TrainConfig field → its docstring plus the source comment citing its default.

    The command line builds ``hetsiren train --help`` from this, so the help text, the
    defaults and the paper's values live in one place (this module).
    """
    source = inspect.getsource(TrainConfig)
    lines = source.splitlines()
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef)
    body = cls.body
    helps: dict[str, str] = {}
    for node, after in zip(body, body[1:] + [None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = ""
        if (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            text = " ".join(after.value.value.split())
        _, _, comment = lines[node.lineno - 1].partition("  # ")
        if comment:
            text = f"{text} [{comment.strip()}]"
        helps[node.target.id] = text
    return helps
