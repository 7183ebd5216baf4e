"""What fewer training steps cost SCNFClassifier: validation accuracy, held-out log-likelihood,
ECE (15 bins) and fit seconds for named parameter sets, on the suite's validation split (the
test rows are never used).

    python benchmarks/estimator_budget.py digits,wine,moons \
        '{"default": {}, "e100": {"epochs": 100, "min_steps": 150}, "e30": {"epochs": 30, "min_steps": 100}}' \
        [DRAWS [FIRST_DRAW]]
    python benchmarks/estimator_budget.py --table records.jsonl [more.jsonl ...]
"""
import sys, json, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np


def table(paths: list[str]) -> str:
    """Markdown: per parameter set and task, mean validation accuracy / held-out log-likelihood /
    ECE (%, 15 equal bins) / steps over the draws both it and "default" ran, and the mean accuracy change from "default"."""
    import collections
    recs = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    g = collections.defaultdict(dict)
    for r in recs:
        g[(r["task"], r["cfg"])][r["draw"]] = r
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    cfgs = list(dict.fromkeys(r["cfg"] for r in recs))
    rows = ["| parameters | " + " | ".join(tasks) + " | mean accuracy change | fit seconds (sum) |",
            "|---|" + "---|" * (len(tasks) + 2)]
    for c in cfgs:
        cells, diffs, secs = [], [], 0.0
        for t in tasks:
            draws = sorted(set(g[(t, c)]) & set(g[(t, "default")]))
            if not draws:
                cells.append("")
                continue
            rs = [g[(t, c)][d] for d in draws]
            acc = np.mean([r["acc"] for r in rs])
            diffs.append(acc - np.mean([g[(t, "default")][d]["acc"] for d in draws]))
            secs += sum(r["s"] for r in rs)
            cells.append(f"{acc:.3f} / {np.mean([r['ll'] for r in rs]):.1f} / {np.mean([r['ece'] for r in rs]):.1f}"
                         f" / {np.mean([r['steps'] for r in rs]):.0f} ({len(draws)})")
        rows.append(f"| {c} | " + " | ".join(cells) + f" | {np.mean(diffs):+.3f} | {secs:.0f} |")
    return "\n".join(rows)


if sys.argv[1] == "--table":  # python benchmarks/estimator_budget.py --table records.jsonl [more.jsonl]
    print(table(sys.argv[2:]))
    sys.exit(0)
import torch
from estimator_suite import split
from scnf import SCNFClassifier
torch.set_num_threads(1)
tasks = sys.argv[1].split(",")
configs = json.loads(sys.argv[2])
draws = int(sys.argv[3]) if len(sys.argv) > 3 else 1
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0  # the first draw (a fresh sample of draws)
for task in tasks:
    for d in range(first, first + draws):
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
                              "stopped": getattr(clf, "stopped_at_", None),
                              "temperature": getattr(clf, "temperature_", None),
                              "temperature_cv": getattr(clf, "temperature_cv_", None)}), flush=True)
