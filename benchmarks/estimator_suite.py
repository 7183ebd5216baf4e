"""Semi-supervised benchmark suite for ``SCNFClassifier`` against scikit-learn's baselines.

Each task is a data set, a number of labels per class and a held-out test share. For every
draw (seed) the rows are split into train and test (stratified), ``labels`` rows of each
class of the training rows keep their label and the other training rows are unlabelled
(y = -1). Every method is fitted on the training rows and scored on the test rows.

Methods (all settings fixed here, none tuned on test labels):

* ``scnf``        SCNFClassifier with its default parameters (``--scnf-params`` overrides some)
* ``ls-rbf``      LabelSpreading(kernel="rbf", gamma=1/n_features) on standardised inputs
                  (scikit-learn's default gamma=20 is meant for unit-range 2-D data; 1/n_features
                  is SVC's "scale" rule for standardised inputs); other parameters default
* ``ls-knn``      LabelSpreading(kernel="knn") on standardised inputs, scikit-learn defaults
                  (n_neighbors=7, alpha=0.2) except max_iter=1000 (so that it converges)
* ``self-svc``    SelfTrainingClassifier(SVC(probability=True)) on standardised inputs,
                  scikit-learn defaults (threshold 0.75, SVC C=1, gamma="scale")
* ``logreg``      LogisticRegression(max_iter=1000) on the labelled rows only (standardised)

Standardisation (StandardScaler) is fitted on all training rows, labelled or not (no labels
used). ``--split val`` never touches the test rows: it carves a validation share out of each
draw's training rows and scores there, for comparing settings.

Densities (``--density``): adds ``scnf-auto`` (``input_noise="auto"``) and two density anchors
fitted to every training row without labels, ``kde`` (KernelDensity, bandwidth by 5-fold
cross-validation) and ``gmm`` (GaussianMixture, 1-10 components by BIC), and reports every
density method's held-out log-likelihood of the test rows in the data's units.

Novelty (``--novelty``): for draw d, class ``classes[d mod K]`` is removed from the training
rows; SCNF (-log p(x)), KernelDensity, IsolationForest, LocalOutlierFactor(novelty=True) and
OneClassSVM score the test rows; AUROC and FPR at 95 % TPR with the removed class as positives
(tasks with three classes or more).

``--resume`` keeps the records of an earlier run in ``--out`` and runs only the missing fits.

Examples (two fits at a time on two cores)::

    python benchmarks/estimator_suite.py --draws 5 --jobs 2 --out runs/estimator-suite/after
    python benchmarks/estimator_suite.py --draws 3 --density --out runs/suite-density
    python benchmarks/estimator_suite.py --draws 3 --novelty --out runs/suite-novelty
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np

TASKS = {
    # name: (loader, labels per class, test share)
    "moons": ("moons", 5, 0.3),
    "iris": ("iris", 5, 0.3),
    "wine": ("wine", 5, 0.3),
    "breast-cancer": ("breast_cancer", 10, 0.3),
    "digits": ("digits", 10, 0.3),
    "classif-50": ("classification", 20, 0.3),
    "mnist-pca40": ("mnist_pca", 10, None),
}
#: Not in the default run: variants that test an explanation of a default task's result.
DIAGNOSTIC_TASKS = {
    # classif-50 with one Gaussian cluster per class instead of two
    "classif-50-1c": ("classification_1c", 20, 0.3),
}
METHODS = ("scnf", "scnf-auto", "ls-rbf", "ls-knn", "self-svc", "logreg", "kde", "gmm")
#: the methods of a default run (scnf-auto, kde and gmm are asked for by name, e.g. with --density)
DEFAULT_METHODS = ("scnf", "ls-rbf", "ls-knn", "self-svc", "logreg")
#: density models: fitted to every training row without labels; they give a held-out
#: log-likelihood (and novelty scores), no classification
DENSITY_ONLY = ("kde", "gmm")
#: methods with a density: the held-out log-likelihood column
DENSITY_METHODS = ("scnf", "scnf-auto", "kde", "gmm")
#: --novelty: the methods scored (-log p(x), or the detector's own outlier score)
NOVELTY_METHODS = ("scnf", "kde", "iforest", "lof", "ocsvm")
#: tasks with two classes: holding one out leaves a single class, which no classifier can be fitted to
TWO_CLASS_TASKS = ("moons", "breast-cancer")


def load(name: str, seed: int):
    """(X, y, X_test or None, y_test or None) as float64 / int arrays."""
    from sklearn import datasets
    if name == "moons":
        return (*datasets.make_moons(1000, noise=0.1, random_state=seed), None, None)
    if name in ("classification", "classification_1c"):
        X, y = datasets.make_classification(2000, n_features=50, n_informative=20, n_redundant=10,
                                            n_classes=5, n_clusters_per_class=1 if name.endswith("1c") else 2,
                                            class_sep=1.5, random_state=seed)
        return X, y, None, None
    if name == "mnist_pca":
        return _mnist_pca(seed)
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return X.astype(np.float64), y, None, None


def _mnist_pca(seed: int, n_train: int = 3000, n_test: int = 2000, components: int = 40):
    """MNIST pixels / 255 reduced by PCA to ``components`` features. PCA is fitted on the
    drawn training rows without their labels; the test rows are drawn from MNIST's test set."""
    from sklearn.decomposition import PCA

    from scnf.data.images import load_dataset
    rng = np.random.default_rng(seed)
    xtr, ytr = load_dataset("mnist", "train")
    xte, yte = load_dataset("mnist", "test")
    i = rng.choice(len(ytr), n_train, replace=False)
    j = rng.choice(len(yte), n_test, replace=False)
    a = xtr[i].reshape(n_train, -1) / 255.0
    b = xte[j].reshape(n_test, -1) / 255.0
    pca = PCA(components, random_state=0).fit(a)
    return pca.transform(a), ytr[i], pca.transform(b), yte[j]


#: rough fit cost of each task, to start the slowest first
_SIZE = {"mnist-pca40": 7, "classif-50": 5, "digits": 5, "moons": 3, "breast-cancer": 2, "wine": 1, "iris": 1,
         "classif-50-1c": 5}


def split(task: str, draw: int, mode: str, with_labels: bool = False):
    """Training rows with y = -1 for unlabelled rows, and the evaluation rows (and, with
    ``with_labels``, every training row's true label, for the novelty protocol to drop a class)."""
    from sklearn.model_selection import train_test_split
    loader, labels, test_share = {**TASKS, **DIAGNOSTIC_TASKS}[task]
    X, y, X_te, y_te = load(loader, 0 if loader in ("iris", "wine", "breast_cancer", "digits") else draw)
    if X_te is None:
        X, X_te, y, y_te = train_test_split(X, y, test_size=test_share, stratify=y, random_state=draw)
    if mode == "val":  # the test rows are never used: validation rows come out of the training rows
        X, X_te, y, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=1000 + draw)
    rng = np.random.default_rng(draw)
    y_semi = np.full(len(y), -1)
    for c in np.unique(y):
        idx = rng.choice(np.flatnonzero(y == c), labels, replace=False)
        y_semi[idx] = y[idx]
    if with_labels:
        return X, y_semi, X_te, y_te, y
    return X, y_semi, X_te, y_te


def make(method: str, n_features: int, scnf_params: dict, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
    from sklearn.svm import SVC

    from scnf import SCNFClassifier
    if method == "scnf":
        return SCNFClassifier(random_state=seed, **scnf_params)
    if method == "scnf-auto":  # the noise level chosen by held-out likelihood
        return SCNFClassifier(random_state=seed, **{**scnf_params, "input_noise": "auto"})
    if method == "ls-rbf":
        return make_pipeline(StandardScaler(), LabelSpreading(kernel="rbf", gamma=1.0 / n_features))
    if method == "ls-knn":
        return make_pipeline(StandardScaler(), LabelSpreading(kernel="knn", max_iter=1000))
    if method == "self-svc":
        return make_pipeline(StandardScaler(), SelfTrainingClassifier(SVC(probability=True, random_state=seed)))
    if method == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


class _Density:
    """A scikit-learn density model on standardised rows, reported in the caller's units:
    ``kde`` KernelDensity (Gaussian) with the bandwidth chosen by 5-fold cross-validated
    likelihood over 16 values from 0.02 to 2 standard deviations; ``gmm`` GaussianMixture (full
    covariances) with 1-10 components chosen by BIC. ``score_samples`` is log p(x)."""

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed

    def fit(self, X, y=None):
        from sklearn.mixture import GaussianMixture
        from sklearn.model_selection import GridSearchCV
        from sklearn.neighbors import KernelDensity
        from sklearn.preprocessing import StandardScaler
        self.scaler = StandardScaler().fit(X)
        Z = self.scaler.transform(X)
        self.log_jac = float(np.log(self.scaler.scale_).sum())
        if self.kind == "kde":
            search = GridSearchCV(KernelDensity(), {"bandwidth": np.logspace(np.log10(0.02), np.log10(2.0), 16)},
                                  cv=5).fit(Z)
            self.model, self.chosen = search.best_estimator_, float(search.best_params_["bandwidth"])
        else:
            fits = [GaussianMixture(k, covariance_type="full", random_state=self.seed, reg_covar=1e-6).fit(Z)
                    for k in range(1, min(10, len(Z) // 2) + 1)]
            self.model = min(fits, key=lambda g: g.bic(Z))
            self.chosen = int(self.model.n_components)
        return self

    def score_samples(self, X):
        return self.model.score_samples(self.scaler.transform(X)) - self.log_jac


def _held_out_ll(model, X_te) -> float:
    """Mean log p(x) of the evaluation rows (nats per row, caller's units); NaN without a density."""
    return float(np.mean(model.score_samples(X_te))) if hasattr(model, "score_samples") else float("nan")


def run_one(task, method, draw, mode, scnf_params):
    X, y_semi, X_te, y_te = split(task, draw, mode)
    model = _Density(method, draw) if method in DENSITY_ONLY else make(method, X.shape[1], scnf_params, draw)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "logreg":
            lab = y_semi != -1
            model.fit(X[lab], y_semi[lab])
        else:  # every training row; y = -1 marks the unlabelled ones (the scalers use no labels)
            model.fit(X, y_semi)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    ll = _held_out_ll(model, X_te) if method in DENSITY_METHODS else float("nan")
    extra = {"chosen": model.chosen} if method in DENSITY_ONLY else {}
    if method.startswith("scnf"):
        extra = {"input_noise": model.input_noise_, "noise_validation": model.noise_validation_}
    if method in DENSITY_ONLY:
        acc = ece = float("nan")
    else:
        acc = float((model.predict(X_te) == y_te).mean())
        ece = _ece(model, X_te, y_te)
    return {"task": task, "method": method, "draw": draw, "acc": acc, "ece_pct": ece, "ll": ll, **extra,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu_seconds, 2),
            "n_features": X.shape[1], "n_classes": int(len(np.unique(y_te))),
            "n_labelled": int((y_semi != -1).sum()), "n_unlabelled": int((y_semi == -1).sum()),
            "n_eval": len(y_te)}


def _novelty_detector(method: str, seed: int):
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM
    if method == "iforest":
        return make_pipeline(StandardScaler(), IsolationForest(random_state=seed))
    if method == "lof":
        return make_pipeline(StandardScaler(), LocalOutlierFactor(novelty=True))
    if method == "ocsvm":
        return make_pipeline(StandardScaler(), OneClassSVM(gamma="scale"))
    raise ValueError(method)


def run_novelty(task, method, draw, scnf_params):
    """One class held out of training (its labelled and unlabelled rows), the detector fitted to
    the rest; AUROC and FPR at 95 % TPR of the novelty score on the test rows, the held-out
    class's rows being the positives. Draw d holds out class ``classes[d % K]``. SCNF's score is
    -log p(x) (``-score_samples``); the detectors' is their own ``-score_samples``."""
    from scnf.analysis.ood import auroc, fpr_at_tpr
    X, y_semi, X_te, y_te, y_true = split(task, draw, "test", with_labels=True)
    classes = np.unique(y_true)
    novel = classes[draw % len(classes)]
    keep = y_true != novel
    X, y_semi = X[keep], y_semi[keep]
    if method == "scnf":
        model = make("scnf", X.shape[1], scnf_params, draw)
    elif method in DENSITY_ONLY:
        model = _Density(method, draw)
    else:
        model = _novelty_detector(method, draw)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y_semi) if method == "scnf" else model.fit(X)
    seconds = time.perf_counter() - t0
    score = -np.asarray(model.score_samples(X_te), dtype=np.float64)
    score = np.nan_to_num(score, nan=np.inf, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    positive = y_te == novel
    return {"task": task, "method": method, "draw": draw, "novel_class": novel.item(),
            "auroc": auroc(score[~positive], score[positive]),
            "fpr_at_95_tpr": fpr_at_tpr(score[~positive], score[positive]),
            "seconds": round(seconds, 2), "n_novel": int(positive.sum()), "n_eval": len(y_te)}


def novelty_markdown(records, tasks, methods) -> str:
    lines = ["AUROC of the novelty score for test rows of a class held out of training (higher is better; "
             "mean ± std over draws, draw d holds out class d mod K), with FPR at 95 % TPR:", "",
             "| task | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for t in tasks:
        cells = []
        for m in methods:
            rs = [r for r in records if r["task"] == t and r["method"] == m]
            if not rs:
                cells.append("")
                continue
            a = np.array([r["auroc"] for r in rs])
            f = np.array([r["fpr_at_95_tpr"] for r in rs])
            sd = f" ± {a.std(ddof=1):.3f}" if len(a) > 1 else ""
            cells.append(f"{a.mean():.3f}{sd} (FPR95 {f.mean():.2f})")
        if any(cells):
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ece(model, X_te, y_te) -> float:
    """Expected calibration error (%, 15 bins) of ``predict_proba`` on the test rows."""
    from scnf.runs.calibration import expected_calibration_error

    classes = list(model.classes_)
    if any(c not in classes for c in np.unique(y_te)):
        return float("nan")  # a class the model never saw: no probability for it
    probs = model.predict_proba(X_te)
    if not np.isfinite(probs).all():
        return float("nan")  # LabelSpreading leaves rows it cannot reach as 0/0: no calibration to measure
    return expected_calibration_error(probs, np.array([classes.index(c) for c in y_te]))


def summarise(records, tasks, methods):
    rows = []
    for t in tasks:
        for m in methods:
            rs = [r for r in records if r["task"] == t and r["method"] == m]
            if not rs:
                continue
            a = np.array([r["acc"] for r in rs])
            rows.append({"task": t, "method": m, "draws": len(rs), "acc_mean": float(a.mean()),
                         "acc_std": float(a.std(ddof=1)) if len(a) > 1 else float("nan"),
                         "seconds_mean": float(np.mean([r["seconds"] for r in rs])),
                         "ece_mean": float(np.mean([r.get("ece_pct", np.nan) for r in rs])),
                         "ll_mean": float(np.mean([r.get("ll", np.nan) for r in rs])),
                         "ll_std": float(np.std([r.get("ll", np.nan) for r in rs], ddof=1)) if len(rs) > 1
                         else float("nan"),
                         "ece_std": float(np.std([r.get("ece_pct", np.nan) for r in rs], ddof=1)) if len(rs) > 1
                         else float("nan"),
                         "cpu_seconds_mean": float(np.mean([r.get("cpu_seconds", np.nan) for r in rs])), **{
                             k: rs[0][k] for k in ("n_features", "n_classes", "n_labelled", "n_unlabelled",
                                                   "n_eval")}})
    return rows


def markdown(rows, tasks, methods, split: str = "test"):
    """Accuracy mean ± std (ddof=1) over draws, with mean wall and CPU seconds of a fit, then
    ECE and held-out log-likelihood of the rows scored: the test rows, or with ``split="val"``
    the validation rows."""
    scored = "the test rows" if split == "test" else "the validation rows"
    head = "| task (features, classes, labelled / unlabelled / eval rows) | " + " | ".join(methods) + " |"
    lines = [head, "|---" * (len(methods) + 1) + "|"]
    for t in tasks:
        rs = {r["method"]: r for r in rows if r["task"] == t}
        if not rs:
            continue
        r0 = next(iter(rs.values()))
        best_base = max((rs[m]["acc_mean"] for m in ("ls-rbf", "ls-knn", "self-svc") if m in rs), default=None)
        cells = []
        for m in methods:
            if m not in rs or m in DENSITY_ONLY:
                cells.append("")
                continue
            r = rs[m]
            cpu = "" if np.isnan(r["cpu_seconds_mean"]) else f", {r['cpu_seconds_mean']:.1f} s CPU"
            s = f"{r['acc_mean']:.3f} ± {r['acc_std']:.3f} ({r['seconds_mean']:.1f} s{cpu})"
            if m.startswith("scnf") and best_base is not None and r["acc_mean"] >= best_base:
                s = f"**{s}**"
            cells.append(s)
        lines.append(f"| {t} ({r0['n_features']}, {r0['n_classes']}, {r0['n_labelled']} / {r0['n_unlabelled']} / "
                     f"{r0['n_eval']}) | " + " | ".join(cells) + " |")
    clf = [m for m in methods if m not in DENSITY_ONLY]
    lines += ["", f"Expected calibration error of predict_proba on {scored} (%, 15 bins; mean ± std over draws; "
              "lower is better):", "", "| task | " + " | ".join(clf) + " |", "|---" * (len(clf) + 1) + "|"]
    for t in tasks:
        rs = {r["method"]: r for r in rows if r["task"] == t}
        if rs:
            lines.append(f"| {t} | " + " | ".join(f"{rs[m]['ece_mean']:.1f} ± {rs[m]['ece_std']:.1f}" if m in rs else ""
                                                   for m in clf) + " |")
    dens = [m for m in methods if m in DENSITY_METHODS]
    if dens:
        lines += ["", f"Held-out log-likelihood of {scored} (nats per row in the data's own units, mean ± std "
                  "over draws; higher is better; best in bold):", "",
                  "| task | " + " | ".join(dens) + " |", "|---" * (len(dens) + 1) + "|"]
        for t in tasks:
            rs = {r["method"]: r for r in rows if r["task"] == t and r["method"] in dens}
            if not rs:
                continue
            best = max(rs, key=lambda m: rs[m]["ll_mean"] if np.isfinite(rs[m]["ll_mean"]) else -np.inf)
            cells = []
            for m in dens:
                if m not in rs:
                    cells.append("")
                    continue
                c = f"{rs[m]['ll_mean']:.2f} ± {rs[m]['ll_std']:.2f}"
                cells.append(f"**{c}**" if m == best else c)
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _limit_threads(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma-separated, from {', '.join(TASKS)} (default: all of these) and the diagnostic "
                        f"{', '.join(DIAGNOSTIC_TASKS)}")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from {', '.join(METHODS)} (default: {', '.join(DEFAULT_METHODS)}; "
                        f"with --density also scnf-auto, kde and gmm; with --novelty from "
                        f"{', '.join(NOVELTY_METHODS)}, default all of these)")
    p.add_argument("--density", action="store_true",
                   help="add the density methods (scnf-auto, kde, gmm) to the default methods")
    p.add_argument("--novelty", action="store_true",
                   help="the novelty protocol instead: one class held out of training, AUROC of the novelty score "
                        f"(tasks with three classes or more: not {', '.join(TWO_CLASS_TASKS)})")
    p.add_argument("--draws", type=int, default=5, help="label draws (seeds 0..draws-1)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="score on the held-out test rows, or on validation rows carved from the training rows")
    p.add_argument("--scnf-params", default="{}", help="JSON object of SCNFClassifier parameters to override")
    p.add_argument("--threads", type=int, default=1, help="torch threads (of each process)")
    p.add_argument("--jobs", type=int, default=1, help="fits run at once, in separate processes (seconds then "
                                                       "include the other fits' competition for the cores)")
    p.add_argument("--out", default=None, help="directory for results.json and table.md")
    p.add_argument("--resume", action="store_true",
                   help="keep the records already in OUT/records.json and run only the missing fits")
    a = p.parse_args(argv)
    tasks = [t for t in a.tasks.split(",") if t]
    known = NOVELTY_METHODS if a.novelty else METHODS
    default = NOVELTY_METHODS if a.novelty else (
        (*DEFAULT_METHODS[:1], "scnf-auto", *DEFAULT_METHODS[1:], *DENSITY_ONLY) if a.density else DEFAULT_METHODS)
    methods = [m for m in a.methods.split(",") if m] if a.methods else list(default)
    for t in tasks:
        if t not in TASKS and t not in DIAGNOSTIC_TASKS:
            p.error(f"unknown task {t!r}; known: {', '.join([*TASKS, *DIAGNOSTIC_TASKS])}")
    for m in methods:
        if m not in known:
            p.error(f"unknown method {m!r}{' for --novelty' if a.novelty else ''}; known: {', '.join(known)}")
    if a.jobs < 1 or a.threads < 1:
        p.error("--jobs and --threads must be at least 1")
    scnf_params = json.loads(a.scnf_params)
    _limit_threads(a.threads)
    out = Path(a.out) if a.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if a.novelty:
        if a.split != "test":
            p.error("--novelty scores the test rows; it has no --split val")
        two = [t for t in tasks if t in TWO_CLASS_TASKS]
        if a.tasks != p.get_default("tasks") and two:
            p.error(f"--novelty holds out one class: {', '.join(two)} would keep one class only")
        tasks = [t for t in tasks if t not in TWO_CLASS_TASKS]
        fn, work = run_novelty, [(t, m, d, scnf_params) for t in tasks for m in methods for d in range(a.draws)]
    else:
        fn, work = run_one, [(t, m, d, a.split, scnf_params) for t in tasks for m in methods for d in range(a.draws)]
    # the slow fits first, so that two jobs finish together
    work.sort(key=lambda w: (not w[1].startswith("scnf"), -_SIZE.get(w[0], 0)))
    records = []
    if a.resume:
        if not out or not (out / "records.json").is_file():
            p.error("--resume needs --out with a records.json from an earlier run")
        done = {(r["task"], r["method"], r["draw"]) for r in json.loads((out / "records.json").read_text())}
        records = [r for r in json.loads((out / "records.json").read_text())
                   if r["task"] in tasks and r["method"] in methods and r["draw"] < a.draws]
        work = [w for w in work if (w[0], w[1], w[2]) not in done]
    with ProcessPoolExecutor(a.jobs, initializer=_limit_threads, initargs=(a.threads,)) if a.jobs > 1 \
            else nullcontext() as pool:
        for r in (pool.map(fn, *zip(*work)) if pool else (fn(*w) for w in work)):
            records.append(r)
            what = f"auroc {r['auroc']:.3f}" if a.novelty else f"acc {r['acc']:.3f}  ll {r['ll']:.2f}"
            print(f"{r['task']:14s} {r['method']:9s} draw {r['draw']}: {what}  {r['seconds']:.1f} s", flush=True)
            if out:
                (out / "records.json").write_text(json.dumps(records, indent=1))
    # the canonical order (task, method, draw), whatever order the fits ran in
    records.sort(key=lambda r: (tasks.index(r["task"]), methods.index(r["method"]), r["draw"]))
    if a.novelty:
        rows, table = [], novelty_markdown(records, tasks, methods)
    else:
        rows = summarise(records, tasks, methods)
        table = markdown(rows, tasks, methods, a.split)
    print(table)
    if out:
        meta = {"argv": sys.argv[1:], "split": a.split, "scnf_params": scnf_params, "draws": a.draws,
                "novelty": a.novelty, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        (out / "results.json").write_text(json.dumps({"meta": meta, "summary": rows, "records": records}, indent=1))
        (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
