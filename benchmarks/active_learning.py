"""Active learning on the estimator suite's tasks: SCNFClassifier.query against scikit-activeml.

Protocol, for each task and draw (the suite's train/test split, benchmarks/estimator_suite.py):
start from one labelled row per class (drawn by the draw's seed), then take ``--rounds`` rounds:
fit, score the test rows, query n = (number of classes) rows among the unlabelled training rows,
reveal their true labels. The area under the learning curve (AULC) is the mean test accuracy
over the rounds' fits (round 0 included), so 1.0 is perfect from the start.

Compared, all from the same starting labels:
* ``scnf-<strategy>`` for each SCNF strategy (``SCNFClassifier.query``; the first fit is shared
  by the strategies, later fits continue from it with ``warm_start=True``);
* anchors: scikit-activeml's ``UncertaintySampling(method="entropy")`` around each of
  LabelSpreading (rbf, gamma = 1 / n_features), SelfTrainingClassifier(SVC) and
  LogisticRegression (labelled rows only), plain and density-weighted (its ``utility_weight``:
  each candidate's mean RBF similarity to the unlabelled rows, Settles and Craven's information
  density with beta = 1), and random sampling. Inputs standardised on all training rows.

Cold start (``--cold``, tasks with three classes or more): class ``draw mod K`` starts with no
label; the number of rounds until a queried row belongs to it, for SCNF's discovery, novelty,
density and random strategies (``--cold-strategies``; all go on from one shared first fit; capped
at ``--cold-rounds``; a miss counts as the cap + 1). ``--cold-only`` skips the learning curves.

No test label chooses anything: test rows only score each round's fit. ``--split val`` scores
on validation rows carved from each draw's training rows instead (the suite's ``--split val``),
which is where the default strategy is chosen.

    pip install -r benchmarks/requirements-active.txt   # scikit-activeml (optional)
    python benchmarks/active_learning.py --draws 3 --rounds 4 --out runs/active
    python benchmarks/active_learning.py --table runs/active/records.jsonl
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from estimator_suite import TASKS, split  # noqa: E402

SCNF_STRATEGIES = ("density", "entropy", "margin", "novelty", "discovery", "random")
#: the strategies the cold start compares (``--cold-strategies``)
COLD_STRATEGIES = ("discovery", "novelty", "density", "random")
ANCHOR_MODELS = ("ls-rbf", "self-svc", "logreg")


def _anchor(name: str, d: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
    from sklearn.svm import SVC
    if name == "ls-rbf":
        return LabelSpreading(kernel="rbf", gamma=1.0 / d, max_iter=1000)
    if name == "self-svc":
        return SelfTrainingClassifier(SVC(probability=True, random_state=0))
    return LogisticRegression(max_iter=1000)


def _fit_anchor(name, Xs, y_semi, classes):
    """The anchor fitted to the current labels; LogisticRegression sees the labelled rows only."""
    from skactiveml.classifier import SklearnClassifier
    clf = SklearnClassifier(_anchor(name, Xs.shape[1]), classes=classes, missing_label=-1,
                            include_unlabeled_samples=name != "logreg", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(Xs, y_semi)


def _density_weights(Xs: np.ndarray, unl: np.ndarray) -> np.ndarray:
    """Each row's mean RBF similarity (gamma = 1 / d) to the unlabelled rows."""
    from sklearn.metrics.pairwise import rbf_kernel
    return rbf_kernel(Xs, Xs[unl], gamma=1.0 / Xs.shape[1]).mean(1)


def anchor_curve(model: str, weighted: bool | None, X, y_true, y0, Xt, yt, rounds, n, seed):
    """Accuracies of the anchor over the rounds; ``weighted`` None: random sampling."""
    from skactiveml.pool import UncertaintySampling
    from sklearn.preprocessing import StandardScaler
    sc = StandardScaler().fit(X)
    Xs, Xts = sc.transform(X), sc.transform(Xt)
    classes = np.unique(y_true)
    y, acc, rng = y0.copy(), [], np.random.default_rng(seed)
    qs = UncertaintySampling(method="entropy", missing_label=-1, random_state=seed)
    for r in range(rounds + 1):
        clf = _fit_anchor(model, Xs, y, classes)
        acc.append(float((clf.predict(Xts) == yt).mean()))
        if r == rounds:
            break
        unl = np.flatnonzero(y == -1)
        if weighted is None:
            pick = rng.choice(unl, n, replace=False)
        else:
            w = _density_weights(Xs, unl) if weighted else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pick = qs.query(Xs, y, clf=clf, fit_clf=False, utility_weight=w, batch_size=n)
        y[pick] = y_true[pick]
    return acc


def scnf_curves(X, y_true, y0, Xt, yt, rounds, n, seed, strategies, params, warm_shares=None, warm_f=None):
    """{name: (accuracies, seconds per later round)} from one shared first fit: ``scnf-<strategy>``
    for each strategy with the estimator's warm share of the steps, ``scnf-<strategy>-w<share>``
    for each ``(strategy, share)`` in ``warm_shares`` (warm refits taking that share), and
    ``scnf-<strategy>-f<share>`` for each ``(strategy, share)`` in ``warm_f`` (warm refits training
    that share of f's layers, ``WARM_START_F_SHARE``)."""
    import scnf.estimator
    from scnf import SCNFClassifier
    first = SCNFClassifier(**{"random_state": seed, **params}).fit(X, y0)  # params may set the model's seed
    acc0 = float((first.predict(Xt) == yt).mean())
    out = {}
    default, default_f = scnf.estimator.WARM_START_SHARE, scnf.estimator.WARM_START_F_SHARE
    runs = [(s, None, None) for s in strategies] + [(s, share, None) for s, share in warm_shares or []] \
        + [(s, None, f) for s, f in warm_f or []]
    for s, share, f_share in runs:
        name = f"scnf-{s}" if share is None else f"scnf-{s}-w{share:g}"
        name = name if f_share is None else f"{name}-f{f_share:g}"
        scnf.estimator.WARM_START_SHARE = default if share is None else share
        scnf.estimator.WARM_START_F_SHARE = default_f if f_share is None else f_share
        clf, y, acc, secs = copy.deepcopy(first), y0.copy(), [acc0], []
        clf.set_params(warm_start=True)
        for r in range(rounds):
            t = time.perf_counter()
            pos = clf.query(n=n, strategy=s, random_state=seed + r)
            rows = clf.unlabelled_rows_[pos]
            y[rows] = y_true[rows]
            clf.fit(X, y)
            secs.append(time.perf_counter() - t)
            acc.append(float((clf.predict(Xt) == yt).mean()))
        out[name] = (acc, secs)
    scnf.estimator.WARM_START_SHARE, scnf.estimator.WARM_START_F_SHARE = default, default_f
    return out


def start_labels(y_true: np.ndarray, seed: int, without: int | None = None) -> np.ndarray:
    """One labelled row per class (none for class ``without``), -1 elsewhere."""
    rng = np.random.default_rng([seed, 7])
    y = np.full(len(y_true), -1)
    for c in np.unique(y_true):
        if c != without:
            i = rng.choice(np.flatnonzero(y_true == c))
            y[i] = c
    return y


def random_find_chance(y_true: np.ndarray, seed: int) -> float:
    """Random sampling's chance that the cold start's first batch (n = K rows drawn from the
    unlabelled rows) holds a row of the class that starts without a label: 1 - C(N - m, n) / C(N, n),
    N unlabelled rows, m of them of that class."""
    from math import comb
    classes = np.unique(y_true)
    missing = classes[seed % len(classes)]
    unl = start_labels(y_true, seed, without=missing) == -1
    N, m, n = int(unl.sum()), int((y_true[unl] == missing).sum()), len(classes)
    return 1 - comb(N - m, n) / comb(N, n)


def cold_rounds(X, y_true, seed, strategies, cap, params) -> dict:
    """{strategy: rounds until a queried row is of the class that started without a label}, each
    strategy going on from one shared first fit (the same fit each would make alone)."""
    from scnf import SCNFClassifier
    classes = np.unique(y_true)
    missing = classes[seed % len(classes)]
    y0 = start_labels(y_true, seed, without=missing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = SCNFClassifier(**{"random_state": seed, "warm_start": True, **params}).fit(X, y0)
    n = len(classes)
    out = {}
    for strategy in strategies:
        clf, y, out[strategy] = copy.deepcopy(first), y0.copy(), cap + 1
        for r in range(1, cap + 1):
            rows = clf.unlabelled_rows_[clf.query(n=n, strategy=strategy, random_state=seed + r)]
            y[rows] = y_true[rows]
            if (y_true[rows] == missing).any():
                out[strategy] = r
                break
            if r == cap:  # the last round: no refit to query from
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf.fit(X, y)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(t for t in TASKS if t != "mnist-pca40"))
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--strategies", default=",".join(SCNF_STRATEGIES))
    p.add_argument("--scnf-params", default="{}",
                   help="JSON object of SCNFClassifier parameters (random_state replaces the draw as the model's seed)")
    p.add_argument("--cold", action="store_true", help="also the cold-start rounds (tasks with >= 3 classes)")
    p.add_argument("--cold-rounds", type=int, default=5)
    p.add_argument("--cold-only", action="store_true", help="only the cold-start rounds (no learning curves)")
    p.add_argument("--cold-strategies", default=",".join(COLD_STRATEGIES))
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="val: score on validation rows carved from each draw's training rows (for choosing "
                        "settings, e.g. the default strategy); the test rows are never touched")
    p.add_argument("--warm-share", type=float, default=None,
                   help="share of the resolved steps each warm refit takes (default: the estimator's "
                        "WARM_START_SHARE); recorded with each curve")
    p.add_argument("--also-warm-shares", default="",
                   help="STRATEGY:SHARE,... extra curves from the same first fit whose warm refits take "
                        "SHARE of the steps (named scnf-STRATEGY-wSHARE), e.g. density:0.1")
    p.add_argument("--also-warm-f", default="",
                   help="STRATEGY:SHARE,... extra curves from the same first fit whose warm refits train SHARE "
                        "of f's layers (named scnf-STRATEGY-fSHARE), e.g. density:0 (h alone)")
    p.add_argument("--paired", metavar="RECORDS",
                   help="only print paired_table of these records (the warm-refit variants against scnf-density)")
    p.add_argument("--paired-with", metavar="RECORDS:NAME", action="append", default=[],
                   help="with --paired: also pair the scnf-density curves of another run's RECORDS (same tasks, "
                        "draws and rounds, e.g. another setting) as scnf-density-NAME")
    p.add_argument("--table", metavar="RECORDS",
                   help="only print the table of these records (a cold start's chance for random sampling "
                        "is taken from the data of --split where a record lacks it)")
    p.add_argument("--out")
    a = p.parse_args(argv)
    if a.table:
        if not Path(a.table).is_file():
            p.error(f"--table: no records file {a.table}")

        def chance(task, draw):
            return random_find_chance(split(task, draw, a.split, with_labels=True)[4], draw)
        print(table(Path(a.table), chance), end="")
        return
    if a.paired:
        if any(":" not in x for x in a.paired_with):
            p.error("--paired-with takes RECORDS:NAME")
        print(paired_table(Path(a.paired), others=[tuple(x.rsplit(":", 1)) for x in a.paired_with]), end="")
        return
    if not a.out:
        p.error("--out is required (unless --paired)")
    import torch
    import scnf.estimator
    torch.set_num_threads(1)
    if a.warm_share is not None:
        if not 0 < a.warm_share <= 1:
            p.error(f"--warm-share must lie in (0, 1], got {a.warm_share}")
        scnf.estimator.WARM_START_SHARE = a.warm_share
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    params = json.loads(a.scnf_params)
    strategies = a.strategies.split(",")
    cold_strategies = a.cold_strategies.split(",")
    for s in strategies + cold_strategies:
        if s not in SCNF_STRATEGIES:
            p.error(f"unknown strategy {s!r}: expected some of {', '.join(SCNF_STRATEGIES)}")
    if a.cold_only:
        a.cold = True
    def pairs(option, text, lowest_ok):
        out = []
        for item in filter(None, text.split(",")):
            s, _, share = item.partition(":")
            try:
                value = float(share)
            except ValueError:
                value = float("nan")
            if s not in SCNF_STRATEGIES or not (0 <= value <= 1 if lowest_ok else 0 < value <= 1):
                p.error(f"{option}: expected STRATEGY:SHARE with SHARE in {'[0' if lowest_ok else '(0'}, 1], "
                        f"got {item!r}")
            out.append((s, value))
        return out

    warm_shares = pairs("--also-warm-shares", a.also_warm_shares, False)
    warm_f = pairs("--also-warm-f", a.also_warm_f, True)
    rec_path = out / "records.jsonl"
    done = set()
    if rec_path.exists():
        for line in rec_path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], r["draw"], r["kind"]))
    with open(rec_path, "a") as fh:
        def write(rec):
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            print(json.dumps(rec), flush=True)

        for task in a.tasks.split(","):
            for d in range(a.draws):
                X, _, Xt, yt, y_true = split(task, d, a.split, with_labels=True)
                n = len(np.unique(y_true))
                y0 = start_labels(y_true, d)
                if not a.cold_only and (task, d, "curves") not in done:
                    rec = {"task": task, "draw": d, "kind": "curves", "n": n, "rounds": a.rounds, "curves": {},
                           "seconds_per_round": {}, "warm_share": scnf.estimator.WARM_START_SHARE,
                           "warm_f_share": scnf.estimator.WARM_START_F_SHARE}
                    for name, (acc, secs) in scnf_curves(X, y_true, y0, Xt, yt, a.rounds, n, d, strategies,
                                                         params, warm_shares, warm_f).items():
                        rec["curves"][name] = acc
                        rec["seconds_per_round"][name] = secs
                    for m in ANCHOR_MODELS:
                        for tag, w in (("us", False), ("dw", True)):
                            rec["curves"][f"{m}-{tag}"] = anchor_curve(m, w, X, y_true, y0, Xt, yt, a.rounds, n, d)
                        rec["curves"][f"{m}-random"] = anchor_curve(m, None, X, y_true, y0, Xt, yt, a.rounds, n, d)
                    write(rec)
                if a.cold and n >= 3 and (task, d, "cold") not in done:
                    write({"task": task, "draw": d, "kind": "cold", "cap": a.cold_rounds,
                           "rounds": cold_rounds(X, y_true, d, cold_strategies, a.cold_rounds, params),
                           "random_p": random_find_chance(y_true, d)})
    (out / "table.md").write_text(table(rec_path))
    print((out / "table.md").read_text())


def table(rec_path: Path, chance=None) -> str:
    """AULC per task and method (mean ± std over draws), seconds per SCNF round, cold-start rounds
    and random sampling's expected first-batch finds (the records' ``random_p``; for records
    without it, ``chance(task, draw)`` when given)."""
    recs = [json.loads(line) for line in Path(rec_path).read_text().splitlines()]
    curves = [r for r in recs if r["kind"] == "curves"]
    lines = _curve_table(curves) if curves else []
    cold = [r for r in recs if r["kind"] == "cold"]
    if cold:
        strategies = list(dict.fromkeys(s for r in cold for s in r["rounds"]))
        caps = sorted({r["cap"] for r in cold})
        lines += ["", "Cold start: rounds until the class that started without a label is queried "
                  f"(cap {', '.join(map(str, caps))}; a miss counts cap + 1): the mean over draws, "
                  "(the number of draws) and [the draws that found it in the first round]; the last "
                  "column: the first-round finds random sampling's chance gives, summed over the draws.", "",
                  "| task | " + " | ".join(strategies) + " | random's chance [expected] |",
                  "|---" * (len(strategies) + 2) + "|"]
        for t in dict.fromkeys(r["task"] for r in cold):
            cells = []
            for s in strategies:
                v = [r["rounds"][s] for r in cold if r["task"] == t and s in r["rounds"]]
                cells.append(f"{np.mean(v):.1f} ({len(v)}) [{sum(x == 1 for x in v)}]" if v else "–")
            ps = [r["random_p"] if "random_p" in r else chance(t, r["draw"]) if chance else None
                  for r in cold if r["task"] == t]
            cells.append("–" if None in ps else f"[{sum(ps):.1f}]")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def paired_table(rec_path: Path, baseline: str = "scnf-density", mean_drop: float = 0.005,
                 task_drop: float = 0.01, others=()) -> str:
    """Each curve named ``<baseline>-<variant>`` against ``baseline`` on the same first fits: the
    AULC difference per task (mean over draws), over every task-draw, the worst task, and
    whether it passes the rule of the warm-refit choices (lower by at most ``mean_drop`` on
    average and by at most ``task_drop`` on every task's mean); seconds per round beside.
    ``others``: ``(records path, name)`` pairs whose ``baseline`` curves (another run of the
    same tasks, draws and rounds) join as ``<baseline>-<name>``."""
    recs = [json.loads(line) for line in Path(rec_path).read_text().splitlines()]
    recs = [r for r in recs if r["kind"] == "curves" and baseline in r["curves"]]
    for path, name in others:
        for o in (json.loads(line) for line in Path(path).read_text().splitlines()):
            if o["kind"] != "curves" or baseline not in o["curves"]:
                continue
            match = [r for r in recs if (r["task"], r["draw"], r["rounds"], r["n"]) ==
                     (o["task"], o["draw"], o["rounds"], o["n"])]
            if not match:
                raise SystemExit(f"{path}: no {baseline} curve of {o['task']} draw {o['draw']} in {rec_path}")
            match[0]["curves"][f"{baseline}-{name}"] = o["curves"][baseline]
            match[0]["seconds_per_round"][f"{baseline}-{name}"] = o["seconds_per_round"].get(baseline, [])
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    variants = list(dict.fromkeys(m for r in recs for m in r["curves"] if m.startswith(baseline + "-")))
    joined = "; " + ", ".join(f"{baseline}-{n}" for _, n in others) + " from their own runs' first fits" if others else ""
    lines = [f"AULC paired with {baseline} on the same first fits{joined} (variant minus {baseline}; mean over draws).", "",
             "| variant | " + " | ".join(tasks) + " | mean over task-draws | worst task | passes | seconds a round |",
             "|---" * (len(tasks) + 5) + "|"]

    def secs(name):
        v = [x for r in recs for x in r["seconds_per_round"].get(name, [])]
        return f"{np.mean(v):.1f}" if v else "–"

    for v in variants:
        diffs = {t: [np.mean(r["curves"][v]) - np.mean(r["curves"][baseline]) for r in recs
                     if r["task"] == t and v in r["curves"]] for t in tasks}
        means = [np.mean(diffs[t]) if diffs[t] else float("nan") for t in tasks]
        every = [x for t in tasks for x in diffs[t]]
        ok = np.mean(every) >= -mean_drop and np.nanmin(means) >= -task_drop
        lines.append(f"| {v} | " + " | ".join(f"{m:+.3f}" for m in means)
                     + f" | {np.mean(every):+.4f} ({len(every)}) | {np.nanmin(means):+.3f} | {'yes' if ok else 'no'} | {secs(v)} |")
    lines.append(f"| {baseline} | " + " | ".join("" for _ in tasks) + f" | | | | {secs(baseline)} |")
    return "\n".join(lines) + "\n"


def _curve_table(curves: list) -> list:
    tasks = list(dict.fromkeys(r["task"] for r in curves))
    methods = list(dict.fromkeys(m for r in curves for m in r["curves"]))
    lines = ["Area under the learning curve (mean test accuracy over the rounds' fits), mean ± std over draws.", "",
             "| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    aulc = {}
    for m in methods:
        cells = []
        for t in tasks:
            v = [float(np.mean(r["curves"][m])) for r in curves if r["task"] == t and m in r["curves"]]
            aulc[(m, t)] = np.mean(v) if v else float("nan")
            cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f}" if v else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    anchors = [m for m in methods if not m.startswith("scnf-")]
    best = {t: max(aulc[(m, t)] for m in anchors) for t in tasks}
    lines += ["", "| SCNF strategy | tasks at or above the best anchor | mean AULC over the tasks' draws | "
              "paired with scnf-random: mean difference ± s.e., task-draws ahead | seconds per round (mean) |",
              "|---|---|---|---|---|"]
    scnf = [m for m in methods if m.startswith("scnf-")]
    both = [r for r in curves if all(m in r["curves"] for m in scnf)]
    for m in scnf:
        wins = [t for t in tasks if aulc[(m, t)] >= best[t]]
        secs = [s for r in curves for s in r["seconds_per_round"].get(m, [])]
        mine = np.array([np.mean(r["curves"][m]) for r in both])
        paired = "–"
        if "scnf-random" in scnf and len(both) > 1:
            d = mine - np.array([np.mean(r["curves"]["scnf-random"]) for r in both])
            paired = f"{d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f}, {(d > 0).sum()} of {len(d)}"
        lines.append(f"| {m} | {len(wins)} of {len(tasks)} ({', '.join(wins) or 'none'}) | "
                     f"{mine.mean():.3f} | {paired} | " + (f"{np.mean(secs):.1f} |" if secs else "– |"))
    return lines


if __name__ == "__main__":
    main()
