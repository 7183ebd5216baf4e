"""A scikit-learn classifier: semi-supervised SCNF for tabular data.

``fit(X, y)`` takes ``y = -1`` for unlabelled rows, as ``sklearn.semi_supervised`` does.
Features are standardised internally; densities and samples are reported in the caller's
units (the standardisation's log-Jacobian is accounted for). With the default
``input_noise=0.3`` the flow is fitted to the training rows smoothed by Gaussian noise (0.3
standard deviations of each standardised feature), so ``score_samples`` and ``sample`` describe
that smoothed distribution, not the rows' own; ``input_noise=0`` fits the rows themselves, and
``input_noise="auto"`` lowers the noise in stages and keeps the stage whose held-out rows are
most likely without noise (``input_noise_`` says which), as one chooses a kernel bandwidth.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import TransformerTags
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .analysis import active
from .analysis.active import DEFAULT_STRATEGY
from .config import ModelConfig, RunConfig, TrainConfig, validate
from .errors import ConfigError, TrainingCompileFailed
from .models import registry
from .models.flow import class_aware_init, class_prior_from_labels
from .data.batches import SemiSupervisedData
from .training.trainer import Trainer


#: scikit-learn's estimator checks that cannot apply to a semi-supervised density model, each
#: with the reason: pass it as ``check_estimator(..., expected_failed_checks=...)`` or
#: ``parametrize_with_checks(..., expected_failed_checks=lambda est: ...)``. (scikit-learn >= 1.6
#: has no tag for expected failures; this dict is the one place they are declared, and
#: tests/test_sklearn_checks.py fails if a listed check passes or an unlisted one fails.)
SKLEARN_EXPECTED_FAILED_CHECKS: dict[str, str] = {
    "check_classifiers_classes": (
        "y = -1 marks unlabelled rows (as in sklearn.semi_supervised), so the check's binary "
        "problem labelled {-1, 1} has labelled rows of one class only, which fit rejects; "
        "its other problems (string and object labels) are run by the test suite"),
}


#: Defaults chosen on the benchmark suite (benchmarks/estimator_suite.py; RESULTS.md, "Estimator defaults").
EPOCHS = 300
MIN_STEPS = 500
CLF_WEIGHT = 1.0
INPUT_NOISE = 0.3
#: ``input_noise="auto"``: the noise levels tried, in the order trained, and the share of the
#: steps each gets (see :meth:`SCNFClassifier.fit`).
NOISE_LEVELS = (0.3, 0.1, 0.03)
NOISE_SHARES = (0.6, 0.2, 0.2)
#: the share of the unlabelled rows held out (``validation_fraction``) to choose the noise level
#: or stop training, and the fewest such rows for either by default
VALIDATION_FRACTION = 0.1
NOISE_VALIDATION_MIN = 20
LR = 3e-3
#: ``conditional=None``: a class-conditional Gaussian h (SCNF-GMM) above 8 features only when
#: every class has at least this many labelled rows; with fewer its fit collapsed onto one
#: class on the validation split of classif-50 and mnist-pca40 (RESULTS.md, "Active
#: learning"), and a conditional Glow h is used instead
GMM_MIN_LABELS = 5
#: ``warm_start=True``: a continuation takes this share of the resolved steps (unless ``steps`` is set)
WARM_START_SHARE = 0.25
#: ``warm_start=True``: a continuation trains h and this share of f's layers, counted from f's
#: output end (rounded up); the layers before them keep their weights and are not
#: backpropagated through (1: all of f; 0: h alone)
WARM_START_F_SHARE = 1.0
#: ``calibration="temperature"``: the most folds over the labelled rows
CALIBRATION_FOLDS = 3
#: the stopping rule (``early_stopping``): checks per fit (at most), the evaluations without
#: progress that stop it, and what counts as progress (see :class:`_Convergence`)
CHECKS_PER_FIT = 50
N_ITER_NO_CHANGE = 5
TOL = 1e-2
PREDICTION_CHANGE_TOL = 0.01


@contextmanager
def _hold_f_prefix(model, share: float):
    """Within the block the parameters of f's first layers do not require gradients, so that
    training leaves them as they are: all but the last ``ceil(share * L)`` of f's ``L`` layers
    (``share`` 1: none held). Each parameter's own setting comes back after the block."""
    layers = list(getattr(model.unconditional, "layers", [model.unconditional]))
    held = len(layers) - math.ceil(float(share) * len(layers))
    params = [p for layer in layers[:max(held, 0)] for p in layer.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def _torch_threads(n: int):
    """torch uses ``n`` threads within the block; the caller's setting comes back after it."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _check_semi_supervised_labels(y: np.ndarray) -> None:
    """What scikit-learn's semi-supervised estimators accept: numbers, or an object array, with
    the integer -1 on unlabelled rows. A string array is refused (its "-1" would be a class)."""
    if y.dtype.kind in "US" and np.any(np.char.strip(y.astype(str)) == "-1"):
        raise ValueError(
            f"y has a string dtype ({y.dtype}) and holds '-1', which would be read as a class, not as "
            "an unlabelled row. Pass an object array with the integer -1 on unlabelled rows, e.g. "
            "y = np.array(labels, dtype=object); y[unlabelled] = -1")
    if y.dtype == object:
        if any(v is None for v in y):
            raise ValueError("y contains None: mark unlabelled rows with the integer -1")
        if any(isinstance(v, str) and v.strip() == "-1" for v in y):
            raise ValueError("y contains the string '-1', which would be a class: mark unlabelled rows "
                             "with the integer -1")


_NEGATIVE = ("are negative: -1 marks unlabelled rows, and no other negative label is allowed (encode classes "
             "as 0, 1, ... or as names)")


def _check_no_negative_classes(labels: np.ndarray) -> None:
    """-1 marks unlabelled rows; another negative number is almost surely a mistake for it."""
    if labels.dtype.kind in "iuf":
        neg = np.unique(labels[labels < 0])
        if neg.size:
            raise ValueError(f"label(s) {neg.tolist()[:5]} {_NEGATIVE}")


def _check_names_not_mixed_with_numbers(labels: np.ndarray) -> None:
    """An object array of class names with a stray number (numpy cannot even sort it)."""
    if labels.dtype == object:
        numbers = [v for v in labels if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
        if numbers and len(numbers) < len(labels):
            neg = sorted({v for v in numbers if v < 0})
            if neg:
                raise ValueError(f"label(s) {neg[:5]} {_NEGATIVE}")
            raise ValueError(f"labels mix class names and numbers (e.g. {numbers[0]!r}): give every class as a "
                             "name, or every class as a number, with the integer -1 on unlabelled rows")


#: the fit-collapse warning: the share of the unlabelled rows in one class above which it is
#: raised (when that class holds at most half of the labelled rows), and the fewest unlabelled rows
COLLAPSE_SHARE = 0.9
COLLAPSE_MIN_ROWS = 20


def _collapse_message(pred_unlabelled: np.ndarray, y_labelled: np.ndarray, classes: np.ndarray) -> str | None:
    """A warning when one class takes almost every unlabelled row although the labels are mixed.

    ``pred_unlabelled`` and ``y_labelled`` are class indices. Returns the message when at least
    :data:`COLLAPSE_MIN_ROWS` unlabelled rows exist, more than :data:`COLLAPSE_SHARE` of them
    are predicted as one class, and that class holds at most half of the labelled rows (the
    labels say the classes mix; the unlabelled rows were all given one); otherwise None."""
    n = len(pred_unlabelled)
    if n < COLLAPSE_MIN_ROWS or len(y_labelled) == 0:
        return None
    counts = np.bincount(pred_unlabelled, minlength=len(classes))
    top = int(counts.argmax())
    share, labelled_share = counts[top] / n, float(np.mean(y_labelled == top))
    if share <= COLLAPSE_SHARE or labelled_share > 0.5:
        return None
    return (f"the fit gave {share:.0%} of the {n} unlabelled rows the class {classes[top]!r}, which holds "
            f"{labelled_share:.0%} of the labelled rows: it has probably collapsed onto one class "
            f"(seen with a class-conditional Gaussian h, conditional='gmm', and one to three labels a class "
            f"in many features). Try conditional='glow' or more labelled rows, and check predict() on "
            f"rows whose labels you know.")


@torch.no_grad()
def _eval_log_joint(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x, y) of held-out rows in eval mode (float64), the model's mode restored after."""
    was = model.training
    model.eval()
    try:
        return model.log_joint(x).double()
    finally:
        model.train(was)


class _NoiseSelection:
    """The trainer's callback for several noise levels: level i is trained for its share of the
    steps (:data:`NOISE_SHARES`: the first 0.6, the others the rest in equal parts); at the end
    of each share the mean log-likelihood of the held-out rows *without* noise is recorded with
    a copy of the weights, and the next level starts. :meth:`choose` keeps the best weights."""

    def __init__(self, levels: tuple[float, ...], steps: int, x_val: torch.Tensor):
        self.levels, self.x_val = levels, x_val
        shares = NOISE_SHARES if len(levels) == len(NOISE_SHARES) else \
            (0.6, *[0.4 / (len(levels) - 1)] * (len(levels) - 1))
        ends = np.round(np.cumsum(shares) * steps).astype(int)
        ends[-1] = steps
        self.ends = [max(int(e), i + 1) for i, e in enumerate(ends)]
        self.scores: dict[float, float] = {}
        self.weights: dict[float, dict] = {}

    def _held_out(self, model) -> float:
        return float(torch.logsumexp(_eval_log_joint(model, self.x_val), 1).mean())

    def __call__(self, trainer, step: int) -> bool:
        if step in self.ends:
            i = self.ends.index(step)
            level = self.levels[i]
            self.scores[level] = self._held_out(trainer.model)
            self.weights[level] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
            if i + 1 < len(self.levels):
                trainer.cfg = dataclasses.replace(trainer.cfg, input_noise=self.levels[i + 1])
        return False

    def choose(self, model) -> tuple[float, dict[float, float]]:
        """Load the weights of the level with the best held-out log-likelihood (a NaN one never
        wins); returns it and every level's score."""
        finite = {k: v for k, v in self.scores.items() if math.isfinite(v)}
        best = max(finite, key=finite.get) if finite else self.levels[-1]
        if best in self.weights:
            model.load_state_dict(self.weights[best])
        return best, dict(self.scores)


class _Convergence:
    """The trainer's callback for the stopping rule. Every ``every`` steps it scores the
    held-out unlabelled rows (never trained on, no label used): their mean log-likelihood and
    their predicted classes. A check *makes progress* when the log-likelihood beats the best so
    far by more than ``tol`` nats a row, or when more than ``change_tol`` of the held-out rows
    changed their predicted class since the last check. Training stops after ``patience``
    checks in a row without progress (``stopped_at`` is that step); the weights are the last
    step's. ``history``: one ``{"step", "log_likelihood", "changed"}`` a check."""

    def __init__(self, x_val: torch.Tensor, every: int, patience: int, tol: float, change_tol: float):
        self.x_val, self.every, self.patience, self.tol, self.change_tol = x_val, every, patience, tol, change_tol
        self.best = -math.inf
        self.without_progress = 0
        self.last_pred: torch.Tensor | None = None
        self.history: list[dict] = []
        self.stopped_at: int | None = None

    @torch.no_grad()
    def __call__(self, trainer, step: int) -> bool:
        if step % self.every:
            return False
        lj = _eval_log_joint(trainer.model, self.x_val)
        ll = float(torch.logsumexp(lj, 1).mean())
        pred = lj.argmax(1)
        changed = 1.0 if self.last_pred is None else float((pred != self.last_pred).double().mean())
        self.last_pred = pred
        self.history.append({"step": int(step), "log_likelihood": ll, "changed": changed})
        progress = ll > self.best + self.tol or changed > self.change_tol  # a NaN is no progress
        if ll > self.best:
            self.best = ll
        self.without_progress = 0 if progress else self.without_progress + 1
        if self.without_progress >= self.patience:
            self.stopped_at = int(step)
            return True
        return False


class SCNFClassifier(ClassifierMixin, BaseEstimator):
    """Semi-Conditional Normalizing Flow classifier.

    Parameters mirror the config keys: ``conditional`` ("glow", "gmm", "ffjord" or None),
    ``unconditional`` ("glow" or "ffjord"), ``deep_dim``, the training schedule (``steps`` or
    ``epochs``, ``batch_size``, ``lr``, ``schedule`` ("linear" decay to 0 or "constant"),
    ``weight_decay``, ``labelled_share``, ``optimisation``, ``clf_weight``), the model size
    (``blocks``, ``hidden``, ``h_blocks``, ``h_hidden``), ``standardize``, ``random_state``
    and ``device``. ``n_jobs``: torch threads while fitting and predicting, with scikit-learn's
    meaning (None: one, unless inside joblib's ``parallel_config``; -1: every CPU); one is the
    default because these small models are bound by per-operation overhead: on 1,000 x 64 rows
    a second thread saves a few percent on an idle machine and costs several times as much on
    a busy one (RESULTS.md). Torch's own setting comes back after each call. ``warm_start=True``:
    a later ``fit`` with the same features and classes continues from the fitted weights (the same
    standardisation and noise level, p(y) from the new labels) for a quarter of the resolved steps
    (``steps`` if set), training h and the share :data:`WARM_START_F_SHARE` of f's layers
    (counted from f's output end), e.g. after labelling the rows :meth:`query` suggests; with other features
    or classes it warns and fits afresh. ``classes`` (optional) lists the
    expected classes, so that a class without any labelled row is an error. ``verbose=True``
    shows a progress bar of the training steps (on stderr).

    Regularisation for small and awkward data, both on by default:

    * ``input_noise`` (0.3): each training batch gets Gaussian noise of this standard
      deviation in standardised units (the config key ``train.input_noise``), so the flow fits
      a smoothed density. Without it the likelihood has no upper bound on integer-valued or
      exactly collinear features (the flow squeezes them onto their lattice or subspace), and
      a flow of a few thousand parameters memorises a hundred rows. ``score_samples`` stays a
      normalised density in the caller's units: that of the smoothed fit.
      A sequence of levels (or ``"auto"``: 0.3, 0.1, 0.03) trains with each in turn (the first
      for 60 % of the steps, the others for equal shares of the rest), records after each the
      mean log-likelihood, *without* noise, of 10 % of the unlabelled rows held out of training,
      and keeps the weights of the best level: ``input_noise_`` is that level and
      ``noise_validation_`` every level's score. With fewer than 200 unlabelled rows nothing is
      held out and the first level is used throughout. No label chooses the level;
    * ``init_from_labels`` (True): SCNF-GMM's class means start at the labelled rows' means in
      z_f instead of at random (the config key ``model.init_from_labels``); it sets nothing
      for a Glow h.

    The stopping rule (``early_stopping``, scikit-learn's names): ``validation_fraction`` (0.1)
    of the unlabelled rows are held out of training (no label is held out or used). Every
    1/50 of the step budget (``max_steps_``) their mean log-likelihood and their predicted
    classes are computed; a check makes progress when the log-likelihood beats the best so
    far by more than ``tol`` nats a row (in standardised units) or when more than 1 % of the
    held-out rows changed class since the last check; after ``n_iter_no_change`` checks in a
    row without progress training stops (``stopped_at_``, None when it ran the whole budget).
    ``n_steps_`` is the steps taken; ``validation_scores_`` every check's step, log-likelihood
    and share of changed predictions. ``"auto"``: on when ``steps`` is not set and at least 20
    rows are held out (200 unlabelled rows); ``True``: on whenever one row is held out;
    ``False``: off, every unlabelled row is trained on. Off with several noise levels (they
    need their fixed schedule).

    ``calibration="temperature"``: ``predict_proba`` is softmax(log p(x, y) / T) with T
    (``temperature_``) chosen by cross-validation over the labelled rows, so no label is spent
    on a validation set: for each of up to 3 stratified folds the same settings are fitted with
    the fold's labels hidden (its rows stay in, unlabelled) and predict those rows; T minimises
    the log-loss of these out-of-fold posteriors (``temperature_cv_``), and T is that value or 1,
    whichever is larger: it only softens. Where every held-out label is predicted right the
    log-loss falls without bound as T shrinks (the search then stops at its bound, 0.05, and the
    posterior would become nearly hard), and a few dozen labelled rows are no evidence that an
    exact posterior should be sharper. It costs one fit per fold, and changes no
    prediction (T > 0 keeps every arg max); ``score_samples`` and :meth:`query` use the model's
    own log p(x, y). ``None``: T = 1, the exact posterior.

    ``compile=True``: training steps run through ``torch.compile`` (the config key
    ``train.compile``; CPU needs a C++ compiler). The first fit in a process compiles (seconds to
    tens of seconds, less when inductor's on-disk cache holds the graphs); later fits of the same
    shapes, e.g. the warm refits of active-learning rounds, reuse the compiled step, which is
    faster than the eager one (RESULTS.md, "Active learning"). The numbers differ from an eager
    fit's by float rounding, so a seeded fit is reproducible only with the same setting. Off by
    default: most single fits would not earn the compilation back.

    Defaults that depend on the data (``None``), resolved by :meth:`resolved_params` from the
    number of rows n and features d:

    * ``steps=None``: ``max(min_steps, ceil(epochs * n / batch_size))``, so training passes
      over the data ``epochs`` times however many rows there are, and never takes fewer than
      ``min_steps`` steps on small data sets;
    * ``conditional=None``: a conditional Glow h up to 8 features, a class-conditional
      Gaussian on z_f (SCNF-GMM) above, unless some class has fewer than
      :data:`GMM_MIN_LABELS` (5) labelled rows: then a Glow h too (SCNF-GMM's fit collapses
      onto one class from one to three labels a class in 40-50 features; a Glow h is slower,
      as it runs once for every class). ``conditional_`` says which a fit used;
    * ``deep_dim=None``: z_f, the components the conditional part sees, is all d features
      (a smaller z_f, a quarter of the features, was less accurate on the suite);
    * ``hidden=None``: the width of f's coupling nets, ``max(64, 2 * d)``.

    The measured reasons for the defaults are in RESULTS.md ("Estimator defaults").
    It passes scikit-learn's ``check_estimator`` except for the checks listed, with the
    reason, in ``SKLEARN_EXPECTED_FAILED_CHECKS``.
    """

    def __init__(self, conditional=None, unconditional="glow", deep_dim=None, steps=None, epochs=EPOCHS,
                 min_steps=MIN_STEPS, batch_size=256, lr=LR, weight_decay=1e-5, labelled_share=1 / 3,
                 optimisation="sgd", clf_weight=CLF_WEIGHT, blocks=5, hidden=None, h_blocks=4, h_hidden=64,
                 standardize=True, random_state=None, device="cpu", verbose=False, classes=None,
                 init_from_labels=True, input_noise=INPUT_NOISE, schedule="linear", n_jobs=None,
                 warm_start=False, early_stopping=False, validation_fraction=VALIDATION_FRACTION,
                 n_iter_no_change=N_ITER_NO_CHANGE, tol=TOL, calibration=None, compile=False):
        self.compile = compile
        self.calibration = calibration
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.n_jobs = n_jobs
        self.warm_start = warm_start
        self.classes = classes
        self.schedule = schedule
        self.init_from_labels = init_from_labels
        self.input_noise = input_noise
        self.conditional = conditional
        self.unconditional = unconditional
        self.deep_dim = deep_dim
        self.steps = steps
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.labelled_share = labelled_share
        self.optimisation = optimisation
        self.clf_weight = clf_weight
        self.blocks = blocks
        self.hidden = hidden
        self.h_blocks = h_blocks
        self.h_hidden = h_hidden
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def resolved_params(self, n_rows: int, n_features: int, min_class_labels: int | None = None) -> dict:
        """The values ``fit`` uses on ``n_rows`` x ``n_features`` data for the parameters
        whose default depends on the data (``steps``, ``conditional``, ``deep_dim``, ``hidden``);
        ``min_class_labels``: the labelled rows of the class with fewest (None: enough for
        SCNF-GMM)."""
        for name in ("n_rows", "n_features"):
            v = locals()[name]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        n, d = int(n_rows), int(n_features)
        if self.steps is None:
            for name in ("epochs", "min_steps", "batch_size"):
                v = getattr(self, name)
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not v > 0:
                    raise ValueError(f"parameter '{name}' must be positive, got {v!r}")
            steps = max(int(self.min_steps), math.ceil(float(self.epochs) * n / int(self.batch_size)))
        else:
            steps = self.steps
        deep_dim = d if self.deep_dim is None else self.deep_dim
        hidden = max(64, 2 * d) if self.hidden is None else self.hidden
        conditional = self.conditional
        if conditional is None:
            few = min_class_labels is not None and int(min_class_labels) < GMM_MIN_LABELS
            conditional = "glow" if d <= 8 or few else "gmm"
        return {"steps": steps, "conditional": conditional, "deep_dim": deep_dim, "hidden": hidden}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform() gives z_h, float64 whatever the input dtype
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64"])
        return tags

    # ------------------------------------------------------------ helpers
    def _threads(self) -> int:
        """torch threads for fitting and predicting: ``n_jobs`` with scikit-learn's meaning (None:
        1 unless inside joblib's ``parallel_config``; -1 every CPU; -2 all but one)."""
        from joblib import effective_n_jobs

        if self.n_jobs is not None and (isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, (int, np.integer))
                                        or self.n_jobs == 0):
            raise ValueError(f"parameter 'n_jobs' must be None or a non-zero integer, got {self.n_jobs!r}")
        return max(1, int(effective_n_jobs(self.n_jobs)))

    def _noise_levels(self) -> tuple[float, ...]:
        """``input_noise`` as the levels to train with, in order (one: a fixed level)."""
        v = self.input_noise
        if isinstance(v, str):
            if v != "auto":
                raise ValueError(f"parameter 'input_noise' must be 'auto', a number >= 0 or a sequence of them, "
                                 f"got {v!r}")
            return NOISE_LEVELS
        seq = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
        if not seq or not all(isinstance(a, (int, float, np.integer, np.floating)) and not isinstance(a, bool)
                              and math.isfinite(a) and a >= 0 for a in seq):
            raise ValueError(f"parameter 'input_noise' must be 'auto', a number >= 0 or a non-empty sequence of "
                             f"them, got {v!r}")
        if len(set(map(float, seq))) != len(seq):
            raise ValueError(f"parameter 'input_noise': the levels must differ, got {v!r}")
        return tuple(float(a) for a in seq)

    def _stopping_rule(self, n_levels: int, n_val: int) -> bool:
        """Whether this fit stops by the rule of :class:`_Convergence` (``early_stopping``)."""
        es = self.early_stopping
        if not (isinstance(es, (bool, np.bool_)) or es == "auto"):
            raise ValueError(f"parameter 'early_stopping' must be 'auto', True or False, got {es!r}")
        vf = self.validation_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float, np.integer, np.floating)) or not 0 < vf < 1:
            raise ValueError(f"parameter 'validation_fraction' must be a number in (0, 1), got {vf!r}")
        v = self.n_iter_no_change
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"parameter 'n_iter_no_change' must be a positive integer, got {v!r}")
        t = self.tol
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not t >= 0:
            raise ValueError(f"parameter 'tol' must be a number >= 0, got {t!r}")
        if not es or n_levels > 1:
            return False
        if es == "auto":  # a fixed `steps` is honoured; too few held-out rows judge nothing
            return self.steps is None and n_val >= NOISE_VALIDATION_MIN
        return n_val >= 1

    def _check_X(self, X, fitted=True) -> np.ndarray:
        # scikit-learn's own validation: sparse, complex, object and empty inputs, and
        # n_features_in_ (set when fitting, checked after), with its standard messages.
        X = validate_data(self, X, reset=not fitted, dtype=np.float64, ensure_all_finite=False)
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or inf")
        return X

    def _to_model(self, X: np.ndarray, dtype=None) -> torch.Tensor:
        if dtype is None:  # the fitted model's (float64; float32 in estimators pickled before)
            dtype = next(self.model_.parameters()).dtype
        return torch.as_tensor((X - self.mean_) / self.scale_, dtype=dtype)

    def _encode_labels(self, y) -> torch.Tensor:
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        if not np.all(self.classes_[idx] == y):
            bad = sorted(set(np.asarray(y)[self.classes_[idx] != y].tolist()))[:5]
            raise ValueError(f"unknown label(s) {bad}; known classes are {self.classes_.tolist()}")
        return torch.as_tensor(idx, dtype=torch.long)

    # ------------------------------------------------------------ fit / predict
    def fit(self, X, y):
        if y is None:
            raise ValueError("SCNFClassifier requires y to be passed, but the target y is None "
                             "(mark unlabelled rows with y = -1)")
        if self.calibration not in (None, "temperature"):
            raise ValueError(f"parameter 'calibration' must be None or 'temperature', got {self.calibration!r}")
        if not isinstance(self.compile, (bool, np.bool_)):
            raise ValueError(f"parameter 'compile' must be True or False, got {self.compile!r}")
        previous = self._fitted_state() if self.warm_start else None
        X = self._check_X(X, fitted=False)
        _check_missing_labels(y)  # before numpy turns a NaN among names into the class "nan"
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)  # a column vector: warn and ravel, as scikit-learn does
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with {X.shape[0]} entries, got shape {y.shape}")
        _check_semi_supervised_labels(y)
        labelled = y != -1
        if not labelled.any():
            raise ValueError("no labelled rows: every label is -1")
        _check_names_not_mixed_with_numbers(y[labelled])  # before scikit-learn's check, which cannot sort them
        check_classification_targets(y[labelled])  # continuous, NaN or unknown labels
        _check_no_negative_classes(y[labelled])
        self.classes_ = np.unique(y[labelled])
        if self.classes is not None:
            expected = np.unique(np.asarray(self.classes))
            missing = np.setdiff1d(expected, self.classes_)
            if missing.size:
                raise ValueError(f"class(es) {missing.tolist()} have no labelled row")
            extra = np.setdiff1d(self.classes_, expected)
            if extra.size:
                raise ValueError(f"label(s) {extra.tolist()} are not in classes={expected.tolist()}")
        if len(self.classes_) < 2:
            raise ValueError(f"need labelled rows of at least 2 classes, got 1 class: {self.classes_.tolist()}")
        warm = previous is not None and previous["n_features"] == X.shape[1] \
            and np.array_equal(previous["classes"], self.classes_)
        if previous is not None and not warm:
            warnings.warn("warm_start: the features or the classes differ from the last fit's; fitting afresh",
                          UserWarning, stacklevel=2)
        if warm:  # the model's input space stays the one it was trained in
            self.mean_, self.scale_ = previous["mean"], previous["scale"]
        elif self.standardize:
            self.mean_ = X.mean(0)
            sd = X.std(0)
            self.scale_ = np.where(sd > 0, sd, 1.0)
        else:
            self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        y_int = torch.full((X.shape[0],), -1, dtype=torch.long)
        y_int[torch.from_numpy(labelled)] = self._encode_labels(y[labelled])
        k = len(self.classes_)
        seed = 0 if self.random_state is None else int(self.random_state)
        auto = self.resolved_params(X.shape[0], X.shape[1],
                                    min_class_labels=int(np.unique(y[labelled], return_counts=True)[1].min()))
        steps = auto["steps"]
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise ValueError(f"parameter 'steps' must be a positive integer or None, got {steps!r}")
        levels = self._noise_levels()
        if warm:  # a continuation: a share of the steps, at the noise level the last fit kept
            steps = steps if self.steps is not None else max(1, math.ceil(WARM_START_SHARE * steps))
            levels = (float(previous["input_noise"]),)
        cfg = TrainConfig(optimisation=self.optimisation, clf_weight=float(self.clf_weight),
                          labelled_share=float(self.labelled_share), batch_size=int(self.batch_size),
                          steps=int(steps), lr=float(self.lr), weight_decay=float(self.weight_decay),
                          schedule=self.schedule,
                          eval_every=max(int(steps), 1), checkpoint_every=max(int(steps), 1), device=self.device,
                          progress=False, input_noise=levels[0], threads=self._threads(),
                          compile=bool(self.compile))
        model_cfg = ModelConfig(unconditional=self.unconditional, conditional=auto["conditional"],
                                deep_dim=auto["deep_dim"] or 0, hidden=auto["hidden"], blocks=self.blocks,
                                h_blocks=self.h_blocks, h_hidden=self.h_hidden)
        try:
            run_cfg = validate(RunConfig(model=model_cfg, train=cfg))
        except ConfigError as e:
            raise ValueError(str(e).replace("config key 'train.", "parameter '")
                             .replace("config key 'model.", "parameter '")) from None
        self.max_steps_ = int(steps)
        x_all = self._to_model(X, torch.float32)
        torch.manual_seed(seed)
        prior = class_prior_from_labels(y_int, k)
        if warm:
            self.model_ = previous["model"].float().train()
            self.conditional_ = previous["conditional"]
            self.model_.log_class_prior = torch.as_tensor(prior, dtype=torch.float64).log()  # p(y) of the new labels
        else:
            self.model_ = registry.build(run_cfg, SemiSupervisedData(x_all, y_int), k, prior)
            self.conditional_ = auto["conditional"]
        self.unlabelled_rows_ = np.flatnonzero(~labelled)  # the candidates of query() without X
        self._unlabelled_X = X[~labelled].copy()
        self._labelled_X = X[labelled].copy()  # what query("discovery") calls covered
        # several noise levels, or the stopping rule: hold out some unlabelled rows (never a label)
        unl = np.flatnonzero(~labelled)
        n_val = int(float(self.validation_fraction) * unl.size)
        stop_rule = self._stopping_rule(len(levels), n_val)
        val = np.sort(np.random.default_rng(seed).choice(unl, n_val, replace=False)) \
            if (len(levels) > 1 and n_val >= NOISE_VALIDATION_MIN) or stop_rule else np.zeros(0, dtype=int)
        if len(levels) > 1 and val.size == 0:
            levels = levels[:1]
        train_rows = np.setdiff1d(np.arange(X.shape[0]), val)
        data = SemiSupervisedData(x_all[train_rows], y_int[train_rows])
        selector = _NoiseSelection(levels, int(steps), x_all[val]) if len(levels) > 1 else None
        if stop_rule:
            selector = _Convergence(x_all[val], every=max(1, math.ceil(steps / CHECKS_PER_FIT)),
                                    patience=int(self.n_iter_no_change), tol=float(self.tol),
                                    change_tol=PREDICTION_CHANGE_TOL)
        # verbose: the trainer's bar, shown whether or not stderr is a terminal
        init_fn = class_aware_init if self.init_from_labels and not warm else None  # sets nothing for a Glow h
        with _hold_f_prefix(self.model_, WARM_START_F_SHARE if warm else 1.0):
            trainer = Trainer(self.model_, data, cfg, seed=seed, init_fn=init_fn, callback=selector,
                              progress_bar=dict(desc="SCNFClassifier.fit", disable=not self.verbose, leave=True))
            try:
                trainer.fit()
            except TrainingCompileFailed as e:  # only with compile=True
                raise RuntimeError(f"compile=True: torch.compile could not build the training step ({e.detail}); "
                                   "fit with compile=False") from e
        self.n_steps_ = int(trainer.step)
        self.stopped_at_ = selector.stopped_at if stop_rule else None
        self.validation_scores_ = list(selector.history) if stop_rule else []
        if selector is not None and not stop_rule:
            self.input_noise_, self.noise_validation_ = selector.choose(self.model_)
        else:
            self.input_noise_, self.noise_validation_ = levels[0], {}
        self.n_noise_validation_rows_ = int(val.size)
        # Trained in float32; predicts in float64, so that a row's outputs do not depend on
        # which other rows share its batch (float32 matrix products differ in the last bit
        # with a row's position, which scikit-learn's invariance checks catch).
        self.model_.cpu().double().eval()
        if (~labelled).any():
            with torch.no_grad():
                pred = self._log_joint(X[~labelled]).argmax(1).numpy()
            message = _collapse_message(pred, y_int[torch.from_numpy(labelled)].numpy(), self.classes_)
            if message:
                warnings.warn(message, UserWarning, stacklevel=2)
        self.temperature_ = self.temperature_cv_ = 1.0
        if self.calibration == "temperature":
            self.temperature_cv_ = self._cross_validated_temperature(X, y, labelled)
            self.temperature_ = max(1.0, self.temperature_cv_)
        return self

    def _cross_validated_temperature(self, X: np.ndarray, y: np.ndarray, labelled: np.ndarray) -> float:
        """``calibration="temperature"``: T minimising the log-loss of softmax(log p(x, y) / T) on
        out-of-fold posteriors of the labelled rows. Fold k's model is this estimator's settings
        fitted with fold k's labels hidden (their rows stay, unlabelled); it predicts them. The
        folds are stratified, as many as the rarest class has labels, at most
        :data:`CALIBRATION_FOLDS`; with one label in some class there is nothing to hold out
        and T stays 1 (a warning says so)."""
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold

        from .runs.calibration import fit_temperature

        rows = np.flatnonzero(labelled)
        codes = np.searchsorted(self.classes_, y[rows])
        folds = min(CALIBRATION_FOLDS, int(np.bincount(codes).min()))
        if folds < 2:
            warnings.warn("calibration='temperature' needs two labelled rows of every class; the temperature "
                          "stays 1", UserWarning, stacklevel=3)
            return 1.0
        out = np.zeros((rows.size, len(self.classes_)))
        split = StratifiedKFold(folds, shuffle=True, random_state=0 if self.random_state is None
                                else int(self.random_state))
        for train, held in split.split(rows, codes):
            y_fold = np.full(len(y), -1)  # class codes (0..K-1, classes_'s order); fold k's hidden
            y_fold[rows[train]] = codes[train]
            # the same h as this fit's, although the fold has fewer labels
            fold = clone(self).set_params(calibration=None, warm_start=False, verbose=False, classes=None,
                                          conditional=self.conditional_)
            fold.fit(X, y_fold)
            out[held] = fold._log_joint(X[rows[held]]).double().numpy()
        return fit_temperature(out, codes)

    def _fitted_state(self) -> dict | None:
        """What a warm start continues from (None before the first fit)."""
        if not hasattr(self, "model_"):
            return None
        return {"model": self.model_, "classes": self.classes_, "mean": self.mean_, "scale": self.scale_,
                "n_features": self.n_features_in_, "input_noise": self.input_noise_,
                "conditional": getattr(self, "conditional_", None)}

    def query(self, X=None, n: int = 10, strategy: str = DEFAULT_STRATEGY, random_state=None,
              return_scores: bool = False, diversity: bool = True):
        """The positions, among the candidates, of the ``n`` rows most worth labelling next.

        Candidates: the rows of ``X``, or without it the last fit's unlabelled rows in their
        order in the training data (``unlabelled_rows_[positions]`` are their row numbers there).
        ``strategy``: ``"entropy"``, ``"margin"``, ``"density"`` (the default: uncertainty
        weighted by the exact density, so an outlier's label is not bought before a dense
        ambiguous region's), ``"novelty"`` (lowest log p(x) first: outliers), ``"discovery"``
        (one row from each of the largest k-means clusters of the standardised rows that hold
        no labelled row of the last fit: where a class with no label yet sits; it is diverse by
        construction) or
        ``"random"`` (:mod:`scnf.analysis.active` defines each). ``diversity``: one row
        from each of ``n`` k-means clusters, in f's label-free latent space, of the ``10 n``
        best-scored candidates, so a batch is not ``n`` near-duplicates. ``return_scores``:
        also each chosen row's score. Positions come best first. After labelling them, refit
        (``warm_start=True`` continues from the fitted weights with a share of the steps)."""
        check_is_fitted(self, "model_")
        if strategy not in active.STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(active.STRATEGIES)}")
        if X is None:
            Xc = self._unlabelled_X
            if not len(Xc):
                raise ValueError("the last fit had no unlabelled rows: pass the candidates as X")
        else:
            Xc = self._check_X(X)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 or n > len(Xc):
            raise ValueError(f"n must be an integer in [1, {len(Xc)}] (the candidates), got {n!r}")
        if strategy == "discovery":
            ref = getattr(self, "_labelled_X", None)
            if ref is None:
                raise ValueError("discovery needs the last fit's labelled rows: fit this estimator again")
            # in the model's standardised input space, not f's latent space: chosen on the
            # validation split's cold starts (RESULTS.md, "Active learning"); image runs use f(x)
            pos, score = active.discovery(self._to_model(Xc, torch.float64).numpy(),
                                          self._to_model(ref, torch.float64).numpy(), int(n),
                                          random_state=random_state, min_clusters=len(self.classes_) + 1)
            return (pos, score[pos]) if return_scores else pos
        lj = self._log_joint(Xc).double().numpy()
        score = active.scores(lj, strategy, np.random.default_rng(random_state))
        latent = self._latent(Xc) if diversity and 1 < n < len(Xc) else None
        pos = active.select(score, int(n), latent, diversity, random_state=random_state)
        return (pos, score[pos]) if return_scores else pos

    @torch.no_grad()
    def _latent(self, X: np.ndarray) -> np.ndarray:
        """f(x): the rows' label-free latent codes (z_aux and z_f)."""
        with _torch_threads(self._threads()):
            z, _ = self.model_.unconditional(self._to_model(X))
        return z.flatten(1).double().numpy()

    @torch.no_grad()
    def _log_joint(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        X = self._check_X(X)
        with _torch_threads(self._threads()):
            return torch.cat([self.model_.log_joint(c) for c in self._to_model(X).split(4096)])

    def _logits(self, X) -> torch.Tensor:
        """log p(x, y) / T: the posterior's logits at the fitted temperature (1 without calibration)."""
        return self._log_joint(X).double() / float(getattr(self, "temperature_", 1.0))

    def predict_proba(self, X) -> np.ndarray:
        return torch.softmax(self._logits(X), 1).numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        return torch.log_softmax(self._logits(X), 1).numpy()

    def predict(self, X) -> np.ndarray:
        pred = self._log_joint(X).argmax(1).numpy()
        return self.classes_[pred]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the labelled rows of ``(X, y)``: rows with ``y = -1`` are skipped, so
        ``cross_val_score(SCNFClassifier(), X, y_semi)`` scores the held-out labelled rows only
        (scikit-learn's default would count every -1 row as an error)."""
        _check_missing_labels(y)
        y = np.asarray(y)
        keep = y != -1
        if not keep.any():
            raise ValueError("score: every label is -1; there is no labelled row to score")
        X = np.asarray(X) if not hasattr(X, "iloc") else X.iloc
        sw = None if sample_weight is None else np.asarray(sample_weight)[keep]
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y[keep], self.predict(X[keep]), sample_weight=sw))

    def score_samples(self, X) -> np.ndarray:
        """log p(x) per row, in the caller's units (a normalised density of x; higher = more
        typical of the training rows, as scikit-learn's density and novelty estimators score).

        Which density: the one the flow was fitted to. With a noise level ``input_noise_`` > 0
        (the default 0.3; with ``"auto"`` the level chosen) that is the training rows'
        distribution smoothed by Gaussian noise of std ``input_noise_`` in standardised units
        (``input_noise_ * scale_`` in your units; with ``standardize=False`` in your units),
        i.e. roughly the data's density convolved with that Gaussian, so it is lower at sharp
        peaks and wider than the data's. ``input_noise=0`` fits the data themselves. As a
        novelty score, ``-score_samples(X)`` is larger for rows unlike the training rows."""
        lp = torch.logsumexp(self._log_joint(X).double(), 1).numpy()
        return lp - np.log(self.scale_).sum()

    @torch.no_grad()
    def sample(self, n: int, y=None):
        """Draw ``n`` rows (caller's units) from the fitted model; returns (X, y) with y in
        ``classes_`` (drawn from p(y), or ``y`` if given). The rows follow the density
        :meth:`score_samples` returns: with ``input_noise_`` > 0 the smoothed one (samples spread
        wider than the training rows by about ``input_noise_`` standard deviations)."""
        check_is_fitted(self, "model_")
        yy = None
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0:
                y = np.full(int(n), y)
            yy = self._encode_labels(y)
        with _torch_threads(self._threads()):
            x, yk = self.model_.sample(int(n), yy)
        return x.double().numpy() * self.scale_ + self.mean_, self.classes_[yk.numpy()]

    def fit_transform(self, X, y):
        """``fit(X, y).transform(X)``, as scikit-learn's transformers do: z_h under the
        predicted labels. Call ``transform(X, y)`` after ``fit`` for z_h under the known ones."""
        return self.fit(X, y).transform(X)

    @torch.no_grad()
    def transform(self, X, y=None) -> np.ndarray:
        """z_h, the label-obfuscated representation (Sec. 4.4). Uses y where given (and not
        -1), the predicted label otherwise."""
        check_is_fitted(self, "model_")
        X = self._check_X(X)
        yk = self._log_joint(X).argmax(1)
        if y is not None:
            _check_missing_labels(y)
            y = np.asarray(y)
            if y.shape != (X.shape[0],):
                raise ValueError(f"y must have shape ({X.shape[0]},), got {y.shape}")
            known = y != -1
            if known.any():
                yk[torch.from_numpy(known)] = self._encode_labels(y[known])
        with _torch_threads(self._threads()):
            _, _, z_h = self.model_.encode(self._to_model(X), yk)
        return z_h.double().numpy()


def _missing_kind(v) -> str | None:
    """The name of the missing-value marker ``v`` is (None, NaN, pandas' NA or NaT), else None."""
    if v is None:
        return "None"
    if isinstance(v, (float, np.floating, complex, np.complexfloating)) and v != v:
        return "NaN"
    name = type(v).__name__
    if name == "NAType":  # pandas.NA (checked by name: pandas is not needed here)
        return "pd.NA"
    if name == "NaTType" or (isinstance(v, (np.datetime64, np.timedelta64)) and np.isnat(v)):
        return "NaT"
    return None


def _check_missing_labels(y) -> None:
    """Refuse every marker of a missing value that pandas or numpy can put in labels (None, NaN,
    pandas.NA, NaT; in a list, an array, a Series or a Categorical) with the ValueError that says
    how to mark unlabelled rows: the integer -1. A list is read before numpy converts it (a NaN
    among strings would become the class "nan")."""
    if y is None:
        return
    if isinstance(y, (list, tuple)):
        values = np.empty(len(y), dtype=object)
        values[:] = [v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v for v in y]
    else:
        values = np.asarray(y)
        if values.dtype.kind in "fc":
            values = values.ravel()
            rows = np.flatnonzero(np.isnan(values))
            if rows.size:
                _refuse_missing("NaN", rows, numeric=True)
            return
        if values.dtype.kind in "mM":
            rows = np.flatnonzero(np.isnat(values.ravel()))
            if rows.size:
                _refuse_missing("NaT", rows, numeric=False)
            return
        if values.dtype != object:
            return
        values = values.ravel()
    kinds = [_missing_kind(v) for v in values]
    rows = np.flatnonzero([k is not None for k in kinds])
    if rows.size:
        _refuse_missing(kinds[rows[0]], rows, numeric=False)


def _refuse_missing(marker: str, rows: np.ndarray, numeric: bool) -> None:
    how = ("y = np.where(np.isnan(y), -1, y)" if numeric else
           "y = np.array(labels, dtype=object); y[missing] = -1")
    raise ValueError(f"y contains {marker} on {rows.size} row(s) (first at row {int(rows[0])}): a missing value is "
                     f"not a label; mark unlabelled rows with the integer -1, e.g. {how} (pandas: "
                     "y = y.astype(object).where(y.notna(), -1))")
