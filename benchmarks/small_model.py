"""Small models: steps/s of the demo's training step and of the estimator's fit, and where the
step's time goes (kernels, the autograd engine, the optimiser, Python), for one or more
versions of scnf in the same run.

Each version is a source directory (``NAME=PATH``, e.g. a ``git worktree`` of an older commit
at ``../scnf-before`` and this checkout's ``src``); every measurement runs in a fresh
subprocess with that directory first on ``PYTHONPATH``, and the versions alternate round by
round, so they share the machine's state of the moment. Compare within one run only.

    git worktree add ../scnf-before <commit>
    python benchmarks/small_model.py --version before=../scnf-before/src --version after=src \
        --rounds 3 --estimator-rounds 1

Measured per version:

* ``demo``: ``scnf demo``'s model and trainer (SCNF-GLOW on moons, batch 256, one thread):
  median ms per ``Trainer.train_step`` over ``--steps`` steps after 20 warm-up steps, per
  round; then one profiled run of 30 steps split into: ATen kernels (self time of ``aten::``
  ops outside the optimiser), the autograd engine's own bookkeeping (self time of the
  ``autograd::``/``*Backward`` events), the optimiser (``Optimizer.step`` in total, with its
  kernels) and the rest (Python, module calls, dispatch), as shares of the profiled wall time
  (the profiler adds its own overhead to every op, so the shares are indicative).
  The kernels' share is also given for the matrix products alone (``aten::mm``/``addmm``):
  the step's arithmetic, which no cut of overhead removes (1 / that share bounds the
  speed-up of removing everything else).
* ``--demo-runs N``: whole ``scnf demo`` runs (training seconds as the demo reports them,
  test error and NLL), alternating versions.
* ``--unfused NAME``: version NAME runs with ``scnf.bijectors.fused.FUSED = False`` (vector
  flows layer by layer), so ``--version fused=src --version layered=src --unfused layered``
  measures the fused pass alone.
* ``estimator``: wall and CPU seconds of ``SCNFClassifier().fit`` with the defaults on 1,000
  rows x 64 features (benchmarks/estimator_fit_time.py's data), with ``--threads``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r'''
import json, os, sys, time, dataclasses
import torch
if os.environ.get("SCNF_BENCH_UNFUSED") == "1":  # --unfused: vector flows layer by layer
    import scnf.bijectors.fused
    scnf.bijectors.fused.FUSED = False
what, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
out = {"torch": torch.__version__}
if what == "demo":
    from scnf.config import demo_config
    from scnf.data.load import build_data
    from scnf.runs.run import build_model
    from scnf.training.trainer import Trainer
    cfg = demo_config()
    cfg.train = dataclasses.replace(cfg.train, progress=False, threads=threads)
    data, _ = build_data(cfg)
    torch.manual_seed(0)  # the weights, as scnf demo seeds them
    model = build_model(cfg, data)
    tr = Trainer(model, data, cfg.train, seed=0)
    for _ in range(20):
        tr.train_step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        tr.train_step()
        times.append(time.perf_counter() - t0)
    out["ms_per_step"] = 1e3 * sorted(times)[len(times) // 2]
    out["mean_ms_per_step"] = 1e3 * sum(times) / len(times)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(30):
            tr.train_step()
        wall = time.perf_counter() - t0
    events = prof.events()
    opt = [e for e in events if e.name.startswith("Optimizer.step")]
    opt_total = sum(e.cpu_time_total for e in opt)
    spans = [(e.time_range.start, e.time_range.end) for e in opt]

    def in_opt(e):
        return any(a <= e.time_range.start and e.time_range.end <= b for a, b in spans)

    kernels = sum(e.self_cpu_time_total for e in events if e.name.startswith("aten::") and not in_opt(e))
    matmul = sum(e.self_cpu_time_total for e in events if e.name in ("aten::mm", "aten::addmm", "aten::bmm"))
    engine = sum(e.self_cpu_time_total for e in events
                 if (e.name.startswith("autograd::") or e.name.endswith("Backward0")
                     or e.name.startswith("torch::autograd")) and not in_opt(e))
    wall_us = wall * 1e6
    out["profile"] = {"kernels": kernels / wall_us, "matmul": matmul / wall_us, "autograd_engine": engine / wall_us,
                      "optimiser": opt_total / wall_us,
                      "python_and_rest": max(0.0, 1 - (kernels + engine + opt_total) / wall_us)}
    out["ops_per_step"] = sum(1 for e in events if e.name.startswith("aten::")) / 30
elif what == "demo_run":
    import tempfile
    from pathlib import Path
    from scnf.cli import main
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rc = main(["demo", "--out", str(Path(d) / "demo")])
        out["wall_s"] = time.perf_counter() - t0
        m = json.loads((Path(d) / "demo" / "metrics.json").read_text())
    out["rc"], out["train_s"] = rc, m["seconds"]
    out["error_pct"], out["nll"] = m["error_pct"], m["nll"]
else:
    from threadpoolctl import threadpool_limits
    from scnf import SCNFClassifier
    threadpool_limits(threads)
    sys.path.insert(0, sys.argv[4])  # benchmarks/: the fit-time benchmark's rows
    from estimator_fit_time import digits_rows
    X, y_semi = digits_rows()
    est = SCNFClassifier(random_state=0)
    w, c = time.perf_counter(), time.process_time()
    est.fit(X, y_semi)
    out["wall_s"], out["cpu_s"] = time.perf_counter() - w, time.process_time() - c
    out["steps"] = est.n_steps_
    out["train_accuracy_of_labelled"] = float((est.predict(X[y_semi >= 0]) == y_semi[y_semi >= 0]).mean())
print("RESULT " + json.dumps(out))
'''


def _run(src: str, what: str, steps: int, threads: int, unfused: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               SCNF_BENCH_UNFUSED="1" if unfused else "0")
    p = subprocess.run([sys.executable, "-c", _CHILD, what, str(steps), str(threads), str(Path(__file__).parent)],
                       env=env,
                       capture_output=True, text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"{what} with {src} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", action="append", required=True, metavar="NAME=SRC",
                    help="a version to measure: a name and its source directory (repeatable)")
    ap.add_argument("--rounds", type=int, default=3, help="demo-step rounds per version (alternating)")
    ap.add_argument("--steps", type=int, default=200, help="timed demo steps per round")
    ap.add_argument("--estimator-rounds", type=int, default=1, help="estimator fits per version (0: none)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the estimator fit")
    ap.add_argument("--demo-runs", type=int, default=0,
                    help="whole `scnf demo` runs per version (alternating): training seconds, error, NLL")
    ap.add_argument("--unfused", action="append", default=[], metavar="NAME",
                    help="run version NAME with scnf.bijectors.fused.FUSED = False (its vector flows layer "
                         "by layer): an A/B of the fused pass within one checkout (repeatable)")
    a = ap.parse_args(argv)
    versions = []
    for v in a.version:
        name, _, src = v.partition("=")
        if not src or not (Path(src) / "scnf" / "__init__.py").is_file():
            ap.error(f"--version {v!r}: expected NAME=DIR with DIR/scnf/__init__.py")
        versions.append((name, src))
    unknown = set(a.unfused) - {n for n, _ in versions}
    if unknown:
        ap.error(f"--unfused {sorted(unknown)}: not a --version name")
    demo = {n: [] for n, _ in versions}
    est = {n: [] for n, _ in versions}
    runs = {n: [] for n, _ in versions}
    for r in range(a.rounds):
        for name, src in (versions if r % 2 == 0 else versions[::-1]):
            res = _run(src, "demo", a.steps, 1, name in a.unfused)
            demo[name].append(res)
            print(json.dumps({"version": name, "round": r, "demo": res}), flush=True)
    for r in range(a.estimator_rounds):
        for name, src in (versions if r % 2 == 0 else versions[::-1]):
            res = _run(src, "estimator", 0, a.threads, name in a.unfused)
            est[name].append(res)
            print(json.dumps({"version": name, "round": r, "estimator": res}), flush=True)
    for r in range(a.demo_runs):
        for name, src in (versions if r % 2 == 0 else versions[::-1]):
            res = _run(src, "demo_run", 0, 1, name in a.unfused)
            runs[name].append(res)
            print(json.dumps({"version": name, "round": r, "demo_run": res}), flush=True)
    base = versions[0][0]
    base_ms = statistics.median(d["ms_per_step"] for d in demo[base])
    print("\n| version | demo ms/step (median of rounds) | steps/s | speed-up vs " + base +
          " | aten ops/step | kernels (of which matrix products) | autograd engine | optimiser | Python and rest |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, _ in versions:
        ms = statistics.median(d["ms_per_step"] for d in demo[name])
        pr = demo[name][-1]["profile"]
        print(f"| {name} | {ms:.1f} | {1e3 / ms:.1f} | {base_ms / ms:.2f}x | {demo[name][-1]['ops_per_step']:.0f} | "
              f"{pr['kernels']:.0%} ({pr['matmul']:.0%}) | {pr['autograd_engine']:.0%} | {pr['optimiser']:.0%} | {pr['python_and_rest']:.0%} |")
    if a.estimator_rounds:
        base_s = statistics.median(e["wall_s"] for e in est[base])
        print(f"\n| version | estimator fit wall s ({a.threads} thread(s)) | CPU s | steps | speed-up vs {base} |")
        print("|---|---|---|---|---|")
        for name, _ in versions:
            w = statistics.median(e["wall_s"] for e in est[name])
            c = statistics.median(e["cpu_s"] for e in est[name])
            print(f"| {name} | {w:.1f} | {c:.1f} | {est[name][-1]['steps']} | {base_s / w:.2f}x |")
    if a.demo_runs:
        base_s = statistics.median(r["train_s"] for r in runs[base])
        print(f"\n| version | `scnf demo` training s (median of {a.demo_runs}) | wall s | test error % | test NLL | "
              f"speed-up vs {base} |")
        print("|---|---|---|---|---|---|")
        for name, _ in versions:
            t = statistics.median(r["train_s"] for r in runs[name])
            w = statistics.median(r["wall_s"] for r in runs[name])
            last = runs[name][-1]
            print(f"| {name} | {t:.1f} | {w:.1f} | {last['error_pct']:.2f} | {last['nll']:.4f} | {base_s / t:.2f}x |")


if __name__ == "__main__":
    main()
