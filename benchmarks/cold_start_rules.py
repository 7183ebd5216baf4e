"""Which query rule finds a class that has no label yet? First-round finds of candidate rules (#39).

For each task and draw: the suite's ``--split val`` training rows (the validation and test rows
are not touched), one label for each class but class ``draw mod K``, a default
``SCNFClassifier`` fitted, then one batch of n = K rows chosen by each rule among the unlabelled
rows. Recorded per rule: how many of the batch belong to the class without a label (a find is
>= 1), and random sampling's exact chance of a find, 1 - C(N - m, n) / C(N, n). The rules:

* ``novelty``, ``density``, ``entropy``: ``SCNFClassifier.query`` with that strategy;
* ``cover-z``: the rows nearest the centres of the largest k-means clusters (2n of them, in f's
  latent space, labelled rows included) that hold no labelled row
  (:func:`scnf.analysis.active.discovery`); it was ``query(strategy="discovery")`` until
  2026-12-04, and records before then call it ``discovery`` (the table reads them so);
* ``cover-x``: the same in standardised input space, ``query(strategy="discovery")`` since the
  tie-break of ``docs/results/active-learning-cold-space-2026-12-04/RULE.md`` (draws 16-21 added);
* ``kc-z``, ``kc-x``: greedy farthest-first (k-center) from the labelled rows, in f's latent
  space or in input space; ``kc-z-dQ``, ``kc-x-dQ``: the same among candidates whose log p(x)
  is at or above its Q quantile (outliers left out).

The draws that chose ``cover-z`` (10-17 on iris and wine, 10-15 on digits, classif-50; rule
fixed before: the most draws with a find, summed over the tasks), and then ``cover-x`` (draws
10-21; a tie-break fixed before) are the validation split's, not the test draws of
``benchmarks/active_learning.py --cold-only`` that report them.

    python benchmarks/cold_start_rules.py iris,wine 10,11,12,13,14,15,16,17 --out runs/cold-rules.jsonl
    python benchmarks/cold_start_rules.py digits,classif-50 10,11,12,13,14,15 --out runs/cold-rules.jsonl
    python benchmarks/cold_start_rules.py --table runs/cold-rules.jsonl
    python benchmarks/cold_start_rules.py --table docs/results/active-learning-cold-2026-12-03/rules-records.jsonl \
        docs/results/active-learning-cold-space-2026-12-04/rules-records.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from active_learning import random_find_chance, start_labels  # noqa: E402
from estimator_suite import split  # noqa: E402


def kcenter(cand: np.ndarray, ref: np.ndarray, n: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Greedy farthest-first: n candidates, each the farthest from ``ref`` and those taken."""
    d = ((cand[:, None, :] - ref[None, :, :]) ** 2).sum(-1).min(1)
    if eligible is not None:
        d = np.where(eligible, d, -np.inf)
    out = []
    for _ in range(n):
        i = int(np.argmax(d))
        out.append(i)
        d = np.minimum(d, ((cand - cand[i]) ** 2).sum(-1))
        d[i] = -np.inf
    return np.array(out)


def rules(clf, X: np.ndarray, y: np.ndarray, n: int, seed: int) -> dict:
    """{rule: positions among the unlabelled rows}."""
    from scnf.analysis import active
    lab = np.flatnonzero(y != -1)
    Xc = X[clf.unlabelled_rows_]
    lp = active._log_density(clf._log_joint(Xc).double().numpy())
    spaces = {"z": (clf._latent(Xc), clf._latent(X[lab])),
              "x": ((Xc - clf.mean_) / clf.scale_, (X[lab] - clf.mean_) / clf.scale_)}
    out = {s: clf.query(n=n, strategy=s, random_state=seed) for s in ("novelty", "density", "entropy")}
    for name, (c, r) in spaces.items():
        out[f"kc-{name}"] = kcenter(c, r, n)
        for q in (0.25, 0.5):
            out[f"kc-{name}-d{q}"] = kcenter(c, r, n, lp >= np.quantile(lp, q))
    from scnf.analysis.active import discovery
    out["cover-z"] = discovery(*spaces["z"], n, random_state=seed)[0]
    out["cover-x"] = discovery(*spaces["x"], n, random_state=seed)[0]
    return out


def table(*paths: Path) -> str:
    """The finds table of one or more records files (their records together)."""
    recs = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    for r in recs:  # records before 2026-12-04: "discovery" was the latent-space rule
        if "discovery" in r["hits"] and "cover-z" not in r["hits"]:
            r["hits"]["cover-z"] = r["hits"].pop("discovery")
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    finds, by = Counter(), defaultdict(Counter)
    for r in recs:
        for k, v in r["hits"].items():
            finds[k] += v > 0
            by[r["task"]][k] += v > 0
    draws = Counter(r["task"] for r in recs)
    rnd = defaultdict(float)
    for r in recs:
        rnd[r["task"]] += r["random_p"]
    lines = ["Draws whose first batch holds a row of the class without a label (of the task's draws).", "",
             "| rule | all | " + " | ".join(f"{t} ({draws[t]})" for t in tasks) + " |", "|---" * (len(tasks) + 2) + "|"]
    for k, _ in sorted(finds.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {k} | {finds[k]} | " + " | ".join(str(by[t][k]) for t in tasks) + " |")
    lines.append("| random (expected) | " + f"{sum(rnd.values()):.1f} | " + " | ".join(f"{rnd[t]:.1f}" for t in tasks) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tasks", nargs="?")
    p.add_argument("draws", nargs="?", help="comma-separated draw numbers")
    p.add_argument("--out", help="records (JSON lines, appended)")
    p.add_argument("--table", nargs="+", metavar="FILE",
                   help="print the table of one or more records files (joined) and stop")
    a = p.parse_args(argv)
    if a.table:
        missing = [f for f in a.table if not Path(f).is_file()]
        if missing:
            p.error(f"--table: no records file {missing[0]}")
        print(table(*map(Path, a.table)), end="")
        return
    if not (a.tasks and a.draws and a.out):
        p.error("give TASKS DRAWS --out FILE, or --table FILE")
    import torch

    from scnf import SCNFClassifier
    torch.set_num_threads(1)
    with open(a.out, "a") as fh:
        for task in a.tasks.split(","):
            for d in map(int, a.draws.split(",")):
                X, _, _, _, y_true = split(task, d, "val", with_labels=True)
                classes = np.unique(y_true)
                missing, n = classes[d % len(classes)], len(classes)
                y = start_labels(y_true, d, without=missing)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf = SCNFClassifier(random_state=d).fit(X, y)
                unl = clf.unlabelled_rows_
                N, m = len(unl), int((y_true[unl] == missing).sum())
                rec = {"task": task, "draw": d, "n": n, "N": N, "m": m, "random_p": random_find_chance(y_true, d),
                       "hits": {k: int((y_true[unl[v]] == missing).sum()) for k, v in rules(clf, X, y, n, d).items()}}
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
