"""Does ``train.compile = true`` speed up the small models' step? The demo's training step
eager on 1 and 2 threads, and compiled (inductor), each in its own subprocess.

With ``train.compile`` the Trainer initialises every ActNorm eagerly on the first batch and
then compiles the log-joint; compiled code reads neither ActNorm's ``initialized`` flag nor
the input's finiteness check (both data-dependent branches), so the forward is one graph.
``--simdlen`` sets inductor's ``cpp.simdlen`` for a second compiled variant (1: scalar
kernels). Reports, per variant, the median ms of a Trainer step over ``--steps`` steps
(after 20 warm-up steps), the seconds of the first three steps (compilation included; the
first variant to compile also fills inductor's on-disk cache, which later compilations of
the same graphs read), and the demo's arithmetic as a check (the loss after the steps).

    python benchmarks/compile_probe.py --steps 200 --simdlen 1
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r'''
import dataclasses, json, sys, time
import torch
variant, steps, simdlen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
threads = 2 if variant == "eager-2-threads" else 1
torch.set_num_threads(threads)
if variant == "compiled-simdlen":
    import torch._inductor.config as ic
    ic.cpp.simdlen = simdlen
from scnf.config import demo_config
from scnf.data.load import build_data
from scnf.runs.run import build_model
from scnf.training.trainer import Trainer
cfg = demo_config()
cfg.train = dataclasses.replace(cfg.train, progress=False, threads=threads, compile=variant.startswith("compiled"))
data, _ = build_data(cfg)
torch.manual_seed(0)  # the weights, as scnf demo seeds them
model = build_model(cfg, data)
tr = Trainer(model, data, cfg.train, seed=0)
out = {"variant": variant, "threads": threads}
t0 = time.perf_counter()
for _ in range(3):
    tr.train_step()
out["first_3_steps_s"] = time.perf_counter() - t0
for _ in range(20):
    tr.train_step()
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    stats = tr.train_step()
    times.append(time.perf_counter() - t0)
out["ms_per_step"] = 1e3 * sorted(times)[len(times) // 2]
out["last_loss"] = stats["loss"]
print("RESULT " + json.dumps(out))
'''

VARIANTS = ("eager", "eager-2-threads", "compiled", "compiled-simdlen")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--simdlen", type=int, default=1, help="inductor cpp.simdlen of the last variant")
    a = ap.parse_args(argv)
    rows = []
    for v in VARIANTS:
        p = subprocess.run([sys.executable, "-c", _CHILD, v, str(a.steps), str(a.simdlen)],
                           capture_output=True, text=True)
        lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if p.returncode or not lines:
            raise SystemExit(f"{v} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["ms_per_step"]
    print("\n| variant | threads | ms/step (median) | vs eager | first 3 steps incl. compilation, s | loss at the last step |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = r["variant"] + (f" (cpp.simdlen={a.simdlen})" if r["variant"] == "compiled-simdlen" else "")
        print(f"| {name} | {r['threads']} | {r['ms_per_step']:.2f} | {base / r['ms_per_step']:.2f}x | "
              f"{r['first_3_steps_s']:.1f} | {r['last_loss']:.6f} |")


if __name__ == "__main__":
    main()
