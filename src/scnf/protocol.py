"""What training and evaluation need of a model.

:class:`TrainableModel` is the one interface the :class:`~scnf.training.trainer.Trainer`,
:func:`~scnf.training.objective.backward_objective` and :func:`~scnf.training.evaluation.evaluate` use; the
flows (:class:`~scnf.models.flow.SemiConditionalFlow`) and Kingma et al.'s VAEs
(:class:`~scnf.models.vae.SemiSupervisedVAE`) implement it. Nothing is looked up by name.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

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

    def needs_initialisation(self) -> bool:
        """Whether a data-dependent initialisation (the flows' ActNorms) still waits for the next
        forward pass in training mode; the trainer then runs it on the whole first batch."""

    def diagnostics(self, over_run: bool = False) -> dict:
        """Model-specific figures for the log (at each evaluation) or, with ``over_run``, for the
        run's metrics (e.g. an ODE solver's function evaluations); ``{}`` when there are none."""

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The optimiser's groups by name (every parameter in exactly one): ``f``/``h`` for the
        flows (``train.h_lr_mult`` and ``train.warmup_f_steps`` act on ``h``), ``m1``/``m2`` for
        the VAEs."""
