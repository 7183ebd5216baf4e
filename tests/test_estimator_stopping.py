"""The estimator's stopping rule (``early_stopping``): known answers on a scripted model, and
what a fit reports (``n_steps_``, ``max_steps_``, ``stopped_at_``, ``validation_scores_``)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from scnf import SCNFClassifier
from scnf.estimator import _Convergence


class _Scripted(torch.nn.Module):
    """A model whose held-out log-joint at check i is ``script[i]``: (log-likelihood a row, predicted class)."""

    def __init__(self, script):
        super().__init__()
        self.script, self.i = list(script), 0

    def log_joint(self, x):
        ll, cls = self.script[self.i]
        self.i += 1
        out = torch.full((len(x), 2), -1e9, dtype=torch.float64)
        out[:, cls] = ll
        return out


class _Trainer:
    def __init__(self, model):
        self.model = model


def _run(script, every=10, patience=3, tol=0.01, change_tol=0.01):
    """Call the rule at every step until it stops; the step it stopped at (None: never)."""
    model = _Scripted(script)
    rule = _Convergence(torch.zeros(50, 2), every=every, patience=patience, tol=tol, change_tol=change_tol)
    for step in range(1, every * len(script) + 1):
        if rule(_Trainer(model), step):
            assert rule.stopped_at == step
            return step, rule
    return None, rule


def test_a_flat_likelihood_with_settled_predictions_stops_after_patience_checks():
    # check 1 (step 10) is progress (from -inf); checks 2-4 gain nothing: stop at the 4th check
    stopped, rule = _run([(-1.0, 0)] * 10)
    assert stopped == 40
    assert [h["step"] for h in rule.history] == [10, 20, 30, 40]
    assert [h["changed"] for h in rule.history] == [1.0, 0.0, 0.0, 0.0]


def test_gains_above_tol_keep_it_training_and_gains_below_do_not():
    assert _run([(-1.0 + 0.02 * i, 0) for i in range(10)])[0] is None  # +0.02 a check > tol 0.01
    assert _run([(-1.0 + 0.005 * i, 0) for i in range(10)])[0] == 40  # +0.005 a check <= tol


def test_steady_gains_each_below_tol_stop_it_as_in_scikit_learn():
    # +0.006 a check: each check is measured against the best so far, which every gain raises
    # (scikit-learn's MLP rule), so gains that add up past tol over several checks do not count
    stopped, rule = _run([(-1.0 + 0.006 * i, 0) for i in range(12)], patience=3)
    assert stopped == 40 and rule.best == pytest.approx(-1.0 + 0.018)


def test_changing_predictions_are_progress_even_on_a_flat_likelihood():
    assert _run([(-1.0, i % 2) for i in range(10)])[0] is None
    # predictions change once, then settle: three quiet checks after the change
    assert _run([(-1.0, 0), (-1.0, 0), (-1.0, 1)] + [(-1.0, 1)] * 7)[0] == 60


def test_a_nan_likelihood_is_never_progress():
    stopped, rule = _run([(-1.0, 0)] + [(math.nan, 0)] * 9)
    assert stopped == 40 and rule.best == -1.0


def test_patience_and_every_set_the_stopping_step():
    assert _run([(-1.0, 0)] * 20, every=7, patience=5)[0] == 7 * 6


@pytest.fixture(scope="module")
def moons():
    X, y = make_moons(600, noise=0.1, random_state=0)
    y = y.copy()
    y[10:] = -1
    Xt, yt = make_moons(400, noise=0.1, random_state=1)
    return X, y, Xt, yt


def test_a_fit_with_the_rule_stops_early_and_reports_it(moons, torch_threads):
    X, y, Xt, yt = moons
    clf = SCNFClassifier(random_state=0, epochs=60, min_steps=50, n_iter_no_change=2, tol=0.5,
                         early_stopping=True).fit(X, y)
    every = math.ceil(clf.max_steps_ / 50)
    # with tol 0.5 nats only the first checks are progress: it stops long before the budget
    assert clf.stopped_at_ is not None and clf.n_steps_ == clf.stopped_at_ < clf.max_steps_
    assert clf.stopped_at_ % every == 0
    assert [h["step"] for h in clf.validation_scores_] == list(range(every, clf.stopped_at_ + 1, every))
    assert clf.n_steps_ == clf.validation_scores_[-1]["step"]
    assert np.isfinite(clf.score_samples(Xt)).all()


def test_auto_honours_a_fixed_number_of_steps_and_false_turns_it_off(moons, torch_threads):
    X, y, _, _ = moons
    clf = SCNFClassifier(random_state=0, steps=30, tol=100.0, n_iter_no_change=1, early_stopping="auto").fit(X, y)
    assert clf.n_steps_ == clf.max_steps_ == 30 and clf.stopped_at_ is None and clf.validation_scores_ == []
    clf = SCNFClassifier(random_state=0, epochs=10, min_steps=30, early_stopping=False, tol=100.0,
                         n_iter_no_change=1).fit(X, y)
    assert clf.n_steps_ == 30 and clf.stopped_at_ is None
    clf = SCNFClassifier(random_state=0, epochs=10, min_steps=30, tol=100.0, n_iter_no_change=1,
                         early_stopping="auto").fit(X, y)  # 590 unlabelled rows: 59 held out
    assert clf.stopped_at_ is not None and clf.n_steps_ < 30


def test_auto_needs_enough_unlabelled_rows_to_judge(torch_threads):
    X, y = make_moons(150, noise=0.1, random_state=0)
    y = y.copy()
    y[10:] = -1  # 140 unlabelled rows: 14 held out, fewer than 20
    clf = SCNFClassifier(random_state=0, epochs=10, min_steps=30, tol=100.0, n_iter_no_change=1,
                         early_stopping="auto").fit(X, y)
    assert clf.n_steps_ == 30 and clf.stopped_at_ is None
    clf = SCNFClassifier(random_state=0, epochs=10, min_steps=30, tol=100.0, n_iter_no_change=1,
                         early_stopping=True).fit(X, y)
    assert clf.stopped_at_ is not None and clf.n_steps_ < 30


@pytest.mark.parametrize("params, match", [
    ({"early_stopping": "yes"}, "early_stopping"),
    ({"validation_fraction": 0.0}, "validation_fraction"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"n_iter_no_change": 0}, "n_iter_no_change"),
    ({"n_iter_no_change": 2.5}, "n_iter_no_change"),
    ({"tol": -1.0}, "tol"),
    ({"tol": float("nan")}, "tol"),
])
def test_bad_stopping_parameters_are_value_errors(moons, params, match):
    X, y, _, _ = moons
    with pytest.raises(ValueError, match=match):
        SCNFClassifier(steps=2, **params).fit(X, y)
