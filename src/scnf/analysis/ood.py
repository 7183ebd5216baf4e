"""Out-of-distribution detection with an image run's density: ``scnf ood RUN_DIR --against DATASET``.

The in-distribution images are the run's test images; the out-of-distribution ones the test
split of another data set of the same shape (MNIST against Fashion-MNIST and the reverse).
Three scores, each larger for "more out-of-distribution", each reported as AUROC and as the
false-positive rate at 95 % true-positive rate (out-of-distribution images are the positives):

* ``nll``: -log p(x) of the dequantised image, in bits per dimension (what the model says). A
  Glow trained on Fashion-MNIST gives MNIST digits *higher* likelihood (Nalisnick et al. 2019,
  "Do deep generative models know what they don't know?"): AUROC well below 0.5 is that failure.
* ``complexity``: -log2 p(x) - L(x), both in bits, with L(x) the length of the image as a PNG
  (zlib level 9), a generic compressor's estimate of its complexity (Serrà et al. 2020, "Input
  complexity and out-of-distribution detection with likelihood-based generative models"): a
  likelihood ratio against a universal model, which cancels what is simply "simple".
* ``typicality``: | -log p(x) - H | per image, where H is the mean -log p of the run's own
  *training* images (Nalisnick et al. 2019, "Detecting out-of-distribution inputs to deep
  generative models using typicality", with one image per test): an image is atypical when its
  likelihood is too high as well as too low.

No labels are used; no test image chooses anything (H comes from training images).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from ..config import IMAGE_DATASETS
from ..training.evaluation import evaluate

SCORES = ("nll", "complexity", "typicality")

__all__ = ["SCORES", "auroc", "fpr_at_tpr", "ood_report", "png_bits", "run_ood", "scores_of"]


def png_bits(images: np.ndarray) -> np.ndarray:
    """Length in bits of each uint8 image (N, H, W) or (N, 1, H, W) saved as a PNG at zlib level 9."""
    from PIL import Image

    imgs = np.asarray(images)
    if imgs.ndim == 4:
        if imgs.shape[1] != 1:
            raise ValueError(f"png_bits takes one-channel images, got shape {imgs.shape}")
        imgs = imgs[:, 0]
    if imgs.dtype != np.uint8:
        raise ValueError(f"png_bits takes uint8 images, got dtype {imgs.dtype}")
    out = np.empty(len(imgs))
    for i, im in enumerate(imgs):
        buf = io.BytesIO()
        Image.fromarray(im, mode="L").save(buf, format="PNG", optimize=True, compress_level=9)
        out[i] = 8 * buf.getbuffer().nbytes
    return out


def _nll_bits(model, data, x_uint8: torch.Tensor, batch_size: int, seed: int) -> np.ndarray:
    """-log2 p(x) of each image in bits: evaluation's log density (dequantised, its noise fixed by
    ``seed``) plus the 8 bits a pixel of the 8-bit images' codelength (a density on [0, 1])."""
    lp: list = []
    evaluate(model, data, x_uint8, None, batch_size=batch_size, seed=seed, log_density_out=lp)
    return -torch.cat(lp).numpy() / math.log(2.0) + 8.0 * data.dims


def scores_of(nll_bits: np.ndarray, png: np.ndarray, typical_bits: float) -> dict[str, np.ndarray]:
    """The three scores (larger = more out-of-distribution) from -log2 p(x), the PNG length and
    H, the training images' mean -log2 p (all in bits)."""
    return {"nll": nll_bits, "complexity": nll_bits - png, "typicality": np.abs(nll_bits - typical_bits)}


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be larger for ``pos`` (ties count half)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(y, np.r_[neg, pos]))


def fpr_at_tpr(neg: np.ndarray, pos: np.ndarray, tpr: float = 0.95) -> float:
    """The share of ``neg`` flagged (score >= threshold) at the highest threshold that flags at
    least ``tpr`` of ``pos`` (the first point of the ROC curve with TPR >= ``tpr``)."""
    pos = np.sort(np.asarray(pos, dtype=np.float64))[::-1]
    thr = pos[max(math.ceil(tpr * len(pos) - 1e-9), 1) - 1]
    return float(np.mean(np.asarray(neg) >= thr))


def run_ood(run_dir: str | Path, against: str, n: int = 2000, n_train: int = 2000, out: str | Path | None = None,
            device: str = "cpu", seed: int = 0, batch_size: int = 500) -> dict:
    """Score ``n`` of the run's test images (in-distribution) and ``n`` test images of ``against``
    (out-of-distribution); ``n_train`` of the run's training images give H. Writes ``ood.json``
    and ``ood.png`` (histograms of the three scores) into ``out`` (default: the run directory)."""
    from ._common import open_run, require_images
    from ..data.images import load_dataset

    if against not in IMAGE_DATASETS:
        raise ValueError(f"--against must be one of {', '.join(IMAGE_DATASETS)}, got {against!r}")
    for name, v in (("n", n), ("n_train", n_train)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {v!r}")
    lr = open_run(run_dir, device)
    require_images(lr, "scnf ood")
    if lr.cfg.data.dataset == against:
        raise ValueError(f"the run was trained on {against}: --against must name another data set")
    x_ood, _ = load_dataset(against, "test", lr.cfg.data.data_dir or None)
    x_ood = torch.from_numpy(np.asarray(x_ood)).reshape(-1, 1, 28, 28)
    if tuple(x_ood.shape[1:]) != tuple(lr.data.x_test.shape[1:]):
        raise ValueError(f"{against}'s images are {'x'.join(map(str, x_ood.shape[1:]))}, the run's "
                         f"{'x'.join(map(str, lr.data.x_test.shape[1:]))}: they must have the same shape")
    rng = np.random.default_rng(seed)

    def pick(x, k):
        idx = np.sort(rng.choice(x.shape[0], min(k, x.shape[0]), replace=False))
        return x[torch.from_numpy(idx)]

    x_in, x_out, x_tr = pick(lr.data.x_test, n), pick(x_ood, n), pick(lr.data.x, n_train)
    nll = {k: _nll_bits(lr.model, lr.data, v, batch_size, seed + i)
           for i, (k, v) in enumerate((("in", x_in), ("out", x_out), ("train", x_tr)))}
    h = float(nll["train"].mean())
    png = {k: png_bits(v.numpy()) for k, v in (("in", x_in), ("out", x_out))}
    s_in, s_out = scores_of(nll["in"], png["in"], h), scores_of(nll["out"], png["out"], h)
    dims = lr.data.dims
    report = {
        "run_dir": str(run_dir), "in_distribution": lr.cfg.data.dataset, "against": against,
        "n_in": int(len(x_in)), "n_out": int(len(x_out)), "n_train_for_typical_set": int(len(x_tr)),
        "bits_per_dim": {"in": float(nll["in"].mean() / dims), "out": float(nll["out"].mean() / dims),
                         "train": h / dims},
        "png_bits_per_dim": {"in": float(png["in"].mean() / dims), "out": float(png["out"].mean() / dims)},
        "scores": {k: {"auroc": auroc(s_in[k], s_out[k]), "fpr_at_95_tpr": fpr_at_tpr(s_in[k], s_out[k])}
                   for k in SCORES},
        "step": int(lr.state["step"]),
    }
    out = Path(out) if out is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    _figure(s_in, s_out, dims, h, report, out / "ood.png")
    report["figure"] = str(out / "ood.png")
    from ..fileio import write_json_atomic
    write_json_atomic(out / "ood.json", report)
    return report


def _figure(s_in: dict, s_out: dict, dims: int, h: float, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    labels = {"nll": "-log2 p(x) (bits/dim)", "complexity": "-log2 p(x) - L_PNG(x) (bits/dim)",
              "typicality": "|-log2 p(x) - H| (bits/dim)"}
    for ax, k in zip(axes, SCORES):
        a, b = s_in[k] / dims, s_out[k] / dims
        bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 60)
        ax.hist(a, bins, alpha=0.6, density=True, label=f"{report['in_distribution']} (in)")
        ax.hist(b, bins, alpha=0.6, density=True, label=f"{report['against']} (out)")
        if k == "nll":
            ax.axvline(h / dims, color="k", lw=1, ls="--", label="H (training mean)")
        ax.set_xlabel(labels[k])
        ax.set_title(f"{k}: AUROC {report['scores'][k]['auroc']:.3f}")
        ax.legend(fontsize=7)
    fig.suptitle(f"trained on {report['in_distribution']}, scored against {report['against']} "
                 f"(step {report['step']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ood_report(res: dict) -> str:
    """A Markdown table row set of :func:`run_ood`'s result."""
    lines = [f"Trained on {res['in_distribution']}, out-of-distribution: {res['against']} "
             f"({res['n_in']} / {res['n_out']} test images; bits/dim in {res['bits_per_dim']['in']:.3f}, "
             f"out {res['bits_per_dim']['out']:.3f}):", "", "| score | AUROC | FPR at 95 % TPR |", "|---|---|---|"]
    for k in SCORES:
        lines.append(f"| {k} | {res['scores'][k]['auroc']:.3f} | {res['scores'][k]['fpr_at_95_tpr']:.3f} |")
    return "\n".join(lines)

