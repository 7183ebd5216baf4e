"""Cost of the marginal likelihood log p(x) relative to log p(x, y), for mnist_scnf() on CPU.

The paper's claim (Sec. 3.3): with only h conditioned on y, log p(x) = log sum_y p(x, y)
costs one pass of f plus one batched pass of h over K labels, so
time(log_marginal) / time(log_prob) stays near 1, while a fully conditional model, which
must run the whole flow once per class, pays about K.

Usage: python benchmarks/marginal_cost.py [--batch 64] [--repeats 5]
Both ratios are measured in the same run, interleaved, median of the repeats.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import scnf


def _time(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = scnf.mnist_scnf()
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))
    model.log_joint(x)  # data-dependent init
    model.eval()
    k = model.num_classes

    def marginal():
        model.log_marginal(x)

    def joint():
        model.log_prob(x, y)

    def fully_conditional():
        # baseline: a model conditioned everywhere must run the whole flow once per class
        torch.logsumexp(torch.stack([model.log_prob(x, c) for c in range(k)], 1), 1)

    with torch.no_grad():
        marginal(), joint()  # warm-up
        tm, tj, tf = [], [], []
        for _ in range(args.repeats):
            tj += _time(joint, 1)
            tm += _time(marginal, 1)
            tf += _time(fully_conditional, 1)
    mj, mm, mf = statistics.median(tj), statistics.median(tm), statistics.median(tf)
    print(f"mnist_scnf(), CPU, batch {args.batch}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"time log_prob (one label)          : {mj * 1000:8.1f} ms")
    print(f"time log_marginal (all {k} labels)   : {mm * 1000:8.1f} ms")
    print(f"time fully conditional baseline    : {mf * 1000:8.1f} ms")
    print(f"ratio log_marginal / log_prob            = {mm / mj:.3f}  (target <= 1.3)")
    print(f"ratio fully conditional / log_prob       = {mf / mj:.3f}  (about K = {k})")


if __name__ == "__main__":
    main()
