"""Kingma et al.'s M2 and M1+M2 (scnf.baselines): densities, bounds, objective, config, one run."""
import math

import pytest
import torch

from scnf import baselines as bl
from scnf.config import ConfigError, TrainConfig, from_dict
from tests.test_training_options import tiny_images  # noqa: F401  (a fixture)


def test_continuous_bernoulli_is_a_density_on_the_unit_interval():
    x = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    for logit in (-9.0, -1.0, -0.004, 0.0, 0.007, 0.4, 6.0):  # both branches of the normaliser
        mass = torch.trapezoid(bl.continuous_bernoulli_log_prob(x, torch.full_like(x, logit)).exp(), x)
        assert abs(float(mass) - 1.0) < 1e-6, (logit, float(mass))


def test_continuous_bernoulli_matches_torch_distributions():
    x = torch.rand(50, dtype=torch.float64)
    logits = torch.randn(50, dtype=torch.float64) * 3
    ref = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x)
    torch.testing.assert_close(bl.continuous_bernoulli_log_prob(x, logits), ref, rtol=1e-6, atol=1e-6)


def test_gaussian_terms_match_torch_distributions():
    x, mu, ls = torch.randn(3, 7, 5, dtype=torch.float64).unbind(0)
    n = torch.distributions.Normal(mu, ls.exp())
    torch.testing.assert_close(bl.gaussian_log_prob(x, mu, ls), n.log_prob(x).sum(-1))
    std = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(bl.kl_to_standard_normal(mu, ls), torch.distributions.kl_divergence(n, std).sum(-1))


@pytest.mark.parametrize("kind", ["m2", "m1m2"])
def test_bound_is_below_the_log_likelihood_estimated_by_importance_sampling(kind):
    """E[log_joint] (the bound) <= log p(x, y) ~ log mean exp(log_joint) over many samples:
    the importance-weighted estimate with the same proposal is a tighter bound, so a wrong sign
    or term in the bound (e.g. a KL added instead of subtracted) shows up as bound > estimate."""
    torch.manual_seed(0)
    model = bl.build(kind, 12, 3, m1_hidden=16, m1_latent=3, m2_hidden=16, m2_latent=2).double()
    x = torch.rand(4, 12, dtype=torch.float64)
    with torch.no_grad():
        draws = torch.stack([model.log_joint(x) for _ in range(4000)])  # (S, B, K)
    bound = draws.mean(0)
    iwae = torch.logsumexp(draws, 0) - math.log(draws.shape[0])
    assert (bound < iwae).all()
    assert torch.isfinite(draws).all()


def test_unlabelled_term_is_the_variational_bound_over_labels():
    """U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)) <= logsumexp_y L(x, y), with equality when
    q(y|x) is the posterior softmax(L)."""
    cfg = TrainConfig()
    bounds = torch.randn(5, 4, dtype=torch.float64) * 3
    y = torch.full((5,), -1)
    for log_q, equal in ((torch.log_softmax(torch.randn(5, 4, dtype=torch.float64), 1), False),
                         (torch.log_softmax(bounds, 1), True)):
        _, _, u, _, _, _ = bl.SemiSupervisedVAE.loss_terms({"bounds": bounds, "log_q": log_q}, y, cfg)
        top = torch.logsumexp(bounds, 1)
        if equal:
            torch.testing.assert_close(u, top)
        else:
            assert (u < top - 1e-9).all()


def test_objective_by_hand():
    cfg = TrainConfig(clf_weight=2.5)
    bounds = torch.randn(4, 3, dtype=torch.float64)
    log_q = torch.log_softmax(torch.randn(4, 3, dtype=torch.float64), 1)
    m1 = torch.randn(4, dtype=torch.float64)
    y = torch.tensor([2, -1, 0, -1])
    loss, lp_lab, lp_unl, clf, correct, _ = bl.SemiSupervisedVAE.loss_terms(
        {"bounds": bounds, "log_q": log_q, "m1_bound": m1}, y, cfg)
    q = log_q.exp()
    u = [(q[i] * (bounds[i] - log_q[i])).sum() + m1[i] for i in (1, 3)]
    lab = [bounds[0, 2] + m1[0], bounds[2, 0] + m1[2]]
    ce = -(log_q[0, 2] + log_q[2, 0])
    want = -(sum(lab) + sum(u)) / 4 + 2.5 * ce / 2
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(clf, ce)
    assert int(correct) == int(log_q[0].argmax() == 2) + int(log_q[2].argmax() == 0)


def test_m1m2_classifies_from_the_encoder_mean_and_m2_from_pixels():
    torch.manual_seed(0)
    m = bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=2, m2_hidden=8, m2_latent=2)
    x = torch.rand(6, 12)
    a, b = m.classifier_logits(x), m.classifier_logits(x)
    torch.testing.assert_close(a, b)  # deterministic: the mean of q(z1|x), not a sample
    torch.testing.assert_close(a.exp().sum(1), torch.ones(6))
    with pytest.raises(ValueError, match="12 values per row"):
        m.log_joint(torch.rand(2, 13))
    with pytest.raises(ValueError, match="baseline"):
        bl.build("m3", 12, 3)


def _cfg(**model):
    return {"data": {"dataset": "mnist"}, "model": model}


@pytest.mark.parametrize("raw, match", [
    (_cfg(kind="m1m2", hidden=32), "model.hidden"),
    (_cfg(kind="m2", m1_hidden=300), "model.m1_hidden"),
    (_cfg(kind="scnf", m2_latent=10), "model.m2_latent"),
    (_cfg(kind="vae"), "model.kind"),
    ({"data": {"dataset": "moons"}, "model": {"kind": "m2"}}, "image datasets"),
    ({"data": {"dataset": "mnist"}, "model": {"kind": "m2"}, "train": {"optimisation": "em-sgd"}}, "optimisation"),
    ({"data": {"dataset": "mnist"}, "model": {"kind": "m1m2"}, "train": {"augment_shift": 2,
                                                                         "consistency_weight": 1.0}},
     "consistency_weight"),
])
def test_config_refuses_keys_of_the_other_kind(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(raw)


@pytest.mark.parametrize("kind", ["m2", "m1m2"])
def test_vae_run_trains_resumes_and_writes_the_run_directory(tiny_images, tmp_path, kind, monkeypatch):  # noqa: F811
    from scnf.experiment import load_run, run
    from tests.helpers import StopTraining, stop_at

    data_dir, _ = tiny_images
    cfg = from_dict({"data": {"dataset": "fashion-mnist", "n_labelled": 10, "n_validation": 10,
                              "data_dir": str(data_dir)},
                     "model": {"kind": kind, "m1_hidden": 16, "m1_latent": 4, "m2_hidden": 16, "m2_latent": 3}
                     if kind == "m1m2" else {"kind": kind, "m2_hidden": 16, "m2_latent": 3},
                     "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "checkpoint_every": 3,
                               "progress": False, "clf_weight": 1.0, "ema_decay": 0.5, "pseudo_threshold": 0.2,
                               "pseudo_weight": 1.0}})
    whole = run(cfg, tmp_path / "whole")
    assert whole["kind"] == kind and whole["steps"] == 6 and 0 <= whole["error_pct"] <= 100
    assert whole["bits_per_dim"] > 0 and math.isfinite(whole["bits_per_dim"])
    for name in ("config.toml", "log.jsonl", "checkpoint.pt", "metrics.json", "report.md", "curve.png"):
        assert (tmp_path / "whole" / name).exists(), name
    assert "M1+M2" in (tmp_path / "whole" / "report.md").read_text() or kind == "m2"
    import scnf.experiment as ex

    class Stopping(ex.Trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.callback = stop_at(3)

    with monkeypatch.context() as mp:
        mp.setattr(ex, "Trainer", Stopping)
        with pytest.raises(StopTraining):
            run(cfg, tmp_path / "split")
    resumed = run(cfg, tmp_path / "split", resume=True)
    assert resumed["steps"] == 6
    assert resumed["error_pct"] == whole["error_pct"]
    assert abs(resumed["nll"] - whole["nll"]) < 1e-6 * abs(whole["nll"])
    _, model, _, _ = load_run(tmp_path / "whole")
    assert isinstance(model, bl.SemiSupervisedVAE)


def test_analyses_refuse_a_vae_run_with_one_line(tmp_path, capsys):
    from scnf.cli import main
    from scnf.config import dump_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_config(from_dict(_cfg(kind="m1m2"))))
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["analyse", str(run), "obfuscation"]) == 2
    err = capsys.readouterr().err.strip()
    assert "m1m2 baseline" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("features", ["sample", "mean"])
def test_m2_of_m1m2_trains_on_the_chosen_features_with_the_gradient_stopped(features):
    torch.manual_seed(0)
    m = bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=2, m2_hidden=8, m2_latent=2, m1_features=features)
    x = torch.rand(5, 12)
    seen = {}
    orig = m.m2.bounds
    m.m2.bounds = lambda z: seen.setdefault("z", z) is not None and orig(z)
    out = m.training_forward(x)
    mean = m.m1_encoder(x).chunk(2, -1)[0]
    assert not seen["z"].requires_grad  # M2's loss does not train M1
    assert torch.equal(seen["z"], mean.detach()) == (features == "mean")
    assert out["m1_bound"].requires_grad
