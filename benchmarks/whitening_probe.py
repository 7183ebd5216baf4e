"""Would whitening the rows (a full-covariance linear map instead of per-feature
standardisation) give SCNFClassifier a better density? A probe, not an option of the estimator:
the rows are standardised, rotated onto the principal axes of the training rows' covariance and
scaled to unit variance along each (eigenvalues below FLOOR raised to it), fitted with
``standardize=False``, and the held-out log-likelihood is moved back to the data's units with
the map's log-determinant. Validation split of the suite (the test rows are never used). One JSON
line a task and floor: accuracy, held-out log-likelihood (nats a row, data units), ECE (%), seconds;
floor -1 is the estimator's defaults.

    python benchmarks/whitening_probe.py TASKS FLOORS [DRAW]    # e.g. iris,wine -1,1e-2,1e-4 0
"""
import sys, json, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np, torch
from estimator_suite import split
from scnf import SCNFClassifier
torch.set_num_threads(1)
tasks = sys.argv[1].split(","); floors = [float(f) for f in sys.argv[2].split(",")]
draw = int(sys.argv[3]) if len(sys.argv) > 3 else 0
def ece_of(p, classes, yv):
    conf = p.max(1); correct = (classes[p.argmax(1)] == yv)
    bins = np.minimum((conf * 15).astype(int), 14)
    return 100*sum(abs(conf[bins == b].mean() - correct[bins == b].mean()) * (bins == b).mean() for b in range(15) if (bins == b).any())
for task in tasks:
    X, y, Xv, yv = split(task, draw, "val")
    for fl in floors:
        t = time.perf_counter()
        if fl < 0:
            clf = SCNFClassifier(random_state=draw).fit(X, y); ld = 0.0; Zv = Xv
        else:
            mu = X.mean(0); sd = X.std(0); sd = np.where(sd > 0, sd, 1.0)
            S = (X - mu) / sd
            ev, U = np.linalg.eigh(np.cov(S, rowvar=False, bias=True))
            ev = np.maximum(ev, fl)
            W = U / np.sqrt(ev)  # columns scaled
            Z = S @ W; Zv = ((Xv - mu) / sd) @ W
            ld = -np.log(sd).sum() + np.linalg.slogdet(W)[1]
            clf = SCNFClassifier(random_state=draw, standardize=False).fit(Z, y)
        sec = time.perf_counter() - t
        acc = float((clf.predict(Zv) == yv).mean()); ll = float(clf.score_samples(Zv).mean() + ld)
        print(json.dumps({"task": task, "draw": draw, "floor": fl, "acc": round(acc, 4), "ll": round(ll, 3),
              "ece": round(ece_of(clf.predict_proba(Zv), clf.classes_, yv), 1), "s": round(sec, 1)}), flush=True)
