"""One run from a config: data -> model -> training -> run directory.

The run directory holds ``config.toml`` (the resolved config), ``log.jsonl`` (one line per
evaluation), ``checkpoint.pt``, ``metrics.json``, figures and ``report.md``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..config import IMAGE_DATASETS, OWN_DATASETS, TOY_DATASETS, RunConfig, dump_config, load_config, model_title
from ..data.batches import SemiSupervisedData
from ..data.load import build_data
from ..errors import RunDirError
from ..fileio import write_json_atomic
from ..models import registry
from ..models.flow import SemiConditionalFlow, check_invertibility, class_aware_init, class_prior_from_labels
from ..noise import seed_everything
from ..protocol import TrainableModel
from ..training.evaluation import evaluate
from ..training.process_group import joined
from ..training.trainer import Trainer

PAPER_TABLE1 = {  # (moons error %, moons NLL, circles error %, circles NLL), paper Table 1
    ("glow", "glow"): ("0.6 ± 0.4", "1.11 ± 0.02", "5.0 ± 1.9", "1.68 ± 0.13"),
    ("glow", "gmm"): ("1.2 ± 1.2", "1.15 ± 0.01", "14.2 ± 9.0", "1.28 ± 0.15"),
    ("ffjord", "glow"): ("0.3 ± 0.2", "1.12 ± 0.03", "6.2 ± 2.2", "1.7 ± 0.2"),
    ("ffjord", "gmm"): ("5.3 ± 6.3", "1.15 ± 0.06", "25 ± 2", "0.97 ± 0.05"),
}


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


def base_metrics(cfg: RunConfig, trainer, final: dict, t0: float) -> dict:
    """The common part of metrics.json."""
    metrics = {
        "dataset": cfg.data.dataset, "kind": cfg.model.kind, "unconditional": cfg.model.unconditional,
        "conditional": cfg.model.conditional, "seed": cfg.seed, "split_seed": cfg.data.split_seed,
        "steps": trainer.step, "error_pct": final.get("error_pct"), "nll": final.get("nll"),
        "seconds": round(trainer.seconds, 2), "wall_seconds_this_process": round(time.perf_counter() - t0, 2),
        "skipped_steps": trainer.nonfinite_total,
    }
    for key in ("bits_per_dim", "bits_per_dim_binarised"):
        if key in final:
            metrics[key] = final[key]
    return metrics


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


def run(cfg: RunConfig, out: str | Path, resume: bool = False, overwrite: bool = False) -> dict:
    """Train the config's model into run directory ``out``; returns metrics.json's content.

    Under torchrun (``WORLD_SIZE`` > 1) every process runs this: it joins the process group
    (and leaves it at the end unless it was joined before), all processes build the data and
    model and train (:class:`~scnf.training.trainer.Trainer` with the group), and rank 0 alone
    prepares the run directory and writes the log, checkpoints, metrics, figures and report.
    Every process returns the same metrics (up to its own clock readings)."""
    with joined(cfg.train.device) as group:
        out = Path(out)
        t0 = time.perf_counter()
        group.run_on_main_first(lambda: prepare_run_dir(out, cfg, resume, overwrite), "run directory setup")
        seed_everything(cfg.seed)
        data, raw = group.run_on_main_first(lambda: build_data(cfg), "loading the data")
        if "source" in raw and group.is_main:  # own data: what was read, with its checksum
            write_json_atomic(out / "data.json", raw["source"])
        model = build_model(cfg, data)
        trainer = Trainer(model, data, cfg.train, seed=cfg.seed, run_dir=out,
                          init_fn=class_aware_init if cfg.model.init_from_labels else None, group=group)
        if resume:
            trainer.resume()
        final = trainer.fit()
        metrics = base_metrics(cfg, trainer, final, t0)
        metrics.update(world_size=group.world, precision=cfg.train.precision)
        lab = data.y >= 0
        with trainer.eval_weights() as m:
            lab_eval = evaluate(m, data, data.x[lab], data.y[lab], group=group)
        if "error_pct" in lab_eval:
            metrics["train_labelled_error_pct"] = lab_eval["error_pct"]
        metrics.update({f"val_{k}": v for k, v in trainer.last_val.items()})
        if trainer.best is not None:  # early stopping: the weights kept
            metrics.update(best_step=trainer.best["step"], stopped_early=trainer.stopped_early)
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


def write_results(out: Path, cfg: RunConfig, metrics: dict, data: SemiSupervisedData, raw: dict, model,
                  history: list[dict]) -> None:
    """Figures (decision boundary of 2-D data, learning curve of images), metrics.json, report.md."""
    figures = []
    if data.dims == 2 and not data.images and "x" in raw:
        from .plots import decision_boundary

        name = f"{model_title(cfg)} on {cfg.data.dataset}"
        decision_boundary(model, raw["x"], raw["y_semi"], out / "decision_boundary.png",
                          title=f"{name}: test error {metrics['error_pct']:.1f} %, NLL {metrics['nll']:.3f}")
        figures.append("decision_boundary.png")
    if data.images and history:
        from .plots import learning_curve

        learning_curve(history, out / "curve.png",
                       title=f"{cfg.data.dataset}, {cfg.data.n_labelled} labels, split seed {cfg.data.split_seed}")
        figures.append("curve.png")
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, cfg, metrics, figures)


def write_report(out: Path, cfg: RunConfig, metrics: dict, figures: list[str]) -> None:
    lines = [f"# scnf run: {model_title(cfg)} on {cfg.data.dataset}", "",
             f"{cfg.data.n_labelled} labelled rows, seed {cfg.seed}, split seed {cfg.data.split_seed}, "
             f"{metrics['steps']} steps in {metrics['seconds']:.1f} s.", "",
             "| metric | value |", "|---|---|"]
    for k in ("error_pct", "nll", "bits_per_dim", "bits_per_dim_binarised", "val_error_pct", "val_nll",
              "val_bits_per_dim", "val_bits_per_dim_binarised", "train_labelled_error_pct", "best_step",
              "skipped_steps"):
        if metrics.get(k) is not None:
            v = metrics[k]
            lines.append(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    ref = PAPER_TABLE1.get((cfg.model.unconditional, cfg.model.conditional))
    if ref and cfg.data.dataset in TOY_DATASETS:
        i = 0 if cfg.data.dataset == "moons" else 2
        lines += ["", f"Paper (Table 1, mean ± std over 5 seeds): error {ref[i]} %, NLL {ref[i + 1]}."]
    for f in figures:
        lines += ["", f"![{f}]({f})"]
    lines += ["", METRIC_NOTES, ""]
    if cfg.data.dataset in IMAGE_DATASETS:
        n = cfg.data.n_test_eval or 10_000
        lines += [f"Test numbers over {n:,} test images"
                  + (f", validation numbers over {cfg.data.n_validation:,} held-out training images"
                     if cfg.data.n_validation else "") + ".", ""]
    elif cfg.data.dataset in OWN_DATASETS and (out / "data.json").exists():
        src = json.loads((out / "data.json").read_text())
        lines += [f"Your data ({cfg.data.dataset}, {src['path']}, sha256 {src['sha256'][:16]}...): {src['rows']:,} "
                  f"training rows of which {src['labelled']:,} labelled, {src['test_rows']:,} test rows"
                  + (f"; {cfg.data.n_validation:,} labelled rows held out for validation" if cfg.data.n_validation
                     else "") + ".", ""]
    (out / "report.md").write_text("\n".join(lines))


#: what report.md's numbers are (also in the README's table of metrics.json fields)
METRIC_NOTES = (
    "error_pct: test error in %. nll: the mean of -log p(x) over the test objects, in nats, a density "
    "of x in the data's own units (for images: pixels in [0, 1], dequantised). bits_per_dim: the same "
    "density in 8-bit units, 8 - mean log p(x) / (D ln 2) with D = 784, so nll = (8 - bits_per_dim) "
    "* 784 ln 2 (a negative nll is a density above 1 on [0, 1]^784). val_*: the same on held-out "
    "training images (data.n_validation). train_labelled_error_pct: error on the labelled training rows. "
    "VAE baselines: nll is a bound (E_q(y|x)[L(x, y)] + H(q(y|x))); with their Bernoulli likelihood it "
    "bounds -log P(b) of the image binarised once, reported as bits_per_dim_binarised = -log P(b) / (D ln 2), "
    "a probability of binary images not comparable with bits_per_dim. best_step: the step whose weights "
    "early stopping kept.")


def load_run(run_dir: str | Path):
    """(config, model, data, checkpoint) of a run directory.

    The checkpoint is read without running code (:func:`scnf.training.checkpoint.load_checkpoint`);
    one that is not a scnf checkpoint or does not fit the config raises
    :class:`~scnf.errors.CheckpointError` (a ``ValueError``) naming the file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    for name in ("config.toml", "checkpoint.pt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} has no {name}: not a scnf run directory")
    from ..training.checkpoint import load_checkpoint, load_model_state

    cfg = load_config(run_dir / "config.toml")
    state = load_checkpoint(run_dir / "checkpoint.pt")  # before the data: a bad file fails fast
    seed_everything(cfg.seed)
    data, raw = build_data(cfg)
    model = build_model(cfg, data)
    # a run with a weight average is evaluated with it, as during training
    weights = state["ema"]["shadow"] if isinstance(state.get("ema"), dict) and "shadow" in state["ema"] else state["model"]
    load_model_state(model, weights, run_dir / "checkpoint.pt", what=str(run_dir / "config.toml"))
    return cfg, model.eval(), data, state


def evaluate_run(run_dir: str | Path, bins: int = 15) -> dict:
    """Re-evaluate a run's checkpoint on its test set: error, NLL, bits/dim, and for a classifier
    the expected calibration error of its p(y | x) (``ece_pct``, ``bins`` confidence bins), with
    a reliability diagram written to ``run_dir/reliability.png``. When the run holds out
    labelled validation rows (``data.n_validation``), a temperature T is fitted on them
    (:func:`scnf.runs.calibration.fit_temperature`, never on the test set) and the test set's ECE of
    softmax(log p(x, y) / T) is reported beside it (``temperature``, ``ece_pct_temperature``)."""
    from .calibration import expected_calibration_error, fit_temperature, reliability_diagram, temperature_scale

    cfg, model, data, state = load_run(run_dir)
    out = {"run_dir": str(run_dir), "step": int(state["step"])}
    if data.x_test is None:
        raise ValueError(f"{run_dir}: the run's data have no test set to evaluate on")
    probs: list = []
    out.update(evaluate(model, data, data.x_test, data.y_test, probs_out=probs))
    if model.classifies:
        p, y = torch.cat(probs).numpy(), data.y_test.numpy()
        out["ece_pct"] = expected_calibration_error(p, y, bins)
        reliability_diagram(p, y, Path(run_dir) / "reliability.png", bins,
                            title=f"{model_title(cfg)}, test set: p(y | x)")
        out["reliability_diagram"] = str(Path(run_dir) / "reliability.png")
        if data.x_val is not None and data.y_val is not None and len(data.y_val):
            val_probs: list = []
            evaluate(model, data, data.x_val, data.y_val, probs_out=val_probs)
            t = fit_temperature(np.log(torch.cat(val_probs).numpy().clip(1e-300)), data.y_val.numpy())
            out["temperature"] = t
            out["ece_pct_temperature"] = expected_calibration_error(temperature_scale(p, t), y, bins)
    return out
