"""Affine coupling layers: checkerboard and channel masks for images, feature splits for
vectors, and the paper's conditional coupling layer (Sec. 3.3).

All use Glow's scale: ``z2 = (x2 + t) * (sigmoid(s + 2) + 1e-6)`` with ``(s, t)`` from a
network of the conditioning part, whose last layer is zero-initialised.
"""
from __future__ import annotations

import torch
from torch import nn

from ..nets import ResidualConvNet, make_vector_net
from .base import Bijector

_EPS = 1e-6


def _scale_shift(h: torch.Tensor):
    """Split net output into (log scale, shift) along dim 1."""
    s, t = h.chunk(2, dim=1)
    log_scale = torch.log(torch.sigmoid(s + 2.0) + _EPS)
    return log_scale, t


def checkerboard_mask(h: int, w: int, parity: int = 0) -> torch.Tensor:
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((ii + jj + parity) % 2 == 0).float().view(1, 1, h, w)


def _check_image(layer, x):
    if x.dim() != 4 or x.shape[1] != layer.num_channels:
        raise ValueError(
            f"{type(layer).__name__}: expected (B, {layer.num_channels}, H, W) input, "
            f"got shape {tuple(x.shape)}"
        )


class MaskedCouplingLayer(Bijector):
    """Checkerboard-masked affine coupling (Real NVP) on images (B, C, H, W).

    Pixels where the mask is 1 condition the transform of the others.
    """

    def __init__(self, num_channels: int, parity: int = 0, hidden: int = 64, blocks: int = 4):
        super().__init__()
        self.num_channels = num_channels
        self.parity = parity
        self.net = ResidualConvNet(num_channels, 2 * num_channels, hidden, blocks)
        self._masks: dict = {}

    def _mask(self, x):
        key = (x.shape[2], x.shape[3], x.device, x.dtype)
        m = self._masks.get(key)
        if m is None:
            m = self._masks[key] = checkerboard_mask(x.shape[2], x.shape[3], self.parity).to(x)
        return m

    def forward(self, x, context=None):
        _check_image(self, x)
        m = self._mask(x)
        log_scale, t = _scale_shift(self.net(x * m))
        log_scale = log_scale * (1 - m)
        z = x * m + (1 - m) * ((x + t) * log_scale.exp())
        return z, log_scale.flatten(1).sum(1)

    def inverse(self, z, context=None):
        _check_image(self, z)
        m = self._mask(z)
        log_scale, t = _scale_shift(self.net(z * m))
        log_scale = log_scale * (1 - m)
        x = z * m + (1 - m) * (z * torch.exp(-log_scale) - t)
        return x, -log_scale.flatten(1).sum(1)


class CouplingLayer(Bijector):
    """Channel-wise affine coupling on images: the first ``C//2`` channels (or the last,
    with ``parity=1``) condition the affine transform of the others."""

    def __init__(self, num_channels: int, parity: int = 0, hidden: int = 64, blocks: int = 4):
        super().__init__()
        if num_channels < 2:
            raise ValueError("CouplingLayer(mask=channel) needs at least 2 channels")
        self.num_channels = num_channels
        self.parity = parity
        self.n_cond = num_channels // 2 if parity == 0 else num_channels - num_channels // 2
        n_out = num_channels - self.n_cond
        self.net = ResidualConvNet(self.n_cond, 2 * n_out, hidden, blocks)

    def _split(self, x):
        if self.parity == 0:
            return x[:, : self.n_cond], x[:, self.n_cond:]
        return x[:, -self.n_cond:], x[:, : -self.n_cond]

    def _merge(self, cond, other):
        return torch.cat([cond, other] if self.parity == 0 else [other, cond], 1)

    def forward(self, x, context=None):
        _check_image(self, x)
        cond, x2 = self._split(x)
        log_scale, t = _scale_shift(self.net(cond))
        return self._merge(cond, (x2 + t) * log_scale.exp()), log_scale.flatten(1).sum(1)

    def inverse(self, z, context=None):
        _check_image(self, z)
        cond, z2 = self._split(z)
        log_scale, t = _scale_shift(self.net(cond))
        return self._merge(cond, z2 * torch.exp(-log_scale) - t), -log_scale.flatten(1).sum(1)


class AffineCoupling(Bijector):
    """Affine coupling on vectors (B, D); ``parity`` picks which half conditions.

    With ``num_classes`` given it is the paper's conditional coupling layer: a learnable
    class embedding (initialised one-hot) is concatenated to the conditioning half, so
    ``z2 = x2 * exp(s(x1, y)) + t(x1, y)`` in Glow's sigmoid form.
    """

    def __init__(self, dim: int, parity: int = 0, hidden: int = 64, blocks: int = 2,
                 net: str = "mlp", num_classes: int | None = None, embed_dim: int | None = None):
        super().__init__()
        if dim < 1:
            raise ValueError("AffineCoupling needs dim >= 1")
        self.dim, self.parity = dim, parity
        self.n_cond = dim // 2 if parity == 0 else dim - dim // 2
        n_out = dim - self.n_cond
        self.num_classes = num_classes
        extra = 0
        if num_classes is not None:
            self.conditional = True
            embed_dim = num_classes if embed_dim is None else embed_dim
            self.embedding = nn.Embedding(num_classes, embed_dim)
            with torch.no_grad():
                self.embedding.weight.zero_()
                k = min(num_classes, embed_dim)
                self.embedding.weight[:k, :k] = torch.eye(k)
            extra = embed_dim
        self.net = make_vector_net(net, self.n_cond + extra, 2 * n_out, hidden, blocks)

    def _check(self, x, context):
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}({self.dim}): expected (B, {self.dim}) input, "
                f"got shape {tuple(x.shape)}"
            )
        if self.conditional:
            if context is None:
                raise ValueError(f"{type(self).__name__} is conditional: pass context=y")
            if context.shape != (x.shape[0],):
                raise ValueError(
                    f"context must have shape ({x.shape[0]},), got {tuple(context.shape)}")

    def _split(self, x):
        if self.parity == 0:
            return x[:, : self.n_cond], x[:, self.n_cond:]
        return x[:, x.shape[1] - self.n_cond:], x[:, : x.shape[1] - self.n_cond]

    def _merge(self, cond, other):
        return torch.cat([cond, other] if self.parity == 0 else [other, cond], 1)

    def _params(self, cond, context):
        if self.conditional:
            cond = torch.cat([cond, self.embedding(context).to(cond.dtype)], 1)
        return _scale_shift(self.net(cond))

    def forward(self, x, context=None):
        self._check(x, context)
        cond, x2 = self._split(x)
        log_scale, t = self._params(cond, context)
        return self._merge(cond, (x2 + t) * log_scale.exp()), log_scale.sum(1)

    def inverse(self, z, context=None):
        self._check(z, context)
        cond, z2 = self._split(z)
        log_scale, t = self._params(cond, context)
        return self._merge(cond, z2 * torch.exp(-log_scale) - t), -log_scale.sum(1)


class ConditionalCouplingLayer(AffineCoupling):
    """The paper's conditional affine coupling on (B, D) vectors (1x1 spatial size),
    with a residual 1x1 net (hidden 256, 4 blocks) as in Appendix E.2."""

    def __init__(self, dim: int, num_classes: int, parity: int = 0, hidden: int = 256,
                 blocks: int = 4, net: str = "resmlp", embed_dim: int | None = None):
        super().__init__(dim, parity, hidden, blocks, net, num_classes, embed_dim)
