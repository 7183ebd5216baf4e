"""What a finished run writes beside its checkpoint: metrics.json, the figures and report.md."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import IMAGE_DATASETS, OWN_DATASETS, TOY_DATASETS, RunConfig, model_title
from ..data.batches import SemiSupervisedData
from ..fileio import write_json_atomic

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
