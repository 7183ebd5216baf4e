"""Table 3: the same SCNF-GLOW trained with different dimensions of z_f."""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

from ..config import IMAGE_DATASETS, load_config, validate
from ._common import AnalysisResult, LoadedRun, md_table, out_dir, plt, write_section

ABLATION_DIMS = (49, 98, 196, 392, 784)
# paper Table 3: deep_dim -> (test error %, train error %); the paper's first row says 48 dims
PAPER_TABLE3 = {49: ("2.6 [48 dims]", "0"), 98: ("2.0", "0"), 196: ("1.9", "0"), 392: ("61.4", "0"),
                784: ("91.1", "0")}


def _pct(v):
    return None if v is None else f"{v:.2f}"


def ablation_config(cfg, deep_dim: int, steps: int | None = None, seed: int | None = None):
    """The run's config with ``model.deep_dim`` (and optionally steps and seed) replaced."""
    c = copy.deepcopy(cfg)
    c.model.deep_dim = int(deep_dim)
    if steps is not None:
        c.train.steps = int(steps)
    if seed is not None:
        c.seed = int(seed)
    return validate(c)


def dimension_ablation(run, out=None, seed: int | None = None, dims: Sequence[int] = ABLATION_DIMS,
                       steps: int | None = None, device: str | None = None) -> AnalysisResult:
    """Train the run's model with ``model.deep_dim`` = d for each d in ``dims`` (the run's
    config otherwise; ``steps`` and ``seed`` override it when given; ``device`` overrides
    ``train.device``), each into ``OUT/ablation/dim-<d>``. Finished runs with the same
    config are reused (an interrupted ablation resumes where it stopped).

    Returns, per d, the test error and the error on the labelled training rows (%).
    """
    from ..runs.run import run as train_run
    from ..runs.rundir import finished_metrics

    if isinstance(run, LoadedRun):
        cfg, run_dir = run.cfg, run.run_dir
    else:
        run_dir = Path(run)
        if not (run_dir / "config.toml").exists():
            raise FileNotFoundError(f"{run_dir} has no config.toml: not a scnf run directory")
        cfg = load_config(run_dir / "config.toml")
    if cfg.data.dataset not in IMAGE_DATASETS:
        raise ValueError(f"dimension-ablation needs an image run (mnist or fashion-mnist), got {cfg.data.dataset!r}")
    if steps is not None and steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    dims = [int(d) for d in dims]
    for d in dims:
        if not 1 <= d <= 784:
            raise ValueError(f"ablation dims must lie in [1, 784], got {d}")
    o = out_dir(run_dir, out)
    results: dict = {}
    for d in dims:
        c = ablation_config(cfg, d, steps, seed)
        if device is not None:
            c.train.device = device
        rdir = o / "ablation" / f"dim-{d}"
        t0 = time.perf_counter()
        m = finished_metrics(rdir, c)
        reused = m is not None
        if m is None:
            m = train_run(c, rdir, overwrite=True)
        results[d] = {"test_error_pct": m.get("error_pct"), "train_error_pct": m.get("train_labelled_error_pct"),
                      "bits_per_dim": m.get("bits_per_dim"), "steps": m.get("steps"), "reused": reused,
                      "seconds": round(time.perf_counter() - t0, 1), "run_dir": str(rdir)}
    c0 = ablation_config(cfg, dims[0], steps, seed)
    t = c0.train
    schedule = (f"{t.steps} steps, batch {t.batch_size}, lr {t.lr:g} ({t.schedule} schedule), optimisation "
                f"{t.optimisation}, clf_weight {t.clf_weight:g}, {c0.data.n_labelled} labels, seed {c0.seed}")
    # figure: error vs dimension, ours and the paper's
    p = plt()
    fig, ax = p.subplots(figsize=(5.5, 3.6), dpi=110)
    ax.plot(dims, [results[d]["test_error_pct"] for d in dims], "o-", label="test (this)")
    ax.plot(dims, [results[d]["train_error_pct"] for d in dims], "s--", label="train labelled (this)")
    pd = [d for d in dims if d in PAPER_TABLE3]
    if pd:
        ax.plot(pd, [float(PAPER_TABLE3[d][0].split()[0]) for d in pd], "k^:", label="test (paper)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims)
    ax.set_xticklabels([str(d) for d in dims])
    ax.set_xlabel("dimension of z_f")
    ax.set_ylabel("error %")
    ax.legend(fontsize=7)
    ax.set_title(f"deep_dim ablation on {cfg.data.dataset} ({t.steps} steps)", fontsize=9)
    fig.tight_layout()
    path = o / "dimension_ablation.png"
    fig.savefig(path)
    p.close(fig)
    rows = []
    for d in dims:
        r, ref = results[d], PAPER_TABLE3.get(d, ("–", "–"))
        rows.append([d, _pct(r["test_error_pct"]), _pct(r["train_error_pct"]), ref[0], ref[1], r["bits_per_dim"],
                     "reused" if r["reused"] else f"{r['seconds']:.0f}"])
    md = ["## Dimension of z_f (paper Table 3)", "",
          f"SCNF-{cfg.model.conditional.upper()} with the run's config and model.deep_dim replaced; schedule: "
          f"{schedule}. Runs in ablation/dim-<d>.", "",
          *md_table(["deep_dim", "test error %", "train error % (labelled rows)", "paper test error %",
                     "paper train error %", "bits/dim", "wall s"], rows), "",
          "The paper trains the SCNF-GLOW of its Sec. 4.2 for each dimension (Sec. 4.3); numbers from a much "
          "shorter schedule are not comparable with its table.", "", f"![dimension ablation]({path.name})"]
    text = "\n".join(md)
    write_section(o, "dimension-ablation", text, run_dir)
    return AnalysisResult("dimension-ablation", {"results": results, "schedule": schedule}, [path], (1,), text)
