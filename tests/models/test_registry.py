"""Building through the registry (a config key reaches its builder; a key left at 0 gives the
builder's default), and what the flows answer the trainer (needs_initialisation, diagnostics)."""
import torch

from scnf.config import from_dict
from scnf.data.batches import SemiSupervisedData
from scnf.models import registry
from scnf.models.flow import SemiConditionalFlow
from scnf.nn import ChannelAffine, class_embedding


def _vectors(dim=3):
    return SemiSupervisedData(torch.randn(10, dim), torch.tensor([0, 1] + [-1] * 8))


def _build(model: dict, dim=3) -> SemiConditionalFlow:
    cfg = from_dict({"model": model})
    return registry.build(cfg, _vectors(dim), 2, torch.tensor([0.5, 0.5]))


def _couplings(seq):
    from scnf.bijectors import AffineCoupling
    return [m for m in seq.modules() if isinstance(m, AffineCoupling)]


def test_config_keys_reach_the_builder_and_zero_means_its_default():
    from scnf.nn import ResidualMLP

    assert len(_couplings(_build({"blocks": 2}).unconditional)) == 2
    assert len(_couplings(_build({}).unconditional)) == 5  # vector_scnf's default, stated there only
    h = _build({"h_net": "resmlp", "h_hidden": 16, "h_blocks": 2}).conditional
    assert any(isinstance(m, ResidualMLP) for m in h.modules())
    assert not any(isinstance(m, ResidualMLP) for m in _build({}).conditional.modules())
    emb = _build({"embed_dim": 5}).conditional.embedding
    assert tuple(emb.weight.shape) == (2, 5)


def test_the_class_table_starts_one_hot():
    w = class_embedding(3, 5).weight.detach()
    assert torch.equal(w, torch.cat([torch.eye(3), torch.zeros(3, 2)], 1))
    assert torch.equal(class_embedding(4, 2).weight.detach(), torch.tensor([[1., 0], [0, 1], [0, 0], [0, 0]]))


def test_needs_initialisation_counts_the_nets_own_normalisation():
    model = _build({"h_net": "resmlp", "h_hidden": 8})
    norms = [m for m in model.modules() if isinstance(m, ChannelAffine)]
    assert model.needs_initialisation()
    for m in norms:
        m.initialized.fill_(True)
    assert not model.needs_initialisation()
    inner = [m for m in model.conditional.modules() if type(m) is ChannelAffine]  # a net's, not an ActNorm layer
    assert inner
    inner[0].initialized.fill_(False)
    assert model.needs_initialisation()


def test_diagnostics_report_the_solvers_last_and_mean_evaluations():
    model = _build({"unconditional": "ffjord", "hidden": 8, "ffjord_tol": 1e-3})
    assert _build({}).diagnostics() == {} and _build({}).diagnostics(over_run=True) == {}
    model.eval()
    model.log_joint(torch.randn(4, 3))
    (ode,) = [m for m in model.modules() if hasattr(m, "num_solves")]
    assert ode.num_solves == 1 and model.diagnostics() == {"ffjord_last_nfe": [ode.last_nfe]}
    ode.func.nfe, ode.num_solves, ode.last_nfe = 30, 3, 14  # three solves of 30 evaluations in all
    assert model.diagnostics() == {"ffjord_last_nfe": [14]}
    assert model.diagnostics(over_run=True) == {"ffjord_mean_nfe": 10.0}
