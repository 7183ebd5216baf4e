"""Are the predicted probabilities right? Expected calibration error, reliability diagrams and
temperature scaling, for any classifier's p(y | x) (SCNF's exact posterior, a VAE's q(y | x),
scikit-learn's ``predict_proba``).

ECE (Guo et al., 2017): the rows are binned by their confidence (the largest probability)
into ``bins`` equal-width bins of [0, 1]; ECE = sum over bins of (rows in bin / rows) x
|accuracy in bin - mean confidence in bin|. 0 for a calibrated classifier (in the limit of
many rows); reported in % here. A reliability diagram plots accuracy against confidence per bin.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _check(probs, y) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"probs must be (rows, classes) with at least 2 classes, got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"y must hold one label per row ({p.shape[0]}), got shape {y.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or np.abs(p.sum(1) - 1).max() > 1e-4:
        raise ValueError("probs must be finite, non-negative rows summing to 1")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y must hold class indices in [0, {p.shape[1]})")
    return p, y


def reliability(probs, y, bins: int = 15) -> dict:
    """Per-bin statistics: ``edges`` (bins + 1), ``count``, ``confidence`` and ``accuracy``
    (NaN in empty bins), and ``ece`` (a fraction, not %)."""
    p, y = _check(probs, y)
    if bins < 1:
        raise ValueError(f"bins must be positive, got {bins}")
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)  # (lo, hi], first bin [0, hi]
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=bins) / count
        acc = np.bincount(which, correct, minlength=bins) / count
    used = count > 0
    ece = float(np.sum(count[used] / len(y) * np.abs(acc[used] - mean_conf[used])))
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc, "ece": ece}


def expected_calibration_error(probs, y, bins: int = 15) -> float:
    """ECE in % (``bins`` equal-width confidence bins; 15 as in Guo et al.)."""
    return 100.0 * reliability(probs, y, bins)["ece"]


def reliability_diagram(probs, y, path: str | Path, bins: int = 15, title: str = "") -> Path:
    """Accuracy against confidence per bin (bars) beside the diagonal, with the ECE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = reliability(probs, y, bins)
    mid = (r["edges"][:-1] + r["edges"][1:]) / 2
    used = r["count"] > 0
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.bar(mid[used], r["accuracy"][used], width=1.0 / bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max p(y|x))", ylabel="accuracy",
           title=(title + "\n" if title else "") + f"ECE {100 * r['ece']:.2f} % ({bins} bins, {len(np.asarray(y))} rows)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def temperature_scale(probs, t: float) -> np.ndarray:
    """softmax(log(probs) / t): probabilities softened (t > 1) or sharpened (t < 1) by a temperature."""
    lp = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-300, None)) / t
    q = np.exp(lp - lp.max(1, keepdims=True))
    return q / q.sum(1, keepdims=True)


def fit_temperature(log_probs, y, lo: float = 0.05, hi: float = 20.0, iters: int = 60) -> float:
    """The temperature T minimising the NLL of softmax(log_probs / T) on (validation) rows, by
    golden-section search on log T in [lo, hi] (the NLL is convex in 1/T). Apply it as
    ``softmax(log_probs / T)``; T > 1 softens over-confident probabilities."""
    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(y)
    _check(np.exp(lp - lp.max(1, keepdims=True)) / np.exp(lp - lp.max(1, keepdims=True)).sum(1, keepdims=True), y)

    def nll(log_t: float) -> float:
        z = lp / np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))

    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2))
