"""Reshaping bijectors: squeezing and the multi-scale split."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Bijector


class SpaceToDepth(Bijector):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes 4 channels."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x, context=None):
        if x.dim() != 4 or x.shape[2] % self.factor or x.shape[3] % self.factor:
            raise ValueError(
                f"SpaceToDepth({self.factor}): expected (B, C, H, W) with H and W divisible "
                f"by {self.factor}, got shape {tuple(x.shape)}"
            )
        return F.pixel_unshuffle(x, self.factor), x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return F.pixel_shuffle(z, self.factor), z.new_zeros(z.shape[0])


class FactorOut(Bijector):
    """Multi-scale split (Real NVP), as the released model does it: factor out the *first*
    channels and pass the last ``keep`` to ``inner``.

    The input has shape (B, *in_shape) — images (C, H, W) or vectors (D,). ``inner``
    maps the kept part to a flat (B, D_inner) tensor. The output is the flat
    concatenation ``[factored-out part, inner output]`` (each flattened channel-major), so
    the deepest components — those that passed every layer — are always the *last* columns.
    :func:`factor_out_keep` gives the released model's split.
    """

    def __init__(self, in_shape, keep: int, inner: Bijector):
        super().__init__()
        self.in_shape = tuple(in_shape)
        channels = self.in_shape[0]
        if not 0 < keep < channels:
            raise ValueError(f"FactorOut: keep must lie in (0, {channels}), got {keep}")
        self.keep = keep
        self.n_factored = channels - keep
        self.n_out = self.n_factored * math.prod(self.in_shape[1:])
        self.out_shape = (self.n_factored, *self.in_shape[1:])
        self.inner = inner
        self.conditional = getattr(inner, "conditional", False)

    def forward(self, x, context=None):
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"FactorOut: expected input of shape (B, {', '.join(map(str, self.in_shape))}), "
                f"got {tuple(x.shape)}"
            )
        out, kept = x[:, : self.n_factored], x[:, self.n_factored:]
        z_inner, ld = self.inner(kept, context)
        return torch.cat([out.reshape(x.shape[0], -1), z_inner], 1), ld

    def inverse(self, z, context=None):
        out = z[:, : self.n_out].reshape(z.shape[0], *self.out_shape)
        kept, ld = self.inner.inverse(z[:, self.n_out:], context)
        return torch.cat([out, kept], 1), ld

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, keep={self.keep}"


def factor_out_keep(channels: int) -> int:
    """How many of ``channels`` the released model keeps at a split: it factors out the first
    ``C // 2 + (C // 2) % 2`` (2 of 4, 4 of 8, 98 of 196) and keeps the rest."""
    half = channels // 2
    return channels - (half + half % 2)
