"""A run directory travels: relative paths of a config are read against its folder and recorded
absolute, so the run is evaluated, loaded and resumed from any working directory and after its
folder is moved; and scnf evaluate reports a temperature only when one was fitted."""
import json
import shutil

import numpy as np
import pytest

from scnf.cli import main
from scnf.config import load_config
from tests.helpers import write_config, write_vectors_npz


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def trained_in_data_folder(tmp_path, monkeypatch, capsys):
    """The issue's repro: ``cd mydata && scnf train vec.toml --out runs/vec``."""
    data = tmp_path / "mydata"
    data.mkdir()
    write_vectors_npz(data / "vec.npz")
    write_config(data / "vec.toml", {"dataset": "npz", "path": "vec.npz", "n_validation": 2})
    monkeypatch.chdir(data)
    assert main(["train", "vec.toml", "--out", "runs/vec"]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    return data


def test_a_run_is_evaluated_and_loaded_from_another_directory(trained_in_data_folder, tmp_path, capsys):
    from scnf import load_run

    data = trained_in_data_folder
    assert load_config(data / "runs" / "vec" / "config.toml").data.path == str(data / "vec.npz")
    assert main(["evaluate", "mydata/runs/vec"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["step"] == 4
    cfg, model, d, _ = load_run("mydata/runs/vec")
    assert d.x_test.shape[0] == 20 and cfg.data.path == str(data / "vec.npz")


def test_a_moved_run_still_evaluates_loads_and_resumes(trained_in_data_folder, tmp_path, monkeypatch, capsys):
    from scnf import load_run

    data = trained_in_data_folder
    moved = tmp_path / "elsewhere" / "vec"
    moved.parent.mkdir()
    shutil.move(data / "runs" / "vec", moved)
    monkeypatch.chdir(moved.parent)
    assert main(["evaluate", "vec"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    load_run(moved)
    # resumed from a third directory, with the config file named from there: more steps
    other = tmp_path / "third"
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["train", str(data / "vec.toml"), "--out", str(moved), "--resume", "--set", "train.steps=6"]) == 0, \
        capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["steps"] == 6


def test_relative_paths_are_read_against_the_config_files_folder(tmp_path, monkeypatch):
    """data.path, data.data_dir and model.m1_run; absolute and empty ones stay as they are;
    a path given with --set is read against the working directory."""
    from scnf.config import with_overrides

    (tmp_path / "sub").mkdir()
    cfg_path = write_config(tmp_path / "sub" / "c.toml", {"dataset": "npz", "path": "../d/x.npz"})
    monkeypatch.chdir(tmp_path)
    assert load_config("sub/c.toml").data.path == str(tmp_path / "d" / "x.npz")
    write_config(cfg_path, {"dataset": "mnist", "data_dir": "cache"}, {"kind": "m1m2", "m1_run": "runs/m1"})
    cfg = load_config(cfg_path)
    assert (cfg.data.data_dir, cfg.model.m1_run) == (str(tmp_path / "sub" / "cache"), str(tmp_path / "sub" / "runs/m1"))
    write_config(cfg_path, {"dataset": "npz", "path": "/abs/x.npz"})
    assert load_config(cfg_path).data.path == "/abs/x.npz"
    assert load_config(cfg_path).data.data_dir == ""
    from scnf.config import resolve_paths

    over = with_overrides(load_config(cfg_path), ["data.path=y.npz"])
    assert resolve_paths(over, tmp_path / "here").data.path == str(tmp_path / "here" / "y.npz")


def test_the_library_records_a_relative_path_absolute(tmp_path, monkeypatch):
    """run(from_dict(...)) reads a relative data.path against the working directory and records it
    absolute: the run loads from anywhere."""
    from scnf.config import from_dict
    from scnf.runs.run import load_run, run
    from tests.helpers import TINY_TRAIN

    monkeypatch.chdir(tmp_path)
    write_vectors_npz(tmp_path / "v.npz")
    run(from_dict({"data": {"dataset": "npz", "path": "v.npz"}, "train": TINY_TRAIN}), "r")
    assert load_config(tmp_path / "r" / "config.toml").data.path == str(tmp_path / "v.npz")
    monkeypatch.chdir("/")
    load_run(tmp_path / "r")


def test_a_folder_run_whose_folder_is_gone_says_so(tmp_path, capsys):
    """Not "gray has no train/ folder": the folder is not there at all, and the run names what it recorded."""
    from PIL import Image

    from tests.helpers import TINY_IMAGE_FLOW

    rng = np.random.default_rng(0)
    for cls in ("a", "b", "unlabelled"):
        (tmp_path / "gray" / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "gray" / "train" / cls / f"{i}.png")
    write_config(tmp_path / "g.toml", {"dataset": "folder", "path": "gray"}, TINY_IMAGE_FLOW)
    assert main(["train", str(tmp_path / "g.toml"), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    (tmp_path / "gray").rename(tmp_path / "grey")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"no such folder: {tmp_path / 'gray'}" in line and "data.json" in line and "train/ folder" not in line


@pytest.mark.parametrize("val_log_probs, y_val, bound", [
    (np.log([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]), 0.05),      # every row right: sharpening always helps
    (np.log([[0.99, 0.01], [0.01, 0.99]]), np.array([1, 0]), 20.0),  # confidently wrong: softening always helps
])
def test_a_temperature_at_the_bound_of_its_search_is_not_reported_as_a_fit(val_log_probs, y_val, bound):
    from scnf.runs.calibration import fit_temperature
    from scnf.runs.run import temperature_report

    assert fit_temperature(val_log_probs, y_val) == pytest.approx(bound, rel=1e-4)  # what was reported before
    test_p = np.array([[0.7, 0.3], [0.4, 0.6]])
    out = temperature_report(val_log_probs, y_val, test_p, np.array([0, 1]))
    assert out["temperature"] is None and out["temperature_at_bound"] == bound
    assert "no temperature fitted" in out["temperature_note"] and "ece_pct_temperature" not in out
    fitted = temperature_report(np.log([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]), test_p,
                                np.array([0, 1]))
    assert 0.05 < fitted["temperature"] < 20.0 and "ece_pct_temperature" in fitted
