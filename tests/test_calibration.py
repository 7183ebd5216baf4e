"""Calibration (scnf.runs.calibration): ECE on cases with known answers, the reliability diagram,
temperature scaling, and `scnf evaluate` reporting them."""
import numpy as np
import pytest

from scnf.runs.calibration import expected_calibration_error, fit_temperature, reliability, reliability_diagram


def _synthetic(n=200_000, k=4, sharpen=1.0, seed=0):
    """Rows with a true posterior p (random logits) and labels drawn from it; the model's
    probabilities are p itself (sharpen = 1: calibrated) or p**sharpen renormalised."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1)
    q = p ** sharpen
    return q / q.sum(1, keepdims=True), y, logits


def test_a_calibrated_posterior_has_ece_near_zero_and_a_sharpened_one_does_not():
    p, y, _ = _synthetic()
    assert expected_calibration_error(p, y) < 0.5  # sampling noise of 200,000 rows: ~0.1 %
    over, y2, _ = _synthetic(sharpen=3.0)
    assert expected_calibration_error(over, y2) > 5.0
    under, y3, _ = _synthetic(sharpen=0.3)
    assert expected_calibration_error(under, y3) > 5.0


def test_ece_by_hand():
    # bin (0.6, 0.667]: rows 0, 1 (conf 0.62, 0.65; one right) -> |0.5 - 0.635| * 2/4
    # bin (0.933, 1]: rows 2, 3 (conf 0.95, 1.0; both right) -> |1 - 0.975| * 2/4
    p = np.array([[0.62, 0.38], [0.35, 0.65], [0.95, 0.05], [0.0, 1.0]])
    y = np.array([0, 0, 0, 1])
    want = (abs(0.5 - 0.635) * 2 + abs(1.0 - 0.975) * 2) / 4
    assert abs(reliability(p, y)["ece"] - want) < 1e-12
    assert reliability(p, y)["count"].sum() == 4


@pytest.mark.parametrize("probs, y, match", [
    (np.ones((3, 2)), np.zeros(3, int), "summing to 1"),
    (np.full((3, 2), 0.5), np.zeros(2, int), "one label per row"),
    (np.full((3, 2), 0.5), np.array([0, 1, 2]), "class indices"),
    (np.full((3,), 0.5), np.zeros(3, int), "rows, classes"),
])
def test_bad_input_is_a_value_error(probs, y, match):
    with pytest.raises(ValueError, match=match):
        expected_calibration_error(probs, y)


def test_temperature_scaling_undoes_a_known_sharpening(tmp_path):
    """Probabilities p**3 are softmax(3 log p): the fitted temperature is ~3 and brings ECE back near 0."""
    p, y, _ = _synthetic(n=50_000, seed=1)
    lp = 3.0 * np.log(p)
    t = fit_temperature(lp, y)
    assert abs(t - 3.0) < 0.15, t
    z = lp / t
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    assert expected_calibration_error(q, y) < 1.0
    path = reliability_diagram(q, y, tmp_path / "r.png", title="test")
    assert path.exists() and path.stat().st_size > 1000


def test_scnf_evaluate_reports_ece_and_writes_the_diagram(tmp_path):
    from scnf.config import from_dict
    from scnf.runs.run import evaluate_run, run

    cfg = from_dict({"data": {"dataset": "moons", "n_train": 200, "n_test": 200},
                     "model": {"blocks": 1, "hidden": 8, "h_blocks": 1, "h_hidden": 8},
                     "train": {"steps": 20, "batch_size": 32, "eval_every": 20, "checkpoint_every": 20,
                               "progress": False}})
    m = run(cfg, tmp_path / "r")
    out = evaluate_run(tmp_path / "r")
    assert out["error_pct"] == m["error_pct"] and 0 <= out["ece_pct"] <= 100
    assert (tmp_path / "r" / "reliability.png").exists()


def test_scnf_evaluate_fits_a_temperature_on_the_validation_rows_only(tmp_path, monkeypatch):
    """With labelled validation rows held out (data.n_validation), evaluate fits T on them
    (the same T as fitting by hand on their posteriors) and reports the test ECE after it."""
    import numpy as np
    import torch

    import scnf.runs.run
    from scnf.runs.calibration import expected_calibration_error, fit_temperature
    from scnf.config import from_dict
    from scnf.runs.run import evaluate_run, load_run, run
    from scnf.training.evaluation import evaluate
    from tests.analysis.test_analysis import TINY, fake_load_dataset

    monkeypatch.setattr(scnf.runs.run, "load_dataset", fake_load_dataset)
    threads = torch.get_num_threads()
    cfg = from_dict({**TINY, "data": {**TINY["data"], "n_validation": 60},
                     "train": {**TINY["train"], "steps": 10, "eval_every": 10, "checkpoint_every": 10}})
    run(cfg, tmp_path / "r")
    torch.set_num_threads(threads)
    out = evaluate_run(tmp_path / "r")
    _, model, data, _ = load_run(tmp_path / "r")
    val: list = []
    evaluate(model, data, data.x_val, data.y_val, probs_out=val)
    want = fit_temperature(np.log(torch.cat(val).numpy().clip(1e-300)), data.y_val.numpy())
    assert out["temperature"] == want
    test: list = []
    evaluate(model, data, data.x_test, data.y_test, probs_out=test)
    lp = np.log(torch.cat(test).numpy().clip(1e-300)) / want
    q = np.exp(lp - lp.max(1, keepdims=True))
    assert out["ece_pct_temperature"] == expected_calibration_error(q / q.sum(1, keepdims=True), data.y_test.numpy())
    assert out["ece_pct_temperature"] != out["ece_pct"]
