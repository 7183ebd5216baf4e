"""The training objective of a batch (each model's :meth:`loss_terms`, e.g. the flows' Eq. (1) in
:mod:`scnf.models.loss`), the consistency view's target, and its backward pass in micro-batches
and across processes."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import torch

from ..config import TrainConfig
from ..protocol import TrainableModel
from .process_group import ProcessGroup



def _consistency_target(model: TrainableModel, view: torch.Tensor | None, cfg: TrainConfig):
    if view is None:
        return None
    with torch.no_grad():
        return torch.softmax(model.log_joint(view) / cfg.consistency_temperature, 1)


def _stats(n: int, n_lab: int, lp_sum: float, clf_sum: float, kl_sum: float, correct: int) -> dict:
    return {"nll": -lp_sum / n, "clf": clf_sum / max(n_lab, 1), "consistency": kl_sum / max(n - n_lab, 1),
            "labelled_acc": correct / n_lab if n_lab else float("nan")}


def objective(model: TrainableModel, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
              view: torch.Tensor | None = None, pseudo: bool = False):
    """The per-example mean loss (nats) of one batch, and statistics (see :func:`scnf.models.loss.loss_terms`).

    ``view``: a perturbed copy of the unlabelled rows of ``x``; its posterior, without
    gradient and at ``consistency_temperature``, is the target of the consistency term."""
    out = model.training_forward(x)  # first: a not yet initialised ActNorm initialises on x, not on the view
    target = _consistency_target(model, view, cfg)
    loss, lp_lab, lp_unl, clf_sum, correct, kl_sum = model.loss_terms(out, y, cfg, target=target, pseudo=pseudo)
    with torch.no_grad():
        lp_sum = float(lp_lab.sum() + lp_unl.sum())
    return loss, _stats(x.shape[0], lp_lab.shape[0], lp_sum, float(clf_sum.detach()), float(kl_sum.detach()),
                        int(correct))


def backward_objective(model: TrainableModel, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                       view: torch.Tensor | None = None, pseudo: bool = False, *, group: ProcessGroup | None = None,
                       n_rows: int | None = None, n_labelled: int | None = None, forward: Callable | None = None):
    """Backpropagate :func:`objective`'s loss of the batch, ``cfg.micro_batch`` rows at a time.

    With ``cfg.micro_batch`` in (0, B) the rows go through forward and backward in chunks and
    their gradients add up in ``.grad``: every term of the loss is a sum over rows divided by
    whole-batch counts, so the gradient is that of the whole batch (up to the order of float
    sums) while only one chunk's activations are held. ActNorms not yet initialised are
    initialised on the whole batch first, as without chunks. Stops at the first non-finite
    chunk loss. Returns (loss: float, stats: dict, finite: bool); ``.grad`` is accumulated,
    not zeroed.

    In a process ``group`` of N processes, ``x``, ``y`` and ``view`` are this process's rows
    of a batch of ``n_rows`` rows of which ``n_labelled`` are labelled (defaults: the rows
    given), and ``forward`` (default ``model.training_forward``) is its DDP-wrapped form: each
    process's loss is divided by the global counts and multiplied by N, so the gradient
    DDP averages is the whole batch's. Loss and statistics are summed over processes, and
    all processes stop together at a chunk whose loss is non-finite on any of them.
    """
    group = group if group is not None else ProcessGroup()
    forward = forward if forward is not None else model.training_forward
    terms = model.loss_terms
    rows, lab = x.shape[0], y >= 0
    n = rows if n_rows is None else n_rows
    n_lab = int(lab.sum()) if n_labelled is None else n_labelled
    chunk = cfg.micro_batch if 0 < cfg.micro_batch < rows else rows
    if chunk < rows and model.training and model.needs_initialisation():
        with torch.no_grad():
            model.log_joint(x)
    target, unl_seen = None, 0
    totals = torch.zeros(5, dtype=torch.float64)  # loss, sum log p, L_clf sum, KL sum, correct
    for start in range(0, rows, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        last = start + chunk >= rows
        with (nullcontext() if last else group.no_sync(forward)), group.collective("forward and backward pass"):
            out = forward(xs)  # first: a not yet initialised ActNorm initialises on x, not on the view
            if view is not None and target is None:
                target = _consistency_target(model, view, cfg)
            ts = None
            if target is not None:
                k = int((ys < 0).sum())
                ts, unl_seen = target[unl_seen:unl_seen + k], unl_seen + k
            loss, lp_lab, lp_unl, clf, corr, kl = terms(out, ys, cfg, n_rows=n, n_labelled=n_lab,
                                                        target=ts, pseudo=pseudo)
            sums = torch.stack([loss.detach().double(), (lp_lab.detach().sum() + lp_unl.detach().sum()).double(),
                                clf.detach().double(), kl.detach().double(), corr.double(),
                                torch.isfinite(loss.detach()).double()])
            sums = group.all_reduce(sums, "loss all-reduce")
            if int(sums[5]) < group.world:
                return float(sums[0]), _stats(n, n_lab, float("nan"), float("nan"), float("nan"), 0), False
            (loss * group.world if group.world > 1 else loss).backward()
        totals += sums[:5].cpu()
    total, lp_sum, clf_sum, kl_sum, correct = totals.tolist()
    return total, _stats(n, n_lab, lp_sum, clf_sum, kl_sum, int(correct)), True
