"""Where scnf's randomness comes from: seeding, and the generator models draw their noise from.

Noise inside a model (a VAE's reparameterised samples, FFJORD's Hutchinson probes) is drawn
with :func:`randn_like`, from the generator that :func:`noise_from` installs: the trainer
installs its own (seeded, saved in checkpoints) around each training forward and evaluation
installs a fixed one, so neither depends on the other, nor on torch's global generator.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch's and numpy's global generators (what a run, and an analysis, start from)."""
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)


_generator: torch.Generator | None = None


@contextmanager
def noise_from(generator: torch.Generator | None) -> Iterator[None]:
    """Within the block, :func:`randn_like` draws from ``generator`` (None: torch's global one)."""
    global _generator
    previous, _generator = _generator, generator
    try:
        yield
    finally:
        _generator = previous


def randn_like(t: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``t``, from the generator :func:`noise_from` installed
    (drawn on the CPU, then moved, so the stream does not depend on the device)."""
    if _generator is None:
        return torch.randn_like(t)
    return torch.randn(t.shape, generator=_generator, dtype=t.dtype).to(t.device)


def rand_like(t: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``t``, from the same generator as :func:`randn_like`."""
    if _generator is None:
        return torch.rand_like(t)
    return torch.rand(t.shape, generator=_generator, dtype=t.dtype).to(t.device)


def rademacher_like(t: torch.Tensor) -> torch.Tensor:
    """Random signs (+1 / -1) shaped like ``t``, from the same generator as :func:`randn_like`."""
    if _generator is None:
        return torch.randint_like(t, 0, 2).mul_(2).sub_(1)
    return torch.randint(0, 2, t.shape, generator=_generator).to(t.dtype).mul_(2).sub_(1).to(t.device)
