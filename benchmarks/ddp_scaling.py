"""Training throughput (examples/s) of scnf's DistributedDataParallel training on CPU.

Runs a fixed global batch for 1 and 2 processes (gloo, one thread per process), plus one
process with 2 threads as the fair single-process baseline, for the toy model
(vector_scnf on moons) and a reduced mnist_scnf on random images. Prints a table.

    .venv/bin/python benchmarks/ddp_scaling.py [--toy-steps 40] [--mnist-steps 6]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _problem(name: str, batch: int, steps: int):
    from scnf.models.builders import mnist_scnf, vector_scnf
    from scnf.config import TrainConfig
    from scnf.data.batches import SemiSupervisedData

    torch.manual_seed(0)
    if name == "toy":
        from scnf.data import toy_problem

        x, y, _, _, _ = toy_problem("moons", 4096, 10, 10, 0.1, seed=0)
        data = SemiSupervisedData(torch.from_numpy(x), torch.from_numpy(y))
        model = vector_scnf(2, 2, "glow")  # the paper's toy model: 5 blocks, hidden 64
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (512, 1, 28, 28), generator=g, dtype=torch.uint8)
        y = torch.full((512,), -1, dtype=torch.long)
        y[:100] = torch.arange(100) % 10
        data = SemiSupervisedData(x, y, images=True)
        model = mnist_scnf(hidden=16, blocks=1, h_hidden=64, h_blocks=1)
    cfg = TrainConfig(batch_size=batch, steps=steps + 2, device="cpu", progress=False, eval_every=10**6,
                      checkpoint_every=10**6)
    return model, data, cfg


def _worker(name: str, batch: int, steps: int, threads: int, out: str) -> None:
    from scnf.training import process_group as PG
    from scnf.training.trainer import Trainer

    torch.set_num_threads(threads)
    with PG.joined("cpu") as group:
        model, data, cfg = _problem(name, batch, steps)
        tr = Trainer(model, data, cfg, seed=0, group=group)
        for _ in range(2):  # warm-up (includes the ActNorm init and DDP construction)
            tr.train_step()
        group.barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step()
        group.barrier()
        dt = time.perf_counter() - t0
        if group.is_main:
            Path(out).write_text(json.dumps({"seconds": dt, "examples_per_s": batch * steps / dt}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--toy-steps", type=int, default=40)
    p.add_argument("--mnist-steps", type=int, default=6)
    p.add_argument("--toy-batch", type=int, default=256)
    p.add_argument("--mnist-batch", type=int, default=32)
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from scnf.training.launch import local_launch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch, steps in (("toy", a.toy_batch, a.toy_steps), ("mnist-reduced", a.mnist_batch, a.mnist_steps)):
            base = None
            for nproc, threads in ((1, 1), (1, 2), (2, 1)):
                out = Path(tmp) / f"{name}_{nproc}_{threads}.json"
                res = local_launch(nproc, "benchmarks.ddp_scaling:_worker",
                                     {"name": name.split("-")[0], "batch": batch, "steps": steps,
                                      "threads": threads, "out": str(out)},
                                     timeout=600, cwd=ROOT, env={"OMP_NUM_THREADS": str(threads)})
                for rc, log in res:
                    if rc != 0:
                        print(log[-2000:], file=sys.stderr)
                        return 1
                r = json.loads(out.read_text())
                base = base or r["examples_per_s"]
                rows.append((name, batch, nproc, threads, r["examples_per_s"], r["examples_per_s"] / base))
    print(f"{'model':<14} {'global B':>8} {'procs':>5} {'thr/proc':>8} {'examples/s':>11} {'vs 1x1':>7}")
    for name, batch, nproc, threads, eps, rel in rows:
        print(f"{name:<14} {batch:>8} {nproc:>5} {threads:>8} {eps:>11.1f} {rel:>6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
