"""Training-step time of the toy FFJORD rows of Table 1 (FFJORD ∘ GLOW, FFJORD ∘ GMM).

The model, data and training settings are those of ``scnf reproduce table1`` for the row
(:func:`scnf.runs.reproduce.toy_config`, same seed and split), trained by the Trainer's own
``train_step`` on one torch thread: the batch draw, the forward solve of the FFJORD part with
the exact trace, the backward pass through the solver, the optimiser step. The first
``--warmup`` steps are not timed; the next ``--steps`` are, each on its own, and the
script prints the median and mean ms per step, the mean number of function evaluations of
the dynamics per solve (NFE; it sets the work of a step, and it drifts as training goes) and
ms per evaluation. The allocator is set as the ``scnf`` command sets it
(:func:`scnf.training.allocator.keep_freed_memory`) unless ``--system-malloc``.

To compare two versions of the code, run the script once per version with ``PYTHONPATH``
pointing at that version's ``src`` (the script uses only the package's public pieces, so an
older checkout runs it too), alternating the two a few times on the same machine.

Usage: OMP_NUM_THREADS=1 python benchmarks/ffjord_step.py [--rows ffjord-glow,ffjord-gmm]
       [--dataset moons] [--steps 40] [--warmup 10] [--seed 0] [--train-tol 0] [--json] [--system-malloc]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import scnf
from scnf.data.load import build_data
from scnf.models.flow import class_aware_init
from scnf.noise import seed_everything
from scnf.runs.reproduce import toy_config
from scnf.runs.run import build_model
from scnf.training.trainer import Trainer


def time_row(f: str, h: str, dataset: str, steps: int, warmup: int, seed: int, train_tol: float) -> dict:
    cfg = toy_config(dataset, f, h, seed, ffjord_train_tol=train_tol or None)
    seed_everything(cfg.seed)
    data, _ = build_data(cfg)
    model = build_model(cfg, data)
    trainer = Trainer(model, data, cfg.train, seed=cfg.seed,
                      init_fn=class_aware_init if cfg.model.init_from_labels else None)
    solvers = [m for m in model.modules() if isinstance(m, scnf.bijectors.ffjord.FFJORD)]
    times, nfes = [], []
    with trainer.threads():
        for i in range(warmup + steps):
            before = sum(m.total_nfe for m in solvers)
            t0 = time.perf_counter()
            trainer.train_step()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt)
                nfes.append(sum(m.total_nfe for m in solvers) - before)
    ms = [t * 1e3 for t in times]
    return {"row": f"{f}-{h}", "dataset": dataset, "steps": steps, "warmup": warmup,
            "median_ms_per_step": statistics.median(ms), "mean_ms_per_step": statistics.fmean(ms),
            "mean_nfe_per_step": statistics.fmean(nfes),
            "ms_per_nfe": sum(ms) / max(sum(nfes), 1), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="ffjord-glow,ffjord-gmm")
    p.add_argument("--dataset", default="moons")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-tol", type=float, default=0.0, help="FFJORD training tolerance (0: the row's default)")
    p.add_argument("--json", action="store_true", help="one JSON line per row instead of text")
    p.add_argument("--system-malloc", action="store_true", help="keep glibc's allocator defaults")
    a = p.parse_args()
    if not a.system_malloc:
        from scnf.training.allocator import keep_freed_memory

        keep_freed_memory()
    torch.set_num_threads(1)
    for row in a.rows.split(","):
        f, h = row.split("-")
        r = time_row(f, h, a.dataset, a.steps, a.warmup, a.seed, a.train_tol)
        r["scnf"] = os.path.relpath(scnf.__file__)  # the version timed, relative to the working folder
        if a.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{r['row']:12s} {a.dataset:8s} {r['median_ms_per_step']:8.1f} ms/step (median; mean "
                  f"{r['mean_ms_per_step']:.1f}) {r['mean_nfe_per_step']:5.1f} NFE/step "
                  f"{r['ms_per_nfe']:.2f} ms/NFE  [{r['scnf']}]", flush=True)


if __name__ == "__main__":
    main()
