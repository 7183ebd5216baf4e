"""The training loss against Eq. (1) of the paper, computed by hand.

    L = -( sum_labelled log p(x, y) + sum_unlabelled log p(x) ) / B  +  clf_weight * L_clf,
    L_clf = mean over labelled rows of -log p(y | x)

(B: rows in the batch; ``labelled_weight`` multiplies the labelled sum.) The hand
computation uses only ``model.log_prob`` (one label at a time) and a logsumexp written out
here, never ``loss_terms`` or ``log_joint``, so an error in the code's loss (a sign, a
missing term, a wrong count) is not shared by the reference.
"""
from __future__ import annotations

import math

import pytest
import torch

import scnf
from scnf.config import TrainConfig
from scnf.training.process_group import ProcessGroup
from scnf.models.loss import loss_terms
from scnf.training.objective import backward_objective, objective

from tests.helpers import perturb_

K = 3
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def problem():
    """A tiny float64 SCNF-GLOW (K = 3, non-uniform p(y)) with perturbed weights and a batch
    of 12 rows, 5 of them labelled (labels -1 mark unlabelled rows)."""
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, K, "glow", blocks=1, hidden=8, h_blocks=1, h_hidden=8,
                             class_prior=[0.2, 0.3, 0.5]).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64) * 1.5
    with torch.no_grad():
        model.log_joint(x)  # the data-dependent ActNorm init
    perturb_(model, 0.1)
    model.eval()
    y = torch.tensor([0, -1, 2, -1, -1, 1, -1, -1, 2, -1, -1, 0])
    return model, x, y


def _hand_terms(model, x, y):
    """(log p(x, y) of the labelled rows, log p(x) of the labelled rows, log p(x) of the
    unlabelled rows), from log_prob alone."""
    lab = y >= 0
    per_class = torch.stack([model.log_prob(x, torch.full((x.shape[0],), k)) for k in range(K)], 1)  # (B, K)
    m = per_class.max(1).values
    log_px = m + torch.log(torch.exp(per_class - m[:, None]).sum(1))  # log sum_k p(x, k)
    lp_xy = model.log_prob(x[lab], y[lab])
    return lp_xy, log_px[lab], log_px[~lab]


def eq1(model, x, y, clf_weight=0.0, labelled_weight=1.0, unl_sign=1.0, unl_factor=1.0, norm=None,
        clf_norm=None):
    """Eq. (1) by hand. The keyword arguments after ``labelled_weight`` exist only to build
    the wrong variants of :func:`test_the_hand_loss_tells_the_wrong_variants_apart`."""
    lp_xy, log_px_lab, log_px_unl = _hand_terms(model, x, y)
    b, n_lab = x.shape[0], int((y >= 0).sum())
    loss = -(labelled_weight * lp_xy.sum() + unl_sign * unl_factor * log_px_unl.sum()) / (norm or b)
    if clf_weight:
        loss = loss + clf_weight * (-(lp_xy - log_px_lab)).sum() / (clf_norm or n_lab)  # -log p(y|x)
    return loss


CASES = [dict(), dict(clf_weight=0.7), dict(labelled_weight=2.5, clf_weight=0.3)]


def _cfg(**kw):
    return TrainConfig(device="cpu", progress=False, **kw)


def test_log_prob_path_agrees_with_log_marginal(problem):
    model, x, y = problem
    _, log_px_lab, log_px_unl = _hand_terms(model, x, y)
    torch.testing.assert_close(torch.cat([log_px_lab, log_px_unl]),
                               torch.cat([model.log_marginal(x[y >= 0]), model.log_marginal(x[y < 0])]), **TOL)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_objective_is_eq1(problem, case):
    model, x, y = problem
    loss, stats = objective(model, x, y, _cfg(**case))
    torch.testing.assert_close(loss, eq1(model, x, y, **case), **TOL)
    # the reported NLL is the per-row mean of -log p(x, y) (labelled) and -log p(x) (unlabelled)
    lp_xy, _, log_px_unl = _hand_terms(model, x, y)
    assert stats["nll"] == pytest.approx(float(-(lp_xy.sum() + log_px_unl.sum()).detach()) / x.shape[0], rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_em_sgd_gradient_is_the_gradient_of_eq1(problem, case):
    """EM-SGD's surrogate has another value but, at theta_old, Eq. (1)'s gradient."""
    model, x, y = problem
    params = [p for p in model.parameters() if p.requires_grad and p.numel()]
    want = torch.autograd.grad(eq1(model, x, y, **case), params)
    loss, _ = objective(model, x, y, _cfg(optimisation="em-sgd", **case))
    got = torch.autograd.grad(loss, params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("micro_batch", [0, 5])
def test_backward_objective_is_eq1(problem, micro_batch):
    """Loss and gradient, whole batch or in chunks of 5 rows."""
    model, x, y = problem
    case = dict(clf_weight=0.7)
    params = [p for p in model.parameters() if p.requires_grad and p.numel()]
    want = torch.autograd.grad(eq1(model, x, y, **case), params)
    model.zero_grad(set_to_none=True)
    loss, _, ok = backward_objective(model, x, y, _cfg(micro_batch=micro_batch, **case))
    assert ok and loss == pytest.approx(float(eq1(model, x, y, **case).detach()), rel=1e-10)
    for p, w in zip(params, want):
        torch.testing.assert_close(p.grad, w, rtol=1e-8, atol=1e-10)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_sharded_objective_mean_over_ranks_is_eq1(problem, case, world):
    """What DDP optimises (the mean over ranks of each rank's loss on rows r::world, divided
    by the global counts and multiplied by world, as backward_objective does in a process
    group) is Eq. (1) of the whole batch; rank 2 of 3 holds no labelled row."""
    model, x, y = problem
    cfg, n_lab = _cfg(**case), int((y >= 0).sum())
    losses = [world * loss_terms(model.log_joint(x[r::world]), y[r::world], cfg, n_rows=x.shape[0],
                                 n_labelled=n_lab)[0] for r in range(world)]
    torch.testing.assert_close(torch.stack(losses).mean(), eq1(model, x, y, **case), **TOL)


def test_the_hand_loss_tells_the_wrong_variants_apart(problem):
    """The comparisons above would fail for the usual slips: each wrong variant differs from
    Eq. (1) by far more than the tolerance (1e-10)."""
    model, x, y = problem
    n_lab = int((y >= 0).sum())
    right = float(eq1(model, x, y, clf_weight=0.7).detach())
    wrong = {"unlabelled term with the wrong sign": dict(unl_sign=-1.0),
             "unlabelled term missing": dict(unl_factor=0.0),
             "divided by the labelled rows": dict(norm=n_lab),
             "L_clf divided by all rows": dict(clf_norm=x.shape[0]),
             "L_clf missing": dict(clf_weight=0.0)}
    for name, kw in wrong.items():
        diff = abs(float(eq1(model, x, y, **{"clf_weight": 0.7, **kw}).detach()) - right)
        assert diff > 1e-3 * max(1.0, abs(right)), (name, diff)
    assert math.isfinite(right)


class _Rank(ProcessGroup):
    """Rank ``rank`` of ``world`` processes that all see the same numbers: a sum over
    processes is ``world`` times this one's (so the finiteness vote passes)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def all_reduce(self, t, what="all-reduce", op="sum"):
        return t * self.world if op == "sum" else t


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_objective_in_a_group_gives_eq1s_gradient(problem, case, world):
    """backward_objective itself, on each rank's rows r::world with the global counts: the
    gradients DDP would average (their sum over ranks / world) are Eq. (1)'s gradient of the
    whole batch. Without the factor world on each rank's loss they would be 1/world of it."""
    model, x, y = problem
    cfg, n_lab = _cfg(**case), int((y >= 0).sum())
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    eq1(model, x, y, **case).backward()
    want = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    model.zero_grad(set_to_none=True)
    for r in range(world):
        group = _Rank(r, world)
        rows = group.shard(torch.arange(x.shape[0]))
        _, _, finite = backward_objective(model, x[rows], y[rows], cfg, group=group, n_rows=x.shape[0],
                                          n_labelled=n_lab)
        assert finite
    for p, w in zip(params, want):
        got = p.grad / world if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(got, w, rtol=1e-8, atol=1e-10)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("world", [2, 3])
def test_trainer_shard_gives_each_rank_its_rows_and_their_views(world):
    """Trainer._shard: rank r gets rows r::world of the global batch, and the consistency views
    of exactly its unlabelled rows, in order; together the ranks hold every row once."""
    from scnf.training.trainer import Trainer

    x = torch.arange(10, dtype=torch.float64)[:, None] * torch.ones(1, 2)
    y = torch.tensor([0, -1, -1, 2, -1, 1, -1, -1, 0, -1])
    view = x[y < 0] * 100  # one view per unlabelled row, identifiable by value
    seen = []
    for r in range(world):
        tr = Trainer.__new__(Trainer)  # _shard reads only the group and the device
        tr.group, tr.device = _Rank(r, world), torch.device("cpu")
        xs, ys, vs = tr._shard(x, y, view)
        assert torch.equal(xs, x[r::world]) and torch.equal(ys, y[r::world])
        torch.testing.assert_close(vs, xs[ys < 0] * 100)
        seen += xs[:, 0].tolist()
    assert sorted(seen) == list(range(10))
