"""Checkpoints: read without running code, every bad file a one-line CheckpointError naming it."""
import shutil

import numpy as np
import pytest
import torch

from scnf.training.checkpoint import load_checkpoint, save_checkpoint
from scnf.config import from_dict
from scnf.errors import CheckpointError
from scnf.runs.run import load_run, run
from tests.helpers import write_crafted


def _cfg(blocks=1, steps=4):
    return from_dict({"seed": 2, "data": {"n_train": 100, "n_test": 100},
                      "model": {"blocks": blocks, "hidden": 8, "h_blocks": 1, "h_hidden": 8},
                      "train": {"steps": steps, "batch_size": 32, "eval_every": 2, "checkpoint_every": 2,
                                "progress": False, "device": "cpu"}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    run(_cfg(), out)
    return out


@pytest.fixture
def run_dir(trained, tmp_path):
    out = tmp_path / "r"
    shutil.copytree(trained, out)
    return out


def test_new_checkpoints_load_with_plain_weights_only(run_dir):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # no allow-list needed
    assert state["step"] == 4 and isinstance(state["sampler"]["perm"], torch.Tensor)


@pytest.mark.parametrize("raw", [False, True], ids=["torch-save", "raw-pickle"])
def test_crafted_pickle_runs_no_code(run_dir, tmp_path, raw):
    marker = tmp_path / "PWNED"
    write_crafted(run_dir / "checkpoint.pt", marker, raw=raw)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*checkpoint.pt.*refused") as e:
        load_run(run_dir)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    if not raw:
        assert "posix.system" in str(e.value) or "nt.system" in str(e.value)


def test_crafted_pickle_on_resume_runs_no_code(run_dir, tmp_path):
    marker = tmp_path / "PWNED"
    write_crafted(run_dir / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        run(_cfg(), run_dir, resume=True)
    assert not marker.exists()


def test_truncated_checkpoint(run_dir):
    p = run_dir / "checkpoint.pt"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: the file is truncated or not a PyTorch file"):
        load_run(run_dir)
    with pytest.raises(CheckpointError, match="truncated"):
        run(_cfg(), run_dir, resume=True)


@pytest.mark.parametrize("content,match", [
    (b"", "truncated or not a PyTorch file"),
    (b"hello\n", "truncated or not a PyTorch file"),
])
def test_not_a_torch_file(run_dir, content, match):
    (run_dir / "checkpoint.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_run(run_dir)


@pytest.mark.parametrize("state,match", [
    ([1, 2], "holds a list, not a dict"),
    ({"weights": torch.zeros(2)}, "has no 'model', 'step'"),
    ({"model": {"a": 1}, "step": 1}, "'model' is not a state dict of tensors"),
    ({"model": {}, "step": "four"}, "'step' is not an integer"),
])
def test_wrong_keys(run_dir, state, match):
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=match):
        load_run(run_dir)


def test_wrong_architecture(run_dir, tmp_path):
    other = tmp_path / "other"
    run(_cfg(blocks=2), other)
    shutil.copyfile(other / "checkpoint.pt", run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint .*checkpoint\.pt does not fit the model of "
                                              r".*config\.toml: .*unexpected tensor"):
        load_run(run_dir)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        run(_cfg(), run_dir, resume=True)


def test_wrong_shapes(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    name = next(k for k, v in state["model"].items() if v.ndim == 2)
    state["model"][name] = torch.zeros(3, 3)
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=rf"1 of other shape \(e.g. {name} \(3, 3\)"):
        load_run(run_dir)


def test_resume_state_that_does_not_fit_is_a_checkpoint_error(run_dir):
    state = load_checkpoint(run_dir / "checkpoint.pt")
    del state["optimizer"]
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="has no 'optimizer'"):
        run(_cfg(), run_dir, resume=True)
    state["optimizer"] = {"state": {}, "param_groups": []}
    torch.save(state, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="cannot resume this run"):
        run(_cfg(), run_dir, resume=True)


def test_checkpoints_with_numpy_sampler_state_still_load(run_dir):
    """Checkpoints written before the sampler state was a tensor held a numpy permutation."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    state["sampler"]["perm"] = state["sampler"]["perm"].numpy()
    torch.save(state, run_dir / "checkpoint.pt")
    assert isinstance(load_checkpoint(run_dir / "checkpoint.pt")["sampler"]["perm"], np.ndarray)
    assert load_run(run_dir)[3]["step"] == 4
    assert run(_cfg(), run_dir, resume=True)["steps"] == 4


def test_save_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(p, {"model": {"w": torch.ones(2)}, "step": 1})

    def dies(obj, fh, *a, **k):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, {"model": {"w": torch.zeros(2)}, "step": 2})
    monkeypatch.undo()
    assert load_checkpoint(p)["step"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
