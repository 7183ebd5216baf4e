"""Base distributions of the latent spaces.

* :class:`DiagonalGaussian` — zero mean, learnable diagonal scale ``softplus(log_sigma)``
  (the paper's "Gaussian with zero mean and learnable diagonal covariance").
* :class:`ClassConditionalGaussian` — one mean and one diagonal scale per class: the
  GMM conditional part of SCNF-GMM.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG2PI = math.log(2 * math.pi)


def normal_log_prob(x: torch.Tensor, loc, scale: torch.Tensor | None = None, *,
                    log_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Elementwise log N(x; loc, scale^2), the one Gaussian log-density of the package: given the
    scale (the priors' softplus scale), or its logarithm (the VAEs' nets output log-scales)."""
    if log_scale is None:
        return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG2PI
    return -0.5 * ((x - loc) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * LOG2PI


class DiagonalGaussian(nn.Module):
    """N(0, diag(scale^2)) with ``scale = softplus(log_sigma)``."""

    conditional = False

    def __init__(self, dim: int, init_log_sigma: float = 0.0, learnable: bool = True):
        super().__init__()
        self.dim = int(dim)
        p = torch.full((dim,), float(init_log_sigma))
        if learnable:
            self.log_sigma = nn.Parameter(p)
        else:
            self.register_buffer("log_sigma", p)

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.log_sigma)

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if z.shape[1] == 0:
            return z.new_zeros(z.shape[0])
        return normal_log_prob(z, 0.0, self.scale.to(z.dtype)).sum(1)

    def sample(self, n: int, y=None, temperature: float = 1.0, generator=None) -> torch.Tensor:
        eps = torch.randn(n, self.dim, generator=generator, device=self.log_sigma.device)
        return eps.to(self.log_sigma.dtype) * self.scale * temperature


class ClassConditionalGaussian(nn.Module):
    """p(z | y=k) = N(mu_k, diag(softplus(log_sigma_k)^2)), one component per class."""

    conditional = True

    def __init__(self, dim: int, num_classes: int, init_log_sigma: float = 0.0,
                 init_mean_std: float = 1.0):
        super().__init__()
        self.dim, self.num_classes = int(dim), int(num_classes)
        self.loc = nn.Parameter(torch.randn(num_classes, dim) * init_mean_std)
        self.log_sigma = nn.Parameter(torch.full((num_classes, dim), float(init_log_sigma)))

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.log_sigma)

    def log_prob(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return normal_log_prob(z, self.loc[y].to(z.dtype), self.scale[y].to(z.dtype)).sum(1)

    def log_prob_all(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z | y=k) for every k: shape (B, K), without repeating z."""
        loc, scale = self.loc.to(z.dtype), self.scale.to(z.dtype)
        return normal_log_prob(z[:, None, :], loc[None], scale[None]).sum(2)

    def sample(self, n: int, y: torch.Tensor, temperature: float = 1.0, generator=None):
        eps = torch.randn(n, self.dim, generator=generator, device=self.loc.device)
        return self.loc[y] + eps.to(self.loc.dtype) * self.scale[y] * temperature
