"""report.md and curve.png state the run's own facts: labelled rows counted from the data read,
D from the data's shape, the notes of the model kind that ran, and a curve with too few points
says so."""
import numpy as np
import pytest

from scnf.config import from_dict
from scnf.runs.run import run
from tests.helpers import TINY_IMAGE_FLOW, TINY_TRAIN


def _images_npz(path, per_class=(15, 8, 7), shape=(3, 8, 8), n_unlabelled=10, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, k) for k, n in enumerate(per_class)] + [np.full(n_unlabelled, -1)])
    x = rng.integers(0, 255, size=(len(y), *shape), dtype=np.uint8)
    xt = rng.integers(0, 255, size=(6, *shape), dtype=np.uint8)
    np.savez(path, x=x, y=y, x_test=xt, y_test=np.arange(6) % len(per_class))


def test_an_own_image_run_reports_its_labelled_rows_its_d_and_no_vae_notes(tmp_path):
    _images_npz(tmp_path / "img.npz")
    m = run(from_dict({"data": {"dataset": "npz", "path": str(tmp_path / "img.npz")}, "model": TINY_IMAGE_FLOW,
                       "train": TINY_TRAIN}), tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "30 labelled rows (0: 15, 1: 8, 2: 7)" in text and "10 labelled rows" not in text
    assert "D = 3x8x8 = 192" in text and "784" not in text
    assert "VAE" not in text and "bits_per_dim_binarised" not in text
    assert m["bits_per_dim"] == pytest.approx(8.0 + m["nll"] / (192 * np.log(2.0)), rel=1e-9)  # the D it states
    # one evaluation (eval_every = steps): the report and the figure say it is a point, not a curve
    assert "curve.png: one evaluation (step 4), drawn as a point" in text


def test_a_vae_run_explains_its_bound_with_its_d(tmp_path):
    _images_npz(tmp_path / "img.npz", per_class=(5, 5), shape=(1, 8, 8))
    run(from_dict({"data": {"dataset": "npz", "path": str(tmp_path / "img.npz"), "n_validation": 2},
                   "model": {"kind": "m2", "m2_hidden": 8, "m2_latent": 2},
                   "train": {**TINY_TRAIN, "optimizer": "adam", "alpha": 0.1}}), tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "the VAE's bound" in text and "D = 1x8x8 = 64" in text
    assert "10 labelled rows (0: 5, 1: 5), 2 of them held out for validation" in text
    assert "val_*: the same on the labelled rows held out of training" in text


def test_a_curve_of_one_evaluation_is_drawn_as_a_marked_point_with_a_note(tmp_path, monkeypatch):
    from scnf.runs import plots

    figs = []
    monkeypatch.setattr(plots.plt, "close", figs.append)
    history = [{"step": 4, "seconds": 1.0, "test_error_pct": 50.0, "test_bits_per_dim": 8.2}]
    plots.learning_curve(history, tmp_path / "curve.png")
    (fig,) = figs
    line = fig.axes[0].lines[0]
    assert line.get_marker() == "s" and line.get_markersize() >= 8
    assert any("one evaluation (step 4)" in t.get_text() for t in fig.texts)
    assert plots.curve_note(history + [{**history[0], "step": 8, "seconds": 2.0}]) is None


@pytest.mark.parametrize("evaluate_on", ["test", "validation"])
def test_a_toy_run_names_the_points_its_error_is_on(tmp_path, evaluate_on):
    """--evaluate-on validation: report.md and the decision-boundary title say validation, not test."""
    from scnf.runs.report import metric_notes, _scored_on
    from scnf.runs.reproduce import toy_config
    cfg = toy_config("moons", "glow", "gmm", 0, steps=1, evaluate_on=evaluate_on)
    assert _scored_on(cfg) == evaluate_on
    from scnf.data.batches import SemiSupervisedData
    import torch
    notes = metric_notes(cfg, {"error_pct": 1.0, "nll": 1.0}, SemiSupervisedData(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))
    other = "test" if evaluate_on == "validation" else "validation"
    assert f"error_pct: {evaluate_on} error" in notes and f"over the {evaluate_on} objects" in notes
    assert f"{other} error" not in notes
