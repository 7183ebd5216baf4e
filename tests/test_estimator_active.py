"""SCNFClassifier.query and warm_start with known answers on small fitted problems."""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from scnf import SCNFClassifier


def _blobs(n=200, sep=1.0, seed=0):
    """Two overlapping classes, means (-sep, 0) and (sep, 0), unit std: their boundary x0 = 0
    crosses the densest region."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal((-sep, 0), 1, (n // 2, 2)), rng.normal((sep, 0), 1, (n // 2, 2))])
    y = np.full(n, -1)
    y[[0, 1, 2, n // 2, n // 2 + 1, n // 2 + 2]] = [0, 0, 0, 1, 1, 1]
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = _blobs(sep=2.0)
    return SCNFClassifier(steps=150, random_state=0, conditional="gmm").fit(X, y), X, y


def test_entropy_picks_the_point_on_the_boundary(fitted):
    clf, _, _ = fitted
    cand = np.array([[-3.0, 0.0], [0.0, 0.0], [3.0, 0.5], [-2.0, 1.0]])
    assert clf.query(cand, n=1, strategy="entropy").tolist() == [1]
    assert clf.query(cand, n=1, strategy="margin").tolist() == [1]


def _on_the_boundary(clf, y0: float) -> np.ndarray:
    """The point (x0, y0) whose posterior is closest to (1/2, 1/2), x0 on a fine grid."""
    grid = np.column_stack([np.linspace(-30, 30, 6001), np.full(6001, y0)])
    return grid[np.argmin(np.abs(clf.predict_proba(grid)[:, 0] - 0.5))]


def test_density_weighting_prefers_the_dense_ambiguous_row_to_an_ambiguous_outlier(fitted):
    clf, _, _ = fitted
    outlier, dense = _on_the_boundary(clf, 10.0), _on_the_boundary(clf, 0.0)
    cand = np.array([outlier, dense, [-3.0, 0.0]])
    p = clf.predict_proba(cand)[:, 0]
    assert abs(p[0] - 0.5) < 0.01 and abs(p[1] - 0.5) < 0.01  # both as ambiguous as can be
    assert clf.score_samples(cand[:1])[0] < clf.score_samples(cand[1:2])[0] - 10  # row 0 is far out
    assert clf.query(cand, n=1, strategy="density").tolist() == [1]
    assert clf.query(cand, n=1, strategy="novelty").tolist() == [0]  # and the outlier is the novel one


def test_novelty_finds_the_row_of_an_unseen_cluster(fitted):
    clf, _, _ = fitted
    rng = np.random.default_rng(1)
    cand = np.concatenate([rng.normal((-2, 0), 1, (20, 2)), [[0.0, -9.0]], rng.normal((2, 0), 1, (20, 2))])
    assert clf.query(cand, n=1, strategy="novelty").tolist() == [20]


def test_discovery_finds_a_class_with_no_label():
    # three well-separated clusters, labels in two of them only: a class the model has never seen,
    # and the smallest of the three (so only the labels, not the clusters' sizes, point to it)
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.5, (k, 2)) for c, k in (((-6, 0), 60), ((6, 0), 60), ((0, 8), 40))])
    y = np.full(len(X), -1)
    y[[0, 1, 60, 61]] = [0, 0, 1, 1]
    clf = SCNFClassifier(steps=150, random_state=0).fit(X, y)
    pos, s = clf.query(n=1, strategy="discovery", random_state=0, return_scores=True)
    assert clf.unlabelled_rows_[pos[0]] >= 120  # a row of the third cluster
    assert 0 < s[0] <= 1
    # candidates given as X: the last fit's labelled rows still say what is covered
    cand = np.concatenate([rng.normal(c, 0.5, (k, 2)) for c, k in (((-6, 0), 10), ((0, 8), 6), ((6, 0), 10))])
    pos = clf.query(cand, n=2, strategy="discovery", random_state=0)
    assert 10 <= pos[0] < 16 and len(set(pos.tolist())) == 2


def test_discovery_clusters_the_standardised_rows_not_f_latent_codes():
    # the rule chosen on the validation split's cold starts: the same clusters as the module's
    # discovery() on the rows as the model sees them (standardised), whatever f does with them
    from scnf.analysis import active
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(c, (0.5, 20.0), (k, 2)) for c, k in (((-6, 0), 40), ((6, 0), 40), ((0, 60), 30))])
    y = np.full(len(X), -1)
    y[[0, 40]] = [0, 1]
    clf = SCNFClassifier(steps=30, random_state=0).fit(X, y)
    std = (X - X.mean(0)) / X.std(0)
    want, want_s = active.discovery(std[y == -1], std[y != -1], 3, random_state=5, min_clusters=3)
    pos, s = clf.query(n=3, strategy="discovery", random_state=5, return_scores=True)
    assert np.array_equal(pos, want) and np.allclose(s, want_s[want])
    latent = active.discovery(clf._latent(X[y == -1]), clf._latent(X[y != -1]), 3, random_state=5, min_clusters=3)[0]
    assert not np.array_equal(latent, want)  # the two spaces pick differently here, so the test can tell them apart


def test_without_x_the_candidates_are_the_unlabelled_rows_and_a_batch_is_diverse(fitted):
    clf, X, y = fitted
    assert np.array_equal(clf.unlabelled_rows_, np.flatnonzero(y == -1))
    pos, s = clf.query(n=4, strategy="entropy", random_state=0, return_scores=True)
    assert len(set(pos.tolist())) == 4 and np.all(np.diff(s) <= 0)  # distinct, best first
    rows = clf.unlabelled_rows_[pos]
    assert np.array_equal(clf.query(X[clf.unlabelled_rows_], n=4, strategy="entropy", random_state=0), pos)
    # diversity: the batch spreads out more than the 4 best scores alone
    top = clf.query(n=4, strategy="entropy", diversity=False)
    spread = lambda r: np.mean([np.linalg.norm(a - b) for a in X[r] for b in X[r]])  # noqa: E731
    assert spread(rows) > spread(clf.unlabelled_rows_[top])


@pytest.mark.parametrize("kwargs, match", [({"n": 500}, "n must be an integer in \\[1, 194\\]"),
                                           ({"n": 0}, "n must be"), ({"strategy": "bald"}, "unknown strategy 'bald'")])
def test_bad_query_arguments_are_named(fitted, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fitted[0].query(**kwargs)


def test_query_before_fit_says_so():
    with pytest.raises(NotFittedError):
        SCNFClassifier().query(np.zeros((3, 2)))


def test_warm_start_continues_from_the_fitted_weights():
    X, y = _blobs()
    clf = SCNFClassifier(steps=40, random_state=0).fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(warm_start=True, steps=1, lr=1e-12)  # one step that changes nothing measurable
    clf.fit(X, y)
    assert np.abs(clf.predict_proba(X) - before).max() < 1e-6 and clf.n_steps_ == 1
    cold = SCNFClassifier(steps=1, lr=1e-12, random_state=0).fit(X, y)
    assert np.abs(cold.predict_proba(X) - before).max() > 1e-2  # a fresh start is elsewhere


def test_a_warm_refit_takes_a_share_of_the_steps_and_new_labels_count():
    X, y = _blobs(n=60)
    clf = SCNFClassifier(epochs=1, min_steps=8, batch_size=16, random_state=0, warm_start=True).fit(X, y)
    assert clf.n_steps_ == 8
    y2 = y.copy()
    y2[[10, 11, 12]] = 0  # 6 rows of class 0 and 3 of class 1 now
    clf.fit(X, y2)
    assert clf.n_steps_ == 2  # a quarter of 8
    assert clf.model_.log_class_prior.exp().tolist() == pytest.approx([2 / 3, 1 / 3])
    y3 = y.copy()
    y3[20] = 2  # a new class: the model cannot continue
    with pytest.warns(UserWarning, match="fitting afresh"):
        clf.fit(X, y3)
    assert clf.classes_.tolist() == [0, 1, 2] and clf.n_steps_ == 8


@pytest.mark.parametrize("share, trained", [(0.0, 0), (0.4, 6), (1.0, 15)])
def test_a_warm_refit_trains_the_share_of_f_it_is_given(share, trained, monkeypatch):
    """WARM_START_F_SHARE: a warm refit changes h and the last ceil(share * 15) of f's 15
    layers (5 blocks of linear map, coupling, ActNorm) and leaves the others exactly as they
    were; afterwards every parameter requires a gradient again (a later fresh fit trains all)."""
    import torch

    import scnf.estimator
    monkeypatch.setattr(scnf.estimator, "WARM_START_F_SHARE", share)
    X, y = _blobs(n=80)
    clf = SCNFClassifier(steps=20, random_state=0, conditional="glow", blocks=5).fit(X, y)
    if share < 1:  # a first fit trains all of f, whatever the share of a warm refit
        monkeypatch.setattr(scnf.estimator, "WARM_START_F_SHARE", 1.0)
        whole = SCNFClassifier(steps=20, random_state=0, conditional="glow", blocks=5).fit(X, y)
        monkeypatch.setattr(scnf.estimator, "WARM_START_F_SHARE", share)
        for a, b in zip(whole.model_.parameters(), clf.model_.parameters()):
            assert torch.equal(a, b)
    layers = list(clf.model_.unconditional.layers)
    assert len(layers) == 15
    before = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
    h_before = [p.detach().clone() for p in clf.model_.conditional.parameters()]
    clf.set_params(warm_start=True, steps=10)
    y2 = y.copy()
    y2[[5, 45]] = [0, 1]
    clf.fit(X, y2)
    changed = [any(not torch.equal(a, p.detach()) for a, p in zip(old, layer.parameters()))
               for old, layer in zip(before, clf.model_.unconditional.layers)]
    assert changed == [False] * (15 - trained) + [True] * trained
    assert any(not torch.equal(a, p.detach()) for a, p in zip(h_before, clf.model_.conditional.parameters()))
    assert all(p.requires_grad for p in clf.model_.parameters())
