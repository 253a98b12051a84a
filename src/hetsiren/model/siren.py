"""SIREN layers and the meta-sinusoidal layer of the HetSIREN decoder.

SIREN (Sitzmann et al., NeurIPS 2020) layers compute ``sin(ω0 · (W x + b))``. Their
initialisation keeps the pre-activations ``ω0 · W x`` close to N(0, 1) through depth:

- first layer: ``W ~ U(-1/n, 1/n)`` (n = fan-in) so that ``sin(ω0 W x)`` with ω0 = 30 spans
  several periods over inputs in [-1, 1];
- hidden layers: ``W ~ U(-√(6/n)/ω0, √(6/n)/ω0)``: with arcsine-distributed inputs (the
  outputs of a sine layer, variance 1/2), ``Var(ω0 W x) = n · (6/n)/3 · 1/2 = 1``.

The meta-sinusoidal layer (paper, "Sinusoidal Representation Network (SIREN)" and
Supplementary Fig. 3) is a sine layer whose weights are not parameters but the output of a
small ReLU network (the hypernetwork) evaluated on the layer's own input::

    [W(x), b(x)] = H(x),   y = sin(ω0 · (W(x) x + b(x)))

so every sample gets its own weight matrix. As in Flexutils-Toolkit (``MetaDense``, where the
hypernetwork is called on the layer input) the hypernetwork's input is the layer's input: z
for the first layer, the previous hidden state for the others.

Initialisation of the meta layer (hypernetwork initialisation, Sitzmann et al.'s meta-SIREN
code and ``tf_siren``'s ``HyperNetBlock``, which scale the output layer down by 100): the
hypernetwork's output layer starts with a bias drawn from the SIREN distribution of the sine
layer it feeds, and He-normal weights scaled so that, for unit-RMS hypernetwork features, the
input-dependent part of each generated weight has ``HYPER_MODULATION`` times the spread of the
SIREN part. A fixed factor of 1/100 is not enough here: the hidden SIREN weights scale as
``1/(ω0·√n)``, so at the decoder's widths (n = 10) a 1/100 head would generate weights larger
than the SIREN part itself. At initialisation the generated weights are thus a
SIREN-initialised matrix plus a small input-dependent part, so the layer starts as a
well-initialised SIREN layer and the hypernetwork learns how to modulate it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "HYPER_MODULATION",
    "MetaSineLayer",
    "SIREN_OMEGA0",
    "SineLayer",
    "siren_bias_bound",
    "siren_weight_bound",
]

SIREN_OMEGA0 = 30.0
"""ω0 of Sitzmann et al. (Sec. 3.2) and of the original HetSIREN decoder's first layer."""

_SIREN_C = 6.0
"""Sitzmann et al.'s c in the hidden bound √(c/n)/ω0: c = 6 gives unit-variance pre-activations."""

HYPER_MODULATION = 0.1
"""Spread of the input-dependent part of the generated weights relative to their SIREN part at
initialisation (see the module docstring)."""


def siren_weight_bound(fan_in: int, omega0: float, is_first: bool) -> float:
    """Half-width of the uniform SIREN weight distribution (Sitzmann et al., Sec. 3.2).

    Args:
        fan_in: n, number of inputs of the layer.
        omega0: ω0 of the layer's ``sin(ω0 ·)``.
        is_first: first layer of the network (inputs in [-1, 1]) or a hidden layer.
    """
    return 1.0 / fan_in if is_first else math.sqrt(_SIREN_C / fan_in) / omega0


def siren_bias_bound(fan_in: int) -> float:
    """Half-width of the uniform bias distribution: PyTorch's ``nn.Linear`` default 1/√n, which
    Sitzmann et al.'s reference ``SineLayer`` keeps (it only re-initialises the weights)."""
    return 1.0 / math.sqrt(fan_in)


class SineLayer(nn.Module):
    """``(..., in)`` → ``(..., out)``: ``sin(ω0 · (W x + b))`` with SIREN initialisation."""

    def __init__(self, in_features: int, out_features: int, omega0: float = SIREN_OMEGA0,
                 is_first: bool = False):
        """
        Args:
            in_features: n, input width.
            out_features: output width.
            omega0: ω0.
            is_first: use the first-layer bound 1/n instead of √(6/n)/ω0.
        """
        super().__init__()
        self.omega0 = float(omega0)
        self.is_first = is_first
        self.linear = nn.Linear(in_features, out_features)
        bound = siren_weight_bound(in_features, omega0, is_first)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            self.linear.bias.uniform_(-siren_bias_bound(in_features),
                                      siren_bias_bound(in_features))

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` → ``(..., out)`` ω0 · (W x + b), the argument of the sine."""
        return self.omega0 * self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.preactivation(x))


class MetaSineLayer(nn.Module):
    """``(b, in)`` → ``(b, out)``: a sine layer whose weights a ReLU hypernetwork emits.

    ``y = sin(ω0 · (W(x) x + b(x)))`` with ``[W(x), b(x)] = H(x)`` (Supplementary Fig. 3).
    ``H`` is ``n_hyper_layers`` ReLU layers of ``hyper_width`` units ("hyper-neurons") and a
    linear output layer with ``out·in + out`` units. The per-sample matrices are applied with
    one batched matmul; they cost ``b · out · in`` numbers, small at the decoder's widths.
    """

    def __init__(self, in_features: int, out_features: int, hyper_width: int,
                 omega0: float = SIREN_OMEGA0, is_first: bool = False, n_hyper_layers: int = 1):
        """
        Args:
            in_features: n, input width (also the hypernetwork's input width).
            out_features: output width.
            hyper_width: width of the hypernetwork's ReLU layers.
            omega0: ω0 of the sine.
            is_first: SIREN first-layer initialisation for the generated weights.
            n_hyper_layers: number of ReLU layers in the hypernetwork (>= 1).
        """
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.omega0 = float(omega0)
        self.is_first = is_first
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(n_hyper_layers):
            linear = nn.Linear(width, hyper_width)
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            layers += [linear, nn.ReLU()]
            width = hyper_width
        self.hyper = nn.Sequential(*layers)
        self.head = nn.Linear(hyper_width, out_features * in_features + out_features)
        w_bound = siren_weight_bound(in_features, omega0, is_first)
        b_bound = siren_bias_bound(in_features)
        n_weights = out_features * in_features
        with torch.no_grad():
            nn.init.kaiming_normal_(self.head.weight, nonlinearity="relu")
            # He-normal rows give outputs of RMS √2 for unit-RMS features; a uniform bound c
            # has RMS c/√3.
            self.head.weight[:n_weights].mul_(HYPER_MODULATION * w_bound / math.sqrt(6.0))
            self.head.weight[n_weights:].mul_(HYPER_MODULATION * b_bound / math.sqrt(6.0))
            self.head.bias[:n_weights].uniform_(-w_bound, w_bound)
            self.head.bias[n_weights:].uniform_(-b_bound, b_bound)

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, in)`` → ``(b, out, in)`` weights and ``(b, out)`` biases for each sample."""
        n_weights = self.out_features * self.in_features
        params = self.head(self.hyper(x))  # [b, out*in + out]
        weight = params[:, :n_weights].reshape(-1, self.out_features, self.in_features)
        return weight, params[:, n_weights:]

    def preactivation(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, in)`` → ``(b, out)`` ω0 · (W(x) x + b(x))."""
        weight, bias = self.generate(x)
        # [b, out, in] @ [b, in, 1] -> [b, out]
        wx = torch.bmm(weight, x.unsqueeze(-1)).squeeze(-1)
        return self.omega0 * (wx + bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.preactivation(x))
