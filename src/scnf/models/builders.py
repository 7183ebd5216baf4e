"""Builders for the paper's models.

* :func:`image_scnf` — Appendix E: the Glow-based unconditional flow f of E.1 for
  C x H x W images (H, W divisible by 4) and the conditional flow h of E.2 (or a
  class-conditional Gaussian, SCNF-GMM); :func:`mnist_scnf` is its 1x28x28 case.
* :func:`vector_scnf` — 2-D toy data and tabular data (Sec. 4.1).
"""
from __future__ import annotations

from ..bijectors.actnorm import ActNorm, ConditionalActNorm
from ..bijectors.base import Bijector, Flatten, Identity, Sequential
from ..bijectors.ffjord import FFJORD
from ..bijectors.fused import FusedSequential
from ..bijectors.conv1x1 import InvertibleConv2d, InvertibleConv2dLU
from ..bijectors.coupling import AffineCoupling, ConditionalCouplingLayer, CouplingLayer, MaskedCouplingLayer
from ..bijectors.logits import ToLogits
from ..bijectors.reshape import FactorOut, SpaceToDepth, factor_out_keep
from ..nn import class_embedding
from .flow import SemiConditionalFlow
from .priors import ClassConditionalGaussian

CONDITIONALS = ("glow", "gmm")


def _conv(c: int, lu: bool):
    return InvertibleConv2dLU(c) if lu else InvertibleConv2d(c)


def _glow_steps(c: int, n: int, mask: str, hidden: int, blocks: int, lu: bool, start: int = 0):
    """n steps of InvertibleConv2d -> coupling -> ActNorm (Appendix E.1's unit)."""
    layers = []
    for i in range(n):
        layers.append(_conv(c, lu))
        if mask == "checkerboard":
            layers.append(MaskedCouplingLayer(c, parity=(start + i) % 2, hidden=hidden, blocks=blocks))
        else:
            layers.append(CouplingLayer(c, hidden=hidden, blocks=blocks))
        layers.append(ActNorm(c))
    return layers


def image_unconditional(input_shape=(1, 28, 28), hidden: int = 64, blocks: int = 4, lu: bool = False,
                        alpha: float = 0.05) -> Bijector:
    """Appendix E.1's f for C x H x W pixels in [0, 1] (H and W divisible by 4) -> flat z of
    D = C H W components (:func:`mnist_unconditional` is the 1 x 28 x 28 case).

    Output layout: [D/2 factored out at 2C x H/2 x W/2 | D/4 factored out at 4C x H/4 x W/4 |
    D/4 deepest (the final 4C x H/4 x W/4 block)], each block flattened channel-major, so z_f for
    ``deep_dim=d`` is the last d columns. As in the released model, each split factors out the
    first half of the channels and keeps the second, and the checkerboard steps of a group
    alternate mask parity 0, 1, 0.
    """
    c, h, w = check_image_shape(input_shape)
    level3 = Sequential(
        *_glow_steps(4 * c, 3, "checkerboard", hidden, blocks, lu),
        *_glow_steps(4 * c, 2, "channel", hidden, blocks, lu),
        Flatten((4 * c, h // 4, w // 4)),
    )
    level2 = Sequential(
        *_glow_steps(2 * c, 3, "checkerboard", hidden, blocks, lu),
        SpaceToDepth(2),
        *_glow_steps(8 * c, 2, "channel", hidden, blocks, lu),
        FactorOut((8 * c, h // 4, w // 4), keep=factor_out_keep(8 * c), inner=level3),
    )
    f = Sequential(
        ToLogits(alpha),
        *_glow_steps(c, 3, "checkerboard", hidden, blocks, lu),
        SpaceToDepth(2),
        *_glow_steps(4 * c, 2, "channel", hidden, blocks, lu),
        FactorOut((4 * c, h // 2, w // 2), keep=factor_out_keep(4 * c), inner=level2),
    )
    f.input_shape = (c, h, w)
    return f


def check_image_shape(input_shape) -> tuple[int, int, int]:
    """(C, H, W) of images the image model takes: any channel count, H and W divisible by 4
    (two 2 x 2 squeezes); otherwise a ValueError saying so."""
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"the image model takes C x H x W images with H and W divisible by 4 (two 2 x 2 "
                         f"squeezes), got shape {shape}; pad or crop the images")
    return shape


def mnist_unconditional(hidden: int = 64, blocks: int = 4, lu: bool = False, alpha: float = 0.05) -> Bijector:
    """Appendix E.1: 1x28x28 pixels in [0, 1] -> flat z of 784 components
    (:func:`image_unconditional`: [392 at 4x14x14 | 196 at 8x7x7 | 196 deepest])."""
    return image_unconditional((1, 28, 28), hidden, blocks, lu, alpha)


def conditional_glow(dim: int, num_classes: int, levels: int = 2, steps: int = 4, hidden: int = 256,
                     blocks: int = 4, net: str = "resmlp", lu: bool = False, class_affine: bool = False,
                     embed_dim: int | None = None) -> Bijector:
    """Appendix E.2: ``levels`` x ``steps`` of ActNorm -> 1x1 conv -> conditional coupling
    on (B, dim) vectors (1x1 spatial size), with the released model's split between levels
    (the first half factored out, :func:`factor_out_keep`).

    As in the released model, one class table (``num_classes`` x ``embed_dim``, identity at
    construction; ``embed_dim`` defaults to ``num_classes``) serves every coupling and both
    of its nets; it is registered on the returned bijector as ``embedding``.

    ``class_affine`` prepends a :class:`ConditionalActNorm` (identity at construction) that
    ``init_from_labels`` sets from the labelled rows' class means (an scnf extension)."""
    if class_affine:
        return FusedSequential(ConditionalActNorm(dim, num_classes),
                          conditional_glow(dim, num_classes, levels, steps, hidden, blocks, net, lu,
                                           embed_dim=embed_dim))
    embedding = class_embedding(num_classes, embed_dim)

    def level(d: int, remaining: int) -> Bijector:
        layers = []
        for i in range(steps):
            layers += [ActNorm(d), _conv(d, lu),
                       ConditionalCouplingLayer(d, num_classes, hidden=hidden, blocks=blocks, net=net,
                                                embedding=embedding)]
        keep = factor_out_keep(d)
        if remaining > 1 and keep >= 1:
            return FusedSequential(*layers, FactorOut((d,), keep=keep, inner=level(keep, remaining - 1)))
        return FusedSequential(*layers)

    h = level(dim, levels)
    h.embedding = embedding
    return h


def _scnf(f, dim_f, num_classes, deep_dim, conditional, h_kwargs, class_prior, input_shape):
    if conditional not in CONDITIONALS:
        raise ValueError(f"conditional must be one of {CONDITIONALS}, got {conditional!r}")
    if conditional == "glow":
        h, prior = conditional_glow(deep_dim, num_classes, **h_kwargs), None
    else:
        h, prior = Identity(), ClassConditionalGaussian(deep_dim, num_classes)
    return SemiConditionalFlow(f, h, num_classes, deep_dim, class_prior,
                               input_shape=input_shape, latent_prior=prior)


def image_scnf(input_shape=(1, 28, 28), conditional: str = "glow", deep_dim: int | None = None,
               num_classes: int = 10, *, hidden: int = 64, blocks: int = 4, h_hidden: int = 256,
               h_blocks: int = 4, h_levels: int = 2, h_steps: int = 4, lu: bool = False, class_prior=None,
               h_class_affine: bool = False, embed_dim: int | None = None) -> SemiConditionalFlow:
    """The Appendix E model for C x H x W images with pixels in [0, 1] (H, W divisible by 4).

    ``deep_dim`` (default D/4, 196 for MNIST; 49/98/196/392/784 for Table 3) picks how many of
    the deepest components of f's output form z_f. ``hidden``/``blocks`` shrink f's coupling
    nets and ``h_*`` shrink h for CPU runs; the defaults are the paper's.
    """
    c, h, w = check_image_shape(input_shape)
    dim = c * h * w
    deep_dim = dim // 4 if deep_dim is None else deep_dim
    if not 1 <= deep_dim <= dim:
        raise ValueError(f"deep_dim must lie in [1, {dim}], got {deep_dim}")
    f = image_unconditional((c, h, w), hidden, blocks, lu)
    h_kwargs = dict(levels=h_levels, steps=h_steps, hidden=h_hidden, blocks=h_blocks, lu=lu,
                    class_affine=h_class_affine, embed_dim=embed_dim)
    return _scnf(f, dim, num_classes, deep_dim, conditional, h_kwargs, class_prior, (c, h, w))


def mnist_scnf(conditional: str = "glow", deep_dim: int = 196, num_classes: int = 10, **kwargs) -> SemiConditionalFlow:
    """The Appendix E model for 1x28x28 images (:func:`image_scnf`); ``deep_dim`` 49/98/196/392/784
    for Table 3."""
    return image_scnf((1, 28, 28), conditional, deep_dim, num_classes, **kwargs)


def vector_unconditional(dim: int, blocks: int = 5, hidden: int = 64, layers: int = 2) -> Bijector:
    """The authors' toy flow: ``blocks`` x (invertible linear, MLP coupling, ActNorm)."""
    mods = []
    for i in range(blocks):
        mods += [InvertibleConv2d(dim, init="orthogonal"),
                 AffineCoupling(dim, hidden=hidden, blocks=layers, net="mlp"),
                 ActNorm(dim)]
    f = FusedSequential(*mods)
    f.input_shape = (dim,)
    return f


def vector_scnf(dim: int, num_classes: int, conditional: str = "glow", deep_dim: int | None = None, *,
                unconditional: str = "glow", blocks: int = 5, hidden: int = 64, h_blocks: int = 4,
                h_hidden: int = 64, class_prior=None, h_class_affine: bool = False,
                h_net: str = "mlp", h_net_blocks: int = 2, embed_dim: int | None = None,
                **ffjord_kwargs) -> SemiConditionalFlow:
    """SCNF for 2-D toy data and tabular data: z_f is the last ``deep_dim`` components of
    f's output (all of them by default, as in the paper's toy experiments).

    A Glow h has ``h_blocks`` steps whose coupling nets are ``h_net`` ("mlp": ``h_net_blocks``
    hidden layers; "resmlp": that many residual blocks) ``h_hidden`` wide, and one class
    table ``embed_dim`` wide. :func:`scnf.models.released.released_toy_scnf` is the authors' toy."""
    if int(dim) < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    deep_dim = dim if deep_dim is None else int(deep_dim)
    if not 1 <= deep_dim <= dim:
        raise ValueError(f"deep_dim must lie in [1, {dim}], got {deep_dim}")
    if conditional not in CONDITIONALS + ("ffjord",):
        raise ValueError(f"conditional must be one of {CONDITIONALS + ('ffjord',)}, got {conditional!r}")
    if unconditional not in ("glow", "ffjord"):
        raise ValueError(f"unconditional must be 'glow' or 'ffjord', got {unconditional!r}")
    if ffjord_kwargs and "ffjord" not in (unconditional, conditional):
        raise ValueError(f"unexpected arguments {sorted(ffjord_kwargs)}: they configure FFJORD parts only")
    if unconditional == "glow":
        f = vector_unconditional(dim, blocks, hidden)
    else:
        f = Sequential(FFJORD(dim, hidden=hidden, **ffjord_kwargs))
        f.input_shape = (dim,)
    if conditional == "ffjord":
        h = FFJORD(deep_dim, hidden=h_hidden, num_classes=num_classes, **ffjord_kwargs)
        return SemiConditionalFlow(f, h, num_classes, deep_dim, class_prior, input_shape=(dim,))
    h_kwargs = dict(levels=1, steps=h_blocks, hidden=h_hidden, blocks=h_net_blocks, net=h_net,
                    class_affine=h_class_affine, embed_dim=embed_dim)
    return _scnf(f, dim, num_classes, deep_dim, conditional, h_kwargs, class_prior, (dim,))
