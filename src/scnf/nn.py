"""The networks inside coupling layers, as the released model builds them.

* :class:`ResidualConvNet` — Appendix E's coupling net for images: reflection pad, 3x3
  conv to ``hidden``, residual blocks (ReLU, 3x3 conv, ReLU, 3x3 conv; no normalisation
  inside, as in the released code, which builds an ActNorm there but never uses it),
  ActNorm (:class:`ChannelAffine`), ReLU, zero-initialised 3x3 conv.
* :class:`ResidualMLP` — the same net at 1x1 spatial size (1x1 convs are linear maps),
  used by the conditional flow h.
* :class:`MLP` — the toy models' 64-64 LeakyReLU net.

The last layer of every net is zero-initialised, so every coupling starts as the
identity up to Glow's constant scale sigmoid(2).

:class:`ResidualConvNet` has a fused forward pass (the default, see :data:`FUSED`) that
computes the same function with fewer passes over the activations. Since
``exp(log_scale) > 0``, ``ReLU((u + b) * s) = s * ReLU(u + b)``: the scale ``s`` of the final
ActNorm is folded into the input channels of the last 3x3 conv (the reflection pad commutes
with a per-channel scale), and its bias ``b`` into the bias of the conv whose output ends the
residual stream. Activations are kept in channels_last, which oneDNN's convolutions prefer
on CPU, and each ReLU that feeds a convolution runs in place on the reflection-padded copy
the convolution reads (:class:`_ReluReflectPad1`: one tensor and one pass fewer, the same
numbers). Parameters, buffers and state-dict keys are unchanged; the unfused path still runs
whenever the ActNorm needs its data-dependent initialisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



class ChannelAffine(nn.Module):
    """Per-channel affine map ``y = (x + bias) * exp(log_scale)`` with Glow's data-dependent
    initialisation: on the first forward pass in training mode (or by :meth:`initialize`) the
    bias and scale are set so that the output has zero mean and unit variance per channel,
    ``bias = -mean``, ``log_scale = -log(std + 1e-6)``, with the unbiased (N - 1) standard
    deviation over batch and positions, as the released model computes it.

    Works on images (B, C, H, W) and vectors (B, C). The ``initialized`` flag is a registered
    buffer, so a model loaded from a state dict never re-initialises. The coupling nets use it
    as their normalisation; :class:`scnf.bijectors.ActNorm` is the same map as an invertible
    layer (with its log-determinant).

    Under ``torch.compile`` the flag is not read (a data-dependent branch would split the
    compiled graph): initialise before compiling, as the Trainer does with ``train.compile``.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.num_channels = int(num_channels)
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.log_scale = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def _check_std(self, std: torch.Tensor) -> None:
        """A constant hidden channel is legitimate inside a net: nothing to refuse here."""

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set bias and scale from a batch ``x`` (data-dependent initialisation)."""
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"{type(self).__name__}({self.num_channels}): expected input with {self.num_channels} "
                f"channels, got shape {tuple(x.shape)}"
            )
        flat = x.transpose(0, 1).reshape(self.num_channels, -1)
        mean = flat.mean(1)
        std = flat.std(1, unbiased=True) if flat.shape[1] > 1 else torch.zeros_like(mean)
        self._check_std(std)
        self.bias.data.copy_(-mean)
        self.log_scale.data.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def _initialise_if_needed(self, x: torch.Tensor) -> None:
        if self.training and not torch.compiler.is_compiling() and not bool(self.initialized):
            self.initialize(x)

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self._view(self.bias, x)) * self._view(self.log_scale.exp(), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._initialise_if_needed(x)
        return self._affine(x)

    def extra_repr(self) -> str:
        return f"{self.num_channels}"


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _conv3(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3))


class _NormAct(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(ChannelAffine(channels), nn.ReLU())

    def forward(self, x):
        return self[1](self[0](x))


class _ResBlock(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


#: use the fused forward pass of :class:`ResidualConvNet` (False: the plain module chain)
FUSED = True


#: keep the fused path's activations in channels_last (False: NCHW)
CHANNELS_LAST = True


class _ReflectPad1(torch.autograd.Function):
    """``F.pad(x, (1, 1, 1, 1), mode="reflect")`` whose backward keeps the gradient's memory
    format (aten's reflection_pad2d_backward returns NCHW, which costs two layout copies
    per conv in channels_last)."""

    @staticmethod
    def forward(ctx, x):
        return F.pad(x, (1, 1, 1, 1), mode="reflect")

    @staticmethod
    def backward(ctx, g):
        return _fold_border(g[:, :, 1:-1, 1:-1].clone(), g)  # clone: preserves g's memory format


def _fold_border(gx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The gradient of a reflection pad by 1: ``gx`` (the interior of ``g``, a copy or a view
    of it) plus each border row, column and corner of ``g`` added where it was copied from."""
    h, w = g.shape[2] - 2, g.shape[3] - 2
    # padded row 0 is row 1 of x, padded row h+1 is row h-2 (likewise for columns)
    gx[:, :, 1, :] += g[:, :, 0, 1:-1]
    gx[:, :, h - 2, :] += g[:, :, h + 1, 1:-1]
    gx[:, :, :, 1] += g[:, :, 1:-1, 0]
    gx[:, :, :, w - 2] += g[:, :, 1:-1, w + 1]
    gx[:, :, 1, 1] += g[:, :, 0, 0]
    gx[:, :, 1, w - 2] += g[:, :, 0, w + 1]
    gx[:, :, h - 2, 1] += g[:, :, h + 1, 0]
    gx[:, :, h - 2, w - 2] += g[:, :, h + 1, w + 1]
    return gx


class _ReluReflectPad1(torch.autograd.Function):
    """``F.pad(relu(x), (1, 1, 1, 1), mode="reflect")`` in one output tensor (the ReLU runs in
    place on the padded copy; reflection commutes with it). Backward: the ReLU's mask on the
    padded gradient (a new tensor, which this function owns), then the border folded into its
    interior in place, and the interior returned as a view: no copy of the interior, and the
    same sums in the same order as ReLU then :class:`_ReflectPad1`, so the same numbers."""

    @staticmethod
    def forward(ctx, x):
        y = F.pad(x, (1, 1, 1, 1), mode="reflect").relu_()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        masked = torch.ops.aten.threshold_backward(g, y, 0)
        return _fold_border(masked[:, :, 1:-1, 1:-1], masked)


def _pad(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """Reflection pad by 1 (of ``relu(x)`` with ``relu``), keeping channels_last in backward."""
    if x.shape[2] < 2 or x.shape[3] < 2 or not torch.is_grad_enabled():
        y = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return y.relu_() if relu else y
    return (_ReluReflectPad1 if relu else _ReflectPad1).apply(x)


def _conv3_fused(x, seq: nn.Sequential, in_scale=None, extra_bias=None, relu: bool = False):
    """``seq`` = (ReflectionPad2d(1), Conv2d 3x3) applied to ``in_scale * x`` (``relu(x)`` with
    ``relu``; the scale is per input channel), plus ``extra_bias`` (per output channel)."""
    conv = seq[1]
    w, b = conv.weight, conv.bias
    if in_scale is not None:
        w = w * in_scale.view(1, -1, 1, 1)
    if extra_bias is not None:
        b = b + extra_bias
    if CHANNELS_LAST:
        w = w.contiguous(memory_format=torch.channels_last)
    return F.conv2d(_pad(x, relu), w, b)


class ResidualConvNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, blocks: int = 4):
        super().__init__()
        layers = [_conv3(in_channels, hidden)]
        for _ in range(blocks):
            layers.append(_ResBlock(nn.Sequential(
                nn.ReLU(), _conv3(hidden, hidden), nn.ReLU(), _conv3(hidden, hidden))))
        last = _conv3(hidden, out_channels)
        _zero(last[1])
        layers += [_NormAct(hidden), last]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        norm = self.net[-2][0]
        uninitialised = self.training and not torch.compiler.is_compiling() and not bool(norm.initialized)
        if not FUSED or x.dim() != 4 or uninitialised:
            return self.net(x)
        return self._fused(x)

    def _fused(self, x):
        # The final ActNorm (bias b, scale s): ReLU((u + b) * s) = s * ReLU(u + b). b goes into
        # the bias of the conv whose output is last added to the stream u, s into the last conv.
        layers = list(self.net)
        blocks, norm = layers[1:-2], layers[-2][0]
        if CHANNELS_LAST:
            x = x.contiguous(memory_format=torch.channels_last)
        u = _conv3_fused(x, layers[0], extra_bias=None if blocks else norm.bias)
        for k, blk in enumerate(blocks):
            last_block = k == len(blocks) - 1
            a = _conv3_fused(u, blk.body[1], relu=True)
            a = _conv3_fused(a, blk.body[3], extra_bias=norm.bias if last_block else None, relu=True)
            u = a.add_(u)
        return _conv3_fused(u, layers[-1], norm.log_scale.exp(), relu=True).contiguous()


class ResidualMLP(nn.Module):
    def __init__(self, in_features: int, out_features: int, hidden: int = 256, blocks: int = 4):
        super().__init__()
        layers = [nn.Linear(in_features, hidden)]
        for _ in range(blocks):
            layers.append(_ResBlock(nn.Sequential(
                nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))))
        layers += [_NormAct(hidden), _zero(nn.Linear(hidden, out_features))]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLP(nn.Module):
    def __init__(self, in_features: int, out_features: int, hidden=(64, 64)):
        super().__init__()
        layers, last = [], in_features
        for h in hidden:
            layers += [nn.Linear(last, h), nn.LeakyReLU()]
            last = h
        layers.append(_zero(nn.Linear(last, out_features)))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def make_vector_net(kind: str, in_features: int, out_features: int, hidden: int, blocks: int):
    if kind == "resmlp":
        return ResidualMLP(in_features, out_features, hidden, blocks)
    if kind == "mlp":
        return MLP(in_features, out_features, (hidden,) * blocks)
    raise ValueError(f"unknown coupling net {kind!r}: expected 'resmlp' or 'mlp'")


def class_embedding(num_classes: int, embed_dim: int | None = None) -> nn.Embedding:
    """A learnable class table (``num_classes`` x ``embed_dim``, ``num_classes`` by default),
    initialised one-hot (the identity where it fits, zeros elsewhere) as in the released model."""
    embed_dim = num_classes if embed_dim is None else int(embed_dim)
    emb = nn.Embedding(num_classes, embed_dim)
    with torch.no_grad():
        emb.weight.zero_()
        k = min(num_classes, embed_dim)
        emb.weight[:k, :k] = torch.eye(k)
    return emb
