"""SCNFClassifier against scikit-learn's own estimator checks (``check_estimator``).

Checks that cannot apply are declared, with the reason, in
``scnf.estimator.SKLEARN_EXPECTED_FAILED_CHECKS``; this test fails if any other check fails,
if a declared check passes (the declaration is then stale), or if a check is skipped for a
reason other than a missing optional dependency of scikit-learn's (pandas, array API).
"""
import re
import warnings

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler
from sklearn.utils import shuffle
from sklearn.utils.estimator_checks import check_classifiers_predictions, check_estimator

from scnf import SCNFClassifier
from scnf.estimator import SKLEARN_EXPECTED_FAILED_CHECKS

# Small and quick, yet trained enough for check_classifiers_train's accuracy > 0.83 on its
# blobs (about 0.9 here): 30 steps at lr 1e-2.
CHECKED = dict(steps=30, lr=1e-2, batch_size=32, blocks=1, hidden=8, h_blocks=1, h_hidden=8, random_state=0)

# Skips that depend on what is installed, not on the estimator.
ENVIRONMENT_SKIPS = re.compile(r"is not installed|SCIPY_ARRAY_API is not set")


def test_every_declared_check_has_a_reason():
    assert SKLEARN_EXPECTED_FAILED_CHECKS
    for name, reason in SKLEARN_EXPECTED_FAILED_CHECKS.items():
        assert name.startswith("check_") and isinstance(reason, str) and len(reason) > 20, name


def test_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(SCNFClassifier(**CHECKED), expected_failed_checks=SKLEARN_EXPECTED_FAILED_CHECKS,
                                  on_skip=None, on_fail=None)
    assert len(results) > 40  # the checks ran
    failed = [f"{r['check_name']}: {r['exception']!r}" for r in results if r["status"] == "failed"]
    assert not failed, "scikit-learn checks failed:\n" + "\n".join(failed)
    stale = sorted({r["check_name"] for r in results if r["expected_to_fail"] and r["status"] != "xfail"})
    assert not stale, f"declared in SKLEARN_EXPECTED_FAILED_CHECKS but did not fail: {stale}"
    ran = {r["check_name"] for r in results}
    missing = sorted(set(SKLEARN_EXPECTED_FAILED_CHECKS) - ran)
    assert not missing, f"declared in SKLEARN_EXPECTED_FAILED_CHECKS but not run by scikit-learn: {missing}"
    skipped = [f"{r['check_name']}: {r['exception']}" for r in results
               if r["status"] == "skipped" and not ENVIRONMENT_SKIPS.search(str(r["exception"]))]
    assert not skipped, "checks skipped:\n" + "\n".join(skipped)


def _classes_problems():
    """check_classifiers_classes' data and labels, less its {-1, 1} problem (-1 = unlabelled)."""
    X, y = make_blobs(n_samples=30, random_state=0, cluster_std=0.1)
    X, y = shuffle(X, y, random_state=7)
    X = StandardScaler().fit_transform(X)
    binary = y != 2
    names3 = np.take(["one", "two", "three"], y)
    names2 = np.take(["one", "two"], y[binary])
    for X_, names in [(X[binary], names2), (X, names3)]:
        yield X_, names
        yield X_, names.astype("O")


def test_classes_with_string_and_object_labels():
    """The parts of check_classifiers_classes that apply: classes_ and predictions in the
    caller's labels, for str and object labels, two and three classes."""
    for X, y in _classes_problems():
        check_classifiers_predictions(X, y, "SCNFClassifier", SCNFClassifier(**CHECKED))


def test_minus_one_is_unlabelled_not_a_class():
    """Why check_classifiers_classes is declared: its labels {-1, 1} leave one class."""
    X, y = make_blobs(n_samples=30, centers=2, random_state=0)
    with pytest.raises(ValueError, match="at least 2 classes, got 1 class"):
        SCNFClassifier(**CHECKED).fit(X, np.where(y == 0, -1, 1))
