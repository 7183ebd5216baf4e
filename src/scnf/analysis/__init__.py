"""Analyses of a trained run (paper Sec. 4.3, 4.4, Figs. 2-4, Table 3, Appendix A).

Each analysis is a function ``f(run, out=None, seed=..., **options)`` taking a run
directory (or a :class:`LoadedRun` from :func:`open_run`, to share one load), writing its
PNG figure(s) and its section of ``OUT/analysis.md`` (``OUT`` defaults to the run
directory), and returning an :class:`AnalysisResult` with its numbers.
"""
from __future__ import annotations

import inspect

from ._common import AnalysisResult, LoadedRun, open_run, run_metrics, write_section
from .ablation import ABLATION_DIMS, PAPER_TABLE3, ablation_config, dimension_ablation
from .images import RECON_SIZES, label_swap, reconstructions, samples
from .latents import obfuscation, tsne

ANALYSES = {
    "reconstructions": reconstructions,
    "label-swap": label_swap,
    "samples": samples,
    "tsne": tsne,
    "obfuscation": obfuscation,
    "dimension-ablation": dimension_ablation,
}


def analyse(run_dir, what: str, out=None, seed: int | None = None, **options) -> AnalysisResult:
    """Run the analysis ``what`` (a key of :data:`ANALYSES`) on a run directory.

    ``seed`` None means 0 (the dimension ablation: the run's own seed). Options an
    analysis does not take raise ValueError; options given as None are ignored.
    """
    if what not in ANALYSES:
        raise ValueError(f"unknown analysis {what!r}: expected one of {', '.join(ANALYSES)}")
    fn = ANALYSES[what]
    params = inspect.signature(fn).parameters
    opts = {k: v for k, v in options.items() if v is not None}
    bad = sorted(k for k in opts if k not in params or k in ("run", "out", "seed"))
    if bad:
        raise ValueError(f"{what} does not take option(s) {', '.join('--' + b.replace('_', '-') for b in bad)}")
    if seed is None and what != "dimension-ablation":
        seed = 0
    return fn(run_dir, out=out, seed=seed, **opts)


__all__ = ["ABLATION_DIMS", "ANALYSES", "AnalysisResult", "LoadedRun", "PAPER_TABLE3", "RECON_SIZES",
           "ablation_config", "analyse", "dimension_ablation", "label_swap", "obfuscation", "open_run",
           "reconstructions", "run_metrics", "samples", "tsne", "write_section"]
