"""Invertible 1x1 convolutions (images) and invertible linear maps (vectors).

The full-matrix form computes its log-determinant and inverse in float64, as Glow's
code does, to keep them accurate for large channel counts; the LU form (Glow, Sec. 3.2)
has a log-determinant that is a plain sum.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Bijector


def _apply(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Multiply every position's channel vector of ``x`` by ``w``."""
    if x.dim() == 2:
        return x @ w.t()
    return F.conv2d(x, w.view(*w.shape, 1, 1))


def _init_matrix(n: int, init: str) -> torch.Tensor:
    if init == "identity":
        return torch.eye(n)
    if init == "orthogonal":
        q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
        return q.float()
    raise ValueError(f"unknown init {init!r}: expected 'identity' or 'orthogonal'")


class _MatrixBijector(Bijector):
    def _check(self, x):
        if x.dim() not in (2, 4) or x.shape[1] != self.num_channels:
            raise ValueError(
                f"{type(self).__name__}({self.num_channels}): expected (B, {self.num_channels}) "
                f"or (B, {self.num_channels}, H, W) input, got shape {tuple(x.shape)}"
            )

    def forward(self, x, context=None):
        self._check(x)
        w, logdet = self._weight_and_logdet()
        spatial = math.prod(x.shape[2:])
        return _apply(x, w), (logdet * spatial).to(x.dtype).expand(x.shape[0])

    def inverse(self, z, context=None):
        self._check(z)
        w_inv, logdet = self._inverse_and_logdet()
        spatial = math.prod(z.shape[2:])
        return _apply(z, w_inv), (-logdet * spatial).to(z.dtype).expand(z.shape[0])

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


class InvertibleConv2d(_MatrixBijector):
    """Invertible 1x1 convolution with a full C x C matrix (Glow).

    Accepts images (B, C, H, W) and, at 1x1 spatial size, vectors (B, C).
    """

    def __init__(self, num_channels: int, init: str = "identity"):
        super().__init__()
        self.num_channels = int(num_channels)
        self.weight = nn.Parameter(_init_matrix(num_channels, init))

    def _weight_and_logdet(self):
        w = self.weight
        logdet = torch.linalg.slogdet(w.double())[1].to(w.dtype)
        return w, logdet

    def _inverse_and_logdet(self):
        w = self.weight
        w64 = w.double()
        return torch.linalg.inv(w64).to(w.dtype), torch.linalg.slogdet(w64)[1].to(w.dtype)


class InvertibleConv2dLU(_MatrixBijector):
    """Invertible 1x1 convolution parameterised as ``W = P L (U + diag(s))`` (Glow)."""

    def __init__(self, num_channels: int, init: str = "orthogonal"):
        super().__init__()
        n = self.num_channels = int(num_channels)
        w = _init_matrix(n, init).double()
        p, l, u = torch.linalg.lu(w)
        s = torch.diagonal(u)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(n, n), -1))
        self.register_buffer("eye", torch.eye(n))
        self.lower = nn.Parameter(l.float())
        self.upper = nn.Parameter(torch.triu(u, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def _factors(self):
        l = self.lower * self.lower_mask + self.eye
        u = self.upper * self.lower_mask.t() + torch.diag(self.sign_s * self.log_s.exp())
        return l, u

    def _weight_and_logdet(self):
        l, u = self._factors()
        return self.perm @ l @ u, self.log_s.sum()

    def _inverse_and_logdet(self):
        l, u = self._factors()
        eye = self.eye.double()
        l_inv = torch.linalg.solve_triangular(l.double(), eye, upper=False, unitriangular=True)
        u_inv = torch.linalg.solve_triangular(u.double(), eye, upper=True)
        w_inv = (u_inv @ l_inv @ self.perm.double().t()).to(self.lower.dtype)
        return w_inv, self.log_s.sum()


# Vector data use the same maps: a 1x1 convolution at 1x1 spatial size is a linear map.
InvertibleLinear = InvertibleConv2d
InvertibleLinearLU = InvertibleConv2dLU


class Permutation(Bijector):
    """A fixed permutation of channels/features (log-det 0)."""

    def __init__(self, num_channels: int, perm: torch.Tensor | None = None, seed: int = 0):
        super().__init__()
        if perm is None:
            g = torch.Generator().manual_seed(seed)
            perm = torch.randperm(num_channels, generator=g)
        self.register_buffer("perm", perm.long())
        self.register_buffer("inv_perm", torch.argsort(perm.long()))

    def forward(self, x, context=None):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z[:, self.inv_perm], z.new_zeros(z.shape[0])
