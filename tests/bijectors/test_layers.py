"""Every layer: round trip, log-dets that cancel, and log-det == autograd slogdet."""
import copy

import pytest
import torch

from scnf.bijectors import (ActNorm, AffineCoupling, ConditionalActNorm, ConditionalCouplingLayer, CouplingLayer,
    FactorOut, Flatten, InvertibleConv2d, InvertibleConv2dLU, MaskedCouplingLayer, Permutation, Sequential,
    SpaceToDepth, ToLogits)
from tests.helpers import jacobian_logdet, perturb_

K = 3


def _img(c=2, h=4, w=4, n=3):
    return torch.randn(n, c, h, w)


# (name, factory, input factory, conditional?)
CASES = [
    ("tologits", lambda: ToLogits(0.05), lambda: torch.rand(3, 1, 4, 4) * 0.9 + 0.05, False),
    ("actnorm-img", lambda: ActNorm(2), _img, False),
    ("actnorm-vec", lambda: ActNorm(3), lambda: torch.randn(4, 3), False),
    ("conv1x1-identity", lambda: InvertibleConv2d(3), lambda: _img(3), False),
    ("conv1x1-orthogonal", lambda: InvertibleConv2d(3, init="orthogonal"), lambda: _img(3), False),
    ("conv1x1-lu", lambda: InvertibleConv2dLU(3), lambda: _img(3), False),
    ("linear-vec", lambda: InvertibleConv2d(4, init="orthogonal"), lambda: torch.randn(3, 4), False),
    ("linear-lu-vec", lambda: InvertibleConv2dLU(4), lambda: torch.randn(3, 4), False),
    ("permutation", lambda: Permutation(4), lambda: torch.randn(3, 4), False),
    ("checkerboard-p0", lambda: MaskedCouplingLayer(2, parity=0, hidden=8, blocks=1), _img, False),
    ("checkerboard-p1", lambda: MaskedCouplingLayer(1, parity=1, hidden=8, blocks=2), lambda: _img(1), False),
    ("channel", lambda: CouplingLayer(4, hidden=8, blocks=1), lambda: _img(4), False),
    ("channel-odd", lambda: CouplingLayer(3, hidden=8, blocks=1), lambda: _img(3), False),
    ("vector-coupling", lambda: AffineCoupling(4, hidden=16), lambda: torch.randn(3, 4), False),
    ("vector-coupling-odd", lambda: AffineCoupling(5, hidden=16), lambda: torch.randn(3, 5), False),
    ("vector-coupling-dim1", lambda: AffineCoupling(1, hidden=8), lambda: torch.randn(3, 1), False),
    ("cond-coupling", lambda: ConditionalCouplingLayer(4, K, hidden=16, blocks=2), lambda: torch.randn(3, 4), True),
    ("cond-coupling-odd", lambda: ConditionalCouplingLayer(5, K, hidden=16, blocks=1),
     lambda: torch.randn(3, 5), True),
    ("cond-coupling-mlp-dim1", lambda: ConditionalCouplingLayer(1, K, hidden=8, blocks=1, net="mlp"),
     lambda: torch.randn(3, 1), True),
    ("cond-actnorm", lambda: ConditionalActNorm(4, K), lambda: torch.randn(3, 4), True),
    ("space-to-depth", lambda: SpaceToDepth(2), _img, False),
    ("factor-out", lambda: FactorOut((4, 2, 2), 2, Sequential(CouplingLayer(2, hidden=8, blocks=1), Flatten((2, 2, 2)))),
     lambda: _img(4, 2, 2), False),
    ("factor-out-vec-cond", lambda: FactorOut((5,), 3, ConditionalCouplingLayer(3, K, hidden=8, blocks=1)),
     lambda: torch.randn(3, 5), True),
]
IDS = [c[0] for c in CASES]


def _build(factory, inputs, dtype):
    torch.manual_seed(1)
    layer = factory().to(dtype)
    x = inputs().to(dtype)
    layer.train()
    layer(x, torch.arange(x.shape[0]) % K)  # data-dependent init where there is one
    perturb_(layer, 0.1)
    return layer.eval(), x


def _float32_tolerances(layer, x, z, ld, ctx):
    """What float32 arithmetic can be asked of a round trip, derived from the layer itself.

    Rounding z to float32 moves each component by up to eps32 * |z|; the inverse then
    amplifies that by its own sensitivity, which for a perturbed coupling can be large (the
    cond-coupling case below has |z| up to 46 and scales sigmoid(s+2) near 0). We measure
    that sensitivity in float64: the largest change of inverse(z) under 8 random
    perturbations of relative size eps32. The float32 round-trip error measured on AMD
    (avx2 and default kernels) was at most 1.0x this (sens + eps32 * |x|), whichever
    layer; the tolerance allows 16x, for the rounding inside the forward and inverse
    passes and other kernels' summation orders (Intel AVX-512 gave 1e-3 on cond-coupling,
    whose sensitivity is 3.6e-3). A wrong inverse errs by O(|t|) = O(0.1-10) instead.

    The log-dets are sums of n = x[0].numel() float32 terms on each side: each sum can err
    by n * eps32 * sum|terms| <= n * eps32 * (|ld| + n) (a term is at most ~1 here); 4x margin.
    """
    eps = torch.finfo(torch.float32).eps
    layer64 = copy.deepcopy(layer).double()
    z64 = z.double()
    g = torch.Generator().manual_seed(0)
    sens = 0.0
    with torch.no_grad():
        base = layer64.inverse(z64, ctx)[0]
        for _ in range(8):
            sign = torch.randint(0, 2, z.shape, generator=g).double() * 2 - 1
            moved = layer64.inverse(z64 + eps * z64.abs() * sign, ctx)[0]
            sens = max(sens, float((moved - base).abs().max()))
    x_tol = 16 * (sens + eps * float(x.abs().max()))
    n = x[0].numel()
    ld_tol = 4 * n * eps * (float(ld.abs().max()) + n)
    return x_tol, ld_tol


@pytest.mark.parametrize("factory,inputs,cond", [c[1:] for c in CASES], ids=IDS)
def test_round_trip_float32(factory, inputs, cond):
    layer, x = _build(factory, inputs, torch.float32)
    ctx = torch.arange(x.shape[0]) % K if cond else None
    with torch.no_grad():
        z, ld = layer(x, ctx)
        xr, ld_inv = layer.inverse(z, ctx)
    assert ld.shape == (x.shape[0],)
    x_tol, ld_tol = _float32_tolerances(layer, x, z, ld, ctx)
    assert (xr - x).abs().max() <= x_tol, ((xr - x).abs().max(), x_tol)
    assert (ld + ld_inv).abs().max() <= ld_tol, ((ld + ld_inv).abs().max(), ld_tol)


@pytest.mark.parametrize("factory,inputs,cond", [c[1:] for c in CASES], ids=IDS)
def test_logdet_matches_autograd(factory, inputs, cond, logdet_errors):
    layer, x = _build(factory, inputs, torch.float64)
    ctx = torch.arange(x.shape[0]) % K if cond else None
    with torch.no_grad():
        _, ld = layer(x, ctx)
    ref = torch.stack([
        jacobian_logdet(lambda v, c=(None if ctx is None else ctx[i:i + 1]): layer(v, c)[0], x[i:i + 1])[0]
        for i in range(x.shape[0])
    ])
    err = (ld - ref).abs().max().item()
    logdet_errors.append(err)
    assert err < 1e-8, err
    # inverse direction too
    with torch.no_grad():
        z, _ = layer(x, ctx)
        _, ld_inv = layer.inverse(z, ctx)
    assert torch.allclose(ld_inv, -ref, atol=1e-8)


def test_conditional_coupling_depends_on_label():
    layer, x = _build(lambda: ConditionalCouplingLayer(4, K, hidden=16, blocks=2), lambda: torch.randn(3, 4),
                      torch.float32)
    z0, _ = layer(x, torch.zeros(3, dtype=torch.long))
    z1, _ = layer(x, torch.ones(3, dtype=torch.long))
    assert not torch.allclose(z0, z1)


def test_conditional_coupling_needs_context():
    layer = ConditionalCouplingLayer(4, K, hidden=8, blocks=1)
    with pytest.raises(ValueError, match="conditional"):
        layer(torch.randn(2, 4))


def test_unconditional_layers_ignore_context():
    layer, x = _build(lambda: CouplingLayer(4, hidden=8, blocks=1), lambda: _img(4), torch.float32)
    a, _ = layer(x)
    b, _ = layer(x, torch.tensor([0, 1, 2]))
    assert torch.equal(a, b)


def test_zero_initialised_couplings_start_near_identity():
    layer = MaskedCouplingLayer(2, hidden=8, blocks=1)
    x = _img()
    z, ld = layer(x)
    s = torch.sigmoid(torch.tensor(2.0)) + 1e-6
    assert torch.allclose(ld, torch.full_like(ld, float(torch.log(s)) * x[0].numel() / 2), atol=1e-4)


def _moved(layer, x, ctx, part: slice):
    """(z, z after adding 1 to the features ``part`` of x)."""
    with torch.no_grad():
        z, _ = layer(x, ctx)
        x2 = x.clone()
        x2[:, part] += 1.0
        return z, layer(x2, ctx)[0]


@pytest.mark.parametrize("factory,inputs,cond", [
    (lambda: CouplingLayer(4, hidden=8, blocks=1), lambda: _img(4), False),
    (lambda: AffineCoupling(5, hidden=8), lambda: torch.randn(3, 5), False),
    (lambda: ConditionalCouplingLayer(4, K, hidden=8, blocks=1), lambda: torch.randn(3, 4), True),
    (lambda: ConditionalCouplingLayer(5, K, hidden=8, blocks=1, net="mlp"), lambda: torch.randn(3, 5), True),
], ids=["channel", "vector", "conditional", "conditional-mlp"])
def test_channel_couplings_change_each_half_given_the_other(factory, inputs, cond):
    """The released coupling transforms every channel, and each half given the other: the first
    half's new value depends on the second half (net 1's input; a net 1 fed zeros, or the first
    half itself, would not), the second half's on the new first half (net 2's input)."""
    layer, x = _build(factory, inputs, torch.float32)
    ctx = torch.arange(x.shape[0]) % K if cond else None
    n1 = x.shape[1] // 2
    first, second = slice(0, n1), slice(n1, None)
    z, z_first_moved = _moved(layer, x, ctx, first)
    assert not torch.allclose(z[:, first], x[:, first], atol=1e-3)
    assert not torch.allclose(z[:, second], x[:, second], atol=1e-3)
    assert not torch.allclose(z_first_moved[:, second], z[:, second], atol=1e-4)  # net 2 reads the first half
    _, z_second_moved = _moved(layer, x, ctx, second)
    assert not torch.allclose(z_second_moved[:, first], z[:, first], atol=1e-4)  # net 1 reads the second half


@pytest.mark.parametrize("net", ["resmlp", "mlp"])
def test_both_nets_see_the_label(net):
    """Both halves' outputs change with y: net 1 and net 2 each read the class embedding. (With
    the label fed to net 2 only, the first half would not depend on y.)"""
    layer, x = _build(lambda: ConditionalCouplingLayer(4, K, hidden=16, blocks=2, net=net),
                      lambda: torch.randn(3, 4), torch.float32)
    with torch.no_grad():
        z0, _ = layer(x, torch.zeros(3, dtype=torch.long))
        z1, _ = layer(x, torch.ones(3, dtype=torch.long))
        # net 2 alone: hold its input (the new first half) fixed and change only its label
        a = z0[:, :2]
        log_s0, t0 = layer.net2(torch.cat([a, layer.embedding(torch.zeros(3, dtype=torch.long))], 1)).chunk(2, 1)
        log_s1, t1 = layer.net2(torch.cat([a, layer.embedding(torch.ones(3, dtype=torch.long))], 1)).chunk(2, 1)
    assert not torch.allclose(z0[:, :2], z1[:, :2], atol=1e-4)  # net 1 sees y
    assert not torch.allclose(t0, t1, atol=1e-4) or not torch.allclose(log_s0, log_s1, atol=1e-4)  # net 2 sees y
