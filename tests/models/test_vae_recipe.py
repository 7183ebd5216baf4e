"""Kingma et al.'s recipe for the VAE baselines: alpha with their meaning, the Bernoulli of
re-binarised pixels, M1 trained first and frozen with its inactive dimensions dropped, the
density bound that is a bound, early stopping on the validation bound, and Table 2's shared M1."""
import math

import pytest
import torch

from scnf.models import vae as bl
from scnf.config import ConfigError, TrainConfig, from_dict
from scnf.noise import noise_from


def _rows(n_lab: int, n_unl: int, a: float, u: float, k: int = 3):
    """A batch's model output in which every labelled row's L(x, y) is ``a`` and every
    unlabelled row's U(x) is ``u``: q(y|x) uniform, so U = L + log K with L constant over k."""
    n = n_lab + n_unl
    y = torch.cat([torch.zeros(n_lab, dtype=torch.long), torch.full((n_unl,), -1)])
    f64 = dict(dtype=torch.float64)
    bounds = torch.cat([torch.full((n_lab, k), a, **f64), torch.full((n_unl, k), u - math.log(k), **f64)])
    log_q = torch.full((n, k), -math.log(k), dtype=torch.float64)
    return {"bounds": bounds, "log_q": log_q}, y


def test_alpha_weights_each_row_by_its_true_share_whatever_the_batch_holds():
    """J^alpha / N = (N_l/N) mean L + (N_u/N) mean U - alpha mean CE: with the true labelled
    share rho = 0.002 the loss is the same for a batch of 1 labelled + 3 unlabelled rows and one
    of 3 + 1 (weighting by the batch's own shares, or summing, would differ by ~30 nats)."""
    m = bl.build("m2", 4, 3, m2_hidden=4, m2_latent=2, labelled_fraction=0.002)
    cfg = TrainConfig(alpha=0.1)
    a, u = -50.0, -20.0
    ce = math.log(3)  # uniform q(y|x)
    want = -(0.002 * a + 0.998 * u) + 0.1 * ce
    for n_lab, n_unl in ((1, 3), (3, 1), (2, 8)):
        out, y = _rows(n_lab, n_unl, a, u)
        loss, lp_lab, lp_unl, clf, *_ = m.loss_terms(out, y, cfg)
        assert abs(float(loss) - want) < 1e-9, (n_lab, n_unl, float(loss), want)
        torch.testing.assert_close(clf, torch.tensor(n_lab * ce, dtype=torch.float64))


def test_alpha_scales_the_mean_cross_entropy_of_the_labelled_rows():
    m = bl.build("m2", 4, 3, m2_hidden=4, m2_latent=2, labelled_fraction=0.5)
    out, y = _rows(2, 2, -5.0, -5.0)
    out["log_q"][0] = torch.log_softmax(torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64), 0)
    l1, *_ = m.loss_terms(out, y, TrainConfig(alpha=1.0))
    l3, *_ = m.loss_terms(out, y, TrainConfig(alpha=3.0))
    ce_mean = float(-(out["log_q"][0, 0] + out["log_q"][1, 0]) / 2)
    assert abs(float(l3 - l1) - 2.0 * ce_mean) < 1e-9


def test_alpha_needs_the_labelled_share():
    m = bl.build("m2", 4, 3, m2_hidden=4, m2_latent=2)
    out, y = _rows(1, 1, -1.0, -1.0)
    with pytest.raises(ValueError, match="labelled_fraction"):
        m.loss_terms(out, y, TrainConfig(alpha=0.1))


def test_m1_alone_maximises_its_bound_on_every_row_and_does_not_classify():
    torch.manual_seed(0)
    m = bl.build("m1", 6, 3, m1_hidden=8, m1_latent=2)
    assert not m.classifies and m.density_of == "binarised"
    x = torch.rand(5, 6)
    y = torch.tensor([1, -1, -1, 0, -1])
    with noise_from(torch.Generator().manual_seed(1)):
        out = m.training_forward(x)
    loss, lab, unl, *_ = m.loss_terms(out, y, TrainConfig())
    torch.testing.assert_close(loss, -out["m1_bound"].mean())
    assert lab.shape == (2,) and unl.shape == (3,)
    with pytest.raises(ValueError, match="does not classify"):
        m.classifier_logits(x)


def test_the_bernoulli_likelihood_sees_pixels_rebinarised_every_batch():
    """Training scores b ~ Bernoulli(x), drawn afresh each batch from the trainer's generator;
    the continuous Bernoulli scores x itself."""
    torch.manual_seed(0)
    x = torch.full((2000, 6), 0.3)
    seen = []
    for likelihood in ("bernoulli", "continuous-bernoulli"):
        m = bl.build("m2", 6, 3, m2_hidden=8, m2_latent=2, likelihood=likelihood)
        orig = m.m2.bounds
        m.m2.bounds = lambda v, orig=orig: seen.append(v) or orig(v)
        with noise_from(torch.Generator().manual_seed(1)):
            m.training_forward(x)
            m.training_forward(x)
    b1, b2, c1, _ = seen
    assert set(b1.unique().tolist()) == {0.0, 1.0} and not torch.equal(b1, b2)
    assert abs(float(b1.mean()) - 0.3) < 0.02  # P(b = 1) = x
    assert torch.equal(c1, x)


def test_binarise_draws_from_the_installed_generator():
    x = torch.rand(50, 20)
    with noise_from(torch.Generator().manual_seed(3)):
        a = bl.binarise(x)
    with noise_from(torch.Generator().manual_seed(3)):
        b = bl.binarise(x)
    assert torch.equal(a, b)
    assert torch.equal(bl.binarise(torch.ones(4, 4)), torch.ones(4, 4))
    assert torch.equal(bl.binarise(torch.zeros(4, 4)), torch.zeros(4, 4))


def test_bernoulli_pixels_match_torch_distributions():
    b = (torch.rand(7, 9) > 0.5).double()
    logits = torch.randn(7, 9, dtype=torch.float64) * 3
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(b).sum(-1)
    torch.testing.assert_close(bl.BernoulliPixels().log_prob(b, logits), ref)


def test_the_reported_density_is_e_q_of_the_bound_plus_the_entropy_and_below_logsumexp():
    """log_density = sum_k q(k|x) (L_k - log q(k|x)), a lower bound on log p(x) for any q; the
    logsumexp of one-sample bounds (reported before) is not, and is never below it."""
    torch.manual_seed(0)
    m = bl.build("m2", 6, 3, m2_hidden=8, m2_latent=2)
    x = torch.rand(4, 6)
    lj = torch.randn(4, 3) * 4
    log_q = m.classifier_logits(x)
    want = (log_q.exp() * (lj - log_q)).sum(1)
    torch.testing.assert_close(m.log_density(x, lj), want)
    assert (m.log_density(x, lj) <= torch.logsumexp(lj, 1) + 1e-6).all()


def _pretrained_m1(latent: int = 4, dead=(1, 3)):
    """An M1's weights whose posterior means of z1's dimensions ``dead`` do not depend on x."""
    torch.manual_seed(0)
    m1 = bl.build("m1", 12, 3, m1_hidden=8, m1_latent=latent)
    last = m1.m1_encoder[-1]
    with torch.no_grad():
        for d in dead:
            last.weight[d] = 0.0
            last.bias[d] = 0.3
    return {k: v for k, v in m1.state_dict().items() if k.startswith(("m1_encoder.", "m1_decoder."))}


def test_a_pretrained_m1_is_frozen_and_its_inactive_dimensions_are_dropped():
    rows = torch.rand(200, 12)
    m = bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=4, m2_hidden=8, m2_latent=2,
                 pretrained_m1=_pretrained_m1(), active_rows=rows, active_std=1e-4, labelled_fraction=0.1)
    assert m.active.tolist() == [0, 2] and m.m2.dim == 2
    assert all(not p.requires_grad for p in (*m.m1_encoder.parameters(), *m.m1_decoder.parameters()))
    x, y = torch.rand(6, 12), torch.tensor([0, 1, -1, -1, -1, -1])
    seen = []
    orig = m.m2.bounds
    m.m2.bounds = lambda v: seen.append(v) or orig(v)
    with noise_from(torch.Generator().manual_seed(1)):
        out = m.training_forward(x)
        m.training_forward(x)
    m.loss_terms(out, y, TrainConfig(alpha=0.1)).loss.backward()
    assert all(p.grad is None for p in m.m1_encoder.parameters())
    assert all(p.grad is not None for p in m.m2.parameters())
    mu = m.m1_encoder(x).chunk(2, -1)[0][:, m.active]
    # features: a fresh sample of q(z1 | x) on the active dimensions each batch, not the mean
    assert seen[0].shape == (6, 2) and not torch.equal(seen[0], seen[1]) and not torch.allclose(seen[0], mu)
    torch.testing.assert_close(m.classifier_logits(x), m.m2.classifier_logits(mu))


def test_a_pretrained_m1_must_fit_and_must_not_have_collapsed():
    with pytest.raises(ValueError, match="does not fit"):
        bl.build("m1m2", 12, 3, m1_hidden=16, m1_latent=4, pretrained_m1=_pretrained_m1())
    with pytest.raises(ValueError, match="collapsed"):
        bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=4, pretrained_m1=_pretrained_m1(dead=(0, 1, 2, 3)),
                 active_rows=torch.rand(50, 12))


def test_frozen_m1m2_log_joint_is_the_stacked_bound_with_the_prior_on_dropped_dimensions():
    """log p(b) >= log p(b|z1) - log q(z1|x) + log N(z1_dropped; 0, I) + L_M2(z1_active, k),
    recomputed by hand from the same draws (dropping the prior term moves it by ~2 nats)."""
    m = bl.build("m1m2", 12, 3, m1_hidden=8, m1_latent=4, m2_hidden=8, m2_latent=2,
                 pretrained_m1=_pretrained_m1(), active_rows=torch.rand(200, 12), active_std=1e-4).double()
    x = torch.rand(5, 12, dtype=torch.float64)
    with torch.no_grad(), noise_from(torch.Generator().manual_seed(4)):
        got = m.log_joint(x)
    with torch.no_grad(), noise_from(torch.Generator().manual_seed(4)):
        b = bl.binarise(x)
        mu, ls = m.m1_encoder(x).chunk(2, -1)
        eps = bl.randn_like(mu)
        z1 = mu + ls.exp() * eps
        log_q = bl.gaussian_log_prob(z1, mu, ls)
        rec = m.pixels.log_prob(b, m.m1_decoder(z1))
        prior = bl.gaussian_log_prob(z1[:, [1, 3]], torch.zeros(5, 2, dtype=torch.float64),
                                     torch.zeros(5, 2, dtype=torch.float64))
        want = (rec - log_q + prior)[:, None] + m.m2.bounds(z1[:, [0, 2]])
    torch.testing.assert_close(got, want)


def _mnist_cfg(data_dir, model, **train):
    t = {"steps": 8, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2, "progress": False,
         "optimizer": "adam", "lr": 3e-4, "schedule": "constant"}
    t.update(train)
    return from_dict({"data": {"dataset": "fashion-mnist", "n_labelled": 10, "n_validation": 10,
                               "data_dir": str(data_dir)}, "model": model, "train": t})


def test_m1_then_m1m2_from_its_run(tiny_images, tmp_path):  # noqa: F811
    """The sequential recipe end to end: an M1 run (no labels, early-stopped on the validation
    bound, no error reported), then M1+M2 runs loading it, frozen (its weights unchanged)."""
    from scnf.training.checkpoint import load_checkpoint
    from scnf.runs.run import load_run, run

    data_dir, _ = tiny_images
    m1 = run(_mnist_cfg(data_dir, {"kind": "m1", "m1_hidden": 16, "m1_latent": 4}, labelled_share=0.0,
                        early_stop_patience=2), tmp_path / "m1")
    assert m1["error_pct"] is None and "train_labelled_error_pct" not in m1
    assert m1["bits_per_dim_binarised"] > 0 and "best_step" in m1
    cfg = _mnist_cfg(data_dir, {"kind": "m1m2", "m1_hidden": 16, "m1_latent": 4, "m2_hidden": 8, "m2_latent": 2,
                                "m1_run": str(tmp_path / "m1"), "m1_active_std": 0.0},
                     alpha=0.1, labelled_share=0.25)
    m = run(cfg, tmp_path / "m1m2")
    assert 0 <= m["error_pct"] <= 100 and m["m1_active_dims"] == 4
    before = load_checkpoint(tmp_path / "m1" / "checkpoint.pt")["model"]
    _, model, _, _ = load_run(tmp_path / "m1m2")
    for k, v in model.state_dict().items():
        if k.startswith("m1_"):
            assert torch.equal(v, before[k]), k
    wrong = _mnist_cfg(data_dir, {"kind": "m1m2", "m1_hidden": 32, "m1_latent": 4, "m1_run": str(tmp_path / "m1")})
    with pytest.raises(ValueError, match="m1_hidden"):
        run(wrong, tmp_path / "wrong")
    with pytest.raises(ValueError, match="not a run directory"):
        run(_mnist_cfg(data_dir, {"kind": "m1m2", "m1_run": str(tmp_path / "nowhere")}), tmp_path / "w2")
    (tmp_path / "m1" / "metrics.json").unlink()
    with pytest.raises(ValueError, match="has not finished"):
        run(cfg, tmp_path / "w3")


def test_early_stopping_keeps_the_weights_of_the_best_validation_bound(tiny_images, tmp_path):  # noqa: F811
    """Validation NLLs 5, 4, 6, 7 with patience 2: training stops at the 4th evaluation and
    ends with the weights (and evaluations) of the 2nd."""
    from scnf.data.load import build_data
    from scnf.runs.run import build_model
    from scnf.training.trainer import Trainer

    data_dir, _ = tiny_images
    cfg = _mnist_cfg(data_dir, {"kind": "m1", "m1_hidden": 16, "m1_latent": 4}, labelled_share=0.0,
                     early_stop_patience=2, steps=100)
    data, _ = build_data(cfg)
    model = build_model(cfg, data)
    script = iter([5.0, 4.0, 6.0, 7.0, 1.0])
    snapshots = {}
    tr = Trainer(model, data, cfg.train, run_dir=tmp_path / "r")
    tr.evaluate_validation = lambda: {"nll": next(script)}
    tr.callback = lambda t, step: snapshots.setdefault(step, {k: v.clone() for k, v in t.model.state_dict().items()}) and False
    tr.fit()
    assert tr.step == 8 and tr.stopped_early and tr.early_stopping.best["step"] == 4
    assert tr.last_val == {"nll": 4.0}
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[4][k]), k
    assert not all(torch.equal(v, snapshots[6][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("raw, match", [
    ({"model": {"kind": "scnf"}, "train": {"alpha": 0.1}}, "train.alpha"),
    ({"model": {"kind": "m2"}, "train": {"alpha": 0.1, "clf_weight": 1.0}}, "train.alpha"),
    ({"model": {"kind": "m1"}, "train": {"clf_weight": 1.0}}, "unsupervised"),
    ({"model": {"kind": "m1m2", "m1_active_std": 0.2}}, "m1_run"),
    ({"model": {"kind": "m2", "m1_run": "x"}}, "model.m1_run"),
    ({"model": {"kind": "m1"}, "train": {"early_stop_patience": 3}}, "n_validation"),
    ({"model": {"kind": "m2", "vae_likelihood": "gaussian"}}, "vae_likelihood"),
    ({"model": {"kind": "m2"}, "train": {"optimizer": "sgd"}}, "train.optimizer"),
])
def test_config_refuses_what_the_recipe_cannot_use(raw, match):
    with pytest.raises(ConfigError, match=match):
        from_dict({"data": {"dataset": "mnist"}, **raw})


def test_table2_trains_one_m1_first_and_points_every_split_at_it(tmp_path, monkeypatch):
    import scnf.runs.reproduce as rp

    order = []

    def fake(args):
        cfg, rdir = args
        order.append((cfg.model.kind, cfg.model.m1_run, rdir.name))
        return {"error_pct": 1.0, "steps": 1, "seconds": 1.0, "best_step": 1}

    monkeypatch.setattr(rp, "_run_one", fake)
    text = rp.table2(tmp_path, "cpu", rows=["m2", "m1m2"], splits=[0, 1])
    m1_dir = str((tmp_path / "runs" / "m1").resolve())
    assert order[0] == ("m1", "", "m1")
    assert order[1:] == [("m2", "", "m2-split0"), ("m2", "", "m2-split1"),
                         ("m1m2", m1_dir, "m1m2-split0"), ("m1m2", m1_dir, "m1m2-split1")]
    assert "NOT comparable" in text and "one M1 trained first" in text
    order.clear()
    rp.table2(tmp_path, "cpu", rows=["m2"], splits=[0])
    assert [o[0] for o in order] == ["m2"]  # no M1 without an M1+M2 row
