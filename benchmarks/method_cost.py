"""Training cost per image of each Table 2 method, measured side by side in one run.

For every model (SCNF with the reduced CPU config's flow, SCNF at the paper's size, M2 on pixels,
M1+M2) one full training step is timed: ``backward_objective`` (the model's forward and loss, as
the Trainer runs them) + an Adamax step, on the same synthetic MNIST-shaped batch (a third of
the rows labelled for the flows as in their configs, a tenth for the VAEs as in theirs). The
models are timed in interleaved rounds and the median per model is reported, with its ratio
to SCNF (CPU config) from the same rounds, since the machine may be shared.

Usage: python benchmarks/method_cost.py [--batch 100] [--repeats 5] [--steps 5] [--threads 1] [--no-paper]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import scnf
from scnf.models import vae as baselines
from scnf.config import TrainConfig
from scnf.training.objective import backward_objective


def make_batch(b: int, labelled_share: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, 256, (b, 1, 28, 28), generator=g).float() + torch.rand(b, 1, 28, 28, generator=g)) / 256
    y = torch.randint(0, 10, (b,), generator=g)
    y[: b - round(b * labelled_share)] = -1
    return x, y


def models(paper: bool) -> dict:
    out = {"SCNF-GLOW (configs/mnist-cpu.toml model)": (lambda: scnf.mnist_scnf(
        hidden=32, blocks=1, h_hidden=128, h_blocks=1, h_class_affine=True), 1 / 3, TrainConfig(clf_weight=300.0))}
    if paper:
        out["SCNF-GLOW (paper size)"] = (lambda: scnf.mnist_scnf(), 1 / 3, TrainConfig())
    out["M2 (pixels)"] = (lambda: baselines.build("m2", 784, 10), 0.1, TrainConfig(clf_weight=55.0))
    out["M1+M2"] = (lambda: baselines.build("m1m2", 784, 10), 0.1, TrainConfig(clf_weight=55.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="training steps per timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-paper", action="store_true", help="skip the paper-size SCNF (slow on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    setups = {}
    for name, (build, share, cfg) in models(not args.no_paper).items():
        torch.manual_seed(0)
        model = build()
        x, y = make_batch(args.batch, share)
        model.train()
        with torch.no_grad():
            model.log_joint(x)  # data-dependent initialisation of the flows' ActNorms
        opt = torch.optim.Adamax(model.parameters(), lr=1e-3, weight_decay=1e-5)

        def step(model=model, x=x, y=y, cfg=cfg, opt=opt):
            opt.zero_grad(set_to_none=True)
            backward_objective(model, x, y, cfg)
            opt.step()

        step()  # warm-up
        setups[name] = step
    times: dict = {n: [] for n in setups}
    for _ in range(args.repeats):
        for name, step in setups.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = next(iter(setups))
    rows = {}
    print(f"batch {args.batch}, {args.threads} thread(s), median of {args.repeats} rounds of {args.steps} steps")
    print(f"{'model':45s} {'s/step':>8s} {'img/s':>8s} {'cost vs SCNF cpu':>17s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = statistics.median([t / b for t, b in zip(ts, times[base])])
        rows[name] = {"seconds_per_step": med, "images_per_second": args.batch / med, "cost_ratio": ratio}
        print(f"{name:45s} {med:8.3f} {args.batch / med:8.1f} {ratio:17.3f}")
    print(json.dumps({"batch": args.batch, "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
