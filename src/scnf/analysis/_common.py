"""Shared pieces of the analyses: loading a run, latents, image grids, Markdown sections."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import MODEL_KINDS, RunConfig
from ..fileio import write_text_atomic
from ..models.flow import SemiConditionalFlow
from ..data.batches import SemiSupervisedData
from ..training.evaluation import evaluate
from ..training.trainer import resolve_device

SECTION_RE = "<!-- scnf-analysis:{name} -->"


@dataclass
class LoadedRun:
    """A trained run directory, loaded once and shared by several analyses."""

    run_dir: Path
    cfg: RunConfig
    model: SemiConditionalFlow
    data: SemiSupervisedData
    state: dict
    device: torch.device
    _metrics: dict | None = field(default=None, repr=False)

    @property
    def images(self) -> bool:
        return bool(self.data.images)


@dataclass
class AnalysisResult:
    """What an analysis returns: its numbers, the figures written, the figure's panel
    layout ((rows, cols) of an image grid, or (n_axes,)) and its Markdown section."""

    name: str
    numbers: dict
    figures: list[Path]
    panels: tuple
    markdown: str


def open_run(run, device: str = "cpu", allow_changed_data: bool | None = None) -> LoadedRun:
    """A :class:`LoadedRun` from a run directory (or an already loaded run, returned as is);
    ``allow_changed_data``: as :func:`scnf.runs.run.load_run` (a run of your own data checks
    them against its record first)."""
    if isinstance(run, LoadedRun):
        return run
    from ..config import load_config
    from ..runs.run import load_run

    if (Path(run) / "config.toml").is_file():
        kind = load_config(Path(run) / "config.toml").model.kind
        if not MODEL_KINDS[kind].flow:
            raise ValueError(f"{run} is a run of the {kind} baseline; the analyses need an SCNF run (a flow)")
    cfg, model, data, state = load_run(run, allow_changed_data)
    dev = resolve_device(device)
    model.to(dev).eval()
    return LoadedRun(Path(run), cfg, model, data, state, dev)


def require_images(lr: LoadedRun, what: str) -> None:
    if not lr.images:
        raise ValueError(f"{what} needs an image run (mnist or fashion-mnist), got dataset {lr.cfg.data.dataset!r}")
    if lr.data.x.shape[1] != 1:
        raise ValueError(f"{what} draws one-channel images; this run's images are "
                         f"{'x'.join(map(str, lr.data.x.shape[1:]))} (C x H x W)")
    if lr.data.x_test is None:
        raise ValueError(f"{what} needs a test set; this run's data have none (x_test / test/ in your data)")


def run_metrics(lr: LoadedRun, n_eval: int = 1000, seed: int = 12345) -> dict:
    """Test error (%) and bits/dim of the run: from metrics.json, else evaluated once on the
    first ``n_eval`` test images (cached on ``lr``)."""
    if lr._metrics is not None:
        return lr._metrics
    m: dict = {}
    path = lr.run_dir / "metrics.json"
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            m = {k: saved[k] for k in ("error_pct", "bits_per_dim", "nll", "steps") if saved.get(k) is not None}
            m["source"] = "metrics.json"
        except (ValueError, OSError):
            m = {}
    if "error_pct" not in m and lr.data.x_test is not None:
        xt, yt = lr.data.x_test[:n_eval], lr.data.y_test[:n_eval]
        m = evaluate(lr.model, lr.data, xt, yt, seed=seed)
        m["source"] = f"evaluated on {len(xt)} test images"
    lr._metrics = m
    return m


def metrics_line(lr: LoadedRun) -> str:
    m = run_metrics(lr)
    parts = []
    if m.get("error_pct") is not None:
        parts.append(f"test error {m['error_pct']:.2f} %")
    if m.get("bits_per_dim") is not None:
        parts.append(f"{m['bits_per_dim']:.3f} bits/dim")
    elif m.get("nll") is not None:
        parts.append(f"NLL {m['nll']:.3f} nats")
    src = m.get("source")
    return ", ".join(parts) + (f" ({src})" if src and parts else "") if parts else "no metrics available"


def short_title(lr: LoadedRun) -> str:
    m = run_metrics(lr)
    bits = f", {m['bits_per_dim']:.2f} bits/dim" if m.get("bits_per_dim") is not None else ""
    err = f"test error {m['error_pct']:.1f} %" if m.get("error_pct") is not None else ""
    c = lr.cfg
    return f"SCNF-{c.model.conditional.upper()} (deep_dim {lr.model.deep_dim}) on {c.data.dataset}: {err}{bits}"


def take_test(lr: LoadedRun, n: int | None, seed: int):
    """The first n test images (uint8) and labels; all of them when n is None."""
    x, y = lr.data.x_test, lr.data.y_test
    if x is None:
        raise ValueError("the run has no test set")
    if n is not None:
        if n <= 0:
            raise ValueError(f"the number of test images must be positive, got {n}")
        x, y = x[:n], y[:n]
    return x, y


@torch.no_grad()
def latents(lr: LoadedRun, x_uint8: torch.Tensor, y: torch.Tensor, seed: int, batch_size: int = 500):
    """(z_aux, z_f, z_h) on the CPU for uint8 images, dequantised with a generator seeded
    by ``seed``; z_h uses the labels ``y``."""
    g = torch.Generator().manual_seed(int(seed))
    za, zf, zh = [], [], []
    lr.model.eval()
    for i in range(0, x_uint8.shape[0], batch_size):
        xb = lr.data.prepare(x_uint8[i:i + batch_size], g).to(lr.device)
        a, f, h = lr.model.encode(xb, torch.as_tensor(y[i:i + batch_size]).to(lr.device))
        za.append(a.cpu())
        zf.append(f.cpu())
        zh.append(h.cpu())
    return torch.cat(za), torch.cat(zf), torch.cat(zh)


@torch.no_grad()
def predict(lr: LoadedRun, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The model's class predictions for float images in [0, 1] (non-finite pixels set to 0)."""
    x = torch.nan_to_num(x.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    out = [lr.model.predict(x[i:i + batch_size].to(lr.device)).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


# ---------------------------------------------------------------------- figures
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_image_grid(cells: np.ndarray, path: Path, title: str = "", row_labels=None, col_labels=None,
                    pad: int = 2) -> tuple:
    """Draw cells of shape (rows, cols, H, W) (values in [0, 1]) as one image grid; returns
    (rows, cols)."""
    cells = np.nan_to_num(np.asarray(cells, dtype=np.float32), nan=0.0).clip(0.0, 1.0)
    r, c, h, w = cells.shape
    canvas = np.ones((r * (h + pad) + pad, c * (w + pad) + pad), np.float32)
    for i in range(r):
        for j in range(c):
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y0:y0 + h, x0:x0 + w] = cells[i, j]
    p = plt()
    fig, ax = p.subplots(figsize=(max(3.0, 0.5 * c + 1.2), max(2.5, 0.5 * r + 0.8)), dpi=110)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([pad + j * (w + pad) + w / 2 for j in range(c)] if col_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels([str(v) for v in col_labels], fontsize=7)
        ax.xaxis.tick_top()
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(r)] if row_labels is not None else [])
    if row_labels is not None:
        ax.set_yticklabels([str(v) for v in row_labels], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    p.close(fig)
    return (r, c)


def to_cells(x: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, 1, H, W) images -> (rows, cols, H, W)."""
    x = x.detach().cpu().float()
    return x.reshape(rows, cols, *x.shape[-2:]).numpy()


# ---------------------------------------------------------------------- Markdown
def out_dir(lr_or_dir, out) -> Path:
    base = lr_or_dir.run_dir if isinstance(lr_or_dir, LoadedRun) else Path(lr_or_dir)
    o = Path(out) if out is not None else base
    o.mkdir(parents=True, exist_ok=True)
    return o


def write_section(out: Path, name: str, text: str, run_dir: Path) -> Path:
    """Replace (or append) the section ``name`` of ``out/analysis.md``."""
    path = Path(out) / "analysis.md"
    start, end = SECTION_RE.format(name=name), SECTION_RE.format(name="end-" + name)
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else f"# Analyses of {run_dir}\n\n"
    pat = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pat.sub(lambda _: block, old, count=1) if pat.search(old) else old.rstrip("\n") + "\n\n" + block
    write_text_atomic(path, new)
    return path


def md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(v) for v in r) + " |")
    return lines


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return str(v)
