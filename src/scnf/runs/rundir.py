"""A run directory's life before training: whether a run of a config can start or resume in
it, what a finished one holds (to reuse), and the record of the data it was trained on
(``data.json``), checked before every later use of the run."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..config import RunConfig, dump_config, load_config
from ..fileio import write_text_atomic
from ..errors import ChangedDataWarning, DataChangedError, RunDirError


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


def _only_extendable(old: RunConfig, new: RunConfig) -> bool:
    a, b = old.to_dict(), new.to_dict()
    for section in ("data", "model", "train"):
        for key, value in a[section].items():
            if b[section].get(key) != value and f"{section}.{key}" not in EXTENDABLE:
                return False
    return a.get("seed") == b.get("seed")


def is_extension(old: RunConfig, new: RunConfig) -> bool:
    """Whether ``new`` differs from ``old`` only in :data:`EXTENDABLE` keys, with no fewer steps."""
    return _only_extendable(old, new) and new.train.steps >= old.train.steps


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
            if old is not None and _only_extendable(old, cfg) and cfg.train.steps < old.train.steps:
                raise RunDirError(f"--resume: train.steps = {cfg.train.steps} is fewer than the {old.train.steps} "
                                  f"the run in {out} was started with; a resumed run may get more steps, no fewer")
            detail = f" ({'; '.join(diff[:5])}{'; ...' if len(diff) > 5 else ''})" if diff else ""
            raise RunDirError(f"--resume: the config differs from the one the run in {out} was started "
                              f"with{detail}; only {', '.join(EXTENDABLE)} may change, to extend a run "
                              "(train.steps to no fewer than before)")
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
    write_text_atomic(out / "config.toml", dump_config(cfg))


# ------------------------------------------------------------------ the record of the data
#: data.json's facts, and how a change of each is said (npz arrays / folder parts)
_FACTS = (("rows", "x: {now} rows, was {was}", "train/: {now} images, was {was}"),
          ("labelled", "y: {now} labelled rows, was {was}", "{now} labelled images, was {was}"),
          ("labelled_per_class", "labelled rows per class {now}, was {was}", "labelled images per class {now}, was {was}"),
          ("test_rows", "x_test: {now} rows, was {was}", "test/: {now} images, was {was}"),
          ("shape", "x rows of shape {now}, was {was}", "images of shape {now}, was {was}"),
          ("test_shape", "x_test rows of shape {now}, was {was}", "test images of shape {now}, was {was}"),
          ("classes", "classes {now}, was {was}", "classes {now}, was {was}"),
          ("files", "{now} files, was {was}", "{now} files, was {was}"),
          ("bytes", "{now} bytes, was {was}", "{now} bytes, was {was}"))
_SPLIT = ("split_seed", "n_validation", "n_unlabelled", "n_test_eval")
ALLOW_HINT = "pass --allow-changed-data (allow_changed_data=True) to use them as they are now"


def data_changes(record: dict, now: dict) -> list[str]:
    """What differs between the data a run recorded (its ``data.json``) and ``now`` (the same
    description of the data as they read today), in the user's terms; [] when nothing does."""
    folder = now.get("kind", record.get("kind")) == "folder"
    out = []
    for key, npz_text, folder_text in _FACTS:
        if key not in record or record.get(key) == now.get(key):
            continue
        if key == "labelled_per_class" and record.get("labelled") != now.get("labelled"):
            continue  # the total says it
        if key in ("files", "bytes") and out:
            continue  # the size follows from what is said
        was, new = record.get(key), now.get(key)
        if key in ("shape", "test_shape"):
            was, new = (None if v is None else tuple(v) for v in (was, new))
        out.append((folder_text if folder else npz_text).format(now=new, was=was))
    rs, ns = record.get("split") or {}, now.get("split") or {}
    out += [f"data.{k} = {ns.get(k)!r}, was {rs[k]!r}" for k in _SPLIT if k in rs and rs[k] != ns.get(k)]
    if record.get("sha256") != now.get("sha256") and not out:
        out.append("its content (the same rows, shapes and labels)")
    return out


def read_data_record(run_dir: Path, cfg: RunConfig, allow: bool = False) -> dict | None:
    """The run's ``data.json`` (own data only; None for the built-in data sets). A run of own data
    without one is refused (nothing to check its data against) unless ``allow``."""
    from ..config import OWN_DATASETS

    if cfg.data.dataset not in OWN_DATASETS:
        return None
    path = Path(run_dir) / "data.json"
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "sha256" not in record:
            raise ValueError("no sha256")
    except FileNotFoundError:
        problem = "has no data.json"
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        problem = f"has a data.json that cannot be read ({type(e).__name__})"
    else:
        return record
    if allow:
        warnings.warn(f"{run_dir} {problem}, the record of the data it was trained on: using {cfg.data.path} "
                      "unchecked (--allow-changed-data)", ChangedDataWarning, stacklevel=3)
        return None
    raise DataChangedError(f"{run_dir} {problem}, the record of the data it was trained on: {cfg.data.path} "
                           f"cannot be checked against it; {ALLOW_HINT}")


def load_recorded_data(run_dir: str | Path, cfg: RunConfig, allow: bool = False, resume: bool = False):
    """(data, raw, record) of a run directory's config, after checking that the data read now are
    the data its ``data.json`` recorded: changed data raise :class:`DataChangedError` (a
    ``ValueError``, one line naming the file and what changed) unless ``allow``, which warns
    (:class:`ChangedDataWarning`) instead. ``resume``: rows that the run's batches cannot come
    from (other counts of rows or labelled rows) are refused even so. Writes nothing."""
    from ..data.load import build_data

    run_dir = Path(run_dir)
    record = read_data_record(run_dir, cfg, allow)
    try:
        data, raw = build_data(cfg)
    except (ValueError, OSError) as e:
        if record is None:
            raise
        raise DataChangedError(f"{' '.join(str(e).split())}; the run in {run_dir} was trained on "
                               f"{record.get('path', cfg.data.path)} as its data.json records it (sha256 "
                               f"{str(record['sha256'])[:12]}..., {record.get('rows', '?')} training rows)") from None
    if record is None:
        return data, raw, None
    now = raw.get("source", {})
    changes = data_changes(record, now)
    if not changes:
        return data, raw, record
    where = now.get("path", cfg.data.path)
    said = (f"{where} changed since the run in {run_dir} was trained on it: {'; '.join(changes)} "
            f"(sha256 {str(now.get('sha256'))[:12]}..., data.json records {str(record['sha256'])[:12]}...)")
    if not allow:
        raise DataChangedError(f"{said}; use the data it recorded, or {ALLOW_HINT}")
    if resume and (record.get("rows"), record.get("labelled")) != (now.get("rows"), now.get("labelled")):
        raise DataChangedError(f"{said}: a run resumes drawing its batches from the rows it was trained on, so it "
                               "cannot continue on other rows even with --allow-changed-data; train a new run "
                               "(another --out)")
    warnings.warn(f"{said}; using them as they are now (--allow-changed-data)", ChangedDataWarning, stacklevel=3)
    return data, raw, record
