"""A vector flow's forward pass as one autograd node (scnf.bijectors.fused) computes what the
layer-by-layer pass computes: outputs, log-dets and every gradient; its log-det is the
log-determinant of the Jacobian that its own backward gives; it steps aside for what it does
not take."""
import pytest
import torch

from scnf.models.builders import conditional_glow, vector_scnf, vector_unconditional
from scnf.bijectors import (ActNorm, AffineCoupling, InvertibleConv2d, InvertibleConv2dLU, MaskedCouplingLayer,
    FusedSequential, fused)
from scnf.bijectors.base import Sequential

K = 3


@pytest.fixture
def fused_calls(monkeypatch):
    """The chain lengths of every fused pass run (so a test can tell that the fused pass ran)."""
    calls = []
    apply = fused._FusedVectorFlow.apply

    def spy(plan, *args):
        calls.append(len(plan.steps))
        return apply(plan, *args)

    monkeypatch.setattr(fused._FusedVectorFlow, "apply", spy)
    return calls


def _randomise(module):
    with torch.no_grad():  # away from identity maps and zero last layers, so every path matters
        for p in module.parameters():
            p.add_(0.4 * torch.randn_like(p))


CHAINS = {
    "toy f, dim 2": lambda: vector_unconditional(2, blocks=3, hidden=8),
    "f, dim 5, one-layer nets": lambda: vector_unconditional(5, blocks=2, hidden=8, layers=1),
    "f, dim 1 (no first net)": lambda: vector_unconditional(1, blocks=2, hidden=8),
    "released h (one shared class table)": lambda: conditional_glow(4, K, levels=1, steps=3, hidden=8, blocks=2,
                                                                    net="mlp"),
    "h, dim 1": lambda: conditional_glow(1, K, levels=1, steps=2, hidden=8, blocks=1, net="mlp"),
    "a class table per coupling, nets without hidden layers": lambda: FusedSequential(
        ActNorm(3), InvertibleConv2d(3, init="orthogonal"), AffineCoupling(3, hidden=8, blocks=0, num_classes=K),
        AffineCoupling(3, hidden=8, blocks=2, num_classes=K), ActNorm(3)),
}


def _run(chain, x, y, on: bool, monkeypatch):
    monkeypatch.setattr(fused, "FUSED", on)
    chain.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    z, ld = chain(x, y)
    w_z = torch.linspace(-1.0, 2.0, z.shape[1], dtype=z.dtype)
    w_ld = torch.linspace(0.5, -1.5, z.shape[0], dtype=z.dtype)
    ((z * w_z).sum() + (ld * w_ld).sum()).backward()
    # every parameter, the class tables included (owned by a coupling, or shared and registered on h)
    grads = {n: p.grad.clone() for n, p in chain.named_parameters() if p.grad is not None}
    return z.detach(), ld.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("name", list(CHAINS))
def test_fused_pass_matches_layer_by_layer(name, fused_calls, monkeypatch):
    torch.manual_seed(0)
    chain = CHAINS[name]().double()
    dim = chain.layers[0].num_channels if hasattr(chain.layers[0], "num_channels") else chain.layers[0].dim
    x = torch.randn(9, dim, dtype=torch.float64)
    y = torch.randint(0, K, (9,)) if chain.conditional else None
    with torch.no_grad():
        chain(x, y)  # ActNorms initialise layer by layer (the fused pass steps aside until then)
    _randomise(chain)
    on, off = (_run(chain, x, y, f, monkeypatch) for f in (True, False))
    assert fused_calls == [len(chain)], "the fused pass did not run"
    # the same forward operations: outputs and log-dets equal; gradients summed in another order
    torch.testing.assert_close(on[0], off[0], rtol=0, atol=0)
    torch.testing.assert_close(on[1], off[1], rtol=0, atol=0)
    torch.testing.assert_close(on[2], off[2], rtol=1e-12, atol=1e-12)
    assert on[3].keys() == off[3].keys() == {n for n, _ in chain.named_parameters()}
    for key in off[3]:
        torch.testing.assert_close(on[3][key], off[3][key], rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", ["toy f, dim 2", "released h (one shared class table)"])
def test_fused_log_det_is_that_of_its_own_jacobian(name, fused_calls):
    """The Jacobian comes from the fused node's backward (vector-Jacobian products), the log-det
    from its forward: a wrong backward or a wrong log-det fails this."""
    torch.manual_seed(1)
    chain = CHAINS[name]().double()
    dim = chain.layers[0].num_channels
    x = torch.randn(5, dim, dtype=torch.float64)
    y = torch.randint(0, K, (5,)) if chain.conditional else None
    with torch.no_grad():
        chain(x, y)
    _randomise(chain)
    _, ld = chain(x, y)
    for i in range(x.shape[0]):
        ctx = None if y is None else y[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda v: chain(v[None], ctx)[0][0], x[i])
        torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac)[1], rtol=1e-10, atol=1e-10)
    assert len(fused_calls) == 1 + x.shape[0]  # each Jacobian: one fused forward, its rows from the node's backward


def test_fused_node_gradcheck():
    torch.manual_seed(2)
    chain = CHAINS["a class table per coupling, nets without hidden layers"]().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        chain(x, y)
    _randomise(chain)
    plan, embeddings, params = fused._plan(chain, x, y)
    embs = [m(y).detach().requires_grad_() for m in embeddings]
    params = [p.detach().requires_grad_() for p in params]
    xg = x.requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: fused._FusedVectorFlow.apply(plan, *a), (xg, *embs, *params))


def test_fused_node_refuses_second_derivatives():
    chain = vector_unconditional(2, blocks=1, hidden=4).double()
    x = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        chain(x)
    x.requires_grad_()
    z, ld = chain(x)
    (g,) = torch.autograd.grad(ld.sum() + z.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_steps_aside_for_what_it_does_not_take(fused_calls):
    torch.manual_seed(3)
    # an ActNorm that still has to initialise: the layer-by-layer pass runs and initialises it
    chain = vector_unconditional(2, blocks=2, hidden=4)
    chain(torch.randn(8, 2))
    assert fused_calls == [] and all(bool(m.initialized) for m in chain.modules() if isinstance(m, ActNorm))
    chain(torch.randn(8, 2))
    assert fused_calls == [6]
    # the LU map, image couplings, a wrong context: layer by layer (which says what is wrong)
    FusedSequential(InvertibleConv2dLU(3), AffineCoupling(3, hidden=4))(torch.randn(4, 3))
    FusedSequential(MaskedCouplingLayer(1, hidden=4, blocks=1))(torch.randn(2, 1, 4, 4))
    h = conditional_glow(2, K, levels=1, steps=1, hidden=4, blocks=1, net="mlp")
    with pytest.raises(ValueError, match="context"):
        h(torch.randn(4, 2), torch.zeros(3, dtype=torch.long))
    assert fused_calls == [6]


def _layer_by_layer(chain, x, y=None):
    return Sequential.forward(chain, x, y)


def test_steps_aside_for_couplings_under_autocast(fused_calls):
    """bf16-mixed: couplings whose ``autocast`` names a device run their nets in bfloat16. The
    fused pass (float32 arithmetic) steps aside, so the output is the layer-by-layer bfloat16
    one exactly, not the float32 one (which differs by ~1e-2 with these weights)."""
    torch.manual_seed(5)
    chain = vector_unconditional(2, blocks=2, hidden=8)
    x = torch.randn(16, 2)
    with torch.no_grad():
        chain(x)  # ActNorm initialisation (layer by layer)
    _randomise(chain)
    couplings = [m for m in chain.layers if isinstance(m, AffineCoupling)]
    assert len(couplings) == 2
    with torch.no_grad():
        fp32_z, fp32_ld = chain(x)
        assert fused_calls == [6]  # without autocast the fused pass takes the chain
        for c in couplings:
            c.autocast = "cpu"
        z, ld = chain(x)
        ref_z, ref_ld = _layer_by_layer(chain, x)
    torch.testing.assert_close(z, ref_z, rtol=0, atol=0)
    torch.testing.assert_close(ld, ref_ld, rtol=0, atol=0)
    assert fused_calls == [6]  # stepped aside
    # the autocast path is really another computation: bfloat16 keeps 8 bits of mantissa
    assert (z - fp32_z).abs().max() > 1e-3


def test_steps_aside_for_residual_nets_and_under_compile(fused_calls, monkeypatch):
    torch.manual_seed(6)
    # h with residual coupling nets (the released toy's): layer by layer, the same numbers
    h = conditional_glow(2, K, levels=1, steps=2, hidden=8, blocks=1, net="resmlp")
    x, y = torch.randn(8, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with torch.no_grad():
        h(x, y)
    _randomise(h)
    with torch.no_grad():
        z, ld = h(x, y)
        ref_z, ref_ld = _layer_by_layer(h, x, y)
    torch.testing.assert_close(z, ref_z, rtol=0, atol=0)
    torch.testing.assert_close(ld, ref_ld, rtol=0, atol=0)
    assert fused_calls == []
    # a chain the fused pass takes, but traced by torch.compile: layer by layer
    f = vector_unconditional(2, blocks=1, hidden=4)
    with torch.no_grad():
        f(x)
    f(x)
    assert fused_calls == [3]
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    f(x)
    assert fused_calls == [3]


def test_a_model_trains_the_same_fused(monkeypatch):
    """Five Adam steps of a toy SCNF from the same start, fused and layer by layer (float64):
    the same losses to rounding."""
    losses = {}
    for on in (True, False):
        monkeypatch.setattr(fused, "FUSED", on)
        torch.manual_seed(4)
        model = vector_scnf(2, K, "glow", blocks=2, hidden=8, h_blocks=2, h_hidden=8).double()
        x = torch.randn(32, 2, dtype=torch.float64)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses[on] = []
        for _ in range(5):
            loss = -model.log_marginal(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[on].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("held", [1, 4, 5, 8])
@pytest.mark.parametrize("conditional", [False, True], ids=["f", "h"])
def test_frozen_prefix_is_not_backpropagated(held, conditional, fused_calls, monkeypatch):
    """With the first ``held`` layers frozen and an input without gradient (a warm refit that
    trains only f's last layers), the fused backward gives the trainable layers autograd's
    gradients and stops before the frozen ones: none of their saved tensors is read, so no
    work is spent on them."""
    torch.manual_seed(1)
    chain = (conditional_glow(3, K, levels=1, steps=3, hidden=8, blocks=2, net="mlp") if conditional
             else vector_unconditional(3, blocks=3, hidden=8)).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    y = torch.randint(0, K, (7,)) if conditional else None
    with torch.no_grad():
        chain(x, y)
    _randomise(chain)
    frozen = {n for i, layer in enumerate(chain.layers[:held]) for n, _ in layer.named_parameters(prefix=str(i))}
    for i, layer in enumerate(chain.layers[:held]):
        for p in layer.parameters():
            p.requires_grad_(False)
    if conditional:  # the shared class table trains: h's layers before it still need no pass
        assert any(p.requires_grad for p in chain.parameters())

    def run(on):
        monkeypatch.setattr(fused, "FUSED", on)
        chain.zero_grad(set_to_none=True)
        z, ld = chain(x, y)
        w_z = torch.linspace(-1.0, 2.0, z.shape[1], dtype=z.dtype)
        ((z * w_z).sum() + (ld * torch.linspace(0.5, -1.5, 7, dtype=z.dtype)).sum()).backward()
        return {n: p.grad.clone() for n, p in chain.named_parameters() if p.grad is not None}

    steps_run = []
    backward = fused._FusedVectorFlow.backward

    def counting_backward(ctx, *grads):
        seen = []
        real = fused.mlp_affine_backward

        def spy(*a, **k):
            seen.append(1)
            return real(*a, **k)

        monkeypatch.setattr(fused, "mlp_affine_backward", spy)
        try:
            return backward(ctx, *grads)
        finally:
            monkeypatch.setattr(fused, "mlp_affine_backward", real)
            steps_run.append(len(seen))

    monkeypatch.setattr(fused._FusedVectorFlow, "backward", staticmethod(counting_backward))
    on, off = run(True), run(False)
    assert fused_calls, "the fused pass did not run"
    assert on.keys() == off.keys()
    assert not {n for n in on if n.split(".")[0] in {str(i) for i in range(held)}}, "a frozen layer got a gradient"
    for key in off:
        torch.testing.assert_close(on[key], off[key], rtol=1e-12, atol=1e-12, msg=key)
    # the couplings backpropagated through: those at or after the first trainable layer only
    # (h: a coupling reading the trainable class table needs it, whatever its own weights)
    def trains(layer):
        emb = getattr(layer, "embedding", None) if getattr(layer, "conditional", False) else None
        return any(p.requires_grad for p in layer.parameters()) or (
            emb is not None and any(p.requires_grad for p in emb.parameters()))

    first = min([i for i, layer in enumerate(chain.layers) if trains(layer)] + [len(chain.layers)])
    if not conditional:
        assert first == held
    kinds = [type(layer).__name__ for layer in chain.layers]
    nets = {i: (layer.net1 is not None) + 1 for i, layer in enumerate(chain.layers) if "Coupling" in kinds[i]}
    assert steps_run == [sum(v for i, v in nets.items() if i >= first)]


def test_frozen_chain_still_gives_the_input_its_gradient(fused_calls, monkeypatch):
    """Every layer frozen, the input requiring a gradient: the fused backward runs through the
    whole chain for it (the prefix rule must not stop it early)."""
    torch.manual_seed(2)
    chain = vector_unconditional(3, blocks=2, hidden=8).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        chain(x)
    _randomise(chain)
    for p in chain.parameters():
        p.requires_grad_(False)
    grads = []
    for on in (True, False):
        monkeypatch.setattr(fused, "FUSED", on)
        xi = x.clone().requires_grad_()
        z, ld = chain(xi)
        (z.sum() + (ld * torch.linspace(0.5, -1.5, 6, dtype=z.dtype)).sum()).backward()
        grads.append(xi.grad)
    assert fused_calls == [len(chain)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
