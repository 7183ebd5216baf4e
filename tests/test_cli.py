"""The scnf command: exit codes and one-line messages."""
import json
import subprocess
import sys

import pytest

from scnf.cli import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv,match", [
    (["train", "missing.toml"], "config file not found"),
    (["evaluate", "no/such/run"], "run directory not found"),
    (["reproduce", "table1", "--rows", "glow-maf"], "bad row"),
    (["reproduce", "table1", "--datasets", "mnist"], "bad dataset"),
])
def test_errors_exit_2_with_one_line(argv, match, capsys):
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert match in _one_line_error(err)


@pytest.mark.parametrize("argv", [["frobnicate"], ["train"], ["reproduce", "table9"], ["reproduce", "table1", "--seeds", "0"],
                                  ["demo", "--device", "tpu"], []])
def test_argument_errors_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    _one_line_error(capsys.readouterr().err)


def test_bad_config_key_is_named(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nstepz = 3\n")
    code, _, err = _run(["train", str(p), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "train.stepz" in _one_line_error(err)


def test_train_evaluate_resume(tmp_path, capsys):
    p = tmp_path / "c.toml"
    p.write_text('seed = 2\n[data]\nn_train = 100\nn_test = 100\n[model]\nblocks = 1\nhidden = 8\nh_blocks = 1\n'
                 'h_hidden = 8\n[train]\nsteps = 10\nbatch_size = 32\neval_every = 5\ncheckpoint_every = 5\n'
                 'progress = false\n')
    out = tmp_path / "r"
    code, stdout, _ = _run(["train", str(p), "--out", str(out)], capsys)
    assert code == 0
    m = json.loads(stdout)
    assert m["steps"] == 10 and m["seed"] == 2
    code, stdout, _ = _run(["evaluate", str(out)], capsys)
    assert code == 0
    ev = json.loads(stdout)
    assert ev["step"] == 10 and abs(ev["nll"] - m["nll"]) < 1e-6 and ev["error_pct"] == m["error_pct"]
    code, _, err = _run(["train", str(p), "--out", str(out)], capsys)
    assert code == 2 and "--resume" in _one_line_error(err)
    code, stdout, _ = _run(["train", str(p), "--out", str(out), "--resume"], capsys)
    assert code == 0 and json.loads(stdout)["error_pct"] == m["error_pct"]


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "scnf", "train", "nope.toml"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("scnf: error: config file not found")


def test_reproduce_rejects_negative_clf_weight(tmp_path, capsys):
    code, _, err = _run(["reproduce", "table1", "--clf-weight", "-1", "--out", str(tmp_path)], capsys)
    assert code == 2 and "train.clf_weight" in _one_line_error(err)
