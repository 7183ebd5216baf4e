"""Pixels to logits, and uniform dequantisation."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Bijector


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation ``(x*255 + u) / 256`` with ``u ~ U[0, 1)``.

    ``x`` holds pixels in [0, 1] (uint8 values divided by 255); the result lies in [0, 1).
    """
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x * 255.0 + u) / 256.0


class ToLogits(Bijector):
    """``x -> logit(alpha/2 + (1 - alpha) x)`` for pixels ``x`` in [0, 1].

    The log-det of the map is included, so densities stay on the [0, 1] pixel scale.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"ToLogits alpha must lie in (0, 1), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, context=None):
        if not torch.isfinite(x).all():
            raise ValueError("ToLogits: input contains NaN or inf")
        lo, hi = x.min().item(), x.max().item()
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"ToLogits: pixels must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]"
            )
        p = self.alpha / 2 + (1 - self.alpha) * x
        z = torch.log(p) - torch.log1p(-p)
        ld = math.log(1 - self.alpha) - torch.log(p) - torch.log1p(-p)
        return z, ld.reshape(x.shape[0], -1).sum(1)

    def inverse(self, z, context=None):
        p = torch.sigmoid(z)
        x = (p - self.alpha / 2) / (1 - self.alpha)
        # log p + log(1-p) = -softplus(-z) - softplus(z)
        ld = -math.log(1 - self.alpha) - F.softplus(-z) - F.softplus(z)
        return x, ld.reshape(z.shape[0], -1).sum(1)
