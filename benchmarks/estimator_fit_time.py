"""Fit time of ``SCNFClassifier`` with its default parameters on 1,000 rows x 64 features.

The rows are 1,000 of scikit-learn's digits (64 features, 10 classes), 10 labels a class,
the rest unlabelled. Reports wall seconds and the process's CPU seconds (which do not grow
when other jobs share the machine) for ``--repeats`` fits with ``--threads`` torch threads.
``--rounds R`` then times R active-learning rounds after each fit (#39): ``query`` of 10 rows
with ``--strategy`` among the unlabelled rows, their true labels revealed, and a refit with
``warm_start=True``; ``--warm-share`` overrides the estimator's share of the steps a warm refit
takes (``scnf.estimator.WARM_START_SHARE``) and ``--warm-f-share`` the share of f's layers it
trains (``scnf.estimator.WARM_START_F_SHARE``), to measure another setting.

    python benchmarks/estimator_fit_time.py --threads 1 --repeats 1
    python benchmarks/estimator_fit_time.py --repeats 1 --params '{"steps": 100}' --profile
    python benchmarks/estimator_fit_time.py --threads 2 --rounds 3
    python benchmarks/estimator_fit_time.py --threads 1 --rounds 3 --params '{"compile": true}'
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def digits_rows(n: int = 1000, per_class: int = 10, with_labels: bool = False):
    """``n`` rows of scikit-learn's digits (64 features) and their semi-supervised labels:
    ``per_class`` labelled rows of each class, -1 for the others (seeded, the same every call);
    ``with_labels``: also every row's true label."""
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(y), n, replace=False)
    X, y = X[rows], y[rows]
    y_semi = np.full(n, -1)
    for c in range(10):
        idx = rng.choice(np.flatnonzero(y == c), per_class, replace=False)
        y_semi[idx] = c
    return (X, y_semi, y) if with_labels else (X, y_semi)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--params", default="{}", help="JSON object of SCNFClassifier parameters to override")
    p.add_argument("--profile", action="store_true",
                   help="after the fits, profile one more fit with torch.profiler and print its top operations")
    p.add_argument("--rounds", type=int, default=0,
                   help="after each fit, time this many query + label + warm-refit rounds of 10 rows")
    p.add_argument("--strategy", default=None, help="query strategy of the rounds (default: the estimator's)")
    p.add_argument("--warm-share", type=float, default=None,
                   help="share of the resolved steps a warm refit takes (default: the estimator's)")
    p.add_argument("--warm-f-share", type=float, default=None,
                   help="share of f's layers a warm refit trains (default: the estimator's)")
    a = p.parse_args(argv)
    import torch
    import scnf.estimator
    from threadpoolctl import threadpool_limits

    from scnf import SCNFClassifier
    torch.set_num_threads(a.threads)
    threadpool_limits(a.threads)
    if a.warm_share is not None:
        scnf.estimator.WARM_START_SHARE = a.warm_share
    if a.warm_f_share is not None:
        scnf.estimator.WARM_START_F_SHARE = a.warm_f_share
    X, y_semi, y_true = digits_rows(with_labels=True)
    params = json.loads(a.params)
    for r in range(a.repeats):
        est = SCNFClassifier(random_state=r, **params)
        w, c = time.perf_counter(), time.process_time()
        est.fit(X, y_semi)
        w, c = time.perf_counter() - w, time.process_time() - c
        print(json.dumps({"rows": 1000, "features": 64, "threads": a.threads, "steps": est.n_steps_,
                          "resolved": est.resolved_params(1000, 64), "wall_s": round(w, 1), "cpu_s": round(c, 1),
                          "torch": torch.__version__}), flush=True)
        y = y_semi.copy()
        est.set_params(warm_start=True)
        for k in range(a.rounds):
            w, c = time.perf_counter(), time.process_time()
            kw = {} if a.strategy is None else {"strategy": a.strategy}
            rows = est.unlabelled_rows_[est.query(n=10, random_state=k, **kw)]
            y[rows] = y_true[rows]
            q = time.perf_counter() - w
            est.fit(X, y)
            w, c = time.perf_counter() - w, time.process_time() - c
            print(json.dumps({"round": k + 1, "labelled": int((y != -1).sum()), "warm_steps": est.n_steps_,
                              "query_s": round(q, 2), "wall_s": round(w, 2), "cpu_s": round(c, 2),
                              "warm_share": scnf.estimator.WARM_START_SHARE,
                              "warm_f_share": scnf.estimator.WARM_START_F_SHARE}), flush=True)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            SCNFClassifier(random_state=0, **params).fit(X, y_semi)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
