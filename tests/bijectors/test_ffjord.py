"""Tests of the FFJORD continuous normalising flow bijector."""
from __future__ import annotations

import pytest
import torch

from scnf.bijectors.ffjord import FFJORD, ODESolverError, _TanhDynamicsExactTrace, divergence

TIGHT = dict(rtol=1e-8, atol=1e-8)


def _randomise(model: torch.nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Random weights so that the flow is far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def _make(dim=2, num_classes=None, trace="auto", dtype=torch.float64, std=0.5, **kw) -> FFJORD:
    torch.manual_seed(0)
    model = FFJORD(dim, hidden=16, num_layers=2, num_classes=num_classes, trace=trace, **kw).to(dtype)
    _randomise(model, std)
    return model


@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_round_trip_and_logdets_cancel(num_classes, trace):
    model = _make(num_classes=num_classes, trace=trace, rtol=1e-7, atol=1e-7)
    x = torch.randn(16, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (16,)) if num_classes else None
    noise = model.sample_noise(x)  # same Hutchinson noise in both directions
    z, ld_f = model(x, y, noise=noise)
    x_rec, ld_i = model.inverse(z, y, noise=noise)
    assert z.shape == x.shape and ld_f.shape == (16,) and ld_i.shape == (16,)
    assert (z - x).abs().max() > 1e-2  # not the identity
    assert torch.allclose(x_rec, x, atol=1e-4)
    assert torch.allclose(ld_f + ld_i, torch.zeros_like(ld_f), atol=1e-4)


def test_round_trip_float32():
    model = _make(dtype=torch.float32, rtol=1e-6, atol=1e-6)
    x = torch.randn(16, 2)
    z, ld_f = model(x)
    x_rec, ld_i = model.inverse(z)
    assert z.dtype == torch.float32 and ld_f.dtype == torch.float32
    assert torch.allclose(x_rec, x, atol=1e-4)
    assert torch.allclose(ld_f + ld_i, torch.zeros_like(ld_f), atol=1e-4)


@pytest.mark.parametrize("num_classes", [None, 2])
def test_exact_logdet_matches_jacobian(num_classes):
    model = _make(num_classes=num_classes, trace="exact", std=1.0, **TIGHT)
    assert model.exact_trace
    xs = torch.randn(3, 2, dtype=torch.float64)
    refs = []
    for i, x in enumerate(xs):
        y = torch.tensor([i % 2]) if num_classes else None
        _, ld = model(x[None], y)
        jac = torch.autograd.functional.jacobian(lambda v: model(v[None], y)[0][0], x)
        sign, ref = torch.linalg.slogdet(jac)
        assert sign > 0  # a flow is orientation preserving
        refs.append(abs(ref.item()))
        assert abs(ld.item() - ref.item()) < 1e-4
        # and the inverse map's log-det is log|det| of the inverse Jacobian
        z = model(x[None], y)[0][0]
        _, ld_inv = model.inverse(z[None], y)
        assert abs(ld_inv.item() + ref.item()) < 1e-4
    assert max(refs) > 0.1  # far from volume preserving


def _reference(model: FFJORD, t, z, y, noise):
    """f and its divergence by reverse-mode autograd (``divergence``: D vector-Jacobian products)."""
    f = model.func.velocity(t, z, y)
    return f, divergence(f, z, noise, create_graph=True)


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
@pytest.mark.parametrize("num_classes", [None, 3])
@pytest.mark.parametrize("dim,num_layers", [(2, 3), (2, 1), (5, 2), (3, 0)])
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_forward_mode_divergence_and_gradients_match_autograd(activation, num_classes, dim, num_layers, trace):
    """The dynamics' own f and divergence (forward mode; the tanh exact trace with its hand-written
    backward pass) equal autograd's values and, through them, the gradients w.r.t. z and every
    parameter (float64)."""
    torch.manual_seed(dim * 10 + num_layers)
    model = FFJORD(dim, hidden=8, num_layers=num_layers, num_classes=num_classes, activation=activation).double()
    _randomise(model, std=1.0 if activation == "tanh" else 4.0)  # softplus: some units past its threshold
    rows = 6
    z0 = torch.randn(rows, dim, dtype=torch.float64)
    y = torch.randint(0, 3, (rows,)) if num_classes else None
    noise = torch.randn(rows, dim, dtype=torch.float64) if trace == "hutchinson" else None
    t = torch.tensor(0.37, dtype=torch.float64)
    w_f, w_div = torch.randn(rows, dim, dtype=torch.float64), torch.randn(rows, dtype=torch.float64)
    results = []
    for compute in (model.func.velocity_and_divergence, lambda *a: _reference(model, *a)):
        model.zero_grad()
        z = z0.clone().requires_grad_(True)
        f, div = compute(t, z, y, noise)
        ((f * w_f).sum() + (div * w_div).sum()).backward()
        results.append([f.detach(), div.detach(), z.grad] + [p.grad for p in model.parameters()])
    names = ["f", "div", "z.grad"] + [f"{n}.grad" for n, _ in model.named_parameters()]
    assert results[1][1].abs().max() > 0.1  # a divergence far from 0
    for name, ours, ref in zip(names, *results):
        assert ours is not None and ref is not None, name
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10, msg=name)
    with torch.no_grad():  # no graph kept, same numbers
        f, div = model.func.velocity_and_divergence(t, z0, y, noise)
    assert not f.requires_grad and not div.requires_grad
    torch.testing.assert_close(div, results[0][1], rtol=0, atol=0)


@pytest.mark.parametrize("rows_context", [False, True])
def test_tanh_exact_trace_function_gradcheck(rows_context):
    """Finite differences against the hand-written backward pass, gates shared by all rows
    (unconditional) or per row (conditional)."""
    gen = torch.Generator().manual_seed(3)
    rows, dims = 4, [2, 5, 5, 2]

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)

    inputs = [r(rows, 2)]
    for a, b in zip(dims[:-1], dims[1:]):
        g_rows = rows if rows_context else 1
        inputs += [r(b, a), r(b), torch.sigmoid(r(g_rows, b)).detach().requires_grad_(True), r(g_rows, b)]
    assert torch.autograd.gradcheck(_TanhDynamicsExactTrace.apply, tuple(inputs))


def test_auto_trace_threshold():
    assert FFJORD(2).exact_trace
    assert FFJORD(4).exact_trace
    assert not FFJORD(5).exact_trace
    assert FFJORD(5, exact_trace_max_dim=8).exact_trace
    assert not FFJORD(2, trace="hutchinson").exact_trace
    assert FFJORD(10, trace="exact").exact_trace


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_divergence_unbiased(noise):
    """Mean of 2000 draws of e^T (df/dz) e at a fixed point is the exact trace."""
    model = _make(dim=5, trace="hutchinson", noise=noise)
    torch.manual_seed(1)
    n = 2000
    z = torch.randn(1, 5, dtype=torch.float64).expand(n, 5).clone().requires_grad_(True)
    t = torch.tensor(0.3, dtype=torch.float64)
    f = model.func.velocity(t, z)
    exact = divergence(f, z, None)
    est = divergence(f, z, model.sample_noise(z))
    assert torch.allclose(exact, exact[0].expand(n))
    se = est.std() / n**0.5
    assert se > 0
    assert abs(est.mean() - exact[0]) < 3 * se


def test_hutchinson_logdet_unbiased_over_solves():
    """Independent noise per sample: 1000 copies of one point give 1000 solves' estimates."""
    exact_model = _make(dim=5, trace="exact", rtol=1e-6, atol=1e-6)
    hutch_model = _make(dim=5, trace="hutchinson", rtol=1e-6, atol=1e-6)
    hutch_model.load_state_dict(exact_model.state_dict())
    torch.manual_seed(2)
    x = torch.randn(1, 5, dtype=torch.float64)
    with torch.no_grad():
        _, ld_exact = exact_model(x)
        z_h, ld_h = hutch_model(x.expand(1000, 5))
        z_e, _ = exact_model(x)
    assert torch.allclose(z_h, z_e.expand(1000, 5), atol=1e-4)
    se = ld_h.std() / 1000**0.5
    assert abs(ld_h.mean() - ld_exact[0]) < 3 * se
    assert ld_h.std() > 0  # it is an estimate, not the exact value


def test_conditional_output_depends_on_label():
    model = FFJORD(2, hidden=16, num_layers=2, num_classes=3)
    assert model.conditional and FFJORD(2).conditional is False
    assert torch.equal(model.func.embedding.weight, torch.eye(3))  # one-hot initialisation
    x = torch.randn(8, 2)
    z0, ld0 = model(x, torch.zeros(8, dtype=torch.long))
    z1, ld1 = model(x, torch.ones(8, dtype=torch.long))
    assert (z0 - z1).abs().max() > 1e-3
    assert (ld0 - ld1).abs().max() > 0
    # labels act per sample
    y = torch.tensor([0, 1] * 4)
    z_mixed, _ = model(x, y)
    assert torch.allclose(z_mixed[0::2], z0[0::2], atol=1e-4)
    assert torch.allclose(z_mixed[1::2], z1[1::2], atol=1e-4)
    assert FFJORD(2, num_classes=3, embed_dim=5).func.embedding.weight.shape == (3, 5)


def test_unconditional_ignores_context():
    model = FFJORD(2, hidden=8, num_layers=1)
    x = torch.randn(4, 2)
    z_a, _ = model(x)
    z_b, _ = model(x, torch.tensor([0, 1, 2, 3]))
    assert torch.allclose(z_a, z_b)


def test_stiff_dynamics_raise_max_steps():
    """Huge weights with a small step budget: ODESolverError, not a hang."""
    model = _make(dtype=torch.float32, std=100.0, max_num_steps=20)
    with pytest.raises(ODESolverError, match="max_num_steps"):
        model(torch.randn(4, 2))
    assert model.last_nfe > 0


def test_exploding_dynamics_raise_underflow():
    """dz/dt = z^2 blows up at t = 0.5 < T: step size underflow -> ODESolverError."""
    model = FFJORD(2, hidden=8, num_layers=1).double()
    model.func.velocity_and_divergence = lambda t, z, labels=None, noise=None: (z**2, 2 * z.sum(1))
    with pytest.raises(ODESolverError, match="step size underflow"):
        model(torch.full((2, 2), 2.0, dtype=torch.float64))
    assert issubclass(ODESolverError, RuntimeError)


def test_nfe_counters():
    model = FFJORD(2, hidden=8, num_layers=1)
    assert model.last_nfe == 0
    x = torch.randn(4, 2)
    model(x)
    first = model.last_nfe
    assert first > 0 and model.total_nfe == first
    model.inverse(x)
    assert model.last_nfe > 0 and model.total_nfe == first + model.last_nfe


def test_no_grad_and_training_gradients():
    model = _make(num_classes=2, rtol=1e-6, atol=1e-6)
    x = torch.randn(8, 2, dtype=torch.float64)
    y = torch.tensor([0, 1] * 4)
    with torch.no_grad():
        z, ld = model(x, y)
    assert not z.requires_grad and not ld.requires_grad
    z, ld = model(x, y)
    (0.5 * z.pow(2).sum(1) - ld).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["func.embedding.weight"].abs().sum() > 0
    # the log-det alone is differentiable w.r.t. the parameters (create_graph)
    model.zero_grad()
    model(x, y)[1].sum().backward()
    assert model.func.layers[0].linear.weight.grad.abs().sum() > 0


def test_adjoint_gradients_match_direct():
    direct = _make(num_classes=2, **TIGHT)
    adjoint = _make(num_classes=2, adjoint=True, **TIGHT)
    adjoint.load_state_dict(direct.state_dict())
    x = torch.randn(6, 2, dtype=torch.float64)
    y = torch.tensor([0, 1] * 3)
    for m in (direct, adjoint):
        z, ld = m(x, y)
        (0.5 * z.pow(2).sum(1) - ld).mean().backward()
    for (name, p), q in zip(direct.named_parameters(), adjoint.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_validation_errors():
    model = FFJORD(3, hidden=8, num_layers=1, num_classes=2)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        model(torch.randn(4, 3, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="context"):
        model(x)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        model(x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        model.inverse(x, torch.tensor([0, -1, 1, 0]))
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(x, torch.zeros(4))
    with pytest.raises(ValueError, match="trace"):
        FFJORD(2, trace="bogus")


def test_train_tol_applies_in_training_mode_only():
    model = _make(std=0.8)
    model_tight = _make(std=0.8)
    model.train_tol = 1e-3
    x = torch.randn(64, 2, dtype=torch.float64)
    model.train()
    assert model.tolerances == (1e-3, 1e-3)
    z_loose, _ = model(x)
    loose_nfe = model.last_nfe
    model.eval()
    assert model.tolerances == (model.rtol, model.atol) == (1e-5, 1e-5)
    z_eval, _ = model(x)
    assert model.last_nfe > loose_nfe  # the looser training solve is cheaper
    z_ref, _ = model_tight.eval()(x)
    assert torch.equal(z_eval, z_ref)  # evaluation is unaffected by train_tol
    assert (z_loose - z_eval).abs().max() < 1e-2
    for bad in (dict(train_tol=0.0), dict(rtol=-1.0), dict(atol=0.0)):
        with pytest.raises(ValueError, match="must be positive"):
            FFJORD(2, **bad)


def test_run_config_passes_ffjord_tolerances_to_the_model():
    from scnf.config import from_dict
    from scnf.data.load import build_data
    from scnf.runs.run import build_model

    cfg = from_dict({"data": {"dataset": "moons", "n_train": 50, "n_test": 50, "n_labelled": 4},
                     "model": {"unconditional": "ffjord", "conditional": "glow", "hidden": 8,
                               "ffjord_tol": 1e-4, "ffjord_train_tol": 1e-2}})
    data, _ = build_data(cfg)
    ode = [m for m in build_model(cfg, data).modules() if isinstance(m, FFJORD)]
    assert ode and all((m.rtol, m.atol, m.train_tol) == (1e-4, 1e-4, 1e-2) for m in ode)
