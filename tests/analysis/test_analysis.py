"""Fast tests of scnf.analysis on a tiny run trained on synthetic 28x28 'digits'."""
import json

import pytest
import torch

import scnf.runs.run
from scnf.analysis import (analyse, dimension_ablation, label_swap, obfuscation, open_run, reconstructions,
    samples, tsne)
from scnf.cli import main
from scnf.config import from_dict
from tests.helpers import TINY, fake_load_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    threads = torch.get_num_threads()  # train.threads sets torch's global thread count
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scnf.data.load, "load_dataset", fake_load_dataset)
        d = tmp_path_factory.mktemp("tiny") / "run"
        scnf.runs.run.run(from_dict(TINY), d)
        yield d
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(run_dir):
    return open_run(run_dir)


def test_reconstructions(loaded, tmp_path):
    res = reconstructions(loaded, out=tmp_path, seed=1, n_images=4, n_eval=20)
    assert res.panels == (6, 4)  # 5 sizes + originals, 4 images
    assert sorted(res.numbers["mse"]) == [49, 98, 196, 392, 784]
    assert res.numbers["mse"][784] < 1e-4  # all components kept: f is invertible
    assert all(v >= 0 for v in res.numbers["mse"].values())
    assert (tmp_path / "reconstructions.png").stat().st_size > 0
    assert "Fig. 2" in (tmp_path / "analysis.md").read_text()
    again = reconstructions(loaded, out=tmp_path, seed=1, n_images=4, n_eval=20)
    assert again.numbers == res.numbers  # reproducible
    assert (tmp_path / "analysis.md").read_text().count("paper Fig. 2") == 1  # section replaced


def test_label_swap(loaded, tmp_path):
    res = label_swap(loaded, out=tmp_path, seed=0)
    assert res.panels == (10, 11)
    assert sorted(res.numbers["source_labels"]) == list(range(10))
    for k in ("swap_accuracy", "swap_accuracy_other", "true_label_accuracy"):
        assert 0.0 <= res.numbers[k] <= 1.0
    assert (tmp_path / "label_swap.png").exists()


def test_samples(loaded, tmp_path):
    res = samples(loaded, out=tmp_path, seed=0, temperature=0.7, per_class=3, n_eval=30)
    assert res.panels == (10, 3)
    assert res.numbers["n"] == 30 and 0.0 <= res.numbers["accuracy"] <= 1.0
    assert (tmp_path / "samples_T0.7.png").exists()


def test_tsne(loaded, tmp_path):
    res = tsne(loaded, out=tmp_path, seed=0, n=60)
    assert res.panels == (2,)
    assert res.numbers["n"] == 60 and res.numbers["labels_for_z_h"] == "true"
    for space in ("z_f", "z_h"):
        assert 0.0 <= res.numbers[space]["knn5_accuracy_tsne"] <= 1.0
        assert -1.0 <= res.numbers[space]["silhouette_tsne"] <= 1.0
    assert (tmp_path / "tsne.png").exists()


def test_obfuscation(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(scnf.data.load, "load_dataset", fake_load_dataset)
    res = obfuscation(loaded, out=tmp_path, seed=0, n_train=100, n_test=50, hidden=(16, 16), max_iter=30)
    n = res.numbers
    assert n["n_train"] == 100 and n["n_test"] == 50
    for probe in ("mlp_z_f", "mlp_z_h", "linear_z_aux"):
        assert 0.0 <= n[probe]["train_accuracy"] <= 1.0 and 0.0 <= n[probe]["test_accuracy"] <= 1.0
    sep = n["z_h_class_means"]
    assert sep["dims"] == loaded.model.deep_dim and sep["within_class_std"] > 0
    assert "within-class standard deviation" in (tmp_path / "analysis.md").read_text()


def test_class_mean_separation_measures_the_offset_of_class_means():
    from scnf.analysis.latents import class_mean_separation

    g = torch.Generator().manual_seed(0)
    y = torch.arange(4000) % 2
    z = torch.randn(4000, 16, generator=g) * 0.5
    same = class_mean_separation(z, y)
    assert max(same["class_mean_norm"].values()) < 0.1 and abs(same["within_class_std"] - 0.5) < 0.02
    z[y == 1] += 3.0 / 4.0  # class 1's mean moves by 3 (norm over 16 dims)
    apart = class_mean_separation(z, y)
    assert abs(apart["class_mean_norm"][1] - 3.0) < 0.1 and apart["class_mean_norm"][0] < 0.1


def test_dimension_ablation(run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(scnf.data.load, "load_dataset", fake_load_dataset)
    res = dimension_ablation(run_dir, out=tmp_path, dims=(49, 98), steps=1)
    r = res.numbers["results"]
    assert sorted(r) == [49, 98] and not r[49]["reused"]
    for d in (49, 98):
        assert (tmp_path / "ablation" / f"dim-{d}" / "metrics.json").exists()
        assert 0.0 <= r[d]["test_error_pct"] <= 100.0 and 0.0 <= r[d]["train_error_pct"] <= 100.0
    assert "1 steps" in res.numbers["schedule"]
    text = (tmp_path / "analysis.md").read_text()
    assert "| 49 |" in text and "2.6 [48 dims]" in text
    again = dimension_ablation(run_dir, out=tmp_path, dims=(49, 98), steps=1)  # finished runs are reused
    assert all(v["reused"] for v in again.numbers["results"].values())


def test_cli_samples(run_dir, tmp_path, capsys):
    assert main(["analyse", str(run_dir), "samples", "--out", str(tmp_path), "--temperature", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["analysis"] == "samples" and 0.0 <= out["numbers"]["accuracy"] <= 1.0
    assert (tmp_path / "samples_T0.5.png").exists() and (tmp_path / "analysis.md").exists()


def test_cli_errors(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyse", str(run_dir), "bogus"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bogus" in err
    # an option the analysis does not take, and a missing run directory: one line, exit 2
    assert main(["analyse", str(run_dir), "tsne", "--temperature", "2", "--out", str(tmp_path)]) == 2
    assert main(["analyse", str(tmp_path / "nope"), "samples"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("scnf: error:") for line in err)


def test_analyse_dispatch_rejects_unknown(run_dir):
    with pytest.raises(ValueError, match="unknown analysis"):
        analyse(run_dir, "nope")
