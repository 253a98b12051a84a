"""Image encoders: images → feature vectors for the latent and pose heads (Methods, "HetSIREN
network architecture"; Supplementary Figs. 4-5).

Both encoders first resample the ``(b, D, D)`` images to a fixed working size, so that one set
of weights serves any box D, then extract a feature vector:

- ``conv`` (default, Supplementary Fig. 5): strided convolutions with residual blocks, then a
  fully connected block. Layer sizes follow Flexutils-Toolkit's ``convnn`` encoder:
  64 → conv5/2 (4 ch) → conv5/2 (8 ch) → residual block → conv3/2 (16 ch) → residual block
  → conv3/2 (16 ch) → 4×4×16 = 256 → 4 × dense 256.
- ``mlp``: 3 hidden layers of 1024 ReLU units (paper).

On top of the feature vector an ``Encoder`` has one ReLU branch per head (3 × 256 units, as
in the original): the latent branch always, the Δangles and Δshifts branches only for the
experimental encoder when pose refinement is on. The final linear heads live in
``HetSIRENNet`` because the latent one is shared by all encoders (Supplementary Fig. 6).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BRANCH_WIDTH", "ConvBackbone", "Encoder", "EncoderKind", "MLPBackbone",
           "resize_images"]

EncoderKind = Literal["conv", "mlp"]

BRANCH_WIDTH = 256
"""Units of each head branch and of the conv encoder's dense block (original: Dense(256))."""
_BRANCH_DEPTH = 3
"""ReLU layers per head branch (original: three Dense(256) per bottleneck)."""
_CONV_DENSE_DEPTH = 4
"""Dense layers after the conv blocks (original ``convnn``: four Dense(256))."""
_MLP_WIDTH = 1024
"""Hidden units of the MLP encoder (paper: three hidden layers of 1024 neurons)."""
_MLP_DEPTH = 3
# (out channels, kernel) of the four stride-2 convolutions, and whether a residual block
# follows (original convnn: 4/k5, 8/k5 + res, 16/k3 + res, 16/k3).
_CONV_STAGES: tuple[tuple[int, int, bool], ...] = (
    (4, 5, False), (8, 5, True), (16, 3, True), (16, 3, False))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(b, D, D)`` images → ``(b, size, size)``, resampled with an antialiasing bilinear
    filter (identity when D == size). Computed in float32 or wider, also under autocast."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    dtype = torch.promote_types(images.dtype, torch.float32)
    with torch.autocast(images.device.type, enabled=False):
        out = F.interpolate(images.to(dtype).unsqueeze(1), size=(size, size), mode="bilinear",
                            antialias=True, align_corners=False)
    return out.squeeze(1)


class _ResidualBlock(nn.Module):
    """``(b, c, h, w)`` → same: relu(x + conv(relu(conv(x)))), 3×3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ConvBackbone(nn.Module):
    """``(b, D, D)`` images → ``(b, 256)`` features: resize, residual convs, dense block."""

    def __init__(self, working_size: int):
        """
        Args:
            working_size: side the images are resampled to before the convolutions.
        """
        super().__init__()
        self.working_size = working_size
        layers: list[nn.Module] = []
        channels, side = 1, working_size
        for out_channels, kernel, residual in _CONV_STAGES:
            layers += [nn.Conv2d(channels, out_channels, kernel, stride=2, padding=kernel // 2),
                       nn.ReLU()]
            if residual:
                layers.append(_ResidualBlock(out_channels))
            channels, side = out_channels, (side + 1) // 2  # "same" padding, stride 2
        self.convs = nn.Sequential(*layers)
        self.dense = _relu_mlp(channels * side * side, BRANCH_WIDTH, _CONV_DENSE_DEPTH)
        self.out_features = BRANCH_WIDTH

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_images(images, self.working_size).unsqueeze(1)  # [b, 1, w, w]
        return self.dense(self.convs(x).flatten(1))


class MLPBackbone(nn.Module):
    """``(b, D, D)`` images → ``(b, 1024)`` features: resize, flatten, 3 × dense 1024."""

    def __init__(self, working_size: int):
        super().__init__()
        self.working_size = working_size
        self.mlp = _relu_mlp(working_size * working_size, _MLP_WIDTH, _MLP_DEPTH)
        self.out_features = _MLP_WIDTH

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.mlp(resize_images(images, self.working_size).flatten(1))


class Encoder(nn.Module):
    """``(b, D, D)`` images → branch features for the latent and (optionally) pose heads."""

    def __init__(self, kind: EncoderKind, working_size: int, with_pose: bool):
        """
        Args:
            kind: ``conv`` or ``mlp`` backbone.
            working_size: side the images are resampled to.
            with_pose: build the Δangles and Δshifts branches.
        """
        super().__init__()
        if kind == "conv":
            self.backbone: ConvBackbone | MLPBackbone = ConvBackbone(working_size)
        elif kind == "mlp":
            self.backbone = MLPBackbone(working_size)
        else:
            raise ValueError(f"encoder must be 'conv' or 'mlp', got {kind!r}")
        n = self.backbone.out_features
        self.latent_branch = _relu_mlp(n, BRANCH_WIDTH, _BRANCH_DEPTH)
        self.euler_branch = _relu_mlp(n, BRANCH_WIDTH, _BRANCH_DEPTH) if with_pose else None
        self.shift_branch = _relu_mlp(n, BRANCH_WIDTH, _BRANCH_DEPTH) if with_pose else None
        self.apply(_he_init)

    @property
    def with_pose(self) -> bool:
        return self.euler_branch is not None

    def forward(self, images: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """
        Args:
            images: ``(b, D, D)`` images.

        Returns:
            ``(b, 256)`` latent-branch features, and ``(b, 256)`` Δangles- and Δshifts-branch
            features (None without pose branches).
        """
        if images.ndim != 3 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"expected (b, D, D) images, got shape {tuple(images.shape)}")
        features = self.backbone(images)
        if self.euler_branch is None or self.shift_branch is None:
            return self.latent_branch(features), None, None
        return (self.latent_branch(features), self.euler_branch(features),
                self.shift_branch(features))


def _he_init(module: nn.Module) -> None:
    """He-normal weights and zero biases for the ReLU stacks (as Keras' zero biases in the
    original). PyTorch's default (weights of variance 1/(3n), biases U(±1/√n)) loses the input
    through the encoder's ~13 ReLU layers: we measured features whose spread over a batch of
    different images was 1% of their mean, i.e. a latent that hardly depends on the image."""
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _relu_mlp(in_features: int, width: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers)
