"""Training options for short budgets: pseudo-labels, a weight average, a validation split
carved from the training images, a wall-time limit, and the learning curve."""
import json

import numpy as np
import pytest
import torch

import scnf
from scnf.config import ConfigError, TrainConfig, from_dict
from scnf.data.load import build_data
from scnf.runs.run import load_run, run
from scnf.training.trainer import Trainer
from scnf.training.averaging import WeightAverage
from scnf.models.loss import loss_terms
from tests.helpers import StopTraining, stop_at
from tests.helpers import toy_data as _data


def _lj():
    torch.manual_seed(0)
    lj = torch.randn(8, 3) * 3
    lj[5] = torch.tensor([0.0, 4.0, 0.0])  # a row that is confidently class 1 (p = 0.965)
    y = torch.tensor([0, 2, -1, -1, -1, -1, -1, -1])
    return lj, y


def test_pseudo_labels_add_the_confident_rows_cross_entropy():
    lj, y = _lj()
    base = TrainConfig(clf_weight=0.0)
    cfg = TrainConfig(clf_weight=0.0, pseudo_threshold=0.9, pseudo_weight=2.5)
    l0 = loss_terms(lj, y, base)[0]
    l1 = loss_terms(lj, y, cfg, pseudo=True)[0]
    q = torch.softmax(lj[2:], 1)
    sure = q.max(1).values >= 0.9
    assert 0 < int(sure.sum()) < 6  # some rows, not all
    # by hand: cross-entropy of the confident unlabelled rows against their argmax, per unlabelled row
    ce = -(torch.log_softmax(lj[2:][sure], 1).gather(1, q.argmax(1)[sure][:, None])).sum()
    assert float(l1 - l0) == pytest.approx(2.5 * float(ce) / 6, rel=1e-5)
    # off before pseudo_start (pseudo=False) and for a threshold no row reaches
    assert float(loss_terms(lj, y, cfg, pseudo=False)[0]) == pytest.approx(float(l0))
    lj2 = lj.clone()
    lj2[5] = 0.0
    strict = TrainConfig(pseudo_threshold=0.9999, pseudo_weight=1.0)
    assert float(loss_terms(lj2, y, strict, pseudo=True)[0]) == pytest.approx(float(loss_terms(lj2, y, base)[0]))


def test_pseudo_label_gradient_raises_the_chosen_class():
    lj, y = _lj()
    lj.requires_grad_(True)
    cfg = TrainConfig(pseudo_threshold=0.9, pseudo_weight=1.0)
    (loss_terms(lj, y, cfg, pseudo=True)[0] - loss_terms(lj, y, TrainConfig())[0]).backward()
    g = lj.grad[5]
    # d CE / d logits = softmax - onehot(argmax): sums to 0 and pushes the chosen class up
    assert float(g.sum()) == pytest.approx(0.0, abs=1e-6) and g[1] < 0


def test_pseudo_keys_are_validated():
    with pytest.raises(ConfigError, match="pseudo_threshold.*pseudo_weight"):
        from_dict({"train": {"pseudo_threshold": 0.9}})
    with pytest.raises(ConfigError, match="pseudo_threshold"):
        from_dict({"train": {"pseudo_threshold": 1.5, "pseudo_weight": 1.0}})
    with pytest.raises(ConfigError, match="ema_decay"):
        from_dict({"train": {"ema_decay": 1.0}})


def test_weight_average_by_hand_and_restores_the_model():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = WeightAverage(lin, decay=0.9)
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update(lin)  # decay min(0.9, 1/10) = 0.1: 0.1 * 1 + 0.9 * 3
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 2.8))
    ema.update(lin)  # decay 2/11
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 2 / 11 * 2.8 + 9 / 11 * 3.0))
    with ema.applied(lin):
        assert torch.allclose(lin.weight, ema.shadow["weight"])
    assert torch.all(lin.weight == 3.0)


def test_ema_and_pseudo_labels_resume_exactly(tmp_path):
    def trainer(run_dir, callback=None):
        torch.manual_seed(0)
        model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
        cfg = TrainConfig(steps=8, batch_size=16, eval_every=4, checkpoint_every=4, ema_decay=0.9,
                          pseudo_threshold=0.6, pseudo_weight=1.0, pseudo_start=2, progress=False)
        return Trainer(model, _data(), cfg, seed=0, run_dir=run_dir, callback=callback)

    full = trainer(tmp_path / "a")
    full.fit()
    with pytest.raises(StopTraining):
        trainer(tmp_path / "b", stop_at(4)).fit()
    resumed = trainer(tmp_path / "b")
    assert resumed.resume()
    resumed.fit()
    for k, v in full.ema.shadow.items():
        assert torch.equal(v, resumed.ema.shadow[k]), k
    assert full.last_eval == resumed.last_eval
    # evaluation uses the average, not the raw weights
    raw = scnf.training.evaluation.evaluate(full.model, full.data, full.data.x_test, full.data.y_test)
    assert raw["nll"] != full.last_eval["nll"]


def test_max_seconds_stops_early_with_a_final_evaluation(tmp_path):
    model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
    cfg = TrainConfig(steps=10_000, batch_size=16, eval_every=10_000, checkpoint_every=10_000, max_seconds=1e-9,
                      progress=False)
    t = Trainer(model, _data(), cfg, seed=0, run_dir=tmp_path)
    out = t.fit()
    assert t.step == 1 and "error_pct" in out and (tmp_path / "checkpoint.pt").exists()
    assert [r["step"] for r in t.history] == [1]


def _image_cfg(data_dir, **train):
    t = {"steps": 3, "batch_size": 8, "eval_every": 3, "checkpoint_every": 3, "progress": False, "ema_decay": 0.5}
    t.update(train)
    return from_dict({"data": {"dataset": "fashion-mnist", "n_labelled": 10, "n_validation": 20,
                               "data_dir": str(data_dir)},
                      "model": {"hidden": 4, "blocks": 1, "h_hidden": 8, "h_blocks": 1}, "train": t})


def test_validation_split_is_held_out_and_logged(tiny_images, tmp_path):
    data_dir, tx = tiny_images
    cfg = _image_cfg(data_dir)
    data, raw = build_data(cfg)
    val, lab = raw["validation_indices"], raw["labelled_indices"]
    assert len(val) == 20 and not set(val) & set(lab)
    assert data.x.shape[0] == 40 and data.x_val.shape[0] == 20
    # no validation image is among the training rows
    train_rows = {bytes(r.numpy().tobytes()) for r in data.x}
    assert not any(bytes(tx[i].tobytes()) in train_rows for i in val)
    # the same split for the same seed, another for another seed
    assert np.array_equal(build_data(cfg)[1]["validation_indices"], val)
    m = run(cfg, tmp_path / "r")
    assert {"val_error_pct", "val_bits_per_dim", "error_pct", "bits_per_dim"} <= set(m)
    rec = json.loads((tmp_path / "r" / "log.jsonl").read_text().splitlines()[-1])
    assert "val_error_pct" in rec and "test_error_pct" in rec
    assert (tmp_path / "r" / "curve.png").stat().st_size > 1000
    # a run with a weight average is re-evaluated with it
    _, model, d, _ = load_run(tmp_path / "r")
    again = scnf.training.evaluation.evaluate(model, d, d.x_test, d.y_test)
    assert again["nll"] == pytest.approx(m["nll"], rel=1e-6)


def test_validation_larger_than_the_pool_is_refused(tiny_images):
    data_dir, _ = tiny_images
    cfg = _image_cfg(data_dir)
    cfg.data.n_validation = 51  # 60 training images, 10 labelled: 50 can be held out
    with pytest.raises(ValueError, match="n_validation = 51 exceeds the 50"):
        build_data(cfg)


def test_input_noise_perturbs_vector_training_rows_only():
    """train.input_noise: training batches of vectors get N(0, input_noise^2) noise (rows drawn
    by the sampler, then perturbed); 0 leaves them as they are; image batches are unchanged."""
    from scnf.data.batches import MixedBatchSampler, SemiSupervisedData
    torch.manual_seed(0)
    x = torch.randn(600, 4)
    y = torch.full((600,), -1)
    y[:20] = torch.arange(20) % 2
    data = SemiSupervisedData(x, y)
    model = scnf.vector_scnf(4, 2, blocks=1, hidden=8, h_blocks=1, h_hidden=8)
    for std in (0.0, 0.5):
        cfg = TrainConfig(steps=1, batch_size=512, input_noise=std, progress=False)
        idx = torch.from_numpy(MixedBatchSampler(data.y, 512, cfg.labelled_share, 0).next())
        xb, yb = Trainer(model, data, cfg, seed=0)._draw_batch()
        assert torch.equal(yb, y[idx])
        diff = xb - x[idx]
        if std == 0:
            assert torch.equal(diff, torch.zeros_like(diff))
        else:
            assert float(diff.std()) == pytest.approx(std, rel=0.05) and abs(float(diff.mean())) < 0.02
            # redrawn every step: the next batch's noise is new, not the first batch's again
            sampler = MixedBatchSampler(data.y, 512, cfg.labelled_share, 0)
            tr = Trainer(model, data, cfg, seed=0)
            noises = []
            for _ in range(2):
                idx_k = torch.from_numpy(sampler.next())
                xb_k, _ = tr._draw_batch()
                noises.append(xb_k - x[idx_k])
            assert torch.equal(noises[0], diff)
            assert float((noises[0] - noises[1]).abs().max()) > 0.1 * std  # one draw reused: ~1e-7 (rounding)
    imgs = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    img_data = SemiSupervisedData(imgs, y[:40], images=True)
    cfg = TrainConfig(steps=1, batch_size=16, input_noise=0.5, progress=False)
    img_model = scnf.vector_scnf(16, 2, blocks=1, hidden=8, h_blocks=1, h_hidden=8)
    idx = torch.from_numpy(MixedBatchSampler(img_data.y, 16, cfg.labelled_share, 0).next())
    xb, _ = Trainer(img_model, img_data, cfg, seed=0)._draw_batch()
    assert float((xb - imgs[idx].float() / 255.0).abs().amax()) < 1 / 255  # dequantisation only
    with pytest.raises(ConfigError, match="input_noise"):
        from_dict({"train": {"input_noise": -0.1}})
