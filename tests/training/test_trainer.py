"""Training: smoke, the objective, EM-SGD, resume equality, the non-finite guard."""
import json
import math

import pytest
import torch

import scnf
from scnf.training.checkpoint import load_checkpoint
from scnf.config import TrainConfig, from_dict, load_config
from scnf.errors import TrainingFailed
from scnf.runs.run import run
from tests.helpers import StopTraining, stop_at
from tests.helpers import toy_data as _data
from scnf.data.batches import MixedBatchSampler, SemiSupervisedData
from scnf.training.trainer import Trainer
from scnf.errors import TrainingDiverged
from scnf.training.objective import objective


def _toy_cfg(**train):
    t = {"steps": 60, "batch_size": 64, "eval_every": 20, "checkpoint_every": 20, "progress": False}
    t.update(train)
    return from_dict({"seed": 1, "data": {"dataset": "moons", "n_train": 200, "n_test": 200, "n_labelled": 10},
                      "model": {"blocks": 2, "hidden": 16, "h_blocks": 2, "h_hidden": 16}, "train": t})


def test_training_smoke_writes_run_dir(tmp_path):
    m = run(_toy_cfg(), tmp_path / "r")
    for name in ("metrics.json", "log.jsonl", "checkpoint.pt", "config.toml", "report.md", "decision_boundary.png"):
        assert (tmp_path / "r" / name).exists(), name
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved == m
    assert math.isfinite(m["nll"]) and 0 <= m["error_pct"] <= 100 and m["steps"] == 60
    lines = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [20, 40, 60]
    # the loss went down
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert last["train_loss"] < first["train_loss"]


def test_existing_run_dir_is_not_clobbered(tmp_path):
    run(_toy_cfg(steps=5, eval_every=5), tmp_path / "r")
    with pytest.raises(ValueError, match="already holds a run"):
        run(_toy_cfg(steps=5, eval_every=5), tmp_path / "r")


def test_resume_gives_identical_metrics(tmp_path):
    full = run(_toy_cfg(), tmp_path / "full")

    import scnf.runs.run as ex
    orig = ex.Trainer

    class CrashingTrainer(orig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.callback = stop_at(45)

    ex.Trainer = CrashingTrainer
    try:
        with pytest.raises(StopTraining):
            run(_toy_cfg(), tmp_path / "cut")
    finally:
        ex.Trainer = orig
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert state["step"] == 40
    resumed = run(_toy_cfg(), tmp_path / "cut", resume=True)
    for k in ("error_pct", "nll", "steps", "train_labelled_error_pct"):
        assert resumed[k] == full[k], k
    log_full = [json.loads(l) for l in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    log_cut = [json.loads(l) for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    assert strip(log_cut) == strip(log_full)


def test_resume_without_checkpoint_or_with_other_config(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        run(_toy_cfg(), tmp_path / "none", resume=True)
    run(_toy_cfg(steps=5, eval_every=5), tmp_path / "r")
    with pytest.raises(ValueError, match=r"config differs.*train.lr: 0.001 -> 0.002.*only train.steps"):
        run(_toy_cfg(steps=5, eval_every=5, lr=2e-3), tmp_path / "r", resume=True)
    # fewer steps is not an extension, and the message says so (not that steps "may change")
    with pytest.raises(ValueError, match=r"train.steps = 3 is fewer than the 5 .*more steps, no fewer$"):
        run(_toy_cfg(steps=3, eval_every=5), tmp_path / "r", resume=True)


def test_a_finished_run_is_extended_by_resuming_with_more_steps(tmp_path):
    """--resume with only train.steps (and max_seconds / eval_every / checkpoint_every) raised
    continues a finished run from its checkpoint: the first steps and log records are kept."""
    first = run(_toy_cfg(steps=6, eval_every=3), tmp_path / "r")
    log_before = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    longer = run(_toy_cfg(steps=9, eval_every=3), tmp_path / "r", resume=True)
    assert first["steps"] == 6 and longer["steps"] == 9
    log_after = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    assert log_after[:2] == log_before and [json.loads(r)["step"] for r in log_after] == [3, 6, 9]
    assert load_config(tmp_path / "r" / "config.toml").train.steps == 9


def test_non_finite_steps_are_skipped_then_stop(tmp_path):
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
    cfg = TrainConfig(steps=50, batch_size=16, eval_every=50, checkpoint_every=2, max_nonfinite=3, progress=False)
    trainer = Trainer(model, _data(), cfg, run_dir=tmp_path)
    for _ in range(4):
        trainer.train_step()
        if trainer.step % cfg.checkpoint_every == 0:
            trainer.save()
    good = {k: v.clone() for k, v in model.state_dict().items()}
    orig = model.log_joint
    model.log_joint = lambda x: orig(x) * float("nan")
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite.*last good checkpoint is") as e:
        trainer.fit()
    assert e.value.checkpoint == tmp_path / "checkpoint.pt"
    assert trainer.nonfinite_total == 3
    for k, v in model.state_dict().items():  # nothing non-finite reached the weights
        assert torch.equal(v, good[k]), k
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["step"] == 4  # the last good checkpoint is kept


def test_single_non_finite_step_is_skipped_and_counted():
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
    trainer = Trainer(model, _data(), TrainConfig(steps=5, batch_size=16, eval_every=5, progress=False))
    orig = model.log_joint
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        out = orig(x)
        return out * float("inf") if calls["n"] == 2 else out

    model.log_joint = flaky
    trainer.fit()
    assert trainer.nonfinite_total == 1 and trainer.step == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_callback_returning_true_ends_the_run():
    """Early stopping: a callback's true return ends fit after that step (a false one does not)."""
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
    seen = []

    def stop_after_three(trainer, step):
        seen.append(step)
        return step == 3

    trainer = Trainer(model, _data(), TrainConfig(steps=10, batch_size=16, eval_every=10, progress=False),
                      callback=stop_after_three)
    trainer.fit()
    assert trainer.step == 3 and seen == [1, 2, 3]


def test_a_step_puts_every_module_back_in_training_mode():
    """train_step skips model.train() while every module trains; one module in eval mode
    (set by a callback or an evaluation that did not restore it) is noticed."""
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
    trainer = Trainer(model, _data(), TrainConfig(steps=5, batch_size=16, eval_every=5, progress=False))
    trainer.train_step()
    model.eval()
    trainer.train_step()
    assert all(m.training for m in model.modules())
    inner = next(m for m in model.modules() if isinstance(m, scnf.bijectors.ActNorm))
    inner.eval()
    trainer.train_step()
    assert inner.training


def test_sampler_mixes_labelled_share_and_covers_unlabelled_once_per_epoch():
    y = torch.full((100,), -1)
    y[:10] = torch.arange(10) % 2
    s = MixedBatchSampler(y, 30, 1 / 3, seed=0)
    seen = []
    for _ in range(9):  # 9 batches x 20 unlabelled = 180 = 2 epochs of 90
        b = s.next()
        assert (y[b[:10]] >= 0).all() and (y[b[10:]] < 0).all()
        seen += b[10:].tolist()
    assert sorted(seen[:90]) == list(range(10, 100)) and sorted(seen[90:]) == list(range(10, 100))


def test_em_sgd_gradient_equals_sgd_gradient_at_theta_old():
    """Appendix B: one M-step gradient on E_q log p(x,y) with q = p_old(y|x) equals the
    gradient of log p(x) at theta_old (Fisher's identity)."""
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
    data = _data()
    model.log_joint(data.x)  # init ActNorm
    grads = {}
    for opt in ("sgd", "em-sgd"):
        model.zero_grad()
        loss, _ = objective(model, data.x, data.y, TrainConfig(optimisation=opt))
        loss.backward()
        grads[opt] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(grads["sgd"], grads["em-sgd"], atol=1e-5)


def test_classification_loss_adds_cross_entropy():
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8).eval()
    data = _data()
    l0, _ = objective(model, data.x, data.y, TrainConfig(clf_weight=0.0))
    l1, st = objective(model, data.x, data.y, TrainConfig(clf_weight=2.0))
    lj = model.log_joint(data.x[:6])
    ce = torch.nn.functional.cross_entropy(lj, data.y[:6])
    assert torch.allclose(l1 - l0, 2 * ce, atol=1e-5)


def test_gmm_with_class_aware_init_trains():
    cfg = _toy_cfg(steps=20, eval_every=20)
    cfg.model.conditional = "gmm"
    cfg.model.init_from_labels = True
    from scnf.data.load import build_data
    from scnf.runs.run import build_model
    from scnf.models.flow import class_aware_init

    data, _ = build_data(cfg)
    model = build_model(cfg, data)
    x, y = data.x[:128], data.y[:128]
    y = torch.full_like(y, -1)
    y[:4] = torch.tensor([0, 0, 1, 1])
    class_aware_init(model, x, y)
    z, _ = model.unconditional(x[:4])
    assert torch.allclose(model.latent_prior.loc[0], z[:2].mean(0), atol=1e-5)


def test_class_affine_h_is_initialised_from_labelled_means():
    from scnf.bijectors import ConditionalActNorm
    from scnf.models.flow import class_aware_init

    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=2, hidden=16, h_blocks=2, h_hidden=16, h_class_affine=True)
    x = torch.cat([torch.randn(64, 2) + torch.tensor([-3.0, 1.0]), torch.randn(64, 2) + torch.tensor([3.0, 0.0])])
    y = torch.full((128,), -1)
    y[:3], y[64:67] = 0, 1
    class_aware_init(model, x, y)
    first = model.conditional[0]
    assert isinstance(first, ConditionalActNorm)
    lab = y >= 0
    z, _ = model.unconditional(x[lab])
    assert torch.allclose(first.bias[0], -z[:3].mean(0), atol=1e-5)
    assert torch.allclose(first.bias[1], -z[3:].mean(0), atol=1e-5)
    # from the first step h separates the two blobs by their labelled class means
    truth = (torch.arange(128) >= 64).long()
    assert (model.log_joint(x).argmax(1) == truth).float().mean() > 0.9


def test_one_training_step_of_the_full_appendix_e_model():
    torch.manual_seed(0)
    model = scnf.mnist_scnf()
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    y = torch.tensor([3, -1, -1, 7])
    data = SemiSupervisedData(x, y, images=True)
    trainer = Trainer(model, data, TrainConfig(steps=1, batch_size=4, eval_every=1, progress=False))
    stats = trainer.train_step()
    assert math.isfinite(stats["loss"]) and not stats["skipped"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_ode_solver_failure_stops_the_run_and_keeps_the_checkpoint(tmp_path):
    from scnf.bijectors import ODESolverError

    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, unconditional="ffjord", hidden=8, h_blocks=1, h_hidden=8)
    cfg = TrainConfig(steps=10, batch_size=16, eval_every=10, checkpoint_every=2, progress=False)
    trainer = Trainer(model, _data(), cfg, run_dir=tmp_path)
    orig = model.log_joint
    calls = {"n": 0}

    def stiff(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise ODESolverError("ODE solver step size underflow (stiff dynamics) in FFJORD")
        return orig(x)

    model.log_joint = stiff
    with pytest.raises(TrainingFailed, match="underflow.*last good checkpoint is") as e:
        trainer.fit()
    assert isinstance(e.value.__cause__, ODESolverError)
    assert e.value.checkpoint == tmp_path / "checkpoint.pt" and e.value.step == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_shift_images_translates_only_the_selected_rows():
    from scnf.data.batches import shift_images

    x = torch.zeros(6, 1, 12, 12, dtype=torch.uint8)
    x[:, :, 5, 6] = 200  # one bright pixel at (5, 6)
    rows = torch.tensor([True, False, True, True, False, True])
    g = torch.Generator().manual_seed(0)
    out = shift_images(x, rows, 2, g)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert torch.equal(out[~rows], x[~rows])  # unlabelled rows untouched
    assert torch.equal(x[:, :, 5, 6], torch.full((6, 1), 200, dtype=torch.uint8))  # input not modified
    moved = 0
    for i in torch.nonzero(rows).flatten():
        (r, c), = torch.nonzero(out[i, 0]).tolist()  # the pixel survives, displaced by at most 2
        assert abs(r - 5) <= 2 and abs(c - 6) <= 2
        moved += (r, c) != (5, 6)
    assert moved > 0
    # the same generator state draws the same shifts; max_shift 0 is the identity
    assert torch.equal(out, shift_images(x, rows, 2, torch.Generator().manual_seed(0)))
    assert torch.equal(shift_images(x, rows, 0, g), x)
    with pytest.raises(ValueError, match="max_shift"):
        shift_images(x, rows, -1, g)


def test_augment_shift_changes_labelled_rows_of_image_batches_only():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    y = torch.full((40,), -1)
    y[:10] = torch.arange(10) % 2
    data = SemiSupervisedData(x, y, images=True)
    model = scnf.vector_scnf(dim=64, num_classes=2, blocks=1, hidden=8, h_blocks=1, h_hidden=8)
    cfg = TrainConfig(steps=1, batch_size=16, labelled_share=0.5, augment_shift=3, progress=False)
    trainer = Trainer(model, data, cfg, seed=0)
    idx = torch.from_numpy(MixedBatchSampler(data.y, 16, 0.5, 0).next())
    xb, yb = trainer._draw_batch()
    plain = x[idx].float() / 255.0
    lab = yb >= 0
    # dequantisation adds less than 1/256 to each pixel; a shifted labelled image differs by more
    assert ((xb[~lab] - plain[~lab]).abs().amax() < 1 / 255)
    assert ((xb[lab] - plain[lab]).abs().flatten(1).amax(1) > 0.1).any()


def test_consistency_term_adds_the_kl_to_the_second_views_posterior():
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8).eval()
    with torch.no_grad():  # away from the zero-initialised (label-blind) start
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    data = _data()
    unl = data.y < 0
    view = data.x[unl] + 0.3  # any second view of the unlabelled rows
    cfg = TrainConfig(consistency_weight=3.0, consistency_temperature=0.5)
    l0, _ = objective(model, data.x, data.y, TrainConfig())
    l1, st = objective(model, data.x, data.y, cfg, view=view)
    target = torch.softmax(model.log_joint(view) / 0.5, 1)
    post = torch.softmax(model.log_joint(data.x[unl]), 1)
    kl = (target * (target.log() - post.log())).sum(1).mean()
    assert kl > 1e-4
    assert torch.allclose(l1 - l0, 3 * kl, atol=1e-5)
    assert st["consistency"] == pytest.approx(float(kl.detach()), rel=1e-4)
    # the view of the same rows gives KL 0 at temperature 1
    l2, st2 = objective(model, data.x, data.y, TrainConfig(consistency_weight=3.0), view=data.x[unl])
    assert torch.allclose(l2, l0, atol=1e-5) and abs(st2["consistency"]) < 1e-5
    with pytest.raises(ValueError, match="one posterior per unlabelled row"):
        objective(model, data.x, data.y, cfg, view=view[:2])


def test_consistency_training_steps_on_images_and_refuses_vectors():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    y = torch.full((40,), -1)
    y[:10] = torch.arange(10)
    model = scnf.mnist_scnf(hidden=4, blocks=1, h_hidden=8, h_blocks=1)
    cfg = TrainConfig(steps=2, batch_size=8, labelled_share=0.5, augment_shift=2, consistency_weight=5.0,
                      progress=False)
    trainer = Trainer(model, SemiSupervisedData(x, y, images=True), cfg, seed=0)
    xb, yb, view = trainer._batch()
    assert view.shape == xb[yb < 0].shape
    stats = trainer.train_step()
    assert math.isfinite(stats["loss"]) and stats["consistency"] >= 0 and not stats["skipped"]
    with pytest.raises(ValueError, match="consistency_weight needs image data"):
        Trainer(scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8), _data(), cfg, seed=0)


@pytest.mark.parametrize("opt,clf,cons", [("sgd", 0.0, 0.0), ("em-sgd", 2.0, 0.0), ("sgd", 2.0, 3.0)])
def test_micro_batches_give_the_whole_batch_gradient(opt, clf, cons):
    torch.manual_seed(0)
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    data = _data(30)
    x, y = data.x.double(), data.y.clone()
    y[[7, 20]] = torch.tensor([1, 0])  # labelled rows in several chunks
    view = x[y < 0] + 0.2 if cons else None
    cfg = TrainConfig(optimisation=opt, clf_weight=clf, consistency_weight=cons, augment_shift=1)
    grads, out = {}, {}
    for mb in (0, 7):  # 7: chunks of 7, 7, 7, 7, 2 rows
        fresh = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8).double()
        fresh.load_state_dict(model.state_dict())  # ActNorms uninitialised: initialised on the whole batch
        cfg.micro_batch = mb
        loss, stats, ok = scnf.training.trainer.backward_objective(fresh.train(), x, y, cfg, view=view)
        assert ok
        grads[mb] = torch.cat([p.grad.flatten() for p in fresh.parameters() if p.grad is not None])
        out[mb] = (loss, stats)
    assert torch.allclose(grads[0], grads[7], rtol=1e-9, atol=1e-10)
    assert out[7][0] == pytest.approx(out[0][0], rel=1e-10)
    for k in ("nll", "clf", "consistency", "labelled_acc"):
        assert out[7][1][k] == pytest.approx(out[0][1][k], rel=1e-9, abs=1e-12), k


def test_micro_batch_stops_at_a_non_finite_chunk():
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8).train()
    data = _data(20)
    real = model.log_joint
    calls = []

    def log_joint(x):  # the second chunk's log-density overflows
        calls.append(x.shape[0])
        lj = real(x)
        return lj + float("inf") if len(calls) == 3 else lj  # call 1: ActNorm init on the whole batch

    model.log_joint = log_joint
    loss, stats, ok = scnf.training.trainer.backward_objective(model, data.x, data.y, TrainConfig(micro_batch=8))
    assert not ok and not math.isfinite(loss) and calls == [20, 8, 8]


def test_trainer_with_micro_batches_takes_the_same_steps():
    losses = {}
    for mb in (0, 10):
        torch.manual_seed(0)
        model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
        cfg = TrainConfig(steps=4, batch_size=32, clf_weight=1.0, micro_batch=mb, progress=False)
        trainer = Trainer(model, _data(), cfg, seed=0)
        losses[mb] = [trainer.train_step()["loss"] for _ in range(4)]
    # the same batches and (up to float32 summation order) the same updates; parameters are not
    # compared: Adamax's first step is lr * sign(g), which rounding flips where g is ~0 (the
    # exact gradient equality is checked in float64 above)
    assert losses[0] == pytest.approx(losses[10], rel=1e-3)
    assert losses[0][-1] < losses[0][0]


def test_training_data_with_nan_is_refused_up_front():
    """Before any step (the compiled forward skips the model's own finiteness check)."""
    x = torch.randn(20, 2)
    x[7, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(rows \[7\]\)"):
        SemiSupervisedData(x, torch.zeros(20, dtype=torch.long))
