"""Signals and crashes: a stopped `scnf train` checkpoints and resumes to the same result."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scnf.training.checkpoint import load_checkpoint
from scnf.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SRC = str(Path(__file__).resolve().parents[2] / "src")
_CFG = ('seed = 3\n[data]\nn_train = 100\nn_test = 100\n[model]\nblocks = 1\nhidden = 8\nh_blocks = 1\n'
        'h_hidden = 8\n[train]\nsteps = {steps}\nbatch_size = 32\neval_every = 4\ncheckpoint_every = {every}\n'
        'progress = false\ndevice = "cpu"\nthreads = 1\n')

# Runs `scnf ARGV` after installing a hook: HOOK_STEP/HOOK_SIGNAL send the signal to the
# process itself right after that training step; HOOK_KILL_AT_SAVE SIGKILLs it half-way
# through that checkpoint write.
_HOOKED = """
import os, signal, sys
import torch
import scnf.training.trainer as tr
step_at, sig = int(os.environ.get("HOOK_STEP", 0)), os.environ.get("HOOK_SIGNAL")
kill_at_save = int(os.environ.get("HOOK_KILL_AT_SAVE", 0))
orig_step, orig_save, saves = tr.Trainer.train_step, torch.save, [0]
def train_step(self):
    out = orig_step(self)
    if sig and self.step == step_at:
        os.kill(os.getpid(), getattr(signal, sig))
    return out
def save(obj, fh, *a, **k):
    saves[0] += 1
    if saves[0] == kill_at_save:
        fh.write(b"PK\\x03\\x04 half a checkpoint")
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return orig_save(obj, fh, *a, **k)
tr.Trainer.train_step, torch.save = train_step, save
from scnf.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _config(tmp_path, steps=12, every=5):
    p = tmp_path / "c.toml"
    p.write_text(_CFG.format(steps=steps, every=every))
    return p


def _strip(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "log.jsonl").read_text().splitlines()]


def _train(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    cfg, out = _config(tmp), tmp / "r"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text()), _strip(out)


@pytest.mark.parametrize("sig,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_finishes_the_step_checkpoints_and_resume_matches(tmp_path, uninterrupted, capsys, sig, code):
    cfg, out = _config(tmp_path), tmp_path / "r"
    r = subprocess.run([sys.executable, "-c", _HOOKED, "train", str(cfg), "--out", str(out)], capture_output=True,
                       text=True, timeout=120, env=_env(HOOK_STEP=7, HOOK_SIGNAL=sig))
    assert r.returncode == code, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"stopped by {sig} after step 7" in lines[0]
    assert f"scnf train {cfg} --out {out} --resume" in lines[0]
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 7  # written at the stop, not only every 5
    assert not (out / "metrics.json").exists()
    c, stdout, _ = _train(["train", str(cfg), "--out", str(out), "--resume"], capsys)
    assert c == 0
    full, full_log = uninterrupted
    m = json.loads(stdout)
    for k in ("steps", "error_pct", "nll", "train_labelled_error_pct"):
        assert m[k] == full[k], k
    assert _strip(out) == full_log


def test_external_sigterm_stops_a_running_training(tmp_path):
    cfg, out = _config(tmp_path, steps=100000, every=10), tmp_path / "r"
    p = subprocess.Popen([sys.executable, "-m", "scnf", "train", str(cfg), "--out", str(out)], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert f"after step {step};" in err and "--resume" in err


def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, uninterrupted, capsys):
    cfg, out = _config(tmp_path), tmp_path / "r"
    r = subprocess.run([sys.executable, "-c", _HOOKED, "train", str(cfg), "--out", str(out)], capture_output=True,
                       text=True, timeout=120, env=_env(HOOK_KILL_AT_SAVE=2))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 5  # the write of step 10 died half-way
    assert list(out.glob("checkpoint.pt.*.tmp"))  # the half-written temporary file
    c, stdout, _ = _train(["train", str(cfg), "--out", str(out), "--resume"], capsys)
    assert c == 0
    assert not list(out.glob("checkpoint.pt.*.tmp"))
    full, full_log = uninterrupted
    m = json.loads(stdout)
    for k in ("steps", "error_pct", "nll", "train_labelled_error_pct"):
        assert m[k] == full[k], k
    assert _strip(out) == full_log
