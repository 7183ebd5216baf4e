"""SCNFClassifier's n_jobs: the torch threads of fit and predict, scikit-learn's meaning, the
caller's setting back after each call."""
import numpy as np
import pytest
import torch

from scnf import SCNFClassifier


@pytest.fixture
def three_threads(torch_threads):
    torch_threads(3)


def _data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2, 1, (30, 2)), rng.normal(2, 1, (30, 2))])
    y = np.full(60, -1)
    y[[0, 1, 30, 31]] = [0, 0, 1, 1]
    return X, y


@pytest.mark.parametrize("n_jobs, expected", [(None, 1), (2, 2), (-1, None)])
def test_n_jobs_sets_the_threads_of_fit_and_predict_and_restores_the_callers(three_threads, n_jobs, expected,
                                                                              monkeypatch):
    import os

    from scnf.models.flow import SemiConditionalFlow

    seen = []
    real = SemiConditionalFlow.log_joint

    def spy(self, x):
        seen.append(torch.get_num_threads())
        return real(self, x)

    monkeypatch.setattr(SemiConditionalFlow, "log_joint", spy)
    X, y = _data()
    clf = SCNFClassifier(steps=3, batch_size=16, n_jobs=n_jobs, random_state=0).fit(X, y)
    clf.predict(X)
    want = expected if expected is not None else os.cpu_count()
    assert seen and set(seen) == {want}, seen
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("bad", [0, 1.5, "2", True])
def test_a_bad_n_jobs_is_named(bad):
    X, y = _data()
    with pytest.raises(ValueError, match="n_jobs"):
        SCNFClassifier(steps=2, n_jobs=bad).fit(X, y)
