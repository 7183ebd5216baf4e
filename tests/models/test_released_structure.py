"""The default builders have the released model's structure, each fact on its own (the
comparison with the authors' numbers, tests/released, needs the reference folder)."""
import torch

import scnf
from scnf.bijectors import ActNorm, ConditionalCouplingLayer, FactorOut, MaskedCouplingLayer
from scnf.bijectors.coupling import AffineCoupling
from scnf.nn import ChannelAffine, ResidualConvNet
from tests.helpers import perturb_


def _masked(parity):
    torch.manual_seed(0)
    layer = MaskedCouplingLayer(1, parity=parity, hidden=8, blocks=1)
    perturb_(layer, 0.3)
    return layer.eval()


def test_checkerboard_parity_0_transforms_pixel_00_and_conditions_on_odd_pixels():
    layer = _masked(0)
    x = torch.randn(1, 1, 4, 4)
    with torch.no_grad():
        z, _ = layer(x)
        x_odd = x.clone()
        x_odd[0, 0, 0, 1] += 1.0  # h + w odd: conditions
        z_odd, _ = layer(x_odd)
        x_even = x.clone()
        x_even[0, 0, 0, 0] += 1.0  # h + w even: transformed
        z_even, _ = layer(x_even)
    assert z[0, 0, 0, 1] == x[0, 0, 0, 1] and z[0, 0, 0, 0] != x[0, 0, 0, 0]
    changed = (z_odd != z).flatten().nonzero().flatten().tolist()
    assert 1 in changed and len(changed) > 1  # itself, by the perturbation, and transformed pixels
    assert (z_even != z).flatten().nonzero().flatten().tolist() == [0]  # only itself


def test_checkerboard_form_is_x_sigmoid_plus_t_without_eps():
    layer = _masked(1)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    layer = layer.double()
    with torch.no_grad():
        z, ld = layer(x)
        m = layer._mask(x)
        s, t = layer.net(x * m).chunk(2, 1)
        want = x * m + (1 - m) * (x * torch.sigmoid(s + 2) + t)
        want_ld = ((1 - m) * torch.log(torch.sigmoid(s + 2))).flatten(1).sum(1)
    assert torch.allclose(z, want, atol=1e-14) and torch.allclose(ld, want_ld, atol=1e-12)


def test_factor_out_keeps_the_second_half():
    inner = scnf.bijectors.Flatten((2, 2, 2))
    fo = FactorOut((4, 2, 2), 2, inner)
    x = torch.randn(3, 4, 2, 2)
    z, _ = fo(x)
    assert torch.equal(z[:, :8], x[:, :2].reshape(3, -1))  # the first channels are factored out
    assert torch.equal(z[:, 8:], x[:, 2:].reshape(3, -1))  # the last ones go on
    assert torch.equal(fo.inverse(z)[0], x)


def test_residual_blocks_hold_no_normalisation():
    net = ResidualConvNet(2, 4, hidden=8, blocks=4)
    assert sum(isinstance(m, ChannelAffine) for m in net.modules()) == 1  # only the one before the last conv


def test_h_shares_one_class_table():
    model = scnf.mnist_scnf(h_hidden=16, h_blocks=1, hidden=8, blocks=1)
    couplings = [m for m in model.conditional.modules() if isinstance(m, ConditionalCouplingLayer)]
    assert len(couplings) == 8
    assert all(c.embedding is model.conditional.embedding for c in couplings)
    keys = [k for k in model.state_dict() if "embedding" in k]
    assert keys == ["conditional.embedding.weight"]
    assert torch.equal(model.conditional.embedding.weight, torch.eye(10))
    # the toy h too
    toy = scnf.vector_scnf(2, 2)
    toy_couplings = [m for m in toy.conditional.modules() if isinstance(m, AffineCoupling)]
    assert toy_couplings and all(c.embedding is toy.conditional.embedding for c in toy_couplings)


def test_the_shared_table_survives_a_dtype_change_and_a_copy():
    import copy

    model = scnf.mnist_scnf(h_hidden=16, h_blocks=1, hidden=8, blocks=1).double()
    coupling = next(m for m in model.conditional.modules() if isinstance(m, ConditionalCouplingLayer))
    assert coupling.embedding.weight.dtype == torch.float64
    clone = copy.deepcopy(model)
    c2 = next(m for m in clone.conditional.modules() if isinstance(m, ConditionalCouplingLayer))
    assert c2.embedding is clone.conditional.embedding


def test_actnorm_initialises_with_the_unbiased_std():
    an = ActNorm(1)
    x = torch.tensor([[0.0], [2.0]])  # mean 1, unbiased std sqrt(2), biased std 1
    an.train()
    an(x)
    assert torch.allclose(an.log_scale, -torch.log(torch.tensor([2.0 ** 0.5 + 1e-6])))
