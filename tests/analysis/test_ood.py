"""scnf.analysis.ood: each score on a case with a known answer, and scnf ood end to end on a tiny run."""
import json

import numpy as np
import pytest
import torch

import scnf.data.images
import scnf.runs.run
from scnf.cli import main
from scnf.config import from_dict
from scnf.analysis.ood import auroc, fpr_at_tpr, png_bits, run_ood, scores_of

from tests.helpers import TINY, fake_load_dataset


def test_auroc_and_fpr_on_known_cases():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 500), rng.normal(0, 1, 500)
    assert abs(auroc(a, b) - 0.5) < 0.05                     # the same distribution: chance
    assert auroc(a, b + 10) == 1.0 and fpr_at_tpr(a, b + 10) == 0.0   # separated: perfect
    assert auroc(a + 10, b) == 0.0 and fpr_at_tpr(a + 10, b) == 1.0   # reversed: always wrong
    # FPR at 95 % TPR of N(0,1) against N(2,1): the first point of the ROC curve with TPR >= 0.95
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(500), np.ones(500)], np.r_[a, b + 2], drop_intermediate=False)
    assert fpr_at_tpr(a, b + 2) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    assert 0.2 < fpr_at_tpr(a, b + 2) < 0.5


def test_png_length_measures_complexity():
    rng = np.random.default_rng(0)
    flat = np.full((3, 28, 28), 7, np.uint8)
    noise = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    lf, ln = png_bits(flat), png_bits(noise[:, None])
    assert (lf < 1000).all() and (ln > 8 * 28 * 28 * 0.9).all()  # random bytes do not compress
    with pytest.raises(ValueError, match="uint8"):
        png_bits(noise.astype(np.float32))


def test_typicality_catches_the_too_likely_and_complexity_the_simple():
    """The likelihood failure (Nalisnick et al.): the out-of-distribution images are *more*
    likely. -log p ranks them as in-distribution (AUROC ~ 0); the typicality test flags them;
    the complexity correction does too when they are also simpler (shorter PNGs)."""
    rng = np.random.default_rng(1)
    nll_in, nll_out = rng.normal(2000, 30, 400), rng.normal(1200, 30, 400)
    png_in, png_out = rng.normal(3000, 30, 400), rng.normal(1500, 30, 400)
    h = 2000.0  # the training images' mean -log2 p
    s_in, s_out = scores_of(nll_in, png_in, h), scores_of(nll_out, png_out, h)
    assert auroc(s_in["nll"], s_out["nll"]) < 0.01
    assert auroc(s_in["typicality"], s_out["typicality"]) > 0.99
    assert auroc(s_in["complexity"], s_out["complexity"]) > 0.99


def _fake_with_noise(name, split="train", data_dir=None, **kw):
    """'mnist': the bar images of the analysis tests; 'fashion-mnist': uniform noise images."""
    if name == "mnist":
        return fake_load_dataset(name, split, data_dir)
    n = 200 if split == "train" else 100
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), (np.arange(n) % 10).astype(np.int64)


@pytest.fixture(scope="module")
def ood_run(tmp_path_factory):
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scnf.data.load, "load_dataset", _fake_with_noise)
        mp.setattr(scnf.data.images, "load_dataset", _fake_with_noise)
        cfg = from_dict({**TINY, "train": {**TINY["train"], "steps": 30, "eval_every": 30, "checkpoint_every": 30}})
        d = tmp_path_factory.mktemp("ood") / "run"
        scnf.runs.run.run(cfg, d)
        yield d, mp
    torch.set_num_threads(threads)


def test_fpr_counts_a_tie_with_the_threshold_as_flagged():
    """Both positives score 1, so the threshold is 1; the negative scoring 1 is flagged (>=)."""
    assert fpr_at_tpr(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == 0.5
    assert fpr_at_tpr(np.array([1.0, 1.0, 0.0, 2.0]), np.array([1.0, 3.0])) == 0.75


def _png_bits_by_hand(images) -> np.ndarray:
    import io

    from PIL import Image

    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(im).reshape(28, 28), mode="L").save(buf, format="PNG", optimize=True,
                                                                       compress_level=9)
        out.append(8 * len(buf.getvalue()))
    return np.array(out, dtype=np.float64)


def test_scnf_ood_end_to_end(ood_run, tmp_path, capsys):
    """Every image of each set (n and n_train at least the sets' sizes: 100 test, 100 noise, 200
    training images), so each number can be computed by hand: -log2 p(x) from evaluation's log
    density of x dequantised (noise seeds 0, 1, 2 for in, out, training) plus 8 bits a pixel, H
    from the *training* images, PNG lengths, and each score's AUROC and FPR."""
    import math

    from sklearn.metrics import roc_auc_score

    from scnf.runs.run import load_run
    from scnf.training.evaluation import evaluate

    d, _ = ood_run
    res = run_ood(d, "fashion-mnist", n=500, n_train=500, out=tmp_path)
    assert (res["n_in"], res["n_out"], res["n_train_for_typical_set"]) == (100, 100, 200)
    _, model, data, _ = load_run(d)
    dims = data.dims
    x_out = torch.from_numpy(_fake_with_noise("fashion-mnist", "test")[0]).reshape(-1, 1, 28, 28)

    def bits(x, seed):
        lp: list = []
        evaluate(model, data, x, None, batch_size=500, seed=seed, log_density_out=lp)
        return -torch.cat(lp).numpy() / math.log(2.0) + 8.0 * dims

    nll = {"in": bits(data.x_test, 0), "out": bits(x_out, 1), "train": bits(data.x, 2)}
    # bits/dim as evaluation reports it (8 - mean log p / (D ln 2)), on the same images and noise
    for key, x, seed in (("in", data.x_test, 0), ("out", x_out, 1), ("train", data.x, 2)):
        want = evaluate(model, data, x, None, batch_size=500, seed=seed)["bits_per_dim"]
        assert res["bits_per_dim"][key] == pytest.approx(want, rel=1e-12), key
        assert res["bits_per_dim"][key] == pytest.approx(nll[key].mean() / dims, rel=1e-12), key
    h = nll["train"].mean()
    png = {"in": _png_bits_by_hand(data.x_test.numpy()), "out": _png_bits_by_hand(x_out.numpy())}
    assert res["png_bits_per_dim"] == pytest.approx({k: v.mean() / dims for k, v in png.items()}, rel=1e-12)
    by_hand = {"nll": (nll["in"], nll["out"]), "complexity": (nll["in"] - png["in"], nll["out"] - png["out"]),
               "typicality": (abs(nll["in"] - h), abs(nll["out"] - h))}
    for k, (s_in, s_out) in by_hand.items():
        labels = np.r_[np.zeros(100), np.ones(100)]
        assert res["scores"][k]["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[s_in, s_out]), abs=1e-12), k
        thr = np.sort(s_out)[100 - 95]  # the 95th largest of 100 positives
        assert res["scores"][k]["fpr_at_95_tpr"] == pytest.approx((s_in >= thr).mean(), abs=1e-12), k
    # uniform noise is far less likely than the bar images under a model trained on them
    assert res["bits_per_dim"]["out"] > res["bits_per_dim"]["in"]
    assert res["scores"]["nll"]["auroc"] > 0.9
    assert (tmp_path / "ood.png").stat().st_size > 0
    assert json.loads((tmp_path / "ood.json").read_text())["scores"] == res["scores"]
    code = main(["ood", str(d), "--against", "fashion-mnist", "--n", "20", "--n-train", "20", "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and (out["n_in"], out["n_out"], out["n_train_for_typical_set"]) == (20, 20, 20)


def test_scnf_ood_refuses_what_it_cannot_score(ood_run, tmp_path, capsys):
    d, _ = ood_run
    with pytest.raises(ValueError, match="trained on mnist"):
        run_ood(d, "mnist", out=tmp_path)
    with pytest.raises(ValueError, match="--against must be one of"):
        run_ood(d, "cifar10", out=tmp_path)
    with pytest.raises(ValueError, match="n must be an integer"):
        run_ood(d, "fashion-mnist", n=1, out=tmp_path)
    assert main(["ood", str(d), "--against", "mnist"]) == 2
    assert "trained on mnist" in capsys.readouterr().err
    assert main(["ood", str(tmp_path / "nothing"), "--against", "fashion-mnist"]) == 2
