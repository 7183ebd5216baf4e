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


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    """Bins are (lo, hi]: with 4 bins, confidence 0.75 is in (0.5, 0.75], not (0.75, 1].
    Rows: 0.75 right, 0.75 wrong -> |0.5 - 0.75| * 2/4; 1.0 right, 0.8 right -> |1 - 0.9| * 2/4."""
    p = np.array([[0.75, 0.25], [0.25, 0.75], [0.0, 1.0], [0.8, 0.2]])
    y = np.array([0, 0, 1, 0])
    r = reliability(p, y, bins=4)
    assert r["count"].tolist() == [0, 0, 2, 2]
    assert abs(r["ece"] - (0.25 * 2 + 0.1 * 2) / 4) < 1e-15  # 0.175; 0.075 with [lo, hi) bins
    # the default 15 bins: a confidence equal to the edge 10/15 (as linspace gives it) is in bin 9
    edge = np.linspace(0.0, 1.0, 16)[10]
    r15 = reliability(np.array([[edge, 1 - edge], [1 - edge, edge]]), np.array([0, 0]))
    assert np.flatnonzero(r15["count"]).tolist() == [9] and r15["count"][9] == 2


def test_the_default_is_15_bins():
    """0.62 and 0.68 share a bin of 10 ((0.6, 0.7]) but not of 15 ((0.6, 0.667] and (0.667, 0.733]).
    15 bins: (|1 - 0.62| + |0 - 0.68|) / 2 = 53 %; 10 bins would give |0.5 - 0.65| = 15 %."""
    p = np.array([[0.62, 0.38], [0.32, 0.68]])
    y = np.array([0, 0])
    assert abs(expected_calibration_error(p, y) - 53.0) < 1e-12
    r = reliability(p, y)
    assert len(r["count"]) == 15 and abs(r["ece"] - 0.53) < 1e-15
    assert abs(expected_calibration_error(p, y, bins=10) - 15.0) < 1e-12


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
                     "train": {"steps": 4, "batch_size": 32, "eval_every": 4, "checkpoint_every": 4,
                               "progress": False}})
    m = run(cfg, tmp_path / "r")
    out = evaluate_run(tmp_path / "r")
    assert out["error_pct"] == m["error_pct"]
    # the ECE of the run's test posteriors, binned by hand: 15 bins (lo, hi]
    import torch
    from scnf.runs.run import load_run

    _, model, data, _ = load_run(tmp_path / "r")
    with torch.no_grad():
        p = torch.softmax(model.log_joint(data.x_test.float()).double(), 1).numpy()
    y = data.y_test.numpy()
    conf, right = p.max(1), p.argmax(1) == y
    assert 100.0 * (~right).mean() == pytest.approx(out["error_pct"], abs=1e-9)
    ece = 0.0
    for k in range(15):
        inside = (conf > k / 15) & (conf <= (k + 1) / 15)
        if inside.any():
            ece += inside.mean() * abs(right[inside].mean() - conf[inside].mean())
    # float32 log-joints in other batches: confidences agree to ~1e-6, the ECE (in %) to ~1e-4
    assert out["ece_pct"] == pytest.approx(100.0 * ece, abs=1e-3)
    png = (tmp_path / "r" / "reliability.png").read_bytes()
    assert out["reliability_diagram"] == str(tmp_path / "r" / "reliability.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_scnf_evaluate_fits_a_temperature_on_the_validation_rows_only(tmp_path, monkeypatch):
    """With labelled validation rows held out (data.n_validation), evaluate fits T on them
    (the same T as fitting by hand on their posteriors) and reports the test ECE after it."""
    import numpy as np
    import torch

    import scnf.runs.run
    from scnf.runs.calibration import fit_temperature
    from scnf.config import from_dict
    from scnf.runs.run import evaluate_run, load_run, run
    from scnf.training.evaluation import evaluate
    from tests.helpers import TINY, fake_load_dataset

    monkeypatch.setattr(scnf.data.load, "load_dataset", fake_load_dataset)
    threads = torch.get_num_threads()
    cfg = from_dict({**TINY, "data": {**TINY["data"], "n_validation": 60},
                     "train": {**TINY["train"], "steps": 10, "eval_every": 10, "checkpoint_every": 10}})
    run(cfg, tmp_path / "r")
    torch.set_num_threads(threads)
    out = evaluate_run(tmp_path / "r")
    _, model, data, _ = load_run(tmp_path / "r")
    val: list = []
    evaluate(model, data, data.x_val, data.y_val, probs_out=val)
    from scnf.runs.run import TEMPERATURE_RANGE, temperature_report

    test: list = []
    evaluate(model, data, data.x_test, data.y_test, probs_out=test)
    by_hand = temperature_report(np.log(torch.cat(val).numpy().clip(1e-300)), data.y_val.numpy(),
                                 torch.cat(test).numpy(), data.y_test.numpy())
    assert {k: out[k] for k in by_hand} == by_hand  # the validation rows' fit, whichever way it ended
    want = fit_temperature(np.log(torch.cat(val).numpy().clip(1e-300)), data.y_val.numpy(), *TEMPERATURE_RANGE)
    at_bound = [b for b in TEMPERATURE_RANGE if abs(np.log(want) - np.log(b)) < 1e-3]
    if not at_bound:
        assert out["temperature"] == want
    else:  # this tiny run's fit ends at a bound (as it does here): no temperature is claimed
        assert out["temperature"] is None and out["temperature_at_bound"] == at_bound[0]
        assert "no temperature fitted" in out["temperature_note"]


def test_a_temperature_inside_its_range_is_fitted_and_applied_to_the_test_rows():
    """Posteriors twice as sharp as the labels' own distribution: T comes out near 2, and the
    test ECE is that of softmax(log p / T)."""
    import numpy as np

    from scnf.runs.calibration import expected_calibration_error, temperature_scale
    from scnf.runs.run import temperature_report

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true_p])
    sharp = 2 * logits
    log_probs = sharp - np.log(np.exp(sharp).sum(1, keepdims=True))
    out = temperature_report(log_probs[:2000], y[:2000], np.exp(log_probs[2000:]), y[2000:])
    assert abs(out["temperature"] - 2.0) < 0.15
    assert out["ece_pct_temperature"] == expected_calibration_error(
        temperature_scale(np.exp(log_probs[2000:]), out["temperature"]), y[2000:])
    assert out["ece_pct_temperature"] < expected_calibration_error(np.exp(log_probs[2000:]), y[2000:]) / 3
