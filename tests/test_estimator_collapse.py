"""The warning when a fit gives (almost) every unlabelled row one class while the labels mix
classes: known answers for the rule, and a fit that must and one that must not raise it."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from scnf import SCNFClassifier
from scnf.estimator import COLLAPSE_MIN_ROWS, COLLAPSE_SHARE, _collapse_message

CLASSES = np.array(["a", "b", "c"])


def _pred(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_all_unlabelled_rows_in_one_class_with_mixed_labels_warns():
    msg = _collapse_message(_pred([0, 100, 0]), np.array([0, 1, 2]), CLASSES)
    assert msg is not None and "'b'" in msg and "100%" in msg and "33%" in msg


def test_predictions_spread_over_the_classes_do_not_warn():
    assert _collapse_message(_pred([40, 30, 30]), np.array([0, 1, 2]), CLASSES) is None


def test_the_share_threshold_is_strict():
    n = 100
    top = int(round(COLLAPSE_SHARE * n))
    assert _collapse_message(_pred([top, n - top, 0]), np.array([0, 1, 2]), CLASSES) is None
    assert _collapse_message(_pred([top + 1, n - top - 1, 0]), np.array([0, 1, 2]), CLASSES) is not None


def test_a_class_that_also_dominates_the_labels_does_not_warn():
    # the labels say the data are mostly class 0: a mostly-0 prediction is what they suggest
    assert _collapse_message(_pred([100, 0, 0]), np.array([0, 0, 1]), CLASSES) is None
    # exactly half of the labels: still mixed, so it warns
    assert _collapse_message(_pred([100, 0, 0]), np.array([0, 1]), CLASSES[:2]) is not None


def test_too_few_unlabelled_rows_do_not_warn():
    assert _collapse_message(_pred([COLLAPSE_MIN_ROWS - 1, 0, 0]), np.array([1, 2]), CLASSES) is None
    assert _collapse_message(_pred([COLLAPSE_MIN_ROWS, 0, 0]), np.array([1, 2]), CLASSES) is not None


def _two_clusters(rng, unlabelled_in_second: int):
    """Two far clusters with two labels each; 60 unlabelled rows, ``unlabelled_in_second`` of
    them in the second cluster."""
    c0, c1 = np.zeros(2), np.full(2, 10.0)
    lab = np.vstack([c0 + 0.1 * rng.standard_normal((2, 2)), c1 + 0.1 * rng.standard_normal((2, 2))])
    unl = np.vstack([c0 + 0.3 * rng.standard_normal((60 - unlabelled_in_second, 2)),
                     c1 + 0.3 * rng.standard_normal((unlabelled_in_second, 2))])
    X = np.vstack([lab, unl])
    y = np.concatenate([[0, 0, 1, 1], np.full(len(unl), -1)])
    return X, y


def _collapse_warnings(X, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SCNFClassifier(steps=30, random_state=0).fit(X, y)
    return [w for w in caught if "collapsed" in str(w.message)]


def test_fit_warns_when_every_unlabelled_row_gets_one_class():
    X, y = _two_clusters(np.random.default_rng(0), unlabelled_in_second=0)
    assert len(_collapse_warnings(X, y)) == 1


def test_fit_does_not_warn_when_the_unlabelled_rows_mix():
    X, y = _two_clusters(np.random.default_rng(0), unlabelled_in_second=30)
    assert _collapse_warnings(X, y) == []
