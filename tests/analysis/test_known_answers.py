"""The analyses on an oracle model whose answers are known in advance.

Synthetic 28x28 images of K = 4 classes: the last 196 pixels (z_f, the "deep" part) hold
the class as a bright block of 49 pixels at a class-specific place, plus uniform noise
that is the same for every class; the first 588 pixels (z_aux) are one constant grey,
so after dequantisation they are noise independent of the class. The model is
f = Flatten (z = the pixels) and h(z_f; y) = z_f - mu_y, where mu_y is the class's exact
mean, so z_f determines the label and z_h is the noise alone, independent of the label.
Hence: a probe on z_f is perfect, probes on z_h and z_aux are at chance; decoding any z_h
with label j gives an image of class j; class-conditional samples are of their class;
keeping the deepest d >= 196 components reconstructs all but the grey pixels.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scnf.runs.run
from scnf.analysis import label_swap, obfuscation, reconstructions, samples, tsne
from scnf.analysis._common import LoadedRun
from scnf.analysis.latents import _fit_probe, _knn_accuracy
from scnf.bijectors.base import Bijector, Flatten
from scnf.config import from_dict
from scnf.models.flow import SemiConditionalFlow
from scnf.models.priors import DiagonalGaussian
from scnf.data.batches import SemiSupervisedData

K, DEEP, GREY, NOISE = 4, 196, 100, 60   # NOISE: integer pixel noise uniform in [0, NOISE]
BLOCK = DEEP // K
CHANCE_TOL = 0.1   # accuracies "at chance" lie within 0.25 +- 0.1 (4.5 binomial sd at n = 400)


def _base(y: np.ndarray) -> np.ndarray:
    """The noise-free uint8-scale pixel values (N, 784) of labels y."""
    b = np.full((len(y), 784), GREY, dtype=np.int64)
    b[:, 784 - DEEP:] = 20
    for i, c in enumerate(y):
        b[i, 784 - DEEP + c * BLOCK: 784 - DEEP + (c + 1) * BLOCK] += 150
    return b


def fake_images(n: int, seed: int):
    """n uint8 images (n, 28, 28) and labels, equally many per class in a seeded order.

    (The order differs between the splits on purpose: the analyses dequantise the training
    subset and the test set with the same seeded noise stream, so row i of both gets the
    same noise, and labels in the same order by row would let a probe learn that noise.)"""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % K)
    x = _base(y)
    x[:, 784 - DEEP:] += rng.integers(0, NOISE + 1, (n, DEEP))
    return x.reshape(n, 28, 28).astype(np.uint8), y


def fake_load_dataset(name, split="train", data_dir=None, **kw):
    return fake_images(400, 0 if split == "train" else 1)


class ClassShift(Bijector):
    """h(z_f; y) = z_f - mu_y (log-det 0)."""

    conditional = True

    def __init__(self, mu: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu)

    def forward(self, x, context=None):
        return x - self.mu[context], x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        return z + self.mu[context], z.new_zeros(z.shape[0])


def oracle_model() -> SemiConditionalFlow:
    # dequantised pixel = (u8 + u) / 256, u ~ U[0, 1): the class mean of the deep part is
    # (base + NOISE / 2 + 1 / 2) / 256, so z_h = z_f - mu_y is centred noise of sd ~0.068
    mu = torch.from_numpy((_base(np.arange(K))[:, 784 - DEEP:] + NOISE / 2 + 0.5) / 256).float()
    sd = math.sqrt(((NOISE + 1) ** 2 - 1) / 12 + 1 / 12) / 256

    def prior(dim, sigma):
        return DiagonalGaussian(dim, init_log_sigma=math.log(math.expm1(sigma)))  # (never trained)

    return SemiConditionalFlow(Flatten((1, 28, 28)), ClassShift(mu), K, DEEP, input_shape=(1, 28, 28),
                               latent_prior=prior(DEEP, sd), aux_prior=prior(784 - DEEP, 0.5)).eval()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    x, y = fake_images(400, 0)
    xt, yt = fake_images(400, 1)
    y_semi = np.full(400, -1)
    y_semi[:8] = y[:8]
    data = SemiSupervisedData(torch.from_numpy(x)[:, None], torch.from_numpy(y_semi),
                              torch.from_numpy(xt)[:, None], torch.from_numpy(yt), images=True)
    cfg = from_dict({"data": {"dataset": "mnist", "n_labelled": 8}, "model": {"deep_dim": DEEP}})
    return LoadedRun(tmp_path_factory.mktemp("oracle"), cfg, oracle_model(), data, {}, torch.device("cpu"))


def test_the_oracle_classifies_perfectly(oracle):
    """The premise of the tests below."""
    x = oracle.data.prepare(oracle.data.x_test, torch.Generator().manual_seed(0))
    assert torch.equal(oracle.model.predict(x), oracle.data.y_test)


def test_obfuscation_probes(oracle, tmp_path, monkeypatch):
    monkeypatch.setattr(scnf.data.load, "load_dataset", fake_load_dataset)
    n = obfuscation(oracle, out=tmp_path, seed=0, n_train=400, n_test=400, hidden=(32,), max_iter=200).numbers
    assert n["chance"] == 1 / K
    assert n["mlp_z_f"]["test_accuracy"] == 1.0 and n["mlp_z_f"]["train_accuracy"] == 1.0
    for probe in ("mlp_z_h", "linear_z_aux"):
        assert abs(n[probe]["test_accuracy"] - 1 / K) < CHANCE_TOL, (probe, n[probe])
    # z_h's class means coincide: their norms are sampling noise, ~ sd * sqrt(dims / 100 per class)
    sep = n["z_h_class_means"]
    assert max(sep["class_mean_norm"].values()) < 2 * sep["within_class_std"] * math.sqrt(DEEP / 100)


def test_tsne_accuracies(oracle, tmp_path):
    n = tsne(oracle, out=tmp_path, seed=0, n=200, perplexity=15).numbers
    assert n["z_f"]["knn5_accuracy_latent"] == 1.0 and n["z_f"]["knn5_accuracy_tsne"] == 1.0
    assert n["z_f"]["silhouette_tsne"] > 0.5
    for key in ("knn5_accuracy_latent", "knn5_accuracy_tsne"):
        assert abs(n["z_h"][key] - 1 / K) < CHANCE_TOL + 0.05, key  # n = 200
    assert abs(n["z_h"]["silhouette_tsne"]) < 0.1


def test_label_swap_gives_the_label_decoded_with(oracle, tmp_path):
    n = label_swap(oracle, out=tmp_path, seed=0, n_images=8).numbers
    assert n["swap_accuracy"] == n["swap_accuracy_other"] == n["true_label_accuracy"] == 1.0


def test_class_conditional_samples_are_of_their_class(oracle, tmp_path):
    n = samples(oracle, out=tmp_path, seed=0, temperature=1.0, per_class=2, n_eval=200).numbers
    assert n["accuracy"] == 1.0 and n["n"] == 200


def test_reconstruction_error_is_that_of_the_zeroed_grey_pixels(oracle, tmp_path):
    """Keeping the deepest d >= 196 components zeroes 784 - d grey pixels, each in
    [GREY, GREY + 1) / 256 after dequantisation; nothing else changes."""
    sizes = (196, 392, 784)
    mse = reconstructions(oracle, out=tmp_path, seed=0, sizes=sizes, n_images=4, n_eval=100).numbers["mse"]
    assert mse[784] == 0.0
    for d in sizes[:-1]:
        lo, hi = (784 - d) / 784 * (GREY / 256) ** 2, (784 - d) / 784 * ((GREY + 1) / 256) ** 2
        assert lo <= mse[d] <= hi, (d, mse[d], lo, hi)


# ------------------------------------------------------------------ the probes' building blocks
def _latents(n: int, informative: bool, seed: int):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    z = rng.normal(size=(n, 8))
    if informative:
        z[:, 0] += 10.0 * y  # the label, exactly recoverable
    return z, y


@pytest.mark.parametrize("informative", [True, False])
def test_knn_and_probe_accuracy_on_synthetic_latents(informative):
    from sklearn.linear_model import LogisticRegression

    ztr, ytr = _latents(400, informative, 0)
    zte, yte = _latents(400, informative, 1)
    knn = _knn_accuracy(zte, yte, seed=0)
    probe = _fit_probe(LogisticRegression(max_iter=500), ztr, ytr, zte, yte)
    if informative:
        assert knn == 1.0 and probe["test_accuracy"] == 1.0 and probe["train_accuracy"] == 1.0
    else:
        assert abs(knn - 1 / K) < CHANCE_TOL and abs(probe["test_accuracy"] - 1 / K) < CHANCE_TOL


# ------------------------------------------------------------------ Table 3 bookkeeping
def test_dimension_ablation_reports_each_runs_own_numbers(tmp_path, monkeypatch):
    """With training replaced by a stub whose metrics are a known function of the config
    (test error d / 10 %, labelled-rows error d / 100 %, bits/dim 1 + d / 1000), the table
    holds each d's own numbers, each run got deep_dim = d and the given steps and seed, and a
    second call reuses the finished runs."""
    from scnf.analysis import dimension_ablation
    from scnf.config import dump_config
    from scnf.fileio import write_json_atomic

    seen = []

    def fake_run(cfg, out, resume=False, overwrite=False):
        seen.append((cfg.model.deep_dim, cfg.train.steps, cfg.seed))
        d = cfg.model.deep_dim
        m = {"error_pct": d / 10, "train_labelled_error_pct": d / 100, "bits_per_dim": 1 + d / 1000,
             "steps": cfg.train.steps}
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(dump_config(cfg))
        write_json_atomic(out / "metrics.json", m)
        return m

    monkeypatch.setattr(scnf.runs.run, "run", fake_run)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(dump_config(from_dict({"seed": 5, "data": {"dataset": "mnist"}})))
    res = dimension_ablation(run_dir, out=tmp_path, dims=(49, 392), steps=3, seed=2).numbers["results"]
    assert sorted(seen) == [(49, 3, 2), (392, 3, 2)]
    for d in (49, 392):
        r = res[d]
        assert (r["test_error_pct"], r["train_error_pct"], r["bits_per_dim"], r["steps"], r["reused"]) == (
            d / 10, d / 100, 1 + d / 1000, 3, False)
    text = (tmp_path / "analysis.md").read_text()
    assert "| 49 | 4.90 | 0.49 |" in text and "| 392 | 39.20 | 3.92 |" in text
    again = dimension_ablation(run_dir, out=tmp_path, dims=(49, 392), steps=3, seed=2).numbers["results"]
    assert len(seen) == 2 and all(again[d]["reused"] and again[d]["test_error_pct"] == d / 10 for d in (49, 392))
