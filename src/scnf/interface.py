"""What training and evaluation need of a model, and where models draw their noise.

:class:`TrainableModel` is the one interface the :class:`~scnf.training.Trainer`,
:func:`~scnf.objective.backward_objective` and :func:`~scnf.evaluation.evaluate` use; the
flows (:class:`~scnf.model.SemiConditionalFlow`) and Kingma et al.'s VAEs
(:class:`~scnf.baselines.SemiSupervisedVAE`) implement it. Nothing is looked up by name.

Noise inside a model (a VAE's reparameterised samples, FFJORD's Hutchinson probes) is drawn
with :func:`randn_like`, from the generator that :func:`noise_from` installs: the trainer
installs its own (seeded, saved in checkpoints) around each training forward and evaluation
installs a fixed one, so neither depends on the other, nor on torch's global generator.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple, Protocol, runtime_checkable

import torch


class LossTerms(NamedTuple):
    """A batch's objective and its parts (sums over this batch's rows, before any averaging)."""

    loss: torch.Tensor              #: the scalar to minimise
    log_p_labelled: torch.Tensor    #: per labelled row: log p(x, y) (flows) or its bound (VAEs)
    log_p_unlabelled: torch.Tensor  #: per unlabelled row: log p(x) or its bound
    clf_sum: torch.Tensor           #: summed classification cross-entropy of the labelled rows
    correct: torch.Tensor           #: labelled rows classified right
    consistency_sum: torch.Tensor   #: summed consistency KL of the unlabelled rows (0 if unused)


@runtime_checkable
class TrainableModel(Protocol):
    """A semi-supervised model the trainer can fit and evaluate."""

    num_classes: int
    #: whether the model predicts labels (M1, unsupervised, does not: evaluation reports no error)
    classifies: bool
    #: what its density is of: "dequantised" pixels / vectors (a density, bits/dim = 8 - log p / (D ln 2))
    #: or "binarised" pixels (a probability of binary images, bits/dim = -log p / (D ln 2))
    density_of: str

    def training_forward(self, x: torch.Tensor) -> Any:
        """What :meth:`loss_terms` reads, for a batch (the trainer may wrap this in DDP)."""

    def loss_terms(self, out: Any, y: torch.Tensor, cfg, n_rows: int | None = None, n_labelled: int | None = None,
                   target: torch.Tensor | None = None, pseudo: bool = False) -> LossTerms:
        """The objective of a batch with labels ``y`` (-1: unlabelled) from ``out``."""

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K): log p(x, y=k), or a lower bound of it; logsumexp over k is the reported density."""

    def log_density(self, x: torch.Tensor, log_joint: torch.Tensor) -> torch.Tensor:
        """(B,): log p(x), or a lower bound of it (the reported NLL and bits/dim), given
        :meth:`log_joint` of the same ``x``."""

    def class_scores(self, x: torch.Tensor, log_joint: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) scores whose argmax is the prediction (log-probabilities up to a per-row
        constant). ``log_joint``: :meth:`log_joint` of the same ``x`` if already computed; a
        model that predicts from it (the flows: the exact posterior) reuses it."""

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The optimiser's groups by name (every parameter in exactly one): ``f``/``h`` for the
        flows (``train.h_lr_mult`` and ``train.warmup_f_steps`` act on ``h``), ``m1``/``m2`` for
        the VAEs."""


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
