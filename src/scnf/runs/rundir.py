"""A run directory's life before training: whether a run of a config can start or resume in
it, and what a finished one holds (to reuse)."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import RunConfig, dump_config, load_config
from ..errors import RunDirError


def _same_config(out: Path, cfg: RunConfig) -> bool:
    """Whether ``out`` holds a ``config.toml`` that reads back as ``cfg``."""
    try:
        return (out / "config.toml").exists() and load_config(out / "config.toml") == cfg
    except ValueError:
        return False


def finished_metrics(out: str | Path, cfg: RunConfig) -> dict | None:
    """The metrics of a finished run of ``cfg`` in ``out`` (to reuse), else None."""
    out = Path(out)
    if not ((out / "metrics.json").exists() and _same_config(out, cfg)):
        return None
    try:
        return json.loads((out / "metrics.json").read_text())
    except json.JSONDecodeError:
        return None


def resumable(out: str | Path, cfg: RunConfig) -> bool:
    """Whether ``out`` holds a stopped run of ``cfg`` (a checkpoint) that can continue."""
    out = Path(out)
    return (out / "checkpoint.pt").exists() and _same_config(out, cfg)


def config_differences(a: RunConfig, b: RunConfig) -> list[str]:
    """``section.key: A -> B`` for every key whose value differs between two configs."""
    da, db = a.to_dict(), b.to_dict()
    out = [f"seed: {da['seed']} -> {db['seed']}"] if da.get("seed") != db.get("seed") else []
    for section in ("data", "model", "train"):
        for key, va in da[section].items():
            if db[section].get(key) != va:
                out.append(f"{section}.{key}: {va!r} -> {db[section].get(key)!r}")
    return out


#: keys that ``--resume`` may change, to extend a run (finished or not): more steps or time, how often
#: it evaluates and saves. The linear schedule is then spread over the new ``train.steps`` from
#: where the run stands (its rate jumps from what the old length gave to what the new one gives).
EXTENDABLE = ("train.steps", "train.max_seconds", "train.eval_every", "train.checkpoint_every", "train.progress")


def is_extension(old: RunConfig, new: RunConfig) -> bool:
    """Whether ``new`` differs from ``old`` only in :data:`EXTENDABLE` keys, with no fewer steps."""
    a, b = old.to_dict(), new.to_dict()
    for section in ("data", "model", "train"):
        for key, value in a[section].items():
            if b[section].get(key) != value and f"{section}.{key}" not in EXTENDABLE:
                return False
    return a.get("seed") == b.get("seed") and new.train.steps >= old.train.steps


def check_run_dir(out: Path, cfg: RunConfig, resume: bool, overwrite: bool = False) -> None:
    """Raise :class:`RunDirError` if a run of ``cfg`` cannot start (or resume) in ``out``;
    writes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory: choose a directory for the run")
    saved, ckpt = out / "config.toml", out / "checkpoint.pt"
    if resume:
        if not ckpt.exists():
            raise RunDirError(f"--resume: no checkpoint.pt in {out}")
        if saved.exists() and not _same_config(out, cfg):
            try:
                old = load_config(saved)
                diff = config_differences(old, cfg)
            except ValueError:
                old, diff = None, []
            if old is not None and diff and is_extension(old, cfg):
                return  # more steps (or time) for the same run: it continues from its checkpoint
            detail = f" ({'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''})" if diff else ""
            raise RunDirError(f"--resume: the config differs from the one the run in {out} was started "
                              f"with{detail}; only {', '.join(EXTENDABLE)} may change, to extend a run")
    elif (ckpt.exists() or (out / "metrics.json").exists()) and not overwrite:
        raise RunDirError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def prepare_run_dir(out: Path, cfg: RunConfig, resume: bool, overwrite: bool = False) -> None:
    check_run_dir(out, cfg, resume, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob("checkpoint.pt.*.tmp"):  # left by a process killed while writing a checkpoint
        tmp.unlink(missing_ok=True)
    if not resume:
        for name in ("checkpoint.pt", "metrics.json", "log.jsonl"):
            (out / name).unlink(missing_ok=True)
    (out / "config.toml").write_text(dump_config(cfg))
