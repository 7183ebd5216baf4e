"""The networks inside coupling layers.

* :class:`ResidualConvNet` — Appendix E's coupling net for images: reflection pad, 3x3
  conv to ``hidden``, residual blocks of 3x3 convs, ActNorm, ReLU, zero-initialised 3x3
  conv.
* :class:`ResidualMLP` — the same net at 1x1 spatial size (1x1 convs are linear maps),
  used by the conditional flow h.
* :class:`MLP` — the toy models' 64-64 LeakyReLU net.

The last layer of every net is zero-initialised, so every coupling starts as the
identity up to Glow's constant scale sigmoid(2).
"""
from __future__ import annotations

from torch import nn

from .bijectors.actnorm import ActNorm


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _conv3(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3))


class _NormAct(nn.Sequential):
    def __init__(self, channels: int):
        # strict=False: a constant hidden channel is legitimate inside a net
        super().__init__(ActNorm(channels, strict=False), nn.ReLU())

    def forward(self, x):  # ActNorm is a bijector returning (y, logdet)
        return self[1](self[0](x)[0])


class _ResBlock(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class ResidualConvNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, blocks: int = 4):
        super().__init__()
        layers = [_conv3(in_channels, hidden)]
        for _ in range(blocks):
            layers.append(_ResBlock(nn.Sequential(
                _NormAct(hidden), _conv3(hidden, hidden), _NormAct(hidden), _conv3(hidden, hidden))))
        last = _conv3(hidden, out_channels)
        _zero(last[1])
        layers += [_NormAct(hidden), last]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ResidualMLP(nn.Module):
    def __init__(self, in_features: int, out_features: int, hidden: int = 256, blocks: int = 4):
        super().__init__()
        layers = [nn.Linear(in_features, hidden)]
        for _ in range(blocks):
            layers.append(_ResBlock(nn.Sequential(
                _NormAct(hidden), nn.Linear(hidden, hidden), _NormAct(hidden), nn.Linear(hidden, hidden))))
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
