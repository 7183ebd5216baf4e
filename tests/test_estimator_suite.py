"""The estimator suite (benchmarks/estimator_suite.py) runs end to end as RESULTS.md documents:
a tiny run writes its table and records, and two processes give the records of one."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "estimator_suite.py"


@pytest.fixture(scope="module")
def suite():
    return load_benchmark("estimator_suite")


def _records(out: Path):
    r = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in x.items() if k not in ("seconds", "cpu_seconds")} for x in r["records"]], r


def _main(*args):
    """The suite as RESULTS.md runs it: its own process (it sets the thread counts)."""
    subprocess.run([sys.executable, str(SUITE), *args], check=True, capture_output=True, timeout=300)


def test_tiny_run_writes_table_and_records(tmp_path):
    args = ["--tasks", "iris,wine", "--methods", "scnf,logreg", "--draws", "2", "--split", "val",
            "--scnf-params", '{"steps": 3, "batch_size": 32, "blocks": 1, "hidden": 8, "h_blocks": 1, "h_hidden": 8}']
    _main(*args, "--out", str(tmp_path / "one"))
    one, res = _records(tmp_path / "one")
    assert [(r["task"], r["method"], r["draw"]) for r in one] == [
        (t, m, d) for t in ("iris", "wine") for m in ("scnf", "logreg") for d in (0, 1)]
    assert all(0.0 <= r["acc"] <= 1.0 and 0.0 <= r["ece_pct"] <= 100.0 for r in one)
    assert res["meta"]["split"] == "val" and len(res["summary"]) == 4
    table = (tmp_path / "one" / "table.md").read_text()
    accuracy, calibration = table.split("\n\n", 1)
    assert accuracy.count("\n") == 3 and "| iris (4, 3, " in accuracy and "| wine (13, 3, " in accuracy
    assert "Expected calibration error" in calibration and "| iris | " in calibration and "| wine | " in calibration
    assert "on the validation rows" in calibration and "test rows" not in table  # --split val scores no test row
    _main(*args, "--jobs", "2", "--out", str(tmp_path / "two"))
    assert _records(tmp_path / "two")[0] == one  # same fits, same order, in two processes


def test_diagnostic_task_and_bad_names(suite, capsys):
    X, y_semi, X_ev, y_ev = suite.split("classif-50-1c", 0, "val")
    assert X.shape[1] == 50 and (y_semi != -1).sum() == 100 and len(set(y_ev)) == 5
    for bad in (["--tasks", "nope"], ["--methods", "nope"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as e:
            suite.main(bad)  # refused while parsing, before any thread setting
        assert e.value.code == 2


def test_density_and_novelty_scores_on_known_answers(suite):
    """The anchors' densities are normalised in the data's units (a scaled copy of the data
    loses exactly log(scale) per feature), and the novelty protocol's AUROC is near 1 for a
    class far from the others and near 0.5 for one the model cannot tell apart."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from scnf import SCNFClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 2))
    for kind in ("kde", "gmm"):
        a = suite._Density(kind, 0).fit(X)
        b = suite._Density(kind, 0).fit(X * 10)
        assert np.allclose(b.score_samples(X[:50] * 10), a.score_samples(X[:50]) - 2 * np.log(10), atol=1e-6)
    # two training classes near the origin; the novel class far away, or on top of them
    train = np.r_[rng.normal([0, 0], 0.5, (200, 2)), rng.normal([2, 0], 0.5, (200, 2))]
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    y_semi = np.full(400, -1)
    y_semi[[0, 1, 2, 200, 201, 202]] = y[[0, 1, 2, 200, 201, 202]]
    clf = SCNFClassifier(steps=300, blocks=2, hidden=16, h_blocks=1, h_hidden=16, random_state=0).fit(train, y_semi)
    normal = rng.normal([0, 0], 0.5, (100, 2))
    far, near = rng.normal([8, 8], 0.5, (100, 2)), rng.normal([0, 0], 0.5, (100, 2))  # near: no novelty at all
    for novel, lo, hi in ((far, 0.99, 1.0), (near, 0.35, 0.65)):
        score = -clf.score_samples(np.r_[normal, novel])
        auc = roc_auc_score(np.r_[np.zeros(100), np.ones(100)], score)
        assert lo <= auc <= hi, auc
