"""A vector flow's forward pass as one autograd node.

The toy and tabular models (:func:`scnf.models.builders.vector_scnf`) are :class:`Sequential`
chains of :class:`ActNorm`, :class:`InvertibleConv2d` (a linear map on vectors) and two-pass
couplings with MLP nets, on 256- to 2,560-row batches. Their training step is bound by the
number of operations autograd records and replays (a few microseconds each), not by
arithmetic. :func:`sequential_forward` runs such a chain as one
:class:`torch.autograd.Function` with a hand-written backward: the same forward arithmetic,
operation for operation (outputs and log-dets equal to the layer-by-layer pass), and the
gradients autograd would compute, summed in places in another order.

:class:`FusedSequential` (what the vector builders of :mod:`scnf.models.builders` build) uses
it when every layer is one of those (the full-matrix
linear map, an initialised ActNorm or one in eval mode, a two-pass coupling whose nets are
:class:`~scnf.nn.MLP` without autocast), the input is (B, D) and :data:`FUSED` is true;
anything else (images, LU maps, residual nets, FFJORD, ``torch.compile``, an ActNorm that
still has to initialise) runs layer by layer. Only the forward direction is fused; first
derivatives only.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..nn import MLP
from .actnorm import ActNorm
from .base import Sequential
from .conv1x1 import InvertibleConv2d
from .coupling import _TwoPassCoupling, mlp_affine_backward, mlp_affine_forward, mlp_params

#: run a vector flow's forward pass as one autograd node (False: layer by layer)
FUSED = True

_ACTNORM, _LINEAR, _COUPLING = 0, 1, 2


class _Plan:
    """The chain as the fused pass reads it: per layer, its kind, where its parameters start in
    the flat argument list, and for a coupling its nets' slopes and sizes and which embedding
    (an index into the distinct embedding outputs) it reads."""

    __slots__ = ("steps", "n_emb")

    def __init__(self, steps, n_emb):
        self.steps, self.n_emb = steps, n_emb


def _plan(seq, x: torch.Tensor, context):
    """(plan, embedding modules, parameters) of ``seq`` for input ``x``, or None when a layer
    or the input is not one the fused pass takes."""
    if x.dim() != 2 or torch.compiler.is_compiling():
        return None
    dim = x.shape[1]
    steps, params, embeddings = [], [], []
    for layer in seq.layers:
        t = type(layer)
        if t is ActNorm:
            if layer.num_channels != dim or (layer.training and not bool(layer.initialized)):
                return None
            steps.append((_ACTNORM, len(params)))
            params += [layer.bias, layer.log_scale]
        elif t is InvertibleConv2d:
            if layer.num_channels != dim:
                return None
            steps.append((_LINEAR, len(params)))
            params.append(layer.weight)
        elif isinstance(layer, _TwoPassCoupling) and hasattr(layer, "dim"):
            if (layer.dim != dim or layer.autocast is not None or type(layer.net2) is not MLP
                    or (layer.net1 is not None and type(layer.net1) is not MLP)):
                return None
            emb = None
            if layer.conditional:
                if context is None or context.shape != (x.shape[0],):
                    return None  # the layer-by-layer pass says what is wrong
                module = layer.embedding
                emb = next((i for i, m in enumerate(embeddings) if m is module), None)
                if emb is None:
                    emb = len(embeddings)
                    embeddings.append(module)
            nets = []
            for net in (layer.net1, layer.net2):
                if net is None:
                    nets.append(None)
                    continue
                slope, p = mlp_params(net)
                nets.append((slope, len(params), len(p) // 2))
                params += p
            steps.append((_COUPLING, layer.n_first, emb, nets[0], nets[1]))
        else:
            return None
    return _Plan(steps, len(embeddings)), embeddings, params


def sequential_forward(seq, x: torch.Tensor, context=None):
    """``seq(x, context)`` as one autograd node, or None when :func:`_plan` declines."""
    if not FUSED:
        return None
    planned = _plan(seq, x, context)
    if planned is None:
        return None
    plan, embeddings, params = planned
    embs = [m(context).to(x.dtype) for m in embeddings]
    return _FusedVectorFlow.apply(plan, x, *embs, *params)


class FusedSequential(Sequential):
    """A :class:`Sequential` whose forward pass runs as one autograd node when
    :func:`sequential_forward` takes the chain, and layer by layer otherwise (the same numbers
    either way: outputs and log-dets equal, gradients up to the order of float sums)."""

    def forward(self, x, context=None):
        out = sequential_forward(self, x, context)
        return out if out is not None else super().forward(x, context)


def _cond(part, emb):
    return part if emb is None else torch.cat([part, emb], 1)


class _FusedVectorFlow(torch.autograd.Function):
    """Arguments: the :class:`_Plan`, ``x``, the distinct embedding outputs, then the
    parameters in the plan's order. Returns ``(z, total log-det)`` as :class:`Sequential`."""

    @staticmethod
    def forward(ctx, plan, x, *tensors):
        embs, params = tensors[:plan.n_emb], tensors[plan.n_emb:]
        b = x.shape[0]
        total = x.new_zeros(b)
        saved = []
        for step in plan.steps:
            kind, at = step[0], step[1]
            if kind == _ACTNORM:  # z = (x + bias) * exp(log_scale), as ActNorm.forward
                bias, log_scale = params[at], params[at + 1]
                scale = log_scale.exp()
                xb = x + bias.view(1, -1)
                x = xb * scale.view(1, -1)
                total = total + (log_scale.sum() * 1).expand(b)
                saved += [xb, scale]
            elif kind == _LINEAR:  # x W^T, log|det W| in float64, as InvertibleConv2d.forward
                w = params[at]
                logdet = torch.linalg.slogdet(w.double())[1].to(w.dtype)
                saved.append(x)
                x = x @ w.t()
                total = total + (logdet * 1).to(x.dtype).expand(b)
            else:  # the two-pass coupling, as _TwoPassCoupling.forward with MLP nets
                _, n_first, emb_i, net1, net2 = step
                emb = None if emb_i is None else embs[emb_i]
                a, bb = x[:, :n_first], x[:, n_first:]
                if net1 is None:
                    ld1 = x.new_zeros(b)
                    saved1 = ()
                else:
                    slope, p, n = net1
                    a, ld1, saved1 = mlp_affine_forward(a, _cond(bb, emb), slope, params[p:p + 2 * n:2],
                                                        params[p + 1:p + 2 * n:2])
                slope, p, n = net2
                bb, ld2, saved2 = mlp_affine_forward(bb, _cond(a, emb), slope, params[p:p + 2 * n:2],
                                                     params[p + 1:p + 2 * n:2])
                x = torch.cat([a, bb], 1)
                total = total + (ld1 + ld2)
                saved += [*saved1, *saved2]
        ctx.plan = plan
        ctx.save_for_backward(*saved, *params)
        return x, total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z, grad_ld):
        plan = ctx.plan
        saved_all = ctx.saved_tensors
        n_params = len(saved_all) - sum(_n_saved(s) for s in plan.steps)
        saved, params = list(saved_all[:len(saved_all) - n_params]), saved_all[len(saved_all) - n_params:]
        needs = ctx.needs_input_grad
        grads = [None] * len(params)
        emb_grads = [None] * plan.n_emb
        g, gld_sum = grad_z, grad_ld.sum()
        # a prefix of layers with nothing to learn (frozen parameters, an input without
        # gradient) is not backpropagated through: the pass stops at the first layer that needs it
        first = 0 if needs[1] else _first_trainable(plan, needs[2:])
        for index, step in reversed(list(enumerate(plan.steps))):
            if index < first:
                break
            kind, at = step[0], step[1]
            need_x = index > first or needs[1]
            mine = saved[len(saved) - _n_saved(step):]
            del saved[len(saved) - _n_saved(step):]
            if kind == _ACTNORM:
                xb, scale = mine
                g_xb = g * scale.view(1, -1)
                grads[at] = g_xb.sum(0)
                grads[at + 1] = (g * xb).sum(0) * scale + gld_sum
                g = g_xb
            elif kind == _LINEAR:
                (x_in,) = mine
                w = params[at]
                w_inv_t = torch.linalg.inv(w.double()).t()
                grads[at] = g.t().mm(x_in) + (gld_sum.double() * w_inv_t).to(w.dtype)
                g = g.mm(w) if need_x else None
            else:
                _, n_first, emb_i, net1, net2 = step
                n1 = 0 if net1 is None else 3 + net1[2]
                saved1, saved2 = mine[:n1], mine[n1:]
                g_a, g_b = g[:, :n_first], g[:, n_first:]
                slope, p, n = net2
                g_b, g_cond2, gp = mlp_affine_backward(g_b, grad_ld, saved2, params[p:p + 2 * n:2], slope)
                grads[p:p + 2 * n] = gp
                g_a = g_a + g_cond2[:, :n_first]
                g_emb = g_cond2[:, n_first:] if emb_i is not None else None
                if net1 is not None:
                    slope, p, n = net1
                    g_a, g_cond1, gp = mlp_affine_backward(g_a, grad_ld, saved1, params[p:p + 2 * n:2], slope)
                    grads[p:p + 2 * n] = gp
                    g_b = g_b + g_cond1[:, :g_b.shape[1]]
                    if emb_i is not None:
                        g_emb = g_emb + g_cond1[:, g_b.shape[1]:]
                if g_emb is not None:
                    emb_grads[emb_i] = g_emb if emb_grads[emb_i] is None else emb_grads[emb_i] + g_emb
                g = torch.cat([g_a, g_b], 1)
        return None, (g if needs[1] else None), *emb_grads, *grads


def _first_trainable(plan: _Plan, needs) -> int:
    """The first step of ``plan`` whose parameters or embedding need a gradient (``needs``: the
    embeddings' then the parameters' ``needs_input_grad``); ``len(plan.steps)`` when none does."""
    emb_needs, param_needs = needs[:plan.n_emb], needs[plan.n_emb:]
    for index, step in enumerate(plan.steps):
        kind, at = step[0], step[1]
        if kind == _ACTNORM:
            own = param_needs[at:at + 2]
        elif kind == _LINEAR:
            own = param_needs[at:at + 1]
        else:
            _, _, emb_i, net1, net2 = step
            own = [emb_i is not None and emb_needs[emb_i]]
            for net in (net1, net2):
                if net is not None:
                    own += param_needs[net[1]:net[1] + 2 * net[2]]
        if any(own):
            return index
    return len(plan.steps)


def _n_saved(step) -> int:
    """How many tensors the forward saved for ``step``."""
    if step[0] == _ACTNORM:
        return 2
    if step[0] == _LINEAR:
        return 1
    _, _, _, net1, net2 = step
    return (0 if net1 is None else 3 + net1[2]) + 3 + net2[2]
