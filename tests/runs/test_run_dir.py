"""A run directory is a trustworthy record of the data it was trained on: data.json (path, size,
SHA-256, shapes, labelled rows per class, the split), checked before every later use (evaluate,
--resume, ood, analyse, load_run). Changed data are refused with one line naming the file and what
changed; --allow-changed-data / allow_changed_data=True goes on with a warning. Nothing in the run
directory is rewritten before the checks pass."""
import json
import warnings

import numpy as np
import pytest

from scnf.cli import main
from scnf.errors import ChangedDataWarning, DataChangedError
from tests.helpers import TINY_IMAGE_FLOW, write_config, write_vectors_npz


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _snapshot(run_dir):
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name in ("data.json", "config.toml", "checkpoint.pt")}


@pytest.fixture
def vec_run(tmp_path, capsys):
    arrays = write_vectors_npz(tmp_path / "vec.npz", n_labelled=10)
    cfg = write_config(tmp_path / "vec.toml", {"dataset": "npz", "path": "vec.npz", "n_validation": 2})
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    return tmp_path / "vec.npz", cfg, tmp_path / "run", arrays


def test_the_run_records_the_data_it_read(vec_run):
    import hashlib

    path, _, run_dir, _ = vec_run
    rec = json.loads((run_dir / "data.json").read_text())
    assert rec["path"] == str(path) and rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["bytes"] == path.stat().st_size and (rec["shape"], rec["test_shape"]) == ([2], [2])
    y = np.load(path)["y"]
    assert rec["labelled_per_class"] == {"0": int((y == 0).sum()), "1": int((y == 1).sum())} and rec["labelled"] == 10
    assert rec["split"] == {"split_seed": 0, "n_validation": 2, "n_unlabelled": 0, "n_test_eval": 0,
                            "training_rows": 58, "validation_rows": 2}


def test_evaluate_refuses_a_test_set_that_shrank(vec_run, capsys):
    from scnf import load_run

    path, _, run_dir, arrays = vec_run
    np.savez(path, **{**arrays, "x_test": arrays["x_test"][:10], "y_test": arrays["y_test"][:10]})
    before = _snapshot(run_dir)
    assert main(["evaluate", str(run_dir)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and "x_test: 10 rows, was 20" in line and "--allow-changed-data" in line
    with pytest.raises(DataChangedError, match=r"x_test: 10 rows, was 20") as e:
        load_run(run_dir)
    assert isinstance(e.value, ValueError)
    assert _snapshot(run_dir) == before
    # the explicit escape: a warning, then the data as they are
    with pytest.warns(ChangedDataWarning, match="x_test: 10 rows, was 20"):
        _, _, data, _ = load_run(run_dir, allow_changed_data=True)
    assert data.x_test.shape[0] == 10
    assert main(["evaluate", str(run_dir), "--allow-changed-data"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 4
    assert _one_line(err).startswith("scnf: warning: ") and "x_test: 10 rows, was 20" in err


def test_resume_refuses_fewer_rows_and_rewrites_nothing(vec_run, capsys):
    path, cfg, run_dir, arrays = vec_run
    np.savez(path, **{**arrays, "x": arrays["x"][:50], "y": arrays["y"][:50]})
    before = _snapshot(run_dir)
    for extra in ([], ["--allow-changed-data"]):  # the rows a run draws its batches from cannot change
        code = main(["train", str(cfg), "--out", str(run_dir), "--resume", "--set", "train.steps=6", *extra])
        line = _one_line(capsys.readouterr().err)
        assert code == 2 and "x: 50 rows, was 60" in line and str(path) in line, line
        assert _snapshot(run_dir) == before


def test_resume_on_allowed_changed_values_keeps_the_record_and_notes_the_change(vec_run, capsys):
    path, cfg, run_dir, arrays = vec_run
    old = json.loads((run_dir / "data.json").read_text())
    np.savez(path, **{**arrays, "x": arrays["x"] + 0.5})  # the same rows and labels, other values
    assert main(["train", str(cfg), "--out", str(run_dir), "--resume", "--set", "train.steps=6"]) == 2
    assert "its content (the same rows, shapes and labels)" in _one_line(capsys.readouterr().err)
    assert main(["train", str(cfg), "--out", str(run_dir), "--resume", "--set", "train.steps=6",
                 "--allow-changed-data"]) == 0
    assert "scnf: warning:" in capsys.readouterr().err
    rec = json.loads((run_dir / "data.json").read_text())
    assert rec["sha256"] == old["sha256"]  # what the run started on
    assert [r["from_step"] for r in rec["resumed_on"]] == [4] and rec["resumed_on"][0]["sha256"] != old["sha256"]


def test_a_changed_image_folder_is_refused_by_evaluate_analyse_and_ood(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for split, classes in (("train", ("cat", "dog", "unlabelled")), ("test", ("cat", "dog"))):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    cfg = write_config(tmp_path / "f.toml", {"dataset": "folder", "path": "imgs"}, TINY_IMAGE_FLOW)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    (root / "test" / "dog" / "2.png").unlink()
    for argv in (["evaluate", str(tmp_path / "run")], ["analyse", str(tmp_path / "run"), "samples"],
                 ["ood", str(tmp_path / "run"), "--against", "mnist"]):
        assert main(argv) == 2, argv
        line = _one_line(capsys.readouterr().err)
        assert str(root) in line and "test/: 5 images, was 6" in line, line


def test_a_run_of_own_data_without_its_record_is_refused_unless_allowed(vec_run):
    from scnf import load_run

    _, _, run_dir, _ = vec_run
    (run_dir / "data.json").unlink()
    with pytest.raises(DataChangedError, match="has no data.json"):
        load_run(run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_run(run_dir, allow_changed_data=True)
    assert [w.category for w in caught] == [ChangedDataWarning]


def test_an_edited_split_seed_is_a_change_of_the_data(vec_run):
    from scnf import load_run

    _, _, run_dir, _ = vec_run
    text = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(text.replace("split_seed = 0", "split_seed = 1"))
    with pytest.raises(DataChangedError, match=r"data.split_seed = 1, was 0"):
        load_run(run_dir)


def test_resume_with_fewer_steps_says_no_fewer(vec_run, capsys):
    _, cfg, run_dir, _ = vec_run
    assert main(["train", str(cfg), "--out", str(run_dir), "--resume", "--set", "train.steps=2"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "train.steps = 2 is fewer than the 4" in line and "no fewer" in line and "may change" not in line
