"""Activation normalisation (Glow) with data-dependent initialisation."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..nn import ChannelAffine
from .base import Bijector


class ActNorm(ChannelAffine, Bijector):
    """Per-channel affine map ``z = (x + bias) * exp(log_scale)`` (Glow's activation
    normalisation) as an invertible layer: :class:`scnf.nn.ChannelAffine`'s map and
    data-dependent initialisation, with the log-determinant ``sum(log_scale) * H * W``.

    A channel with zero variance in the initialisation batch raises ``ValueError`` (unless
    ``strict=False``).
    """

    def __init__(self, num_channels: int, strict: bool = True):
        super().__init__(num_channels)
        self.strict = strict

    def _check_std(self, std: torch.Tensor) -> None:
        if self.strict and (std <= 1e-12).any():
            bad = torch.nonzero(std <= 1e-12).flatten().tolist()
            raise ValueError(
                f"ActNorm({self.num_channels}): channel(s) {bad[:10]} have zero variance "
                "in the initialisation batch; cannot initialise the scale"
            )

    def forward(self, x, context=None):
        self._initialise_if_needed(x)
        z = self._affine(x)
        spatial = math.prod(x.shape[2:])
        ld = (self.log_scale.sum() * spatial).expand(x.shape[0])
        return z, ld

    def inverse(self, z, context=None):
        x = z * self._view(torch.exp(-self.log_scale), z) - self._view(self.bias, z)
        spatial = math.prod(z.shape[2:])
        ld = (-self.log_scale.sum() * spatial).expand(z.shape[0])
        return x, ld


class ConditionalActNorm(Bijector):
    """Class-conditional per-feature affine map ``z = (x + bias[y]) * exp(log_scale[y])``.

    Starts as the identity. Placed first in the conditional flow h and initialised from the
    labelled rows' z_f (``scnf.models.flow.class_aware_init``), it makes h a class-mean
    classifier from the first step (SCNF-GLOW's counterpart of initialising the GMM).
    """

    conditional = True

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.bias = nn.Parameter(torch.zeros(num_classes, num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, num_features))

    def _check(self, x, context):
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"ConditionalActNorm({self.num_features}): expected (B, {self.num_features}) input, "
                             f"got shape {tuple(x.shape)}")
        if context is None or context.shape != (x.shape[0],):
            raise ValueError("ConditionalActNorm is conditional: pass context=y with shape (B,)")

    def forward(self, x, context=None):
        self._check(x, context)
        s = self.log_scale[context]
        return (x + self.bias[context]) * s.exp(), s.sum(1)

    def inverse(self, z, context=None):
        self._check(z, context)
        s = self.log_scale[context]
        return z * torch.exp(-s) - self.bias[context], -s.sum(1)

    @torch.no_grad()
    def initialize_from_labelled(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Per-class means of the labelled z (classes without rows keep the overall mean)
        and one pooled within-class standard deviation per feature."""
        overall = z.mean(0)
        centred = torch.empty_like(z)
        for k in range(self.num_classes):
            sel = y == k
            mu = z[sel].mean(0) if sel.any() else overall
            self.bias.data[k] = -mu
            centred[sel] = z[sel] - mu
        std = centred.std(0, unbiased=False).clamp_min(1e-3) if z.shape[0] > 1 else torch.ones_like(overall)
        self.log_scale.data[:] = -torch.log(std)
