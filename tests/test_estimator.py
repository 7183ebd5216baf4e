import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError

from scnf import SCNFClassifier

FAST = dict(steps=200, batch_size=64, blocks=2, hidden=16, h_blocks=2, h_hidden=16, random_state=0)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(300, n_features=3, centers=[[0, 0, 0], [6, 6, 0], [0, 6, 6]], cluster_std=1.0,
                      random_state=0)
    X = X * 100 + 1000  # far from unit scale: standardisation must be accounted for
    y_text = np.array(["a", "b", "c"])[y]
    y_semi = np.full(300, -1, dtype=object)
    for c in "abc":
        idx = np.flatnonzero(y_text == c)[:3]
        y_semi[idx] = c
    y_semi = np.where(y_semi == -1, -1, y_semi)
    return X, y_text, y_semi


@pytest.fixture(scope="module")
def fitted(blobs):
    X, _, y_semi = blobs
    return SCNFClassifier(**FAST).fit(X, y_semi)


def test_fit_predict_with_original_labels(fitted, blobs):
    X, y_text, _ = blobs
    assert list(fitted.classes_) == ["a", "b", "c"]
    pred = fitted.predict(X)
    assert set(pred) <= {"a", "b", "c"}
    assert fitted.score(X, y_text) > 0.8
    proba = fitted.predict_proba(X)
    assert proba.shape == (300, 3) and np.allclose(proba.sum(1), 1)
    assert np.array_equal(fitted.classes_[proba.argmax(1)], pred)


def test_score_samples_in_caller_units(fitted, blobs):
    X, _, _ = blobs
    lp = fitted.score_samples(X)
    # rescaling the data by 100 changes log-density by -3 log(100) per row
    assert lp.shape == (300,) and np.isfinite(lp).all()
    assert np.median(lp) < -3 * np.log(100) + 5


def test_score_samples_integrates_to_one_in_caller_units():
    """A 2-feature model fitted on data of scale ~100: exp(score_samples) integrates to 1
    over a grid in the caller's units, so the standardisation is accounted for."""
    X, y = make_blobs(200, n_features=2, centers=[[0, 0], [5, 5]], random_state=1)
    X = X * 100 + 50
    y_semi = np.full(200, -1)
    y_semi[:6] = y[:6]
    m = SCNFClassifier(**{**FAST, "steps": 30}).fit(X, y_semi)
    lo, hi = X.min(0) - 600, X.max(0) + 600
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 400), np.linspace(lo[1], hi[1], 400))
    p = np.exp(m.score_samples(np.stack([gx.ravel(), gy.ravel()], 1)))
    cell = (gx[0, 1] - gx[0, 0]) * (gy[1, 0] - gy[0, 0])
    assert abs(p.sum() * cell - 1) < 0.03


def test_sample_and_transform(fitted, blobs):
    X, y_text, _ = blobs
    xs, ys = fitted.sample(50)
    assert xs.shape == (50, 3) and set(ys) <= {"a", "b", "c"}  # units: test_sample_in_callers_units
    xs, ys = fitted.sample(5, y="b")
    assert list(ys) == ["b"] * 5
    # transform: z_h of each row under the given label (-1: the predicted one); decoding z_h under
    # that label gives the row back (float64 through f and h: to ~1e-12 of the data's scale)
    x = X[:10]
    pred = fitted.predict(x)
    other = np.roll(fitted.classes_, 1)[np.searchsorted(fitted.classes_, pred)].astype(object)  # never the predicted
    other[0] = -1
    z_pred, z_other = fitted.transform(x), fitted.transform(x, other)
    assert np.array_equal(z_pred, fitted.transform(x, pred))
    assert np.array_equal(z_other[0], z_pred[0]) and not np.isclose(z_other[1:], z_pred[1:]).all(1).any()
    for z, labels in ((z_pred, pred), (z_other, np.where(other == -1, pred, other))):
        idx = torch.as_tensor(np.searchsorted(fitted.classes_, labels.astype(str)))
        with torch.no_grad():
            back = fitted.model_.decode(torch.zeros(10, 0, dtype=torch.float64), torch.as_tensor(z), idx)
        assert np.abs(back.numpy() * fitted.scale_ + fitted.mean_ - x).max() / fitted.scale_.min() < 1e-9


def _units_error(xs: np.ndarray, X: np.ndarray) -> float:
    """The largest, over features, of |mean(xs) - mean(X)| / std(X) and |log(std(xs) / std(X))|."""
    mean_err = np.abs(xs.mean(0) - X.mean(0)) / X.std(0)
    scale_err = np.abs(np.log(xs.std(0) / X.std(0)))
    return float(max(mean_err.max(), scale_err.max()))


def test_sample_in_callers_units():
    """Samples' per-feature mean and std match the data's, on features whose offsets are far
    larger than their scales and whose scales differ by 2e5: samples left standardised, only
    shifted, only scaled, or un-standardised with another feature's mean and scale all fail."""
    X, y = make_blobs(300, n_features=3, centers=[[0, 0, 0], [4, 4, 0], [0, 4, 4]], random_state=0)
    X = X * np.array([0.01, 50.0, 2000.0]) + np.array([-300.0, 5e3, 1e5])
    y_semi = np.full(300, -1)
    y_semi[:9] = y[:9]
    m = SCNFClassifier(**FAST).fit(X, y_semi)
    xs, _ = m.sample(2000)
    assert _units_error(xs, X) < 0.3  # seeds 0-2 give 0.09-0.17
    # what the bugs this guards against would return, from the same draws
    z = (xs - m.mean_) / m.scale_
    wrong = {"standardised": z, "mean only": z + m.mean_, "scale only": z * m.scale_,
             "features reversed": z * m.scale_[::-1] + m.mean_[::-1]}
    for name, w in wrong.items():
        assert _units_error(w, X) > 1.0, name


def test_sklearn_params_clone_and_pickle(fitted, blobs):
    X, _, _ = blobs
    p = fitted.get_params()
    assert p["steps"] == 200 and p["conditional"] is None
    c = clone(fitted)
    assert not hasattr(c, "model_") and c.get_params() == p
    c.set_params(conditional="gmm")
    assert c.conditional == "gmm"
    again = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(again.predict(X), fitted.predict(X))
    assert np.allclose(again.predict_proba(X), fitted.predict_proba(X))


def test_a_gmm_conditional_scores_with_its_class_gaussians(blobs):
    """conditional="gmm" on 3 features (where the default is a Glow h): p(x, y=k) is f's density
    times N(z_f; loc_k, scale_k) p(k), so the probabilities and densities follow by hand."""
    from scnf.bijectors.base import Identity
    from scnf.models.priors import ClassConditionalGaussian

    X, _, y_semi = blobs
    m = SCNFClassifier(conditional="gmm", **{**FAST, "steps": 3}).fit(X, y_semi)
    prior = m.model_.latent_prior
    assert isinstance(prior, ClassConditionalGaussian) and isinstance(m.model_.conditional, Identity)
    with torch.no_grad():
        z_f, log_det = m.model_.unconditional(torch.as_tensor((X - m.mean_) / m.scale_))
        normal = torch.distributions.Normal(prior.loc, prior.scale)
        lj = normal.log_prob(z_f[:, None, :]).sum(2) + m.model_.log_class_prior + log_det[:, None]
    np.testing.assert_allclose(m.predict_log_proba(X), torch.log_softmax(lj, 1).numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(m.score_samples(X), torch.logsumexp(lj, 1).numpy() - np.log(m.scale_).sum(),
                               rtol=0, atol=1e-10)


def test_errors(blobs, fitted):
    X, _, y_semi = blobs
    with pytest.raises(NotFittedError):
        SCNFClassifier().predict(X)
    with pytest.raises(ValueError, match="no labelled rows"):
        SCNFClassifier(**FAST).fit(X, np.full(300, -1))
    with pytest.raises(ValueError, match=r"class\(es\) \['z'\] have no labelled row"):
        SCNFClassifier(classes=["a", "b", "c", "z"], **FAST).fit(X, y_semi)
    with pytest.raises(ValueError, match="at least 2 classes"):
        only_a = np.full(300, -1, dtype=object)
        only_a[y_semi == "a"] = "a"
        SCNFClassifier(**FAST).fit(X, only_a)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        SCNFClassifier(**FAST).fit(bad, y_semi)
    with pytest.raises(ValueError, match="NaN or inf"):
        fitted.predict(bad)
    with pytest.raises(ValueError, match="X has 2 features, but SCNFClassifier is expecting 3 features as input"):
        fitted.predict(X[:, :2])
    with pytest.raises(ValueError, match="y must be 1-D"):
        SCNFClassifier(**FAST).fit(X, y_semi[:10])
    with pytest.raises(ValueError, match="parameter 'steps' must be positive"):
        SCNFClassifier(steps=0).fit(X, y_semi)
    with pytest.raises(ValueError, match="unknown label"):
        fitted.sample(2, y="q")


@pytest.mark.parametrize("unconditional,conditional", [("ffjord", "glow"), ("glow", "ffjord")])
def test_ffjord_parts_fit(unconditional, conditional):
    X, y = make_blobs(120, n_features=2, centers=[[0, 0], [4, 4]], random_state=0)
    y_semi = np.full(120, -1)
    y_semi[:6] = y[:6]
    m = SCNFClassifier(unconditional=unconditional, conditional=conditional, steps=3, batch_size=32, hidden=8,
                       h_hidden=8, h_blocks=1, blocks=1, random_state=0).fit(X, y_semi)
    from scnf.bijectors.ffjord import FFJORD

    model = m.model_
    assert any(isinstance(mod, FFJORD) for mod in model.unconditional.modules()) == (unconditional == "ffjord")
    assert isinstance(model.conditional, FFJORD) == (conditional == "ffjord")
    rows = X[::3]  # 40 rows: each check is an ODE solve
    proba, density = m.predict_proba(rows), m.score_samples(rows)
    x = torch.as_tensor((rows - m.mean_) / m.scale_)
    y = torch.as_tensor(proba.argmax(1))
    with torch.no_grad():
        z, ld_f = model.unconditional(x)
        lj = ld_f[:, None] + model.log_conditional_deep(z) + model.log_class_prior
        z_h, ld_h = model.conditional(z, context=y)
        z_back, ld_h_inv = model.conditional.inverse(z_h, context=y)
        x_back, ld_f_inv = model.unconditional.inverse(z_back)
    # the posterior and the density from f's log-det and h's log p(z_f | y), by hand
    np.testing.assert_allclose(proba, torch.softmax(lj, 1).numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(density, torch.logsumexp(lj, 1).numpy() - np.log(m.scale_).sum(), rtol=0, atol=1e-8)
    # solved back (x -> z_f -> z_h -> z_f -> x), the rows return and the log-dets cancel. dopri5
    # keeps each step's error estimate under atol + rtol |z| = 1e-5 (1 + |z|) ~ 4e-5 here; over
    # the ~20 steps of each way that is ~2e-3 at most (4e-4 seen); a wrong inverse, label or
    # log-det is off by O(1). The Glow parts are exact to ~1e-12.
    assert (x_back - x).abs().max() < 1e-2 and (z_back - z).abs().max() < 1e-2
    assert (ld_f + ld_f_inv).abs().max() < 1e-2 and (ld_h + ld_h_inv).abs().max() < 1e-2


class _CountingTrainer:
    """Wraps the estimator's Trainer, recording how many steps each fit actually took and
    the training config it was given."""
    taken: list[int] = []
    configs: list = []

    def __init__(self, real):
        self.real = real

    def __call__(self, *args, **kwargs):
        trainer = self.real(*args, **kwargs)
        _CountingTrainer.configs.append(trainer.cfg)
        fit = trainer.fit

        def counted_fit():
            out = fit()
            _CountingTrainer.taken.append(trainer.step)
            return out

        trainer.fit = counted_fit
        return trainer


@pytest.fixture
def count_steps(monkeypatch):
    import scnf.estimator as est
    _CountingTrainer.taken, _CountingTrainer.configs = [], []
    monkeypatch.setattr(est, "Trainer", _CountingTrainer(est.Trainer))
    return _CountingTrainer.taken


TINY = dict(batch_size=20, blocks=1, hidden=8, h_blocks=1, h_hidden=8, random_state=0)


def test_steps_follow_the_number_of_rows(count_steps):
    """steps=None: ceil(epochs * n / batch_size) steps, at least min_steps; an explicit
    steps wins. A fixed step count (the old default) fails the first two fits."""
    X, y = make_blobs(200, n_features=2, centers=[[0, 0], [4, 4]], random_state=0)
    y_semi = np.full(200, -1)
    y_semi[:6] = y[:6]
    SCNFClassifier(epochs=0.5, min_steps=1, **TINY).fit(X, y_semi)            # 0.5 * 200 / 20 = 5
    SCNFClassifier(epochs=0.5, min_steps=1, **TINY).fit(X[:80], y_semi[:80])  # 0.5 * 80 / 20 = 2
    SCNFClassifier(epochs=0.5, min_steps=4, **TINY).fit(X[:80], y_semi[:80])  # floor: 4
    m = SCNFClassifier(steps=3, epochs=0.5, min_steps=1, **TINY).fit(X, y_semi)
    assert count_steps == [5, 2, 4, 3]
    assert m.n_steps_ == 3


def test_resolved_params_defaults():
    """The data-dependent defaults: z_f is all features; Glow h up to 8 features, SCNF-GMM
    above; f's width 2 per feature, at least 64; about `epochs` passes over the rows."""
    est = SCNFClassifier()
    assert est.resolved_params(1000, 2) == {"steps": max(est.min_steps, math.ceil(est.epochs * 1000 / 256)),
                                            "conditional": "glow", "deep_dim": 2, "hidden": 64}
    assert est.resolved_params(100, 8)["conditional"] == "glow"
    assert est.resolved_params(100, 9)["conditional"] == "gmm"
    assert est.resolved_params(100, 64)["deep_dim"] == 64
    assert est.resolved_params(100, 64)["hidden"] == 128
    assert est.resolved_params(10 ** 5, 64)["steps"] == math.ceil(est.epochs * 10 ** 5 / 256)
    assert est.resolved_params(10, 64)["steps"] == est.min_steps
    explicit = SCNFClassifier(steps=7, conditional="glow", deep_dim=3, hidden=5).resolved_params(10 ** 5, 64)
    assert explicit == {"steps": 7, "conditional": "glow", "deep_dim": 3, "hidden": 5}


def test_few_labels_a_class_resolve_to_a_glow_h():
    """SCNF-GMM above 8 features only when every class has GMM_MIN_LABELS labelled rows."""
    from scnf.estimator import GMM_MIN_LABELS
    est = SCNFClassifier()
    assert est.resolved_params(100, 9, min_class_labels=GMM_MIN_LABELS)["conditional"] == "gmm"
    assert est.resolved_params(100, 9, min_class_labels=GMM_MIN_LABELS - 1)["conditional"] == "glow"
    assert est.resolved_params(100, 9, min_class_labels=1)["conditional"] == "glow"
    assert SCNFClassifier(conditional="gmm").resolved_params(100, 9, min_class_labels=1)["conditional"] == "gmm"


def _blobs_12d(per_class):
    """12 features, 2 classes, ``per_class`` labelled rows of each (an int, or one a class)."""
    X, y = make_blobs(80, n_features=12, centers=2, random_state=0)
    y_semi = np.full(80, -1)
    for c, m in zip((0, 1), per_class if isinstance(per_class, tuple) else (per_class, per_class)):
        y_semi[np.flatnonzero(y == c)[:m]] = c
    return X, y, y_semi


def test_fit_uses_the_h_its_labels_resolve_to_and_a_warm_refit_keeps_it():
    from scnf.estimator import GMM_MIN_LABELS
    from scnf.models.priors import ClassConditionalGaussian
    X, y, few = _blobs_12d(1)
    m = SCNFClassifier(steps=2, warm_start=True, **TINY).fit(X, few)
    assert m.conditional_ == "glow" and not isinstance(m.model_.latent_prior, ClassConditionalGaussian)
    _, _, many = _blobs_12d(GMM_MIN_LABELS)
    m.fit(X, many)  # a continuation: the model it continues keeps its h
    assert m.conditional_ == "glow" and not isinstance(m.model_.latent_prior, ClassConditionalGaussian)
    fresh = SCNFClassifier(steps=2, **TINY).fit(X, many)
    assert fresh.conditional_ == "gmm" and isinstance(fresh.model_.latent_prior, ClassConditionalGaussian)
    _, _, one_class_short = _blobs_12d((GMM_MIN_LABELS - 1, 3 * GMM_MIN_LABELS))  # the class with fewest decides
    assert SCNFClassifier(steps=2, **TINY).fit(X, one_class_short).conditional_ == "glow"


def test_calibration_folds_use_the_fits_h(monkeypatch):
    """Each fold hides a third of the labels; it must not resolve to another h than the fit's."""
    from scnf.estimator import GMM_MIN_LABELS
    seen = []
    original = SCNFClassifier.fit

    def spy(self, X, y):
        out = original(self, X, y)
        seen.append(self.conditional_)
        return out

    monkeypatch.setattr(SCNFClassifier, "fit", spy)
    X, _, y = _blobs_12d(GMM_MIN_LABELS)
    SCNFClassifier(steps=2, calibration="temperature", **TINY).fit(X, y)
    assert len(seen) == 4 and set(seen) == {"gmm"}  # three folds, then the fit itself


def test_model_size_follows_the_number_of_features():
    """The fitted model has f's coupling nets of the resolved width and, on 40 features, a
    class-conditional Gaussian on z_f = all features as its conditional part."""
    X, y = make_blobs(60, n_features=40, centers=2, random_state=0)
    y_semi = np.full(60, -1)
    y_semi[:16] = y[:16]  # at least 5 labels a class: SCNF-GMM
    m = SCNFClassifier(steps=1, batch_size=20, blocks=1, h_blocks=1, h_hidden=8, random_state=0).fit(X, y_semi)
    assert m.model_.deep_dim == 40 and m.model_.aux_dim == 0
    first_linear = next(mod for mod in m.model_.unconditional.modules() if isinstance(mod, torch.nn.Linear))
    assert first_linear.out_features == 80
    assert m.transform(X[:4]).shape == (4, 40)
    from scnf.models.priors import ClassConditionalGaussian
    assert isinstance(m.model_.latent_prior, ClassConditionalGaussian)


def test_verbose_shows_a_progress_bar(capsys):
    X, y = make_blobs(60, n_features=2, centers=2, random_state=0)
    y_semi = np.full(60, -1)
    y_semi[:6] = y[:6]
    SCNFClassifier(steps=4, verbose=True, **TINY).fit(X, y_semi)
    err = capsys.readouterr().err
    assert "SCNFClassifier.fit" in err and "4/4" in err
    SCNFClassifier(steps=4, **TINY).fit(X, y_semi)
    assert "SCNFClassifier.fit" not in capsys.readouterr().err


@pytest.mark.parametrize("params,message", [
    (dict(epochs=0), "parameter 'epochs' must be positive"),
    (dict(min_steps=-1), "parameter 'min_steps' must be positive"),
    (dict(steps=2.5), "parameter 'steps' must be a positive integer or None"),
])
def test_bad_schedule_parameters(params, message):
    X, y = make_blobs(40, n_features=2, centers=2, random_state=0)
    y_semi = np.full(40, -1)
    y_semi[:6] = y[:6]
    with pytest.raises(ValueError, match=message):
        SCNFClassifier(**{**TINY, **params}).fit(X, y_semi)


@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_class_means_start_at_the_labelled_rows(seed):
    """init_from_labels (default): SCNF-GMM's class means start at the labelled rows' means in
    z_f, so a model that has not moved (lr ~ 0) already separates well-separated blobs; with
    random means it does not."""
    X, y = make_blobs(300, n_features=10, centers=3, cluster_std=1.0, random_state=1)
    X = X * 50 - 7
    y_semi = np.full(300, -1)
    for c in range(3):
        y_semi[np.flatnonzero(y == c)[:3]] = c
    still = dict(steps=1, lr=1e-9, batch_size=64, blocks=1, hidden=8, input_noise=0.0, random_state=seed,
                 conditional="gmm")  # (three labels a class would resolve to a Glow h)
    assert SCNFClassifier(**still).fit(X, y_semi).score(X, y) == 1.0
    assert SCNFClassifier(init_from_labels=False, **still).fit(X, y_semi).score(X, y) < 0.9


def test_input_noise_and_schedule_reach_the_trainer(count_steps):
    """input_noise (default 0.3 in standardised units) and schedule (default linear decay) are
    the trainer's train.input_noise and train.schedule; bad values are refused by name."""
    import scnf.estimator as est
    X, y = make_blobs(60, n_features=2, centers=2, random_state=0)
    y_semi = np.full(60, -1)
    y_semi[:6] = y[:6]
    SCNFClassifier(steps=2, **TINY).fit(X, y_semi)
    SCNFClassifier(steps=2, input_noise=0.0, schedule="constant", **TINY).fit(X, y_semi)
    assert [(cfg.input_noise, cfg.schedule) for cfg in _CountingTrainer.configs] == [
        (est.INPUT_NOISE, "linear"), (0.0, "constant")]
    with pytest.raises(ValueError, match="parameter 'input_noise'"):
        SCNFClassifier(steps=2, input_noise=-1.0, **TINY).fit(X, y_semi)
    with pytest.raises(ValueError, match="parameter 'schedule' must be one of"):
        SCNFClassifier(steps=2, schedule="cosine", **TINY).fit(X, y_semi)


def _semi_blobs():
    X, y = make_blobs(120, n_features=2, centers=[[0, 0], [5, 5]], cluster_std=0.5, random_state=0)
    names = np.array(["cat", "dog"], dtype=object)[y]
    names[10:] = -1  # the integer -1 in an object array: unlabelled
    return X, y, names


def test_string_labels_with_unlabelled_rows_are_read_as_scikit_learn_reads_them():
    """An object array with the integer -1 on unlabelled rows: classes are the names, -1 is not one."""
    X, y, names = _semi_blobs()
    clf = SCNFClassifier(steps=30, lr=1e-2, **TINY).fit(X, names)
    assert clf.classes_.tolist() == ["cat", "dog"]
    assert set(clf.predict(X).tolist()) <= {"cat", "dog"}


@pytest.mark.parametrize("make_y,match", [
    (lambda names: np.where(names == -1, "-1", names).astype(str), "string dtype .* holds '-1'"),
    (lambda names: np.where(names == -1, None, names), "contains None"),
    (lambda names: np.where(names == -1, "-1", names), "string '-1'"),
    (lambda names: np.where(names == -1, -2, np.where(names == "cat", 0, 1)).astype(int), r"\[-2\] are negative"),
    (lambda names: np.where(np.arange(len(names)) == 3, -2.0, np.where(names == -1, -1.0, np.where(names == "cat", 0.0, 1.0))),
     r"^label\(s\) \[-2\.0\] are negative"),
], ids=["str-dtype", "none", "str-minus-one", "minus-two", "float-minus-two"])
def test_labels_that_would_be_misread_are_refused(make_y, match):
    X, _, names = _semi_blobs()
    with pytest.raises(ValueError, match=match):
        SCNFClassifier(steps=2, **TINY).fit(X, make_y(names))


def test_score_skips_unlabelled_rows_so_cross_validation_works():
    from sklearn.model_selection import cross_val_score

    X, y, _ = _semi_blobs()
    y_semi = y.copy()
    y_semi[10:] = -1
    y_semi[60:70] = y[60:70]  # some labelled rows in every fold
    clf = SCNFClassifier(steps=30, lr=1e-2, **TINY).fit(X, y_semi)
    keep = y_semi != -1
    assert clf.score(X, y_semi) == pytest.approx((clf.predict(X[keep]) == y_semi[keep]).mean())
    scores = cross_val_score(SCNFClassifier(steps=30, lr=1e-2, **TINY), X, y_semi, cv=2)
    # 10 labelled rows in each held-out half: counted among its 60 rows, -1 rows as errors,
    # the score could not exceed 10 / 60
    assert (scores >= 0.5).all(), scores
    with pytest.raises(ValueError, match="no labelled row"):
        clf.score(X[20:40], y_semi[20:40])


def test_noise_levels_are_trained_in_turn_and_the_best_held_out_one_is_kept(monkeypatch):
    """input_noise as levels: each trained for its share of the steps, with the noise the
    trainer draws switched at the share's end; the held-out score (monkeypatched to a known
    ranking) picks the level, and the model ends with that level's weights, not the last."""
    import scnf.estimator as est
    X, y = make_blobs(400, n_features=2, centers=[[0, 0], [4, 4]], random_state=0)
    y_semi = np.full(400, -1)
    y_semi[:6] = y[:6]
    seen, snapshots = [], []
    ranking = iter([-5.0, -1.0, -3.0])
    real_call = est._NoiseSelection.__call__

    def spy(self, trainer, step):
        seen.append((step, trainer.cfg.input_noise))
        out = real_call(self, trainer, step)
        if len(snapshots) < len(self.weights):
            snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return out

    monkeypatch.setattr(est._NoiseSelection, "__call__", spy)
    monkeypatch.setattr(est._NoiseSelection, "_held_out", lambda self, model: next(ranking))
    clf = SCNFClassifier(steps=20, input_noise=(0.5, 0.2, 0.05), **TINY).fit(X, y_semi)
    # steps 1-12 at 0.5 (60 %), 13-16 at 0.2, 17-20 at 0.05
    assert [n for s, n in seen] == [0.5] * 12 + [0.2] * 4 + [0.05] * 4
    assert clf.input_noise_ == 0.2 and clf.noise_validation_ == {0.5: -5.0, 0.2: -1.0, 0.05: -3.0}
    assert clf.n_noise_validation_rows_ == 39  # 10 % of the 394 unlabelled rows
    chosen, last = snapshots[1], snapshots[2]
    got = clf.model_.state_dict()
    assert all(torch.equal(got[k].float(), chosen[k].float()) for k in chosen)
    assert any(not torch.equal(got[k].float(), last[k].float()) for k in last)


def test_auto_noise_prefers_less_noise_for_sharp_clusters():
    """A known answer: blobs of std 0.1 (about 0.05 standardised). The held-out likelihood
    without noise favours the smallest level; the fixed default 0.3 fits a density too wide,
    so the held-out log-likelihood of new rows from the same blobs is higher with "auto"."""
    X, y = make_blobs(1200, n_features=2, centers=[[0, 0], [3, 3]], cluster_std=0.1, random_state=0)
    y_semi = np.full(1000, -1)
    y_semi[:6] = y[:6]
    kw = dict(steps=600, lr=3e-3, batch_size=128, blocks=2, hidden=32, h_blocks=1, h_hidden=16, random_state=0)
    auto = SCNFClassifier(input_noise="auto", **kw).fit(X[:1000], y_semi)
    fixed = SCNFClassifier(input_noise=0.3, **kw).fit(X[:1000], y_semi)
    assert auto.input_noise_ == 0.03 and fixed.input_noise_ == 0.3
    assert list(auto.noise_validation_) == [0.3, 0.1, 0.03]
    assert auto.noise_validation_[0.03] > auto.noise_validation_[0.3]
    assert auto.score_samples(X[1000:]).mean() > fixed.score_samples(X[1000:]).mean() + 1.0


@pytest.mark.parametrize("bad", ["high", [], [0.3, -0.1], [0.3, float("nan")], True, [0.3, 0.3]])
def test_bad_noise_levels_are_refused_by_name(bad):
    X, y = make_blobs(60, n_features=2, centers=2, random_state=0)
    y_semi = np.full(60, -1)
    y_semi[:6] = y[:6]
    with pytest.raises(ValueError, match="parameter 'input_noise'"):
        SCNFClassifier(steps=2, input_noise=bad, **TINY).fit(X, y_semi)


@pytest.fixture
def trainer_inputs(monkeypatch):
    """Each fit's training rows (``data``) and noise selector (``callback``), as given to the Trainer."""
    import scnf.estimator as est
    seen = []
    real = est.Trainer

    def spy(model, data, cfg, **kwargs):
        seen.append({"data": data, "selector": kwargs.get("callback"), "cfg": cfg})
        return real(model, data, cfg, **kwargs)

    monkeypatch.setattr(est, "Trainer", spy)
    return seen


def _labelled_and_unlabelled(n_labelled, n_unlabelled, seed=0):
    X, y = make_blobs(n_labelled + n_unlabelled, n_features=2, centers=[[0, 0], [4, 4]], random_state=seed)
    y_semi = y.copy()
    y_semi[n_labelled:] = -1
    return X, y_semi


def test_auto_noise_holds_out_unlabelled_rows_only(trainer_inputs):
    """200 labelled and 300 unlabelled rows: 30 unlabelled rows (10 %) are held out to choose the
    noise level; every labelled row is trained on."""
    X, y_semi = _labelled_and_unlabelled(200, 300)
    clf = SCNFClassifier(steps=5, input_noise="auto", **TINY).fit(X, y_semi)
    assert clf.n_noise_validation_rows_ == 30
    (seen,) = trainer_inputs
    y_train = seen["data"].y.numpy()
    assert (y_train >= 0).sum() == 200 and (y_train == -1).sum() == 270
    # the held-out rows are unlabelled rows of X (standardised as the model sees them)
    x_std = torch.as_tensor((X - clf.mean_) / clf.scale_, dtype=torch.float32)
    held = seen["selector"].x_val
    at = torch.cdist(held, x_std).argmin(1).numpy()
    assert torch.equal(x_std[at], held) and len(set(at.tolist())) == 30
    assert (y_semi[at] == -1).all()


@pytest.mark.parametrize("n_unlabelled, held_out", [(199, 0), (200, 20)])
def test_auto_noise_without_enough_unlabelled_rows_uses_the_first_level(trainer_inputs, n_unlabelled, held_out):
    """10 % of the unlabelled rows are held out when that is at least 20 rows (200 unlabelled
    rows); with 199 nothing is held out, every row trains, and the first level, 0.3, is used
    throughout (not a level chosen by the NaN score of no rows)."""
    import scnf.estimator as est
    X, y_semi = _labelled_and_unlabelled(6, n_unlabelled)
    clf = SCNFClassifier(steps=5, input_noise="auto", **TINY).fit(X, y_semi)
    (seen,) = trainer_inputs
    if not held_out:
        assert clf.input_noise_ == 0.3 and clf.noise_validation_ == {}
        assert seen["selector"] is None and seen["cfg"].input_noise == 0.3
    else:
        assert seen["selector"] is not None and list(clf.noise_validation_) == list(est.NOISE_LEVELS)
    assert clf.n_noise_validation_rows_ == held_out
    assert seen["data"].x.shape[0] == 6 + n_unlabelled - held_out


# ------------------------------------------------------------------ missing labels, in every container
class _NAType:
    """A stand-in for pandas.NA where pandas is not installed: named as pandas names it, and
    ambiguous as a boolean (what made numpy's unique raise a TypeError)."""

    def __bool__(self):
        raise TypeError("boolean value of NA is ambiguous")

    def __eq__(self, other):
        return self

    def __ne__(self, other):
        return self

    __hash__ = object.__hash__


_NAType.__name__ = "NAType"
_MISSING_MATCH = r"y contains (None|NaN|pd\.NA) on \d+ row\(s\).*mark unlabelled rows with the integer -1"


def _with_missing(marker, names=True):
    """Labels of _semi_blobs with its unlabelled rows marked by ``marker`` instead of -1 (a list)."""
    _, y, named = _semi_blobs()
    labels = [n if names else int(k) for n, k in zip(named.tolist(), y.tolist())]
    return [marker if n == -1 else v for n, v in zip(named.tolist(), labels)]


_NUMPY_CASES = {
    "list-None-names": lambda: _with_missing(None),
    "list-NaN-names": lambda: _with_missing(float("nan")),  # np.asarray would make "nan" a class
    "list-npnan-names": lambda: _with_missing(np.nan),
    "list-None-ints": lambda: _with_missing(None, names=False),
    "list-NA-names": lambda: _with_missing(_NAType()),
    "object-None-names": lambda: np.array(_with_missing(None), dtype=object),
    "object-NaN-names": lambda: np.array(_with_missing(np.nan), dtype=object),
    "object-NA-names": lambda: np.array(_with_missing(_NAType()), dtype=object),
    "object-NaN-ints": lambda: np.array(_with_missing(np.nan, names=False), dtype=object),
    "float-NaN": lambda: np.array(_with_missing(np.nan, names=False), dtype=float),
    "column-NaN": lambda: np.array(_with_missing(np.nan, names=False), dtype=float)[:, None],
}


@pytest.mark.parametrize("make_y", list(_NUMPY_CASES.values()), ids=list(_NUMPY_CASES))
def test_every_missing_marker_in_numpy_containers_gets_the_documented_value_error(make_y):
    X, _, _ = _semi_blobs()
    with pytest.raises(ValueError, match=_MISSING_MATCH):
        SCNFClassifier(steps=2, **TINY).fit(X, make_y())


_PANDAS_CASES = {
    "series-object-None": lambda pd: pd.Series(_with_missing(None), dtype=object),
    "series-object-NaN": lambda pd: pd.Series(_with_missing(np.nan), dtype=object),
    "series-string-None": lambda pd: pd.Series(_with_missing(None), dtype="string"),  # pd.NA inside
    "series-string-NA": lambda pd: pd.Series(_with_missing(pd.NA), dtype="string"),
    "series-Int64-NA": lambda pd: pd.Series(_with_missing(pd.NA, names=False), dtype="Int64"),
    "series-float-NaN": lambda pd: pd.Series(_with_missing(np.nan, names=False), dtype=float),
    "categorical-None": lambda pd: pd.Categorical(_with_missing(None)),
    "categorical-NaN": lambda pd: pd.Categorical(_with_missing(np.nan)),
    "series-categorical-NA": lambda pd: pd.Series(_with_missing(pd.NA), dtype="category"),
}


@pytest.mark.parametrize("make_y", list(_PANDAS_CASES.values()), ids=list(_PANDAS_CASES))
def test_every_missing_marker_in_pandas_containers_gets_the_documented_value_error(make_y):
    pd = pytest.importorskip("pandas")
    X, _, _ = _semi_blobs()
    with pytest.raises(ValueError, match=_MISSING_MATCH):
        SCNFClassifier(steps=2, **TINY).fit(X, make_y(pd))


def test_score_and_transform_refuse_missing_labels_too():
    X, _, names = _semi_blobs()
    clf = SCNFClassifier(steps=2, **TINY).fit(X, names)
    for method in (clf.score, clf.transform):
        with pytest.raises(ValueError, match=_MISSING_MATCH):
            method(X, np.array(_with_missing(np.nan), dtype=object))


@pytest.mark.parametrize("labels, match", [(["a", "b", -2], r"label\(s\) \[-2\] are negative"),
                                           (["a", "b", 3], "mix class names and numbers")])
def test_names_mixed_with_numbers_are_named(labels, match):
    """An object array of class names with a stray number: one ValueError saying what is wrong
    (numpy could not even sort it: a TypeError before)."""
    X = np.random.default_rng(0).normal(size=(10, 2))
    y = np.array(labels + [-1] * 7, dtype=object)
    with pytest.raises(ValueError, match=match):
        SCNFClassifier(steps=2).fit(X, y)
