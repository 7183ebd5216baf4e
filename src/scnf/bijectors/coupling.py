"""Affine coupling layers, as the authors' released model builds them.

* :class:`MaskedCouplingLayer` — checkerboard mask on images, one net:
  ``z = x * sigmoid(s + 2) + t`` on the transformed pixels (no 1e-6 in the scale).
* The two-pass channel coupling (:class:`CouplingLayer` for images, :class:`AffineCoupling`
  for vectors, :class:`ConditionalCouplingLayer` for the paper's conditional coupling of
  Sec. 3.3): both halves transformed by two nets, each as
  ``z = (x + t) * (sigmoid(s + 2) + 1e-6)``.

``(s, t)`` come from a network of the conditioning part, whose last layer is
zero-initialised.

A two-pass coupling whose nets are :class:`~scnf.nn.MLP` (the toy and tabular models)
runs each forward pass as one autograd node (:class:`_MLPAffinePass`, on while
:data:`FUSED` is true): the MLP, the affine map and the log-det in one function with a
hand-written backward, so the small models' step records and replays fewer operations.
It computes ``(x + t) * scale`` with ``scale = sigmoid(s + 2) + 1e-6`` and ``log scale``
for the log-det, where the plain path multiplies by ``exp(log scale)``: the same function up
to float rounding. A whole chain of such couplings, linear maps and ActNorms on vectors runs
as one node (:mod:`scnf.bijectors.fused`, from :class:`~scnf.bijectors.base.Sequential`),
with the same math (:func:`mlp_affine_forward`, :func:`mlp_affine_backward`).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..nn import MLP, ResidualConvNet, class_embedding, make_vector_net
from .base import Bijector

_EPS = 1e-6

#: run the forward pass of a coupling with MLP nets as one autograd node (False: module by module)
FUSED = True


def _scale_shift(h: torch.Tensor):
    """Split net output into (log scale, shift) along dim 1: scale = sigmoid(s + 2) + 1e-6."""
    s, t = h.chunk(2, dim=1)
    log_scale = torch.log(torch.sigmoid(s + 2.0) + _EPS)
    return log_scale, t


def _log_sigmoid_scale_shift(h: torch.Tensor):
    """Split net output into (log scale, shift) along dim 1: scale = sigmoid(s + 2) exactly,
    the checkerboard coupling's (log sigmoid(u) = -softplus(-u), stable for any s)."""
    s, t = h.chunk(2, dim=1)
    return -F.softplus(-(s + 2.0)), t


def mlp_affine_forward(x, cond, slope, weights, biases):
    """The math of one forward pass of a two-pass coupling with an MLP net, without autograd:
    ``(s, t) = MLP(cond)``, ``scale = sigmoid(s + 2) + 1e-6``, ``z = (x + t) * scale``,
    ``ld = sum log scale``. Returns ``z``, ``ld`` and what :func:`mlp_affine_backward` needs
    (shared by :class:`_MLPAffinePass` and :mod:`scnf.bijectors.fused`)."""
    acts, h = [cond], cond
    for w, b in zip(weights[:-1], biases[:-1]):
        h = F.leaky_relu(torch.addmm(b, h, w.t()), slope)
        acts.append(h)
    out = torch.addmm(biases[-1], h, weights[-1].t())
    k = x.shape[1]
    sig = torch.sigmoid(out[:, :k] + 2.0)
    scale = sig + _EPS
    shifted = x + out[:, k:]
    return shifted * scale, torch.log(scale).sum(1), (shifted, sig, scale, *acts)


def mlp_affine_backward(grad_z, grad_ld, saved, weights, slope, need_cond: bool = True):
    """Gradients of :func:`mlp_affine_forward`'s ``z`` and ``ld`` (``grad_ld`` of shape (B,)):
    ``grad_x``, ``grad_cond`` (None unless ``need_cond``) and the Linear layers' gradients
    ``[w0, b0, w1, b1, ...]``, the matrix products as autograd would do them."""
    shifted, sig, scale, *acts = saved
    n = len(weights)
    grad_x = grad_z * scale  # also the gradient of t
    # d/ds of z and of ld = sum log(sig + eps), through sig' = sig (1 - sig)
    grad_s = (grad_z * shifted + grad_ld[:, None] / scale) * sig * (1 - sig)
    g = torch.cat([grad_s, grad_x], 1)
    grads = [None] * (2 * n)
    for i in range(n - 1, -1, -1):
        grads[2 * i] = g.t().mm(acts[i])
        grads[2 * i + 1] = g.sum(0)
        if i == 0 and not need_cond:
            g = None
            break
        g = g.mm(weights[i])
        if i > 0:  # through the LeakyReLU whose output is acts[i]
            g = torch.ops.aten.leaky_relu_backward(g, acts[i], slope, True)
    return grad_x, g, grads


class _MLPAffinePass(torch.autograd.Function):
    """One forward pass of a two-pass coupling with an :class:`~scnf.nn.MLP` net
    (:func:`mlp_affine_forward`) as a single autograd node with a hand-written backward
    (:func:`mlp_affine_backward`). Arguments: ``x``, ``cond``, the LeakyReLU slope, then each
    Linear's weight and bias in order. First derivatives only (``once_differentiable``)."""

    @staticmethod
    def forward(ctx, x, cond, slope, *params):
        weights, biases = params[0::2], params[1::2]
        z, ld, saved = mlp_affine_forward(x, cond, slope, weights, biases)
        ctx.slope, ctx.layers = slope, len(weights)
        ctx.save_for_backward(*saved, *weights)
        return z, ld

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z, grad_ld):
        saved = ctx.saved_tensors
        weights = saved[-ctx.layers:]
        grad_x, grad_cond, grads = mlp_affine_backward(grad_z, grad_ld, saved[:-ctx.layers], weights, ctx.slope,
                                                       need_cond=ctx.needs_input_grad[1])
        return grad_x, grad_cond, None, *grads


def _fusable_mlp(layer, net) -> bool:
    return FUSED and layer.autocast is None and type(net) is MLP


def mlp_params(net: MLP):
    """An MLP's LeakyReLU slope and its Linear layers' ``[weight, bias, ...]`` in order."""
    params, slope = [], None
    for m in net.net:
        if isinstance(m, nn.Linear):
            params += [m.weight, m.bias]
        else:
            slope = m.negative_slope
    return 0.01 if slope is None else slope, params


def _mlp_affine_pass(net: MLP, cond: torch.Tensor, x: torch.Tensor):
    slope, params = mlp_params(net)
    return _MLPAffinePass.apply(x, cond, slope, *params)


def _run_net(layer, net, x: torch.Tensor) -> torch.Tensor:
    """``net(x)``; under bfloat16 autocast, with a float32 result, when ``layer.autocast``
    names a device type (set by :func:`scnf.training.precision.apply_precision`)."""
    if layer.autocast is None:
        return net(x)
    with torch.autocast(layer.autocast, dtype=torch.bfloat16):
        out = net(x)
    return out.float()


def checkerboard_mask(h: int, w: int, parity: int = 0) -> torch.Tensor:
    """The released model's checkerboard: ``mask[h, w] = (h + w + parity) % 2``; pixels where
    it is 1 condition, the others are transformed (so with parity 0 pixel (0, 0) changes)."""
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((ii + jj + parity) % 2).float().view(1, 1, h, w)


def _check_image(layer, x):
    if x.dim() != 4 or x.shape[1] != layer.num_channels:
        raise ValueError(
            f"{type(layer).__name__}: expected (B, {layer.num_channels}, H, W) input, "
            f"got shape {tuple(x.shape)}"
        )


class MaskedCouplingLayer(Bijector):
    """Checkerboard-masked affine coupling (Real NVP) on images (B, C, H, W).

    Pixels where the mask is 1 condition the transform of the others (the net reads
    ``x * mask`` and returns ``(s, t)``, C channels each); the others become
    ``x * sigmoid(s + 2) + t``, the released model's form, with log-det
    ``sum log sigmoid(s + 2)`` over them.
    """

    autocast: str | None = None  # a device type: the net runs under bfloat16 autocast (scnf.training.precision)

    def __init__(self, num_channels: int, parity: int = 0, hidden: int = 64, blocks: int = 4):
        super().__init__()
        self.num_channels = num_channels
        self.parity = parity
        self.net = ResidualConvNet(num_channels, 2 * num_channels, hidden, blocks)
        self._masks: dict = {}

    def _mask(self, x):
        key = (x.shape[2], x.shape[3], x.device, x.dtype)
        m = self._masks.get(key)
        if m is None:
            m = self._masks[key] = checkerboard_mask(x.shape[2], x.shape[3], self.parity).to(x)
        return m

    def forward(self, x, context=None):
        _check_image(self, x)
        m = self._mask(x)
        log_scale, t = _log_sigmoid_scale_shift(_run_net(self, self.net, x * m))
        log_scale = log_scale * (1 - m)
        z = x * m + (1 - m) * (x * log_scale.exp() + t)
        return z, log_scale.flatten(1).sum(1)

    def inverse(self, z, context=None):
        _check_image(self, z)
        m = self._mask(z)
        log_scale, t = _log_sigmoid_scale_shift(_run_net(self, self.net, z * m))
        log_scale = log_scale * (1 - m)
        x = z * m + (1 - m) * ((z - t) * torch.exp(-log_scale))
        return x, -log_scale.flatten(1).sum(1)


class _TwoPassCoupling(Bijector):
    """The released model's channel coupling: two affine couplings in one layer.

    The input splits along dim 1 into a first part ``a`` (``n_first = D // 2`` features or
    channels) and a second part ``b``. Net 1 reads ``b`` and transforms ``a``; net 2 reads the
    *new* ``a`` and transforms ``b``. Every feature changes, and the log-det is the sum of the
    two passes'. The inverse undoes net 2 first. Subclasses give the nets and ``_check``;
    a conditional subclass has an ``embedding`` whose output is concatenated to each net's
    input (both nets see the label).
    """

    autocast: str | None = None  # a device type: the nets run under bfloat16 autocast (scnf.training.precision)

    def _make_nets(self, dim: int, build):
        """``build(n_in, n_out)`` makes one net; a part of size 0 gets no net."""
        self.n_first = dim // 2
        n_second = dim - self.n_first
        self.net1 = build(n_second, 2 * self.n_first) if self.n_first else None
        with warnings.catch_warnings():  # one feature: net 2 reads nothing (only the label, if any)
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.net2 = build(self.n_first, 2 * n_second)

    def _pass(self, net, cond, x, context, inverse: bool):
        if net is None:
            return x, x.new_zeros(x.shape[0])
        embedding = getattr(self, "embedding", None)
        if embedding is not None:
            cond = torch.cat([cond, embedding(context).to(cond.dtype)], 1)
        if not inverse and _fusable_mlp(self, net):
            return _mlp_affine_pass(net, cond, x)
        log_scale, t = _scale_shift(_run_net(self, net, cond))
        ld = log_scale.flatten(1).sum(1)
        if inverse:
            return x * torch.exp(-log_scale) - t, -ld
        return (x + t) * log_scale.exp(), ld

    def forward(self, x, context=None):
        self._check(x, context)
        a, b = x[:, : self.n_first], x[:, self.n_first:]
        a, ld1 = self._pass(self.net1, b, a, context, inverse=False)
        b, ld2 = self._pass(self.net2, a, b, context, inverse=False)
        return torch.cat([a, b], 1), ld1 + ld2

    def inverse(self, z, context=None):
        self._check(z, context)
        a, b = z[:, : self.n_first], z[:, self.n_first:]
        b, ld2 = self._pass(self.net2, a, b, context, inverse=True)
        a, ld1 = self._pass(self.net1, b, a, context, inverse=True)
        return torch.cat([a, b], 1), ld1 + ld2


class CouplingLayer(_TwoPassCoupling):
    """Channel coupling on images (B, C, H, W), both halves transformed (two nets)."""

    def __init__(self, num_channels: int, hidden: int = 64, blocks: int = 4):
        super().__init__()
        if num_channels < 2:
            raise ValueError("CouplingLayer(mask=channel) needs at least 2 channels")
        self.num_channels = num_channels
        self._make_nets(num_channels, lambda i, o: ResidualConvNet(i, o, hidden, blocks))

    def _check(self, x, context):
        _check_image(self, x)


class AffineCoupling(_TwoPassCoupling):
    """Affine coupling on vectors (B, D), both halves transformed (two nets).

    With ``num_classes`` given it is the paper's conditional coupling layer: a learnable
    class embedding (initialised one-hot) is concatenated to the conditioning part of both
    nets, so ``a' = (a + t1(b, y)) * sigmoid(s1(b, y) + 2)`` then
    ``b' = (b + t2(a', y)) * sigmoid(s2(a', y) + 2)``.
    """

    def __init__(self, dim: int, hidden: int = 64, blocks: int = 2, net: str = "mlp",
                 num_classes: int | None = None, embed_dim: int | None = None,
                 embedding: nn.Embedding | None = None):
        super().__init__()
        if dim < 1:
            raise ValueError("AffineCoupling needs dim >= 1")
        self.dim = dim
        self.num_classes = num_classes
        extra = 0
        if num_classes is not None:
            self.conditional = True
            if embedding is None:
                self.embedding = class_embedding(num_classes, embed_dim)
            else:
                if embedding.num_embeddings < num_classes:
                    raise ValueError(f"the shared embedding has {embedding.num_embeddings} rows, "
                                     f"fewer than num_classes={num_classes}")
                # shared with other layers (the released h: one table for every coupling); the
                # owner registers it, so it is saved and counted once
                self.__dict__["embedding"] = embedding
            extra = self.embedding.embedding_dim
        self._make_nets(dim, lambda i, o: make_vector_net(net, i + extra, o, hidden, blocks))

    def _check(self, x, context):
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}({self.dim}): expected (B, {self.dim}) input, "
                f"got shape {tuple(x.shape)}"
            )
        if self.conditional:
            if context is None:
                raise ValueError(f"{type(self).__name__} is conditional: pass context=y")
            if context.shape != (x.shape[0],):
                raise ValueError(
                    f"context must have shape ({x.shape[0]},), got {tuple(context.shape)}")


class ConditionalCouplingLayer(AffineCoupling):
    """The paper's conditional affine coupling on (B, D) vectors (1x1 spatial size),
    with residual 1x1 nets (hidden 256, 4 blocks) as in Appendix E.2.

    ``embedding``: a class table shared with other layers (the released h has one for all
    its couplings, see :func:`scnf.models.builders.conditional_glow`); by default the layer
    makes its own."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, blocks: int = 4,
                 net: str = "resmlp", embed_dim: int | None = None, embedding: nn.Embedding | None = None):
        super().__init__(dim, hidden, blocks, net, num_classes, embed_dim, embedding)
