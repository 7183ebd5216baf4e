"""``calibration="temperature"``: the temperature is fitted on out-of-fold posteriors of the
labelled rows, computed here by hand as the known answer; predictions keep their classes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.model_selection import StratifiedKFold

from scnf import SCNFClassifier
from scnf.runs.calibration import fit_temperature

PARAMS = dict(steps=25, hidden=16, blocks=2, h_blocks=2, h_hidden=16, random_state=3)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(300, centers=3, n_features=3, cluster_std=6.0, random_state=0)  # overlapping: T_cv ~1.3
    y_semi = np.full(len(y), -1)
    rng = np.random.default_rng(0)
    for c in range(3):
        idx = rng.choice(np.flatnonzero(y == c), 4, replace=False)  # 4 labels a class: 3 folds
        y_semi[idx] = c + 10  # class names 10, 11, 12: the folds must use codes, not names
    return X, y_semi


def test_the_temperature_is_fitted_on_out_of_fold_posteriors(blobs, torch_threads):
    X, y = blobs
    clf = SCNFClassifier(calibration="temperature", **PARAMS).fit(X, y)
    rows = np.flatnonzero(y != -1)
    codes = np.searchsorted(clf.classes_, y[rows])
    out = np.zeros((rows.size, 3))
    for train, held in StratifiedKFold(3, shuffle=True, random_state=3).split(rows, codes):
        y_fold = np.full(len(y), -1)
        y_fold[rows[train]] = codes[train]  # fold k's labels hidden, its rows kept unlabelled
        fold = SCNFClassifier(**PARAMS).fit(X, y_fold)
        out[held] = fold._log_joint(X[rows[held]]).numpy()
    assert clf.temperature_cv_ == pytest.approx(fit_temperature(out, codes), rel=1e-9)
    assert clf.temperature_cv_ > 1.001  # softened: the folds' posteriors are over-confident
    assert clf.temperature_ == clf.temperature_cv_


def test_folds_that_predict_every_held_out_label_right_do_not_sharpen_the_posterior(torch_threads):
    X, y = make_blobs(300, centers=3, n_features=3, cluster_std=0.3, center_box=(-20, 20), random_state=0)
    y_semi = np.full(len(y), -1)
    for c in range(3):
        y_semi[np.flatnonzero(y == c)[:4]] = c
    params = {**PARAMS, "steps": 100}
    plain = SCNFClassifier(**params).fit(X, y_semi)
    cal = SCNFClassifier(calibration="temperature", **params).fit(X, y_semi)
    # the out-of-fold log-loss falls as T shrinks: the search ends near its lower bound, 0.05
    assert cal.temperature_cv_ < 0.1
    assert cal.temperature_ == 1.0
    np.testing.assert_allclose(cal.predict_proba(X), plain.predict_proba(X), rtol=1e-12, atol=1e-14)


def test_a_temperature_rescales_the_posterior_and_keeps_every_prediction(blobs, torch_threads):
    X, y = blobs
    plain = SCNFClassifier(**PARAMS).fit(X, y)
    cal = SCNFClassifier(calibration="temperature", **PARAMS).fit(X, y)
    lj = plain._log_joint(X).numpy()
    np.testing.assert_allclose(cal._log_joint(X).numpy(), lj)  # the same model, fitted the same way
    expected = torch.softmax(torch.from_numpy(lj) / cal.temperature_, 1).numpy()
    np.testing.assert_allclose(cal.predict_proba(X), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.exp(cal.predict_log_proba(X)), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(cal.predict(X), plain.predict(X))
    assert plain.temperature_ == plain.temperature_cv_ == 1.0


def test_one_label_in_a_class_leaves_nothing_to_hold_out(blobs, torch_threads):
    X, y = blobs
    y = y.copy()
    y[np.flatnonzero(y == 10)[1:]] = -1  # class 10 keeps one label
    with pytest.warns(UserWarning, match="two labelled rows of every class"):
        clf = SCNFClassifier(calibration="temperature", **PARAMS).fit(X, y)
    assert clf.temperature_ == clf.temperature_cv_ == 1.0


def test_an_unknown_calibration_is_a_value_error_before_any_training(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="'calibration' must be None or 'temperature'"):
        SCNFClassifier(calibration="isotonic", **PARAMS).fit(X, y)
