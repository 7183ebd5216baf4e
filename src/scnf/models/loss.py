"""The flows' training loss, Eq. (1): labelled rows contribute log p(x, y), unlabelled rows
log p(x); plain SGD or EM-SGD (Appendix B); the optional classification loss, consistency and
pseudo-label terms."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..protocol import LossTerms


def loss_terms(lj: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, n_rows: int | None = None,
               n_labelled: int | None = None, target: torch.Tensor | None = None, pseudo: bool = False) -> LossTerms:
    """The loss of Eq. (1) from a batch's log p(x, y=k) (B, K) and labels (-1: unlabelled).

    SGD: labelled rows -log p(x, y), unlabelled rows -log p(x), summed and divided by
    ``n_rows`` (default: the rows here). EM-SGD: unlabelled rows -E_q log p(x, y) with
    q = p_old(y|x) held fixed (E-step); one gradient step on it is the M-step (its gradient at
    theta_old equals that of log p(x), by Fisher's identity). L_clf: cross-entropy of
    log p(y|x) on labelled rows, summed and divided by ``n_labelled`` (default: the labelled
    rows here), times ``clf_weight``. Distributed training passes global counts.
    ``target`` (unlabelled rows, K), when given: posteriors of a second view of the
    unlabelled rows; adds ``consistency_weight`` times the mean KL(target || p(y|x)) over them.

    Returns :class:`~scnf.protocol.LossTerms`: (loss, log p(x, y) of labelled rows, log p(x)
    of unlabelled rows, L_clf sum, labelled-row predictions correct, consistency KL sum).
    """
    lab = y >= 0
    lj_lab, y_lab, lj_unl = lj[lab], y[lab], lj[~lab]
    lp_lab = lj_lab.gather(1, y_lab[:, None]).squeeze(1)
    lp_unl = torch.logsumexp(lj_unl, 1)
    if cfg.optimisation == "em-sgd":
        q = torch.softmax(lj_unl.detach(), 1)
        unl_term = (q * lj_unl).sum(1)
    else:
        unl_term = lp_unl
    n_rows = lj.shape[0] if n_rows is None else n_rows
    n_labelled = int(lab.sum()) if n_labelled is None else n_labelled
    loss = -(cfg.labelled_weight * lp_lab.sum() + unl_term.sum()) / n_rows
    clf_sum = lj.new_zeros(())
    if cfg.clf_weight > 0 and n_labelled > 0:
        if lab.any():
            clf_sum = F.cross_entropy(lj_lab, y_lab, reduction="sum")
        loss = loss + cfg.clf_weight * clf_sum / n_labelled
    kl_sum = lj.new_zeros(())
    if target is not None and lj_unl.shape[0] > 0:
        if target.shape != lj_unl.shape:
            raise ValueError(f"target has shape {tuple(target.shape)}, expected {tuple(lj_unl.shape)} "
                             "(one posterior per unlabelled row)")
        log_post = torch.log_softmax(lj_unl, 1)
        kl_sum = (torch.xlogy(target, target) - target * log_post).sum()
        loss = loss + cfg.consistency_weight * kl_sum / (n_rows - n_labelled)
    if pseudo and cfg.pseudo_threshold > 0 and lj_unl.shape[0] > 0:
        conf, y_hat = torch.softmax(lj_unl.detach(), 1).max(1)
        sure = conf >= cfg.pseudo_threshold
        if sure.any():
            pl = F.cross_entropy(lj_unl[sure], y_hat[sure], reduction="sum")
            loss = loss + cfg.pseudo_weight * pl / max(n_rows - n_labelled, 1)
    with torch.no_grad():
        correct = (lj_lab.argmax(1) == y_lab).sum()
    return LossTerms(loss, lp_lab, lp_unl, clf_sum, correct, kl_sum)
