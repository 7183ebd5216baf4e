"""The fused forward pass of MLP couplings (one autograd node, hand-written backward) computes
what the module-by-module pass computes: outputs, log-dets and every gradient."""
import pytest
import torch

from scnf.bijectors import AffineCoupling, ConditionalCouplingLayer, coupling
from scnf.bijectors.coupling import _MLPAffinePass

K = 3


def _grads(layer, x, y, fused: bool, monkeypatch):
    monkeypatch.setattr(coupling, "FUSED", fused)
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    z, ld = layer(x, y)
    # weights that differ per output and per row, so every gradient path is exercised
    w_z = torch.linspace(-1.0, 2.0, z.shape[1], dtype=z.dtype)
    w_ld = torch.linspace(0.5, -1.5, z.shape[0], dtype=z.dtype)
    ((z * w_z).sum() + (ld * w_ld).sum()).backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    if getattr(layer, "conditional", False):
        grads["embedding"] = layer.embedding.weight.grad.clone()
    return z.detach(), ld.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("make, cond", [
    (lambda: AffineCoupling(2, hidden=16, blocks=2), False),
    (lambda: AffineCoupling(5, hidden=16, blocks=1), False),
    (lambda: AffineCoupling(4, hidden=16, blocks=0), False),
    (lambda: AffineCoupling(1, hidden=8, blocks=2), False),
    (lambda: ConditionalCouplingLayer(4, K, hidden=16, blocks=2, net="mlp"), True),
    (lambda: ConditionalCouplingLayer(1, K, hidden=8, blocks=1, net="mlp"), True),
])
def test_fused_pass_matches_module_by_module(make, cond, monkeypatch):
    torch.manual_seed(0)
    layer = make().double()
    with torch.no_grad():  # away from the zero-initialised last layer, so s and t matter
        for p in layer.parameters():
            p.normal_(0.0, 0.5)
    x = torch.randn(6, layer.dim, dtype=torch.float64)
    y = torch.randint(0, K, (6,)) if cond else None
    fused, plain = (_grads(layer, x, y, f, monkeypatch) for f in (True, False))
    # float64 throughout: the two differ only by exp(log(v)) against v and the order of sums
    for a, b in zip(fused[:3], plain[:3]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert fused[3].keys() == plain[3].keys() and len(plain[3]) > 0
    for name in plain[3]:
        torch.testing.assert_close(fused[3][name], plain[3][name], rtol=1e-12, atol=1e-12, msg=name)


def test_fused_pass_gradcheck():
    g = torch.Generator().manual_seed(1)
    t = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
    x, cond = t(5, 2), t(5, 3)
    params = [t(8, 3), t(8), t(8, 8), t(8), t(4, 8), t(4)]  # 3 -> 8 -> 8 -> (s, t) of 2 features
    assert torch.autograd.gradcheck(lambda *a: _MLPAffinePass.apply(a[0], a[1], 0.2, *a[2:]), (x, cond, *params))


def test_fused_pass_refuses_second_derivatives():
    layer = AffineCoupling(2, hidden=8).double()
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    z, ld = layer(x)
    (gx,) = torch.autograd.grad(ld.sum() + z.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()


def _graph_names(t):
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo += [f for f, _ in fn.next_functions]
    return names


def test_fused_pass_is_used_for_mlp_nets_only(monkeypatch):
    x = torch.randn(3, 4, requires_grad=True)
    mlp, res = AffineCoupling(4, hidden=8, net="mlp"), AffineCoupling(4, hidden=8, net="resmlp")
    assert "_MLPAffinePassBackward" in _graph_names(mlp(x)[0])
    assert "_MLPAffinePassBackward" not in _graph_names(res(x)[0])
    monkeypatch.setattr(coupling, "FUSED", False)
    assert "_MLPAffinePassBackward" not in _graph_names(mlp(x)[0])
