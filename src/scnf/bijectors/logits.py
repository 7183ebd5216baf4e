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
    """``x -> logit(alpha/2 + (1 - alpha) x)`` for pixels ``x``.

    The log-det of the map is included, so densities stay on the pixel scale. The map is
    defined on the open interval ``(-a, 1 + a)`` with ``a = alpha / (2 (1 - alpha))`` (0.0263
    for alpha = 0.05): that is the support of the model's density, a little wider than the
    [0, 1) of dequantised pixels, and where the inverse (``sample``) lands. Values outside
    it raise ``ValueError``.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"ToLogits alpha must lie in (0, 1), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, context=None):
        if not torch.compiler.is_compiling():  # compiled (train.compile): the Trainer's checked data
            self._check(x)
        p = self.alpha / 2 + (1 - self.alpha) * x
        z = torch.log(p) - torch.log1p(-p)
        ld = math.log(1 - self.alpha) - torch.log(p) - torch.log1p(-p)
        return z, ld.reshape(x.shape[0], -1).sum(1)

    def _check(self, x):
        if not torch.isfinite(x).all():
            raise ValueError("ToLogits: input contains NaN or inf")
        lo, hi = x.min().item(), x.max().item()
        a = self.alpha / (2 * (1 - self.alpha))
        if lo <= -a or hi >= 1.0 + a:
            raise ValueError(
                f"ToLogits: pixels must lie in [0, 1] (the model's support is ({-a:.4g}, {1 + a:.4g})), "
                f"got values in [{lo:.4g}, {hi:.4g}]"
            )

    def inverse(self, z, context=None):
        # sigmoid saturates to exactly 0 or 1 for |z| > ~17 (float32), the edge of the support
        # where the density is undefined; keep samples strictly inside it, so they can be scored
        eps = torch.finfo(z.dtype).eps
        p = torch.sigmoid(z).clamp(eps, 1 - eps)
        x = (p - self.alpha / 2) / (1 - self.alpha)
        # log p + log(1-p) = -softplus(-z) - softplus(z)
        ld = -math.log(1 - self.alpha) - F.softplus(-z) - F.softplus(z)
        return x, ld.reshape(z.shape[0], -1).sum(1)
