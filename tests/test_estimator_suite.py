"""The estimator suite (benchmarks/estimator_suite.py) runs end to end as RESULTS.md documents:
a tiny run writes its table and records, and two processes give the records of one."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "estimator_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("estimator_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    _main(*args, "--jobs", "2", "--out", str(tmp_path / "two"))
    assert _records(tmp_path / "two")[0] == one  # same fits, same order, in two processes


def test_diagnostic_task_and_bad_names(suite, capsys):
    X, y_semi, X_ev, y_ev = suite.split("classif-50-1c", 0, "val")
    assert X.shape[1] == 50 and (y_semi != -1).sum() == 100 and len(set(y_ev)) == 5
    for bad in (["--tasks", "nope"], ["--methods", "nope"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as e:
            suite.main(bad)  # refused while parsing, before any thread setting
        assert e.value.code == 2
