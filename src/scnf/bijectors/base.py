"""The bijector convention and composition.

Every invertible layer in scnf follows the convention of nflows, FrEIA and Glow:

* ``forward(x, context=None) -> (z, logabsdet)`` maps data to latent;
* ``inverse(z, context=None) -> (x, logabsdet)`` maps latent to data;
* ``logabsdet`` has shape ``(B,)`` and the two directions' log-dets sum to 0.

Unconditional layers accept ``context`` and ignore it.
"""
from __future__ import annotations

import torch
from torch import nn


class Bijector(nn.Module):
    """Base class of every invertible layer."""

    #: whether the layer uses ``context`` (the class label)
    conditional: bool = False

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None):  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):  # pragma: no cover
        raise NotImplementedError


def _zeros(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


class Sequential(Bijector):
    """Composition of bijectors, applied in order by ``forward`` (layer by layer;
    :class:`scnf.bijectors.fused.FusedSequential` runs a vector chain as one autograd node)."""

    def __init__(self, *layers: Bijector):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.conditional = any(getattr(l, "conditional", False) for l in layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x, context=None):
        total = _zeros(x)
        for layer in self.layers:
            x, ld = layer(x, context)
            total = total + ld
        return x, total

    def inverse(self, z, context=None):
        total = _zeros(z)
        for layer in reversed(self.layers):
            z, ld = layer.inverse(z, context)
            total = total + ld
        return z, total


class Identity(Bijector):
    """The identity map (log-det 0). Used as h in SCNF-GMM."""

    def forward(self, x, context=None):
        return x, _zeros(x)

    def inverse(self, z, context=None):
        return z, _zeros(z)


class Flatten(Bijector):
    """Reshape (B, *shape) to (B, prod(shape)); volume preserving."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x, context=None):
        return x.reshape(x.shape[0], -1), _zeros(x)

    def inverse(self, z, context=None):
        return z.reshape(z.shape[0], *self.shape), _zeros(z)
