"""Figures: Fig. 5-style decision boundaries for 2-D problems, and learning curves."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

PALETTE = ["tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown"]


@torch.no_grad()
def decision_boundary(model, x_train: np.ndarray, y_train: np.ndarray, path: str | Path, title: str = "",
                      resolution: int = 200, transform=None) -> Path:
    """Unlabelled points grey, labelled ones coloured, the decision boundary black and
    log-density contours, as in the paper's Fig. 5. ``transform`` maps caller units to
    model inputs (identity by default)."""
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    lo, hi = x_train.min(0), x_train.max(0)
    pad = 0.15 * (hi - lo)
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    model.eval()
    dev = next(model.parameters()).device
    inp = torch.from_numpy(pts if transform is None else transform(pts)).to(dev)
    lj = torch.cat([model.log_joint(c) for c in inp.split(10000)]).cpu()
    pred = lj.argmax(1).numpy().reshape(gx.shape)
    logp = torch.logsumexp(lj, 1).numpy().reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=120)
    ax.contourf(gx, gy, np.exp(logp), levels=12, cmap="Greys", alpha=0.35)
    k = int(lj.shape[1])
    ax.contour(gx, gy, pred, levels=np.arange(k - 1) + 0.5, colors="black", linewidths=1.5)
    unl = y_train < 0
    ax.scatter(x_train[unl, 0], x_train[unl, 1], s=4, c="0.6", label="unlabelled")
    for c in np.unique(y_train[~unl]):
        m = y_train == c
        ax.scatter(x_train[m, 0], x_train[m, 1], s=60, c=PALETTE[int(c) % len(PALETTE)], edgecolors="black",
                   label=f"class {c}", zorder=3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def curve_note(history: list[dict]) -> str | None:
    """What a learning curve of ``history`` cannot show: None when it has at least 2 evaluations."""
    n = len(history)
    if n >= 2:
        return None
    if n == 0:
        return "no evaluation was logged, so there is no curve"
    return (f"one evaluation (step {history[0].get('step', '?')}), drawn as a point: a curve needs "
            "train.eval_every below train.steps")


def learning_curve(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Validation and test error (%) and bits/dim against training seconds, from a run's
    evaluation records (``log.jsonl``). Every evaluation is a marker; with fewer than two the
    figure says so (:func:`curve_note`) instead of pretending to be a curve."""
    t = [r["seconds"] for r in history]
    note = curve_note(history)
    ms = 3 if note is None else 8
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, style in (("val_error_pct", "validation", "-o"), ("test_error_pct", "test", "-s")):
        pts = [(ti, r[key]) for ti, r in zip(t, history) if r.get(key) is not None]
        if pts:
            a.plot(*zip(*pts), style, label=label, ms=ms)
    a.set(xlabel="training seconds", ylabel="error %")
    a.grid(True, which="both", alpha=0.3)
    if a.lines:
        a.legend()
    else:  # a model that does not classify (M1)
        a.text(0.5, 0.5, "no classifier", ha="center", va="center", transform=a.transAxes)
    binarised = any("val_bits_per_dim_binarised" in r or "test_bits_per_dim_binarised" in r for r in history)
    suffix = "_binarised" if binarised else ""
    for key, label, style in ((f"val_bits_per_dim{suffix}", "validation", "-o"),
                              (f"test_bits_per_dim{suffix}", "test", "-s")):
        pts = [(ti, r[key]) for ti, r in zip(t, history) if r.get(key) is not None]
        if pts:
            b.plot(*zip(*pts), style, label=label, ms=ms)
    b.set(xlabel="training seconds", ylabel="bits/dim of binarised pixels (bound)" if binarised else "bits/dim")
    b.grid(True, alpha=0.3)
    if b.lines:
        b.legend()
    if note is not None:
        fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=9, color="0.3")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
