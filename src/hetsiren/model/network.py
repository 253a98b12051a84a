"""The HetSIREN networks: encoders, shared heads and the ΔV decoder (Supplementary Figs. 4, 6).

``HetSIRENNet`` holds
- the experimental encoder (images → z, and Δangles, Δshifts when pose refinement is on);
- with decoupling, a pose-decoupling encoder for clean projections (I_t, I_p,t) and a
  CTF-decoupling encoder for CTF-corrupted projections (I_c, I_p,c), Eqs. 3-4;
- the "conformational latent layer", one linear head shared by all encoders, so that the
  latent vectors z, z_t, z_p,t, z_c and z_p,c live in one space (on layer-normalised branch
  features, ``NetworkConfig.feature_norm``; not in the paper);
- the decoder z → ΔV (``hetsiren.model.decoder``).

Everything it contains follows from ``NetworkConfig`` and ``n_voxels``, so a run rebuilds it
from its config and loads ``model.pt`` with ``weights_only=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hetsiren.errors import UserInputError
from hetsiren.model.decoder import Activation, Decoder
from hetsiren.model.encoders import BRANCH_WIDTH, Encoder, EncoderKind

__all__ = ["HetSIRENNet", "NetworkConfig", "build_network"]

_HEAD_GAIN = 1e-2
"""Scale of the default weights of the Δangles/Δshifts and log σ² heads: their outputs start
near a fixed value (no correction: the input poses are a consensus refinement's; σ at its
initial value) but not exactly at it, so their branches get gradients from the first step."""


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the HetSIREN networks, stored whole in a run's ``config.json``.

    The options ``hetsiren train`` exposes (zdim ... decoupling) have no default here: their
    defaults, with the paper's values, are ``TrainConfig``'s, and ``TrainConfig.network``
    builds this record. The rest are fixed architecture constants with the paper's values
    where it gives one; a run rebuilds from the values it stored, so changing one here does not
    change an existing checkpoint.
    """

    box_size: int
    """D, side in pixels of the images the network is trained on."""
    zdim: int
    """Latent dimension."""
    encoder: EncoderKind
    """Encoder architecture: conv (residual, Supplementary Fig. 5) or mlp (3 x 1024)."""
    hidden_width: int | None
    """Width of the decoder's hidden layers; None = zdim."""
    activation: Activation
    """Decoder activation: siren (meta-sinusoidal layers) or relu (plain MLP)."""
    omega0: float
    """ω0 of the decoder's sine layers."""
    refine_pose: bool
    """Build the Δangles and Δshifts heads of the experimental encoder."""
    decoupling: bool
    """Build the pose- and CTF-decoupling encoders (Eqs. 3-4)."""
    working_size: int = 64  # original code: encoders resample images to 64 x 64
    """Side the encoders resample images to (any D works with the same weights)."""
    n_hidden: int = 3  # paper: "the number of hidden layers is fixed to three"
    """Residual hidden layers of the decoder (after the input layer)."""
    hyper_width: int | None = None  # paper: hyper-neurons = latent dimension
    """Width of each meta layer's ReLU hypernetwork; None = zdim."""
    n_hyper_layers: int = 1  # original code: one ReLU layer per hypernetwork
    """ReLU layers per hypernetwork (paper: more raise capacity, time and memory)."""
    max_delta_angle: float = math.radians(10.0)  # not in the paper; original is unbounded
    """Bound of each Δangle in radians (tanh-scaled): corrections, not a new search."""
    max_delta_shift_fraction: float = 0.05  # not in the paper; original is unbounded
    """Bound of each Δshift as a fraction of the box (tanh-scaled)."""
    delta_init_std: float = 1e-3  # not in the paper; see Decoder: ΔV starts small
    """Per-voxel standard deviation of ΔV at initialisation, in the units of V."""
    latent_norm: bool = False  # not in the paper (issue 10)
    """Standardise z over the batch (one mean per dimension, one scale for all): see
    ``LatentNorm``."""
    feature_norm: bool = True  # not in the paper (issue 10)
    """Layer-normalise the latent branch's features before the latent and log σ² heads: the
    encoder's 13 ReLU layers have no normalisation, so a small relative step of Adam in each
    compounds into a large change of the features' scale, and of z's; through the decoder's
    ω0 · z phase that made z swing 0.1-5 and the gradient norm 1e4 within an epoch (the
    demo's three states at SNR 1, width 64, variational). Runs stored before this option
    read it as False."""
    variational: bool = False  # not in the paper (issue 10); cryoDRGN's latent
    """The latent layer also gives a log-variance per dimension: training decodes a sample
    z = μ + σ ε and pays the KL divergence from N(0, 1) (``train.losses.kl_loss``); encoding
    returns μ."""

    @property
    def width(self) -> int:
        """Resolved decoder hidden width."""
        return self.hidden_width or self.zdim

    @property
    def hyper(self) -> int:
        """Resolved hypernetwork width."""
        return self.hyper_width or self.zdim

    @property
    def max_delta_shift_px(self) -> float:
        """Bound of each Δshift in pixels."""
        return self.max_delta_shift_fraction * self.box_size

    def validate(self) -> NetworkConfig:
        """Reject impossible combinations with a message the user can act on."""

        def bad(msg: str) -> None:
            raise UserInputError(msg)

        if self.box_size < 2:
            bad(f"box size must be >= 2 pixels, got {self.box_size}")
        if self.working_size < 16:
            bad(f"encoder working size must be >= 16 pixels, got {self.working_size}")
        if self.zdim < 1:
            bad(f"zdim must be >= 1, got {self.zdim}")
        if self.encoder not in ("conv", "mlp"):
            bad(f"encoder must be 'conv' or 'mlp', got {self.encoder!r}")
        if self.activation not in ("siren", "relu"):
            bad(f"activation must be 'siren' or 'relu', got {self.activation!r}")
        for name in ("hidden_width", "hyper_width"):
            value = getattr(self, name)
            if value is not None and value < 1:
                bad(f"{name} must be >= 1 (or None for zdim), got {value}")
        if self.n_hidden < 0 or self.n_hyper_layers < 1:
            bad(f"need n_hidden >= 0 and n_hyper_layers >= 1, got {self.n_hidden} and "
                f"{self.n_hyper_layers}")
        if self.activation == "relu" and (self.hyper_width is not None
                                          or self.n_hyper_layers != 1):
            bad("hyper_width / n_hyper_layers describe the meta-sinusoidal layers; they have "
                "no effect with activation 'relu': leave them at their defaults")
        if not self.omega0 > 0:
            bad(f"omega0 must be positive, got {self.omega0}")
        if self.refine_pose and not (0 < self.max_delta_angle <= math.pi / 2):
            bad(f"max_delta_angle must be in (0, π/2] radians, got {self.max_delta_angle}")
        if self.refine_pose and not (0 < self.max_delta_shift_fraction <= 0.5):
            bad(f"max_delta_shift_fraction must be in (0, 0.5], got "
                f"{self.max_delta_shift_fraction}")
        if not self.delta_init_std > 0:
            bad(f"delta_init_std must be positive, got {self.delta_init_std}")
        return self


class HetSIRENNet(nn.Module):
    """Encoders + shared heads + decoder. See the module docstring."""

    def __init__(self, config: NetworkConfig, n_voxels: int):
        """
        Args:
            config: architecture (validated here).
            n_voxels: number of decoder voxels, the length of ΔV.
        """
        super().__init__()
        self.config = config.validate()
        c = self.config
        if n_voxels < 1:
            raise UserInputError(f"the decoder mask has no voxels (n_voxels = {n_voxels})")
        self.encoder = Encoder(c.encoder, c.working_size, with_pose=c.refine_pose)
        self.encoder_clean = Encoder(c.encoder, c.working_size, False) if c.decoupling else None
        self.encoder_ctf = Encoder(c.encoder, c.working_size, False) if c.decoupling else None
        self.feature_norm = (nn.LayerNorm(BRANCH_WIDTH, elementwise_affine=False)
                             if c.feature_norm else None)
        self.latent_head = nn.Linear(BRANCH_WIDTH, c.zdim)
        self.logvar_head = _logvar_head(c.zdim) if c.variational else None
        self.latent_norm = LatentNorm(c.zdim) if c.latent_norm else None
        self.euler_head = _pose_head(3) if c.refine_pose else None
        self.shift_head = _pose_head(2) if c.refine_pose else None
        self.decoder = Decoder(c.zdim, n_voxels, c.width, c.n_hidden, c.hyper, c.omega0,
                               c.activation, c.n_hyper_layers, c.delta_init_std)

    @property
    def n_voxels(self) -> int:
        return self.decoder.n_voxels

    def encode(self, images: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Experimental encoder: z (the posterior mean of a variational latent), Δangles,
        Δshifts; see :meth:`encode_posterior`."""
        z, _, delta_euler, delta_shift_px = self.encode_posterior(images)
        return z, delta_euler, delta_shift_px

    def encode_posterior(self, images: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor,
                                    torch.Tensor]:
        """Experimental encoder, with the latent's log-variance.

        Args:
            images: ``(b, D, D)`` particle images (any D; Wiener-filtered in ``wiener`` mode).

        Returns:
            ``(b, zdim)`` latent z (μ of a variational latent); ``(b, zdim)`` log σ² of a
            variational latent, else None; ``(b, 3)`` Δangles in radians, each in
            ±``max_delta_angle`` (for ``refine_pose``); ``(b, 2)`` Δshifts in pixels of the
            training box, each in ±``max_delta_shift_px``. Without pose refinement the
            corrections are zeros.
        """
        features, euler, shift = self.encoder(images)
        latent = self._normalized(features)
        z = self._head(latent, update=True)
        logvar = None if self.logvar_head is None else _bounded_logvar(self.logvar_head(latent))
        if euler is None or shift is None or self.euler_head is None or self.shift_head is None:
            return z, logvar, z.new_zeros(len(z), 3), z.new_zeros(len(z), 2)
        c = self.config
        delta_euler = c.max_delta_angle * torch.tanh(self.euler_head(euler))
        delta_shift_px = c.max_delta_shift_px * torch.tanh(self.shift_head(shift))
        return z, logvar, delta_euler, delta_shift_px

    def encode_clean(self, images: torch.Tensor) -> torch.Tensor:
        """Pose-decoupling encoder: ``(b, D, D)`` clean projections (I_t, I_p,t) → ``(b, zdim)``
        z through the shared latent layer (Eq. 3)."""
        if self.encoder_clean is None:
            raise RuntimeError("this network was built with decoupling=False")
        return self._latent(self.encoder_clean(images)[0])

    def encode_ctf(self, images: torch.Tensor) -> torch.Tensor:
        """CTF-decoupling encoder: ``(b, D, D)`` CTF-corrupted projections (I_c, I_p,c) →
        ``(b, zdim)`` z through the shared latent layer (Eq. 4)."""
        if self.encoder_ctf is None:
            raise RuntimeError("this network was built with decoupling=False")
        return self._latent(self.encoder_ctf(images)[0])

    def _latent(self, features: torch.Tensor) -> torch.Tensor:
        """The shared conformational latent layer: a decoupling encoder's branch features →
        z."""
        return self._head(self._normalized(features))

    def _normalized(self, features: torch.Tensor) -> torch.Tensor:
        """Branch features as the latent and log σ² heads see them (``feature_norm``)."""
        return features if self.feature_norm is None else self.feature_norm(features)

    def _head(self, latent: torch.Tensor, update: bool = False) -> torch.Tensor:
        """Normalised branch features → z (standardised with ``latent_norm``; only the
        experimental encoder's batches update its running statistics, which encoding
        uses)."""
        z = self.latent_head(latent)
        return z if self.latent_norm is None else self.latent_norm(z, update)

    @torch.no_grad()
    def calibrate_latent(self, images: torch.Tensor, std: float) -> None:
        """Rescale the latent layer so that the experimental encoder's z over ``images`` (a
        ``(b, D, D)`` sample of the training set) is centred with spread ``std`` (RMS over
        particles and dimensions, so the dimensions keep their proportions).

        A fresh encoder's z spread is set by the data and the seed (0.13-1.1 measured on
        realistic and phantom sets, issue 10); the decoder's first sine layer turns ω0 · z
        into phase, so every run starts in its own regime. Calibrated, every run starts in the
        same one. No-op with ``latent_norm`` (z is standardised anyway).
        """
        if self.latent_norm is not None:
            return
        z = self.latent_head(self._normalized(self.encoder(images)[0]))
        mean = z.mean(0)
        rms = (z - mean).pow(2).mean().sqrt()
        if not torch.isfinite(rms) or rms <= 0:
            return
        gain = std / rms
        head = self.latent_head
        head.bias.sub_(mean).mul_(gain)
        head.weight.mul_(gain)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` latent → ``(b, n_voxels)`` ΔV on the decoder voxels."""
        return self.decoder(z)

    def forward(self, images: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(b, D, D)`` images → ΔV ``(b, n_voxels)``, z, Δangles (rad), Δshifts (px)."""
        z, delta_euler, delta_shift_px = self.encode(images)
        return self.decode(z), z, delta_euler, delta_shift_px


class LatentNorm(nn.Module):
    """z standardised over the batch: ``(z - mean) / rms``, with one mean per dimension and
    one scale for all dimensions (the RMS of the centred z over batch and dimensions).

    The encoder's raw output scale is then irrelevant to the decoder and to the decoupling
    terms: z can neither shrink to a constant (the trivial minimum of Eqs. 3-4) nor grow
    until the sine layers see it as noise, both measured without it (issue 10). One scale
    for all dimensions keeps their proportions, so unused dimensions stay small. Training
    uses the batch's statistics (with their gradient, as batch normalisation); encoding uses
    running averages of them.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, zdim: int, momentum: float = 0.1, eps: float = 1e-8):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(zdim))
        self.register_buffer("running_var", torch.ones(()))

    def forward(self, z: torch.Tensor, update: bool = False) -> torch.Tensor:
        if self.training and len(z) > 1:
            mean = z.mean(0)
            var = (z - mean).pow(2).mean()
            if update:
                with torch.no_grad():
                    self.running_mean.lerp_(mean.detach().float(), self.momentum)
                    self.running_var.lerp_(var.detach().float(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (z - mean) * torch.rsqrt(var + self.eps)


def build_network(config: NetworkConfig, n_voxels: int) -> HetSIRENNet:
    """Validate ``config`` and build the networks for ``n_voxels`` decoder voxels."""
    return HetSIRENNet(config, n_voxels)


_LOGVAR_INIT = math.log(0.1**2)
"""Initial log σ² of a variational latent: σ = 0.1, below the spread of a fresh encoder's z
(0.1-0.8 measured, issue 10), so that the decoder sees the encoder's signal from the first
step and the KL term decides how much noise each dimension can afford."""


_LOGVAR_RANGE = 6.0
"""log σ² stays within ``_LOGVAR_INIT`` ± this (σ 0.005-2; the prior's σ is 1), through a
tanh: a runaway encoder cannot overflow exp(log σ²) into an infinite KL term (measured once
on the CI phantom before the bound: KL 4e16 in epoch 3)."""


def _bounded_logvar(raw: torch.Tensor) -> torch.Tensor:
    return _LOGVAR_INIT + _LOGVAR_RANGE * torch.tanh((raw - _LOGVAR_INIT) / _LOGVAR_RANGE)


def _logvar_head(zdim: int) -> nn.Linear:
    head = nn.Linear(BRANCH_WIDTH, zdim)
    with torch.no_grad():
        head.weight.mul_(_HEAD_GAIN)
        head.bias.fill_(_LOGVAR_INIT)
    return head


def _pose_head(n_out: int) -> nn.Linear:
    head = nn.Linear(BRANCH_WIDTH, n_out)
    with torch.no_grad():
        head.weight.mul_(_HEAD_GAIN)
        head.bias.zero_()
    return head
