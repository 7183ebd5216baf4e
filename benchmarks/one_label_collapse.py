"""From one label a class, SCNFClassifier's fit can collapse: every unlabelled row is given one
class while the few labelled rows are memorised. Prints, for parameter sets, the validation
accuracy, the predicted-class counts and the labelled rows' own accuracy (validation split of a
suite task, never its test rows; the labels are active_learning.py's starting labels).

    python benchmarks/one_label_collapse.py classif-50 \
        '{"default": {}, "clf0": {"clf_weight": 0.0}, "no-init": {"init_from_labels": false}}'
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from active_learning import start_labels  # noqa: E402
from estimator_suite import split  # noqa: E402


def main():
    from scnf import SCNFClassifier
    torch.set_num_threads(1)
    task, configs = sys.argv[1], json.loads(sys.argv[2])
    draw = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    X, _, Xv, yv, y_true = split(task, draw, "val", with_labels=True)
    y0 = start_labels(y_true, draw)
    for name, params in configs.items():
        clf = SCNFClassifier(random_state=draw, **params).fit(X, y0)
        pred = clf.predict(Xv)
        lab = y0 != -1
        print(json.dumps({"task": task, "draw": draw, "cfg": name, "params": params,
                          "val_accuracy": round(float((pred == yv).mean()), 4),
                          "predicted_counts": np.unique(pred, return_counts=True)[1].tolist(),
                          "labelled_rows_accuracy": float((clf.predict(X[lab]) == y0[lab]).mean())}), flush=True)


if __name__ == "__main__":
    main()
