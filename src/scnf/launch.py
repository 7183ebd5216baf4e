"""Starting a multi-process job on this machine.

``scnf train CONFIG --nproc N`` re-runs itself through torchrun (:func:`launch`); every
process then runs :func:`scnf.experiment.run`, which joins the group from the torchrun
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`local_launch` starts a job without torchrun's agent, for tests and benchmarks.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

__all__ = ["free_port", "launch", "local_launch", "strip_nproc"]


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run ``scnf ARGV`` (e.g. ``["train", "cfg.toml", "--out", "runs/x"]``) as ``nproc``
    processes through torchrun on this machine; returns torchrun's exit code."""
    if int(nproc) < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(nproc)),
           "-m", "scnf", *strip_nproc(argv)]
    return subprocess.call(cmd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_launch(nproc: int, target: str, kwargs: dict | None = None, timeout: float = 120.0,
                 env: dict | None = None, cwd: str | Path | None = None) -> list[tuple[int, str]]:
    """Run ``module:function(**kwargs)`` in ``nproc`` fresh processes forming one job on localhost.

    For tests and benchmarks: sets the torchrun variables itself (no agent, so one rank's
    failure does not kill the others), waits up to ``timeout`` seconds (then kills them) and
    returns ``[(returncode, output), ...]`` by rank. ``function`` joins the group itself
    (:func:`scnf.process_group.init_distributed` or :func:`~scnf.process_group.joined`).
    """
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc), OMP_NUM_THREADS="1")
    base.update(env or {})
    procs = []
    for r in range(nproc):
        e = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen([sys.executable, "-m", "scnf.launch", target, json.dumps(kwargs or {})],
                                      env=e, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + timeout
    results = []
    for p in procs:
        try:
            o, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            o, _ = p.communicate()
            o += "\n[local_launch: killed after timeout]"
        results.append((p.returncode, o))
    return results


def _worker_main(argv: Sequence[str]) -> int:
    import importlib

    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    mod, fn = target.split(":")
    getattr(importlib.import_module(mod), fn)(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
