"""Kingma et al.'s M2 and M1+M2 (scnf.models.vae): densities, bounds, objective, config, one run."""
import math

import pytest
import torch

from scnf.models import vae as bl
from scnf.config import ConfigError, TrainConfig, from_dict


#: a model whose loss_terms the objective tests call (the terms do not depend on its weights)
_VAE = bl.build("m2", 4, 3, m2_hidden=4, m2_latent=2)


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


def _quadrature(log_lik, mu, log_scale, n=20001, width=14.0):
    """(ELBO, log marginal) of a 1-d latent with prior N(0, 1) and posterior N(mu, exp(log_scale))
    by the trapezoid rule; ``log_lik(z)`` (n,) is log p(x | z) on the grid."""
    s = math.exp(log_scale)
    z = torch.linspace(min(mu - width * s, -width), max(mu + width * s, width), n, dtype=torch.float64)
    ll = log_lik(z)
    log_prior = -0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)
    log_q = -0.5 * ((z - mu) / s) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
    elbo = torch.trapezoid(log_q.exp() * (ll + log_prior - log_q), z)
    log_marginal = torch.log(torch.trapezoid((ll + log_prior).exp(), z))
    return float(elbo), float(log_marginal)


def _monte_carlo(draws):
    return float(draws.mean()), float(draws.std() / math.sqrt(draws.numel()))


def test_m2_bound_is_the_elbo_computed_by_quadrature_and_below_log_p():
    """M2 with a 1-d z2: the mean of the one-sample bound equals the ELBO integrated on a grid
    (a wrong sign or a missing term moves it by far more than the Monte Carlo error), and the
    ELBO lies below log p(x, y) integrated on the same grid."""
    torch.manual_seed(0)
    m = bl.build("m2", 6, 3, m2_hidden=8, m2_latent=1).double()
    x = torch.rand(1, 6, dtype=torch.float64)
    with torch.no_grad():
        draws = m.m2.bounds(x.repeat(40000, 1))  # (S, K): independent samples of z2
        for k in range(3):
            onehot = torch.eye(3, dtype=torch.float64)[k]
            mu, ls = (float(v) for v in m.m2.encoder(torch.cat([x[0], onehot])).chunk(2, -1))

            def log_lik(z, onehot=onehot):
                params = m.m2.decoder(torch.cat([z[:, None], onehot.expand(len(z), 3)], 1))
                return m.m2.likelihood.log_prob(x.expand(len(z), 6), params)

            elbo, log_px = _quadrature(log_lik, mu, ls)
            elbo += float(m.m2.log_class_prior[k])
            log_px += float(m.m2.log_class_prior[k])
            mean, se = _monte_carlo(draws[:, k])
            assert abs(mean - elbo) < 5 * se + 1e-6, (k, mean, elbo, se)
            assert elbo < log_px


def _pixels(likelihood: str, n: int, seed: int) -> torch.Tensor:
    """One row of n pixels: intensities for the continuous Bernoulli, a binary image for the
    Bernoulli (which binarising leaves as it is)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, n, generator=g, dtype=torch.float64)
    return x if likelihood == "continuous-bernoulli" else (x > 0.5).double()


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli"])
def test_m1_bound_is_the_elbo_computed_by_quadrature(likelihood):
    torch.manual_seed(1)
    m = bl.build("m1m2", 6, 3, m1_hidden=8, m1_latent=1, m2_hidden=8, m2_latent=1, likelihood=likelihood).double()
    x = _pixels(likelihood, 6, 1)
    with torch.no_grad():
        draws = m.training_forward(x.repeat(40000, 1))["m1_bound"]
        mu, ls = (float(v) for v in m.m1_encoder(x[0]).chunk(2, -1))
        elbo, log_px = _quadrature(lambda z: m.pixels.log_prob(x.expand(len(z), 6), m.m1_decoder(z[:, None])),
                                   mu, ls)
    mean, se = _monte_carlo(draws)
    assert abs(mean - elbo) < 5 * se + 1e-6, (mean, elbo, se)
    assert elbo < log_px


def test_unlabelled_term_is_the_variational_bound_over_labels():
    """U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)) <= logsumexp_y L(x, y), with equality when
    q(y|x) is the posterior softmax(L)."""
    cfg = TrainConfig()
    bounds = torch.randn(5, 4, dtype=torch.float64) * 3
    y = torch.full((5,), -1)
    for log_q, equal in ((torch.log_softmax(torch.randn(5, 4, dtype=torch.float64), 1), False),
                         (torch.log_softmax(bounds, 1), True)):
        _, _, u, _, _, _ = _VAE.loss_terms({"bounds": bounds, "log_q": log_q}, y, cfg)
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
    loss, lp_lab, lp_unl, clf, correct, _ = _VAE.loss_terms(
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
    """Prediction: M2 reads the intensities themselves (no binarisation: the same logits from any
    generator), M1+M2 reads M2's classifier at the mean of q(z1 | x), not its log-scale or a sample."""
    from scnf.noise import noise_from

    torch.manual_seed(0)
    x = torch.rand(6, 12)  # intensities in (0, 1), not binary
    m2 = bl.build("m2", 12, 3, m2_hidden=8, m2_latent=2)
    with torch.no_grad():
        want = torch.log_softmax(m2.m2.classifier(x), -1)
        for seed in (0, 1):
            with noise_from(torch.Generator().manual_seed(seed)):
                assert torch.equal(m2.classifier_logits(x), want)
        assert torch.equal(m2.predict(x), want.argmax(1)) and torch.equal(m2.posterior(x), want.exp())
        assert not torch.allclose(want, torch.log_softmax(m2.m2.classifier((x > 0.5).float()), -1))
    m = bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=2, m2_hidden=8, m2_latent=2)
    with torch.no_grad():
        mu, log_scale = m.m1_encoder(x).chunk(2, -1)
        assert not torch.allclose(mu, log_scale)
        assert torch.equal(m.classifier_logits(x), torch.log_softmax(m.m2.classifier(mu), -1))
    with pytest.raises(ValueError, match="12 values per row"):
        m.log_joint(torch.rand(2, 13))
    with pytest.raises(ValueError, match="baseline"):
        bl.build("m3", 12, 3)


@pytest.mark.parametrize("stage", ["m1", "m1m2"])
def test_a_jointly_trained_m1_encodes_the_binarised_pixels(stage):
    """The Bernoulli likelihood scores b ~ Bernoulli(x), and M1's encoder reads that b, not the
    intensities x: the bound (and M2's features) by hand from the same generator's draws
    (first the uniforms of b, then z1's normals, then M2's)."""
    from scnf.noise import noise_from, randn_like

    torch.manual_seed(3)
    m = bl.build(stage, 12, 3, m1_hidden=8, m1_latent=2, m2_hidden=8, m2_latent=2).double()
    x = torch.rand(5, 12, dtype=torch.float64) * 0.6 + 0.2  # no pixel is 0 or 1: b differs from x
    with torch.no_grad():
        with noise_from(torch.Generator().manual_seed(7)):
            out = m.training_forward(x)
            lj = m.log_joint(x)
        with noise_from(torch.Generator().manual_seed(7)):
            b = bl.binarise(x)
            mu, log_scale = m.m1_encoder(b).chunk(2, -1)
            eps = randn_like(mu)
            z1 = mu + log_scale.exp() * eps
            rec = m.pixels.log_prob(b, m.m1_decoder(z1))
            want = {"m1_bound": rec - bl.kl_to_standard_normal(mu, log_scale)}
            if stage == "m1m2":
                want["bounds"] = m.m2.bounds(z1)
                want["log_q"] = m.m2.classifier_logits(z1)
            # log_joint: a fresh b and z1, from the draws that follow
            b2 = bl.binarise(x)
            mu2, ls2 = m.m1_encoder(b2).chunk(2, -1)
            eps2 = randn_like(mu2)
            z2 = mu2 + ls2.exp() * eps2
            rec2 = m.pixels.log_prob(b2, m.m1_decoder(z2))
            if stage == "m1":
                want_lj = (rec2 - bl.kl_to_standard_normal(mu2, ls2))[:, None]
            else:
                log_q = (-0.5 * eps2 ** 2 - ls2 - 0.5 * math.log(2 * math.pi)).sum(-1)
                want_lj = (rec2 - log_q)[:, None] + m.m2.bounds(z2)
    assert not torch.equal(b, x)
    assert out.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(out[k], want[k], rtol=0, atol=0, msg=k)
    # log q(z1 | x) is written another way here: float64 rounding, ~1e-15 of terms of ~10
    torch.testing.assert_close(lj, want_lj, rtol=1e-12, atol=1e-12)


def _cfg(**model):
    return {"data": {"dataset": "mnist"}, "model": model}


@pytest.mark.parametrize("raw, match", [
    (_cfg(kind="m1m2", hidden=32), "model.hidden"),
    (_cfg(kind="m2", m1_hidden=300), "model.m1_hidden"),
    (_cfg(kind="scnf", m2_latent=10), "model.m2_latent"),
    (_cfg(kind="vae"), "model.kind"),
    ({"data": {"dataset": "moons"}, "model": {"kind": "m2"}}, "applies to image data only"),
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
    from scnf.runs.run import load_run, run
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
    assert whole["bits_per_dim_binarised"] > 0 and math.isfinite(whole["bits_per_dim_binarised"])
    assert "bits_per_dim" not in whole  # a probability of binary images is not a density of pixels
    for name in ("config.toml", "log.jsonl", "checkpoint.pt", "metrics.json", "report.md", "curve.png"):
        assert (tmp_path / "whole" / name).exists(), name
    title = (tmp_path / "whole" / "report.md").read_text().splitlines()[0]
    assert title == f"# scnf run: {'M1+M2' if kind == 'm1m2' else 'M2'} on fashion-mnist", title
    import scnf.runs.run as ex

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
    x = (torch.rand(5, 12) > 0.5).float()  # binary: the encoder of a jointly trained M1 reads b ~ Bernoulli(x)
    seen = {}
    orig = m.m2.bounds
    m.m2.bounds = lambda z: seen.setdefault("z", z) is not None and orig(z)
    out = m.training_forward(x)
    mean = m.m1_encoder(x).chunk(2, -1)[0]
    assert not seen["z"].requires_grad  # M2's loss does not train M1
    assert torch.equal(seen["z"], mean.detach()) == (features == "mean")
    assert out["m1_bound"].requires_grad


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous-bernoulli"])
def test_m1m2_log_joint_is_the_stacked_elbo_by_quadrature(likelihood):
    """M1+M2's log_joint (the density reported as bits/dim) with 1-d z1 and z2: the mean of its
    one-sample estimates equals, per class, the ELBO of the stacked model integrated on grids,
    E_q(z1|x) [log p(x|z1) - log q(z1|x) + L_M2(z1, y)]. Dropping -log q(z1|x) moves it by the
    entropy of q(z1|x), many standard errors."""
    torch.manual_seed(2)
    m = bl.build("m1m2", 6, 2, m1_hidden=8, m1_latent=1, m2_hidden=8, m2_latent=1, likelihood=likelihood).double()
    x = _pixels(likelihood, 6, 2)
    with torch.no_grad():
        draws = m.log_joint(x.repeat(40000, 1))
        mu1, ls1 = (float(v) for v in m.m1_encoder(x[0]).chunk(2, -1))
        s1 = math.exp(ls1)
        z1 = torch.linspace(mu1 - 9 * s1, mu1 + 9 * s1, 801, dtype=torch.float64)
        log_q1 = -0.5 * ((z1 - mu1) / s1) ** 2 - ls1 - 0.5 * math.log(2 * math.pi)
        rec = m.pixels.log_prob(x.expand(len(z1), 6), m.m1_decoder(z1[:, None]))
        for k in range(2):
            onehot = torch.eye(2, dtype=torch.float64)[k]
            inner = []
            for v in z1:
                mu2, ls2 = (float(a) for a in m.m2.encoder(torch.cat([v.view(1), onehot])).chunk(2, -1))

                def log_lik(z2, v=v, onehot=onehot):
                    params = m.m2.decoder(torch.cat([z2[:, None], onehot.expand(len(z2), 2)], 1))
                    return m.m2.likelihood.log_prob(v.view(1, 1).expand(len(z2), 1), params)

                inner.append(_quadrature(log_lik, mu2, ls2, n=2001)[0])
            l_m2 = torch.tensor(inner, dtype=torch.float64) + float(m.m2.log_class_prior[k])
            elbo = float(torch.trapezoid(log_q1.exp() * (rec - log_q1 + l_m2), z1))
            mean, se = _monte_carlo(draws[:, k])
            assert abs(mean - elbo) < 5 * se + 1e-3, (k, mean, elbo, se)


def test_labelled_weight_scales_the_labelled_bound_only():
    bounds = torch.randn(4, 3, dtype=torch.float64)
    log_q = torch.log_softmax(torch.randn(4, 3, dtype=torch.float64), 1)
    y = torch.tensor([2, -1, 0, -1])
    q = log_q.exp()
    lab = bounds[0, 2] + bounds[2, 0]
    unl = sum((q[i] * (bounds[i] - log_q[i])).sum() for i in (1, 3))
    loss, *_ = _VAE.loss_terms({"bounds": bounds, "log_q": log_q}, y, TrainConfig(labelled_weight=3.0))
    torch.testing.assert_close(loss, -(3.0 * lab + unl) / 4)


def test_pseudo_labels_add_the_cross_entropy_of_confident_rows():
    """The pseudo-label term adds +pseudo_weight * CE(q(y|x), argmax q) over confident unlabelled
    rows (a flipped sign would reward doubt)."""
    bounds = torch.randn(4, 3, dtype=torch.float64)
    log_q = torch.log_softmax(torch.tensor([[0., 0, 0], [5., 0, 0], [0., 0, 0], [0., 0.2, 0]],
                                           dtype=torch.float64), 1)
    y = torch.tensor([2, -1, 0, -1])
    cfg = TrainConfig(pseudo_threshold=0.9, pseudo_weight=2.0)
    out = {"bounds": bounds, "log_q": log_q}
    base, *_ = _VAE.loss_terms(out, y, cfg, pseudo=False)
    with_pl, *_ = _VAE.loss_terms(out, y, cfg, pseudo=True)
    # row 1 is confident (q = 0.987 for class 0), row 3 is not; 2 unlabelled rows
    torch.testing.assert_close(with_pl - base, 2.0 * -log_q[1, 0] / 2)
    assert with_pl > base


@pytest.mark.parametrize("kind", ["m2", "m1m2"])
def test_vae_training_does_not_depend_on_evaluation(tiny_images, tmp_path, kind):  # noqa: F811
    """The VAEs draw their samples from the trainer's generator, not torch's global one: the
    same run evaluated every step or only at the end ends with the same parameters, and its
    evaluation gives the same numbers twice."""
    from scnf.runs.run import evaluate_run, run

    data_dir, _ = tiny_images
    model = {"kind": kind, "m2_hidden": 16, "m2_latent": 3}
    if kind == "m1m2":
        model.update(m1_hidden=16, m1_latent=4)
    states = []
    for every in (1, 6):
        cfg = from_dict({"data": {"dataset": "fashion-mnist", "n_labelled": 10, "data_dir": str(data_dir)},
                         "model": model,
                         "train": {"steps": 6, "batch_size": 8, "eval_every": every, "checkpoint_every": 6,
                                   "progress": False, "clf_weight": 1.0}})
        run(cfg, tmp_path / f"every{every}")
        from scnf.training.checkpoint import load_checkpoint
        states.append(load_checkpoint(tmp_path / f"every{every}" / "checkpoint.pt")["model"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert evaluate_run(tmp_path / "every6") == evaluate_run(tmp_path / "every6")


def test_vae_parameter_groups_are_named_for_m1_and_m2():
    m = bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=2, m2_hidden=8, m2_latent=2)
    groups = m.parameter_groups()
    assert list(groups) == ["m1", "m2"]
    assert {id(p) for p in groups["m2"]} == {id(p) for p in m.m2.parameters()}
    assert not bl.build("m2", 12, 3, m2_hidden=8, m2_latent=2).parameter_groups()["m1"]


@pytest.mark.parametrize("key,value", [("h_lr_mult", 2.0), ("warmup_f_steps", 3), ("optimisation", "em-sgd")])
def test_flow_only_train_keys_are_refused_for_vaes(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        from_dict({"data": {"dataset": "mnist"}, "model": {"kind": "m2"}, "train": {key: value}})
