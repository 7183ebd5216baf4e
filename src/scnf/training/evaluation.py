"""Test-set evaluation: error, NLL and bits/dim, sharded over processes."""
from __future__ import annotations

import math

import torch

from ..data.batches import SemiSupervisedData
from ..noise import noise_from
from ..protocol import TrainableModel
from .process_group import ProcessGroup

LN2 = math.log(2.0)


@torch.no_grad()
def evaluate(model: TrainableModel, data: SemiSupervisedData, x: torch.Tensor, y: torch.Tensor | None,
             batch_size: int = 1000, seed: int = 12345, group: ProcessGroup | None = None,
             probs_out: list | None = None, log_density_out: list | None = None) -> dict:
    """Test error (%), mean NLL (nats) and, for images, bits/dim on (x, y).

    The NLL is the mean of ``-model.log_density`` (exact for the flows, a bound for the VAEs).
    Images: ``bits_per_dim`` for a density of dequantised pixels (8 - log p / (D ln 2));
    ``bits_per_dim_binarised`` for a model of binarised pixels (-log P / (D ln 2)), a different
    quantity that is not comparable with the first. No error for a model that does not classify.
    ``log_density_out`` (one process): a list that receives each batch's log density per row
    (float64, CPU), the values the NLL averages.
    ``probs_out`` (one process): a list that receives softmax(class_scores) of each batch (float64,
    CPU), the probabilities the error is computed from, for calibration.

    In a process ``group`` (called on every process) evaluation batch ``i`` runs on process
    ``i % N``; every process advances the dequantisation noise over all batches, so each
    image gets the noise it gets in one process, and the float64 sums of log p, errors and
    rows are added over processes. Noise inside the model (a VAE's samples) comes from a
    generator seeded by ``seed`` and the batch, so the result does not depend on the number
    of processes, on torch's global generator or on what ran before."""
    group = group if group is not None else ProcessGroup()
    classify = y is not None and model.classifies
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    tot = torch.zeros(3, dtype=torch.float64)  # sum log p, errors, rows
    for j, i in enumerate(range(0, x.shape[0], batch_size)):
        xb = data.prepare(x[i:i + batch_size], g)  # every process advances the noise stream
        if j % group.world != group.rank:
            continue
        with noise_from(torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (j + 1)) % 2**63)):
            lj = model.log_joint(xb.to(dev))
            scores = model.class_scores(xb.to(dev), log_joint=lj) if classify else None
            lp = model.log_density(xb.to(dev), lj).double().cpu()
            tot[0] += lp.sum()
        if log_density_out is not None:
            log_density_out.append(lp)
        if classify and probs_out is not None:
            probs_out.append(torch.softmax(scores.double(), 1).cpu())
        if classify:
            tot[1] += (scores.argmax(1).cpu() != torch.as_tensor(y[i:i + batch_size])).sum().double()
        tot[2] += xb.shape[0]
    model.train(was_training)
    lp_sum, errors, rows = group.all_reduce(tot, "evaluation all-reduce").tolist()
    mean_lp = lp_sum / rows if rows else float("nan")
    out = {"nll": -mean_lp}
    if classify:
        out["error_pct"] = errors / rows * 100 if rows else float("nan")
    if data.images and model.density_of == "binarised":  # a probability of binary images: no 8-bit offset
        out["bits_per_dim_binarised"] = -mean_lp / (data.dims * LN2)
    elif data.images:
        out["bits_per_dim"] = 8.0 - mean_lp / (data.dims * LN2)
    return out

