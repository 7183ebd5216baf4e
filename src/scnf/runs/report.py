"""What a finished run writes beside its checkpoint: metrics.json, the figures and report.md."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import IMAGE_DATASETS, MODEL_KINDS, OWN_DATASETS, TOY_DATASETS, RunConfig, model_title
from ..data.batches import SemiSupervisedData
from ..fileio import write_json_atomic, write_text_atomic

PAPER_TABLE1 = {  # (moons error %, moons NLL, circles error %, circles NLL), paper Table 1
    ("glow", "glow"): ("0.6 ± 0.4", "1.11 ± 0.02", "5.0 ± 1.9", "1.68 ± 0.13"),
    ("glow", "gmm"): ("1.2 ± 1.2", "1.15 ± 0.01", "14.2 ± 9.0", "1.28 ± 0.15"),
    ("ffjord", "glow"): ("0.3 ± 0.2", "1.12 ± 0.03", "6.2 ± 2.2", "1.7 ± 0.2"),
    ("ffjord", "gmm"): ("5.3 ± 6.3", "1.15 ± 0.06", "25 ± 2", "0.97 ± 0.05"),
}


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


def labelled_rows(cfg: RunConfig, data: SemiSupervisedData, raw: dict) -> tuple[int, dict[str, int], int]:
    """(labelled rows, labelled rows per class by the user's class names, of them held out for
    validation), counted from the data the run read (own data: its record, ``raw["source"]``),
    never from a default the run did not use."""
    src = raw.get("source") or {}
    if "labelled_per_class" in src:
        per = {str(k): int(v) for k, v in src["labelled_per_class"].items()}
        held = 0 if data.y_val is None else int(len(data.y_val))
        return int(sum(per.values())), per, held
    y = data.y[data.y >= 0]
    counts = y.bincount().tolist() if len(y) else []
    names = [str(c) for c in src.get("classes", [])] if src.get("kind") == "folder" else []
    per = {(names[k] if k < len(names) else str(k)): int(n) for k, n in enumerate(counts)}
    return int(len(y)), per, 0


def _labelled_text(cfg: RunConfig, data: SemiSupervisedData, raw: dict) -> str:
    n, per, held = labelled_rows(cfg, data, raw)
    classes = ", ".join(f"{k}: {v}" for k, v in per.items())
    text = f"{n:,} labelled rows ({classes})" if classes else f"{n:,} labelled rows"
    return text + (f", {held:,} of them held out for validation" if held else "")


def write_results(out: Path, cfg: RunConfig, metrics: dict, data: SemiSupervisedData, raw: dict, model,
                  history: list[dict]) -> None:
    """Figures (decision boundary of 2-D data, learning curve of images), metrics.json, report.md."""
    figures = []
    if data.dims == 2 and not data.images and "x" in raw:
        from .plots import decision_boundary

        name = f"{model_title(cfg)} on {cfg.data.dataset}"
        decision_boundary(model, raw["x"], raw["y_semi"], out / "decision_boundary.png",
                          title=f"{name}: {_scored_on(cfg)} error {metrics['error_pct']:.1f} %, "
                                f"NLL {metrics['nll']:.3f}")
        figures.append("decision_boundary.png")
    notes = []
    if data.images and history:
        from .plots import curve_note, learning_curve

        n_lab = labelled_rows(cfg, data, raw)[0]
        learning_curve(history, out / "curve.png",
                       title=f"{cfg.data.dataset}, {n_lab:,} labelled rows, split seed {cfg.data.split_seed}")
        figures.append("curve.png")
        note = curve_note(history)
        if note:
            notes.append(f"curve.png: {note}.")
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out, cfg, metrics, figures, data, raw, notes)


def write_report(out: Path, cfg: RunConfig, metrics: dict, figures: list[str], data: SemiSupervisedData,
                 raw: dict, notes: list[str] = ()) -> None:
    """report.md, every fact in it from the run itself: the rows it read, its data's shape, its
    model kind."""
    lines = [f"# scnf run: {model_title(cfg)} on {cfg.data.dataset}", "",
             f"{_labelled_text(cfg, data, raw)}, seed {cfg.seed}, split seed {cfg.data.split_seed}, "
             f"{metrics['steps']} steps in {metrics['seconds']:.1f} s.", "",
             "| metric | value |", "|---|---|"]
    for k in ("error_pct", "nll", "bits_per_dim", "bits_per_dim_binarised", "val_error_pct", "val_nll",
              "val_bits_per_dim", "val_bits_per_dim_binarised", "train_labelled_error_pct", "best_step",
              "skipped_steps"):
        if metrics.get(k) is not None:
            v = metrics[k]
            lines.append(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |")
    ref = PAPER_TABLE1.get((cfg.model.unconditional, cfg.model.conditional))
    if ref and cfg.data.dataset in TOY_DATASETS and MODEL_KINDS[cfg.model.kind].flow:
        i = 0 if cfg.data.dataset == "moons" else 2
        lines += ["", f"Paper (Table 1, mean ± std over 5 seeds): error {ref[i]} %, NLL {ref[i + 1]}."]
    for f in figures:
        lines += ["", f"![{f}]({f})"]
    for note in notes:
        lines += ["", note]
    lines += ["", metric_notes(cfg, metrics, data), ""]
    if cfg.data.dataset in IMAGE_DATASETS:
        n = len(data.y_test) if data.y_test is not None else 0
        lines += [f"Test numbers over {n:,} test images"
                  + (f", validation numbers over {cfg.data.n_validation:,} held-out training images"
                     if cfg.data.n_validation else "") + ".", ""]
    elif cfg.data.dataset in OWN_DATASETS and raw.get("source"):
        src = raw["source"]
        lines += [f"Your data ({cfg.data.dataset}, {src['path']}, sha256 {src['sha256'][:16]}...): {src['rows']:,} "
                  f"training rows of which {src['labelled']:,} labelled, {src['test_rows']:,} test rows"
                  + (f"; {cfg.data.n_validation:,} labelled rows held out for validation" if cfg.data.n_validation
                     else "") + ". The run checks these data against its data.json before every later use.", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))


def _scored_on(cfg: RunConfig) -> str:
    """Which points a run's error and NLL are on: "test", or "validation" (``data.evaluate_on``)."""
    return "validation" if cfg.data.evaluate_on == "validation" else "test"


def metric_notes(cfg: RunConfig, metrics: dict, data: SemiSupervisedData) -> str:
    """What report.md's numbers are, for this run's model kind and data (D from the data's shape)."""
    dims = data.dims
    shape = "x".join(str(s) for s in data.x.shape[1:])
    d = f"D = {shape} = {dims:,}" if data.x.dim() > 2 else f"D = {dims:,}"
    own = cfg.data.dataset in OWN_DATASETS
    flow = MODEL_KINDS[cfg.model.kind].flow
    parts = []
    if "error_pct" in metrics and metrics["error_pct"] is not None:
        parts.append(f"error_pct: {_scored_on(cfg)} error in %.")
    if flow:
        parts.append(f"nll: the mean of -log p(x) over the {_scored_on(cfg)} objects, in nats, a density of x in the data's own "
                     "units" + (" (pixels in [0, 1], dequantised)." if data.images else "."))
    else:
        parts.append("nll: the VAE's bound on -log p(x) of the test images (M2: E_q(y|x)[L(x, y)] + H(q(y|x))), "
                     "in nats.")
    if metrics.get("bits_per_dim") is not None:
        parts.append(f"bits_per_dim: the same density in 8-bit units, 8 - mean log p(x) / (D ln 2) with {d}, so "
                     f"nll = (8 - bits_per_dim) * {dims:,} ln 2 (a negative nll is a density above 1 on "
                     f"[0, 1]^{dims:,}).")
    if metrics.get("bits_per_dim_binarised") is not None:
        parts.append(f"bits_per_dim_binarised: with the VAE's Bernoulli likelihood the bound is on -log P(b) of the "
                     f"image binarised once, -log P(b) / (D ln 2) with {d}, a probability of binary images not "
                     "comparable with a density's bits_per_dim.")
    if any(k.startswith("val_") for k in metrics):
        held = "labelled rows" if own else "training images" if data.images else "rows"
        parts.append(f"val_*: the same on the {held} held out of training (data.n_validation).")
    if metrics.get("train_labelled_error_pct") is not None:
        parts.append("train_labelled_error_pct: error on the labelled training rows.")
    if metrics.get("best_step") is not None:
        parts.append("best_step: the step whose weights early stopping kept.")
    return " ".join(parts)
