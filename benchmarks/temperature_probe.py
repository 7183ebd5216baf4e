"""How far the estimator's cross-validated temperature is from the one the validation rows'
labels would give, on the suite's validation split (the test rows are never used; the
validation labels only measure, they choose nothing). One JSON line a task and draw: accuracy,
the out-of-fold temperature (`T_cv`, `temperature_cv_`), the temperature fitted on the
validation rows (`T_val`, for diagnosis), and the ECE (%, 15 bins) of the validation rows'
posterior at T = 1, at `T_cv`, at the estimator's `temperature_` (`T_cv` or 1, whichever is
larger) and at `T_val`; `s`: the fit's seconds (the model and one fit a fold).

    python benchmarks/temperature_probe.py TASKS DRAWS [FOLDS]    # e.g. classif-50,moons 0,1 5

FOLDS: the most folds over the labelled rows (default the estimator's CALIBRATION_FOLDS, 3);
recorded as ``folds`` when given.
"""
import sys, json, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np, torch
from estimator_suite import split
from scnf import SCNFClassifier
from scnf.runs.calibration import fit_temperature, expected_calibration_error
torch.set_num_threads(1)
tasks = sys.argv[1].split(","); draws = [int(d) for d in sys.argv[2].split(",")]
folds = int(sys.argv[3]) if len(sys.argv) > 3 else None
if folds is not None:
    import scnf.estimator
    scnf.estimator.CALIBRATION_FOLDS = folds
for task in tasks:
    for d in draws:
        X, y, Xv, yv = split(task, d, "val")
        t = time.perf_counter()
        clf = SCNFClassifier(random_state=d, calibration="temperature").fit(X, y)
        s = time.perf_counter() - t
        lj = clf._log_joint(Xv).double().numpy()
        codes = np.searchsorted(clf.classes_, yv)
        oracle = fit_temperature(lj, codes)
        def ece(T):
            z = lj / T; z -= z.max(1, keepdims=True); p = np.exp(z); p /= p.sum(1, keepdims=True)
            return expected_calibration_error(p, codes)
        print(json.dumps({"task": task, "draw": d, **({"folds": folds} if folds else {}), "acc": round(float((lj.argmax(1) == codes).mean()), 4),
              "T_cv": round(clf.temperature_cv_, 3), "T_val": round(float(oracle), 3),
              "ece_1": round(ece(1.0), 1), "ece_cv": round(ece(clf.temperature_cv_), 1),
              "ece_cvmax1": round(ece(clf.temperature_), 1), "ece_val": round(ece(oracle), 1),
              "s": round(s, 1)}), flush=True)
