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
    (["train", "configs/moons.toml", "--set", "train.stepz=3"], "train.stepz"),
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


@pytest.mark.parametrize("share", ["1", "-0.1", "nan"])
def test_reproduce_rejects_a_labelled_share_outside_0_1(tmp_path, share, capsys):
    # --steps 1 and one small row: were the value not checked, the command would finish at once, exit 0
    code, _, err = _run(["reproduce", "table1", "--labelled-share", share, "--out", str(tmp_path), "--seeds", "1",
                         "--rows", "glow-glow", "--datasets", "circles", "--steps", "1"], capsys)
    assert code == 2 and "train.labelled_share" in _one_line_error(err)


# ------------------------------------------------------------ checkpoints and exit codes
_TINY = ('seed = 2\n[data]\nn_train = 100\nn_test = 100\n[model]\nblocks = 1\nhidden = 8\nh_blocks = 1\n'
         'h_hidden = 8\n[train]\nsteps = 6\nbatch_size = 32\neval_every = 2\ncheckpoint_every = 2\n'
         'max_nonfinite = 2\nprogress = false\ndevice = "cpu"\n')


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(_TINY)
    return p, tmp_path / "r"


@pytest.fixture
def trained(tiny, capsys):
    cfg, out = tiny
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    capsys.readouterr()
    return cfg, out


@pytest.mark.parametrize("cmd", ["evaluate", "analyse", "resume"])
def test_crafted_checkpoint_exits_2_and_runs_no_code(trained, tmp_path, cmd, capsys):
    from tests.helpers import write_crafted

    cfg, out = trained
    marker = tmp_path / "PWNED"
    write_crafted(out / "checkpoint.pt", marker)
    argv = {"evaluate": ["evaluate", str(out)], "analyse": ["analyse", str(out), "tsne"],
            "resume": ["train", str(cfg), "--out", str(out), "--resume"]}[cmd]
    code, _, err = _run(argv, capsys)
    assert code == 2
    line = _one_line_error(err)
    assert "checkpoint.pt" in line and "refused" in line
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_exit_2(trained, tmp_path, capsys):
    cfg, out = trained
    ckpt = out / "checkpoint.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:1000])
    code, _, err = _run(["evaluate", str(out)], capsys)
    assert code == 2 and "truncated" in _one_line_error(err)
    import torch

    torch.save({"model": {"w": torch.zeros(2)}, "step": 1}, ckpt)
    code, _, err = _run(["train", str(cfg), "--out", str(out), "--resume"], capsys)
    assert code == 2 and "has no 'optimizer'" in _one_line_error(err)
    code, _, err = _run(["evaluate", str(out)], capsys)
    assert code == 2 and "does not fit the model" in _one_line_error(err)


def _fail_from_step(monkeypatch, step, how):
    """Make training steps after ``step`` fail: non-finite losses, or an ODE solver failure."""
    import scnf.training.trainer as tr
    from scnf.bijectors import ODESolverError

    orig = tr.backward_objective
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] <= step:
            return orig(*a, **k)
        if how == "ode":
            raise ODESolverError("ODE solver step size underflow (stiff dynamics) in FFJORD")
        loss, stats, _ = orig(*a, **k)
        return float("nan"), stats, False

    monkeypatch.setattr(tr, "backward_objective", flaky)


@pytest.mark.parametrize("how,match", [("nan", "2 consecutive non-finite"), ("ode", "ODE solver failed")])
def test_training_failure_exits_3_naming_the_checkpoint_and_how_to_resume(tiny, monkeypatch, capsys, how, match):
    cfg, out = tiny
    _fail_from_step(monkeypatch, 2, how)
    code, _, err = _run(["train", str(cfg), "--out", str(out)], capsys)
    assert code == 3
    line = _one_line_error(err)
    assert match in line
    assert f"last good checkpoint is {out / 'checkpoint.pt'}" in line
    assert f"scnf train {cfg} --out {out} --resume" in line
    monkeypatch.undo()
    code, stdout, _ = _run(["train", str(cfg), "--out", str(out), "--resume"], capsys)
    assert code == 0 and json.loads(stdout)["steps"] == 6


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # every step skipped
def test_training_failure_before_any_checkpoint_says_so(tiny, monkeypatch, capsys):
    cfg, out = tiny
    _fail_from_step(monkeypatch, 0, "nan")
    code, _, err = _run(["train", str(cfg), "--out", str(out)], capsys)
    assert code == 3 and "no checkpoint was written" in _one_line_error(err)


@pytest.mark.parametrize("exc", [ZeroDivisionError("division by zero"),
                                 RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                 KeyError("model")])
def test_a_bug_exits_1_with_the_traceback_and_a_report_line(trained, monkeypatch, capsys, exc):
    import scnf.runs.run as ex

    def broken(run_dir):
        raise exc

    monkeypatch.setattr(ex, "evaluate_run", broken)
    code, _, err = _run(["evaluate", str(trained[1])], capsys)
    assert code == 1
    assert "Traceback" in err and type(exc).__name__ in err
    assert "bug in scnf; please report it" in err.strip().splitlines()[-1]


def test_version(capsys):
    import scnf

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"scnf {scnf.__version__}"


def test_summary_prints_the_counts_and_the_layers_on_request(capsys):
    assert main(["summary", "toy"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("parameters: f 44,220")
    assert main(["summary", "toy", "--layers"]) == 0
    assert capsys.readouterr().out.count("\n") > 50


def test_out_naming_a_file_is_named(tiny, tmp_path, capsys):
    cfg, _ = tiny
    f = tmp_path / "a-file"
    f.write_text("x")
    code, _, err = _run(["train", str(cfg), "--out", str(f)], capsys)
    assert code == 2 and "--out" in _one_line_error(err) and "is a file" in err


def test_resume_with_a_changed_key_names_it(trained, capsys):
    cfg, out = trained
    code, _, err = _run(["train", str(cfg), "--out", str(out), "--resume", "--set", "train.lr=0.5"], capsys)
    assert code == 2 and "train.lr: 0.001 -> 0.5" in _one_line_error(err)


class _ClosedPipe:
    """stdout whose reader went away (``scnf evaluate RUN | head``)."""

    def write(self, s):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise OSError("no file")


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["config", "--defaults"]) == 141
    assert capsys.readouterr().err == ""  # not "scnf: error: [Errno 32] Broken pipe"


def test_a_closed_pipe_gives_no_message_at_exit_either(tmp_path):
    import os

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first byte
    try:
        proc = subprocess.run([sys.executable, "-m", "scnf", "config", "--defaults"], stdout=w,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_allow_changed_data_is_an_option_of_every_command_that_reads_a_run():
    from scnf.cli import build_parser

    p = build_parser()
    for argv in (["train", "c.toml", "--resume"], ["evaluate", "r"], ["analyse", "r", "samples"],
                 ["ood", "r", "--against", "mnist"]):
        assert p.parse_args(argv + ["--allow-changed-data"]).allow_changed_data is True
        assert p.parse_args(argv).allow_changed_data is False


def test_allow_changed_data_without_resume_is_refused(capsys):
    code, _, err = _run(["train", "configs/moons.toml", "--allow-changed-data"], capsys)
    assert code == 2 and "applies with --resume only" in _one_line_error(err)


def test_reproduce_table1_leaves_the_labelled_share_to_the_rows():
    """Without --labelled-share the CLI passes None, so each row keeps its own default (0.02 on
    FFJORD ∘ GLOW, 0.1 elsewhere); a CLI default would override them all."""
    from scnf.cli import build_parser
    assert build_parser().parse_args(["reproduce", "table1"]).labelled_share is None
    assert build_parser().parse_args(["reproduce", "table1", "--labelled-share", "0.05"]).labelled_share == 0.05


def test_a_compiled_step_that_cannot_be_built_exits_3_with_one_line(tiny, monkeypatch, tmp_path, capsys):
    import torch
    import torch._inductor.config as inductor_config
    cfg, out = tiny
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))  # no cached build to fall back on
    torch._dynamo.reset()
    try:  # config.patch restores the compiler afterwards (monkeypatch would delete the key)
        with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-compiler"))}):
            code, _, err = _run(["train", str(cfg), "--out", str(out), "--set", "train.compile=true"], capsys)
    finally:
        torch._dynamo.reset()
    assert code == 3
    line = _one_line_error(err)
    assert "torch.compile could not build the training step (InvalidCxxCompiler" in line
    assert "train.compile = false" in line
