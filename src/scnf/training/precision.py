"""The numeric precision of training (``train.precision``), set up in one place for any
number of processes by :func:`apply_precision` (the Trainer calls it).

* ``fp32``: PyTorch's defaults: float32 matmuls, cuDNN free to use TF32 in convolutions
  (what every single-process run, and every result in RESULTS.md, has used).
* ``tf32``: TF32 in CUDA matmuls and cuDNN convolutions.
* ``bf16-mixed``: TF32 on, and every coupling network runs under bfloat16 autocast and
  returns float32 (the coupling layers read their ``autocast`` attribute, a plain
  attribute: state-dict keys are unchanged), so every log-determinant, log-density and
  loss is computed and summed in float32. Coupling layers stay exactly invertible because
  the inverse evaluates the same network on the same input.
"""
from __future__ import annotations

import torch
from torch import nn

from ..bijectors.coupling import MaskedCouplingLayer, _TwoPassCoupling

PRECISIONS = ("fp32", "tf32", "bf16-mixed")

__all__ = ["PRECISIONS", "apply_precision", "coupling_layers"]


def coupling_layers(model: nn.Module):
    """The modules of ``model`` whose networks run under the precision's autocast."""
    return [m for m in model.modules() if isinstance(m, (MaskedCouplingLayer, _TwoPassCoupling))]


def apply_precision(model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
    """Configure ``precision`` (one of :data:`PRECISIONS`) for ``model`` on ``device``, in place."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.allow_tf32 = True
    for layer in coupling_layers(model):
        layer.autocast = dev.type if precision == "bf16-mixed" else None
    return model
