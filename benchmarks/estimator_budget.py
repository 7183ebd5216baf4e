"""What fewer training steps cost SCNFClassifier: validation accuracy, held-out log-likelihood,
ECE (15 bins) and fit seconds for named parameter sets, on the suite's validation split (the
test rows are never used).

    python benchmarks/estimator_budget.py digits,wine,moons \
        '{"default": {}, "e100": {"epochs": 100, "min_steps": 150}, "e30": {"epochs": 30, "min_steps": 100}}'
"""
import sys, json, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np, torch
from estimator_suite import split
from scnf import SCNFClassifier
torch.set_num_threads(1)
tasks = sys.argv[1].split(",")
configs = json.loads(sys.argv[2])
draws = int(sys.argv[3]) if len(sys.argv) > 3 else 1
for task in tasks:
    for d in range(draws):
        X, y, Xv, yv = split(task, d, "val")
        for name, params in configs.items():
            t = time.perf_counter()
            clf = SCNFClassifier(random_state=d, **params).fit(X, y)
            sec = time.perf_counter() - t
            acc = float((clf.predict(Xv) == yv).mean())
            ll = float(clf.score_samples(Xv).mean())
            p = clf.predict_proba(Xv)
            conf = p.max(1); correct = (clf.classes_[p.argmax(1)] == yv)
            bins = np.minimum((conf * 15).astype(int), 14)
            ece = sum(abs(conf[bins == b].mean() - correct[bins == b].mean()) * (bins == b).mean() for b in range(15) if (bins == b).any())
            print(json.dumps({"task": task, "draw": d, "cfg": name, "acc": round(acc, 4), "ll": round(ll, 3),
                              "ece": round(100 * ece, 1), "s": round(sec, 1), "steps": clf.n_steps_,
                              "stopped": getattr(clf, "stopped_at_", None)}), flush=True)
