"""The ΔV decoder: latent z → one value per decoder voxel (Methods, "HetSIREN network
architecture"; Supplementary Figs. 3-4).

Shape (defaults in brackets)::

    z (b, zdim) → meta-sine, ω0 = 30, first-layer init        (b, width)     [width = zdim]
                → n_hidden × [h ← h + meta-sine(h)]          (b, width)     [n_hidden = 3]
                → linear                                     (b, n_voxels)  = ΔV

The paper: "a series of hidden meta-sinusoidal residual layers followed by a dense layer with
linear activation that recovers ΔV ... the number of hidden layers is fixed to three, with a
total number of neurons and hyper-neurons equal to the latent space dimension". The input
layer that lifts z to the hidden width is not residual (its widths may differ), as in
Flexutils-Toolkit, whose decoder has one input meta layer and three residual ones.

``activation="relu"`` builds the same shape with plain ReLU layers, for the ablation of
Supplementary Fig. 10.

The output layer is a plain ``nn.Linear(width, n_voxels)``: ``width × n_voxels`` weights
(11 M for a 128 px box and width 10) and nothing per voxel is stored for the backward pass
beyond the ``(b, width)`` input, so it scales to ~1e6 voxels. It starts small (see
``Decoder.__init__``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from hetsiren.model.siren import MetaSineLayer

__all__ = ["Activation", "Decoder"]

Activation = Literal["siren", "relu"]


class Decoder(nn.Module):
    """``(b, zdim)`` latent → ``(b, n_voxels)`` ΔV."""

    def __init__(self, zdim: int, n_voxels: int, width: int, n_hidden: int, hyper_width: int,
                 omega0: float, activation: Activation = "siren", n_hyper_layers: int = 1,
                 delta_init_std: float = 1e-3):
        """
        Args:
            zdim: latent dimension.
            n_voxels: number of decoder voxels (values of ΔV).
            width: width of the hidden layers.
            n_hidden: number of residual hidden layers.
            hyper_width: width of each meta layer's ReLU hypernetwork (siren only).
            omega0: ω0 of the sine layers.
            activation: ``siren`` (meta-sinusoidal layers) or ``relu`` (plain MLP).
            n_hyper_layers: ReLU layers per hypernetwork.
            delta_init_std: target per-voxel standard deviation of ΔV at initialisation.
        """
        super().__init__()
        self.activation = activation
        if activation == "siren":
            self.first: nn.Module = MetaSineLayer(zdim, width, hyper_width, omega0,
                                                  is_first=True, n_hyper_layers=n_hyper_layers)
            self.hidden = nn.ModuleList(
                MetaSineLayer(width, width, hyper_width, omega0, n_hyper_layers=n_hyper_layers)
                for _ in range(n_hidden))
        elif activation == "relu":
            self.first = _relu_layer(zdim, width)
            self.hidden = nn.ModuleList(_relu_layer(width, width) for _ in range(n_hidden))
        else:
            raise ValueError(f"activation must be 'siren' or 'relu', got {activation!r}")
        self.out = nn.Linear(width, n_voxels)
        # ΔV starts small: V = V0 + ΔV must start at the reference map (refinement) or at an
        # empty box (reconstruction), not at width × n_voxels random numbers that the data
        # term, L1 and TV losses would first have to undo. Not zero: a zero output layer
        # would give the hidden layers no gradient on the first step, and Adam's per-parameter
        # normalisation makes the small scale harmless for them. With hidden activations of
        # about unit RMS, U(-a, a) with a = √3 · std / √width gives ΔV a std of about std.
        bound = math.sqrt(3.0) * delta_init_std / math.sqrt(width)
        with torch.no_grad():
            self.out.weight.uniform_(-bound, bound)
            self.out.bias.zero_()

    @property
    def n_voxels(self) -> int:
        return self.out.out_features

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` → ``(b, width)`` last hidden state."""
        h = self.first(z)
        for layer in self.hidden:
            h = h + layer(h)
        return h

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, zdim)`` latent → ``(b, n_voxels)`` ΔV."""
        return self.out(self.features(z))


def _relu_layer(in_features: int, out_features: int) -> nn.Sequential:
    linear = nn.Linear(in_features, out_features)
    nn.init.kaiming_uniform_(linear.weight, nonlinearity="relu")
    return nn.Sequential(linear, nn.ReLU())
