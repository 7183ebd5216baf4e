"""Invertible layers following ``forward(x, context=None) -> (z, logabsdet)``."""
from .actnorm import ActNorm, ConditionalActNorm
from .base import Bijector, Flatten, Identity, Sequential
from .conv1x1 import InvertibleConv2d, InvertibleConv2dLU, InvertibleLinear, InvertibleLinearLU, Permutation
from .coupling import (AffineCoupling, ConditionalCouplingLayer, CouplingLayer, MaskedCouplingLayer,
    checkerboard_mask)
from .logits import ToLogits, dequantize
from .ffjord import FFJORD, ODESolverError
from . import fused
from .fused import FusedSequential
from .reshape import FactorOut, SpaceToDepth

__all__ = [
    "ActNorm", "AffineCoupling", "ConditionalActNorm", "FFJORD", "ODESolverError", "Bijector", "ConditionalCouplingLayer", "CouplingLayer", "FactorOut",
    "Flatten", "Identity", "InvertibleConv2d", "InvertibleConv2dLU", "InvertibleLinear",
    "InvertibleLinearLU", "MaskedCouplingLayer", "Permutation", "Sequential", "FusedSequential", "SpaceToDepth",
    "ToLogits", "checkerboard_mask", "dequantize",
]
