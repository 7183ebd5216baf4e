"""The fused forward of the coupling nets computes the same function as the module chain."""
import pytest
import torch

import scnf.nn as nets
from tests.helpers import perturb_


@pytest.mark.parametrize("blocks", [0, 1, 2])
@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_residual_conv_net_equals_module_chain(monkeypatch, channels_last, blocks):
    monkeypatch.setattr(nets, "CHANNELS_LAST", channels_last)
    torch.manual_seed(0)
    net = nets.ResidualConvNet(2, 4, hidden=8, blocks=blocks).double()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    net.train()
    net(x)  # data-dependent init of the inner ActNorms (module chain)
    perturb_(net, 0.2)
    xr = x.clone().requires_grad_(True)
    monkeypatch.setattr(nets, "FUSED", False)
    ref = net(xr)
    g_ref = torch.autograd.grad(ref.square().sum(), [xr, *net.parameters()])
    monkeypatch.setattr(nets, "FUSED", True)
    out = net(xr)
    g = torch.autograd.grad(out.square().sum(), [xr, *net.parameters()])
    assert torch.allclose(out, ref, atol=1e-12)
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-10)


def test_reflect_pad_backward_gradcheck():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(nets._ReflectPad1.apply, (x,))


def test_relu_reflect_pad_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    x = (x + 0.2 * x.sign()).requires_grad_(True)  # no entry near the ReLU's kink
    assert torch.autograd.gradcheck(nets._ReluReflectPad1.apply, (x,))


@pytest.mark.parametrize("channels_last", [True, False])
def test_relu_reflect_pad_is_relu_then_pad_bit_for_bit(channels_last):
    """One tensor instead of two, the same numbers: output, and the gradient through a conv."""
    torch.manual_seed(1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 6, 7, 5).contiguous(memory_format=fmt)
    w = torch.randn(3, 6, 3, 3).contiguous(memory_format=fmt)
    outs, grads = [], []
    for fused in (True, False):
        xr = x.clone().requires_grad_(True)
        y = nets._ReluReflectPad1.apply(xr) if fused else nets._ReflectPad1.apply(torch.relu(xr))
        out = torch.nn.functional.conv2d(y, w)
        (gx,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), xr)
        outs.append(y)
        grads.append(gx)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])
    with torch.no_grad():
        assert torch.equal(nets._pad(x, relu=True), outs[1])
