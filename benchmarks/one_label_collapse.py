"""From one label a class, SCNFClassifier's fit can collapse: every unlabelled row is given one
class while the few labelled rows are memorised. Prints, for parameter sets, the validation
accuracy, the predicted-class counts and the labelled rows' own accuracy (validation split of a
suite task, never its test rows). With one label a class (the default) the labels are
active_learning.py's starting labels; ``--per-class M1,M2,...`` draws M labelled rows of each
class instead (seeded by the draw and M), one fit per M and parameter set.

    python benchmarks/one_label_collapse.py classif-50 \
        '{"default": {}, "clf0": {"clf_weight": 0.0}, "no-init": {"init_from_labels": false}}'
    python benchmarks/one_label_collapse.py classif-50 '{"gmm": {"conditional": "gmm"}, "glow": {"conditional": "glow"}}' \
        0 --per-class 1,2,3,5
"""
import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from active_learning import start_labels  # noqa: E402
from estimator_suite import split  # noqa: E402


def labels(y_true: np.ndarray, draw: int, per_class: int) -> np.ndarray:
    """``per_class`` labelled rows of each class (-1 elsewhere); one a class: active_learning.py's."""
    if per_class == 1:
        return start_labels(y_true, draw)
    rng = np.random.default_rng([draw, 7, per_class])
    y = np.full(len(y_true), -1)
    for c in np.unique(y_true):
        y[rng.choice(np.flatnonzero(y_true == c), per_class, replace=False)] = c
    return y


def main(argv=None):
    from scnf import SCNFClassifier
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("configs", help="JSON object: name -> SCNFClassifier parameters")
    p.add_argument("draw", nargs="?", type=int, default=0)
    p.add_argument("--per-class", default="1", help="labelled rows a class, comma-separated")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    configs = json.loads(a.configs)
    X, _, Xv, yv, y_true = split(a.task, a.draw, "val", with_labels=True)
    for m in (int(v) for v in a.per_class.split(",")):
        y0 = labels(y_true, a.draw, m)
        for name, params in configs.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                clf = SCNFClassifier(random_state=a.draw, **params).fit(X, y0)
            pred = clf.predict(Xv)
            lab = y0 != -1
            print(json.dumps({"task": a.task, "draw": a.draw, "per_class": m, "cfg": name, "params": params,
                              "conditional": clf.conditional_,
                              "val_accuracy": round(float((pred == yv).mean()), 4),
                              "predicted_counts": np.unique(pred, return_counts=True)[1].tolist(),
                              "labelled_rows_accuracy": float((clf.predict(X[lab]) == y0[lab]).mean()),
                              "collapse_warning": any("collapsed" in str(w.message) for w in caught)}),
                  flush=True)


if __name__ == "__main__":
    main()
