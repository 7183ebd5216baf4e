"""One run from a config: data -> model -> training -> run directory.

The run directory holds ``config.toml`` (the resolved config, its paths absolute), ``log.jsonl``
(one line per evaluation), ``checkpoint.pt``, ``metrics.json``, figures and ``report.md``, and for
your own data ``data.json``, the record of the data it was trained on, checked before every later use.
"""
from __future__ import annotations

import contextvars
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, load_config, model_title, resolve_paths
from ..data.batches import SemiSupervisedData
from ..data.load import build_data
from ..fileio import write_json_atomic
from ..models import registry
from ..models.flow import SemiConditionalFlow, check_invertibility, class_aware_init, class_prior_from_labels
from ..noise import seed_everything
from ..protocol import TrainableModel
from ..training.evaluation import evaluate
from ..training.process_group import joined
from ..training.trainer import Trainer
from .report import base_metrics, write_results
from .rundir import check_run_dir, load_recorded_data, prepare_run_dir


def build_model(cfg: RunConfig, data: SemiSupervisedData) -> TrainableModel:
    """The model of ``cfg`` for ``data`` (its kind's builder, :func:`scnf.models.registry.build`),
    with p(y) from the labelled rows (and, for M1+M2 with ``model.m1_run``, the trained M1)."""
    k = int(data.y.max()) + 1 if data.y_test is None else int(max(data.y.max(), data.y_test.max())) + 1
    parts = {}
    if cfg.model.kind == "m1m2" and cfg.model.m1_run:
        parts["pretrained_m1"] = load_m1_run(cfg.model.m1_run, cfg)
    return registry.build(cfg, data, k, class_prior_from_labels(data.y, k), **parts)


def load_m1_run(run_dir: str | Path, cfg: RunConfig) -> dict:
    """The weights of M1 from a finished ``model.kind = "m1"`` run, checked against ``cfg``
    (same dataset, likelihood and sizes); a problem is a ValueError naming ``model.m1_run``."""
    from ..training.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    where = f"model.m1_run = {str(run_dir)!r}"
    if not (run_dir / "config.toml").is_file() or not (run_dir / "checkpoint.pt").is_file():
        raise ValueError(f"{where}: not a run directory (no config.toml and checkpoint.pt); train one with "
                         "model.kind = 'm1' first")
    if not (run_dir / "metrics.json").is_file():
        raise ValueError(f"{where}: the M1 run has not finished (no metrics.json); resume it first")
    m1 = load_config(run_dir / "config.toml")
    checks = [("model.kind", m1.model.kind, "m1"), ("data.dataset", m1.data.dataset, cfg.data.dataset),
              ("model.vae_likelihood", m1.model.vae_likelihood, cfg.model.vae_likelihood),
              ("model.m1_hidden", m1.model.m1_hidden, cfg.model.m1_hidden),
              ("model.m1_latent", m1.model.m1_latent, cfg.model.m1_latent)]
    for key, theirs, ours in checks:
        if theirs != ours:
            raise ValueError(f"{where}: its {key} is {theirs!r}, this config needs {ours!r}")
    state = load_checkpoint(run_dir / "checkpoint.pt")["model"]
    return {k: v for k, v in state.items() if k.startswith(("m1_encoder.", "m1_decoder."))}


def run(cfg: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
        allow_changed_data: bool = False) -> dict:
    """Train the config's model into run directory ``out``; returns metrics.json's content.

    Relative paths in ``cfg`` are read against the working directory (:func:`scnf.config.load_config`
    has already made a config file's absolute, against its folder); the run's config.toml records
    them absolute. A new run of your own data records what it read in ``data.json``; ``resume``
    first checks that the data are still those (:func:`scnf.runs.rundir.load_recorded_data`;
    ``allow_changed_data`` continues on changed data with a warning, when the rows still fit),
    and nothing in ``out`` is written before these checks pass.

    Under torchrun (``WORLD_SIZE`` > 1) every process runs this: it joins the process group
    (and leaves it at the end unless it was joined before), all processes build the data and
    model and train (:class:`~scnf.training.trainer.Trainer` with the group), and rank 0 alone
    prepares the run directory and writes the log, checkpoints, metrics, figures and report.
    Every process returns the same metrics (up to its own clock readings)."""
    cfg = resolve_paths(cfg, Path.cwd())
    with joined(cfg.train.device) as group:
        out = Path(out)
        t0 = time.perf_counter()
        group.run_on_main_first(lambda: check_run_dir(out, cfg, resume, overwrite), "run directory check")
        seed_everything(cfg.seed)
        if resume:
            data, raw, record = group.run_on_main_first(
                lambda: load_recorded_data(out, cfg, allow_changed_data, resume=True), "loading the data")
        else:
            (data, raw), record = group.run_on_main_first(lambda: build_data(cfg), "loading the data"), None
        group.run_on_main_first(lambda: prepare_run_dir(out, cfg, resume, overwrite), "run directory setup")
        if "source" in raw and group.is_main and (not resume or not (out / "data.json").exists()):
            write_json_atomic(out / "data.json", raw["source"])  # own data: what was read, with its checksum
        model = build_model(cfg, data)
        trainer = Trainer(model, data, cfg.train, seed=cfg.seed, run_dir=out,
                          init_fn=class_aware_init if cfg.model.init_from_labels else None, group=group)
        if resume:
            trainer.resume()
            if group.is_main and record is not None and record.get("sha256") != raw["source"].get("sha256"):
                # resumed on changed data (allowed): data.json keeps what the run started on, and says so
                record.setdefault("resumed_on", []).append(dict(raw["source"], from_step=trainer.step))
                write_json_atomic(out / "data.json", record)
        final = trainer.fit()
        metrics = base_metrics(cfg, trainer, final, t0)
        metrics.update(world_size=group.world, precision=cfg.train.precision)
        lab = data.y >= 0
        with trainer.eval_weights() as m:
            lab_eval = evaluate(m, data, data.x[lab], data.y[lab], group=group)
        if "error_pct" in lab_eval:
            metrics["train_labelled_error_pct"] = lab_eval["error_pct"]
        metrics.update({f"val_{k}": v for k, v in trainer.last_val.items()})
        if trainer.early_stopping is not None and trainer.early_stopping.best is not None:  # the weights kept
            metrics.update(best_step=trainer.early_stopping.best["step"], stopped_early=trainer.stopped_early)
        from ..models.vae import SemiSupervisedVAE

        if isinstance(model, SemiSupervisedVAE) and model.m1_frozen:
            metrics.update(m1_run=cfg.model.m1_run, m1_active_dims=int(model.active.numel()))
        metrics.update(model.diagnostics(over_run=True))  # e.g. FFJORD parts' mean evaluations per solve
        if isinstance(model, SemiConditionalFlow):
            n_check = min(64, data.x.shape[0])
            metrics["max_reconstruction_error"] = check_invertibility(
                model, data.prepare(data.x[:n_check], torch.Generator().manual_seed(0)))
        if group.is_main:
            write_results(out, cfg, metrics, data, raw, model, trainer.history)
        group.barrier()
        return metrics


_ALLOW_CHANGED_DATA: contextvars.ContextVar[bool] = contextvars.ContextVar("scnf_allow_changed_data", default=False)


@contextmanager
def changed_data_allowed(allow: bool = True):
    """Within it, :func:`load_run` (and what loads a run through it: ``evaluate_run``, the
    analyses, ``scnf ood``) takes ``allow_changed_data=allow`` when not told otherwise; the
    command's ``--allow-changed-data``."""
    token = _ALLOW_CHANGED_DATA.set(bool(allow))
    try:
        yield
    finally:
        _ALLOW_CHANGED_DATA.reset(token)


def load_run(run_dir: str | Path, allow_changed_data: bool | None = None):
    """(config, model, data, checkpoint) of a run directory, from any working directory.

    The checkpoint is read without running code (:func:`scnf.training.checkpoint.load_checkpoint`);
    one that is not a scnf checkpoint or does not fit the config raises
    :class:`~scnf.errors.CheckpointError` (a ``ValueError``) naming the file. A run of your own
    data checks its data against the record it made (``data.json``: path, size, SHA-256,
    shapes, labelled rows per class, split) before using them: changed data raise
    :class:`~scnf.errors.DataChangedError` (a ``ValueError``) naming the file and what changed,
    unless ``allow_changed_data`` (default: False, or :func:`changed_data_allowed`'s), which
    warns (:class:`~scnf.errors.ChangedDataWarning`) and uses them as they are."""
    run_dir = Path(run_dir)
    if allow_changed_data is None:
        allow_changed_data = _ALLOW_CHANGED_DATA.get()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    for name in ("config.toml", "checkpoint.pt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} has no {name}: not a scnf run directory")
    from ..training.checkpoint import load_checkpoint, load_model_state

    cfg = _recorded_path(run_dir, load_config(run_dir / "config.toml"))
    state = load_checkpoint(run_dir / "checkpoint.pt")  # before the data: a bad file fails fast
    seed_everything(cfg.seed)
    data, _, _ = load_recorded_data(run_dir, cfg, allow_changed_data)
    model = build_model(cfg, data)
    # a run with a weight average is evaluated with it, as during training
    weights = state["ema"]["shadow"] if isinstance(state.get("ema"), dict) and "shadow" in state["ema"] else state["model"]
    load_model_state(model, weights, run_dir / "checkpoint.pt", what=str(run_dir / "config.toml"))
    return cfg, model.eval(), data, state


def _recorded_path(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """``cfg`` reading own data from the absolute path its ``data.json`` recorded, when the
    config's ``data.path`` is not there (runs made before config.toml recorded absolute paths
    held it relative to where they were trained); the record's checksum is checked all the same."""
    from ..config import OWN_DATASETS

    if cfg.data.dataset not in OWN_DATASETS or Path(cfg.data.path).exists():
        return cfg
    try:
        recorded = json.loads((run_dir / "data.json").read_text()).get("path", "")
    except (OSError, ValueError, AttributeError):
        return cfg
    if recorded and Path(recorded).is_absolute() and Path(recorded).exists():
        cfg.data.path = recorded
    return cfg


#: the temperatures :func:`evaluate_run` searches; a fit at either end is no fit (see there)
TEMPERATURE_RANGE = (0.05, 20.0)


def evaluate_run(run_dir: str | Path, bins: int = 15, allow_changed_data: bool | None = None) -> dict:
    """Re-evaluate a run's checkpoint on its test set: error, NLL, bits/dim, and for a classifier
    the expected calibration error of its p(y | x) (``ece_pct``, ``bins`` confidence bins), with
    a reliability diagram written to ``run_dir/reliability.png``. When the run holds out
    labelled validation rows (``data.n_validation``), a temperature T is fitted on them
    (:func:`scnf.runs.calibration.fit_temperature`, never on the test set) and the test set's ECE of
    softmax(log p(x, y) / T) is reported beside it (``temperature``, ``ece_pct_temperature``).
    A T that ends at a bound of :data:`TEMPERATURE_RANGE` is not a fit (the validation NLL still
    falls beyond it: every validation row right, or confidently wrong): ``temperature`` is then
    None and ``temperature_note`` says which bound and why. ``allow_changed_data``: as
    :func:`load_run`."""
    cfg, model, data, state = load_run(run_dir, allow_changed_data)
    out = {"run_dir": str(run_dir), "step": int(state["step"])}
    if data.x_test is None:
        raise ValueError(f"{run_dir}: the run's data have no test set to evaluate on")
    probs: list = []
    out.update(evaluate(model, data, data.x_test, data.y_test, probs_out=probs))
    if model.classifies:
        from .calibration import expected_calibration_error, reliability_diagram

        p, y = torch.cat(probs).numpy(), data.y_test.numpy()
        out["ece_pct"] = expected_calibration_error(p, y, bins)
        reliability_diagram(p, y, Path(run_dir) / "reliability.png", bins,
                            title=f"{model_title(cfg)}, test set: p(y | x)")
        out["reliability_diagram"] = str(Path(run_dir) / "reliability.png")
        if data.x_val is not None and data.y_val is not None and len(data.y_val):
            val_probs: list = []
            evaluate(model, data, data.x_val, data.y_val, probs_out=val_probs)
            out.update(temperature_report(np.log(torch.cat(val_probs).numpy().clip(1e-300)), data.y_val.numpy(),
                                          p, y, bins))
    return out


def temperature_report(val_log_probs, y_val, test_probs, y_test, bins: int = 15) -> dict:
    """``temperature`` fitted on the validation rows and the test set's ECE under it
    (``ece_pct_temperature``); a fit that ends at a bound of :data:`TEMPERATURE_RANGE` gives
    ``temperature`` None, ``temperature_at_bound`` and ``temperature_note`` instead."""
    from .calibration import expected_calibration_error, fit_temperature, temperature_scale

    lo, hi = TEMPERATURE_RANGE
    t = fit_temperature(val_log_probs, y_val, lo=lo, hi=hi)
    bound = next((b for b in (lo, hi) if abs(np.log(t) - np.log(b)) < 1e-3), None)
    if bound is None:
        return {"temperature": t, "ece_pct_temperature": expected_calibration_error(temperature_scale(test_probs, t),
                                                                                   y_test, bins)}
    why = ("every validation row is classified right, so sharpening always lowers their NLL" if bound == lo else
           "the validation rows are classified confidently wrong, so softening always lowers their NLL")
    return {"temperature": None, "temperature_at_bound": bound,
            "temperature_note": f"no temperature fitted: the search ended at its bound T = {bound:g} "
                                f"({len(y_val)} validation rows; {why}); hold out more validation rows"}
