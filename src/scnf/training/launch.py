"""Starting a multi-process job on this machine.

``scnf train CONFIG --nproc N`` re-runs itself as N processes (:func:`launch`) with the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); every process then runs :func:`scnf.runs.run.run`, which joins the group
from them. Errors keep their exit code and one line, as with one process.
:func:`local_launch` starts a job without torchrun's agent, for tests and benchmarks.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
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


#: workers write "code<TAB>error type<TAB>one line" here when they fail (see scnf.cli.main)
WORKER_ERRORS_ENV = "SCNF_WORKER_ERRORS"
#: seconds the other processes get to finish after one failed, before they are stopped
GRACE_SECONDS = 20.0


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``scnf ARGV`` (e.g. ``["train", "cfg.toml", "--out", "runs/x"]``) as ``nproc``
    processes on this machine, with the variables torchrun would set, and return the exit code
    one process would have given.

    Output streams through. A process that fails reports its exit code and one-line error
    to the launcher instead of printing it; the others are stopped after
    :data:`GRACE_SECONDS`, and the launcher prints the error once (the first rank's that is not
    a consequence of another process failing) and exits with its code: 2 for usage, config and
    data errors, 3 for training failures, 1 for a bug (whose traceback the process printed)."""
    if int(nproc) < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    nproc = int(nproc)
    with tempfile.TemporaryDirectory(prefix="scnf-launch-") as errors:
        base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
                    LOCAL_WORLD_SIZE=str(nproc), **{WORKER_ERRORS_ENV: errors})
        base.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", "scnf", *strip_nproc(argv)]
        procs = [subprocess.Popen(cmd, env=dict(base, RANK=str(r), LOCAL_RANK=str(r))) for r in range(nproc)]
        failed_at = None
        try:
            while any(p.poll() is None for p in procs):
                if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                    failed_at = time.monotonic()
                if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                    for p in procs:
                        if p.poll() is None:
                            p.terminate()
                time.sleep(0.2)
        except KeyboardInterrupt:  # the processes got the signal too: let them checkpoint and stop
            for p in procs:
                p.wait()
            raise
        codes = [p.returncode for p in procs]
        return _report(codes, Path(errors))


def _report(codes: list[int], errors: Path) -> int:
    """The exit code (and the one line, printed) of a multi-process job."""
    if all(c == 0 for c in codes):
        return 0
    reports = []
    for r, code in enumerate(codes):
        f = errors / f"rank{r}"
        if f.exists():
            c, kind, line = (f.read_text().split("\t", 2) + ["", ""])[:3]
            reports.append((kind == "DistributedError", r, int(c), line.strip()))
    if reports:
        _, _, code, line = min(reports)  # a cause before its consequences, then the first rank
        if code != 1:
            print(f"scnf: error: {line}", file=sys.stderr)
        return code
    # no report: killed by a signal, or stopped after another process failed
    signalled = [c for c in codes if c < 0]
    if signalled:
        return 128 - signalled[0]
    return next(c for c in codes if c != 0)


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
    (:func:`scnf.training.process_group.init_distributed` or :func:`~scnf.training.process_group.joined`).
    """
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc), OMP_NUM_THREADS="1")
    base.update(env or {})
    procs = []
    for r in range(nproc):
        e = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen([sys.executable, "-m", "scnf.training.launch", target, json.dumps(kwargs or {})],
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
