"""The authors' released model, converted, computes their numbers.

The expected values were computed by running the authors' own code on fixed weights (the
reference folder's README says how). Tolerances:

* float64 against their float64 section: 1e-8 nats. A faithful mapping agrees to ~1e-12
  (float64 sums of ~1e3-sized terms in another order); every structural difference the
  mapping could get wrong (mask parity, coupling form, split, block norms, class table,
  squeeze order, ActNorm sign) moves log p(x, y) by 1e-4 to 600 nats.
* float32 against their float64 section: what float32 costs in their own code (the
  reference's float32 section differs from its float64 one by 7.5e-4 nats on MNIST, 8.3e-7 on
  the toy), with room for other kernels: 5e-3 (MNIST) and 1e-5 (toy), the README's figures.
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from scnf.cli import main
from scnf.models.released import ReleasedCheckpointError, load_released_state_dict
from tests.released.reference import mnist_state_dict, reference_file

F64_TOL = 1e-8
F32_TOL = {"mnist": 5e-3, "toy": 1e-5}


@pytest.fixture(scope="module")
def mnist_sd():
    return mnist_state_dict()


def _state_dict(name, mnist_sd=None):
    if name == "mnist":
        return mnist_sd
    return torch.load(reference_file("toy.pt"), weights_only=True)


def _inputs(name):
    x = torch.load(reference_file(f"{name}-inputs.pt"), weights_only=True)
    return x.reshape(x.shape[0], 2) if name == "toy" else x


def _expected(name):
    return json.loads(reference_file(f"{name}-expected.json").read_text())


@torch.no_grad()
def _quantities(model, x, y):
    """Every quantity of the reference, computed by our model."""
    k = model.num_classes
    z, ld_f = model.unconditional(x)
    z_aux, z_f = z[:, :model.aux_dim], z[:, model.aux_dim:]
    b = x.shape[0]
    z_rep = z_f.repeat_interleave(k, 0)
    y_rep = torch.arange(k).repeat(b)
    z_h, ld_h = model.conditional(z_rep, context=y_rep)
    lj = model.log_joint(x)
    z_h_own, _ = model.conditional(z_f, context=y)
    return {
        "log_joint": lj, "log_marginal": model.log_marginal(x), "log_posterior": torch.log_softmax(lj, 1),
        "log_det_f": ld_f, "log_prior_aux": model.aux_prior.log_prob(z_aux),
        "log_det_h": ld_h.view(b, k), "log_prior_h": model.latent_prior.log_prob(z_h).view(b, k),
        "log_p_y": model.log_class_prior, "z_f_sum": z_f.sum(1), "z_f_sumsq": (z_f ** 2).sum(1),
        "z_aux_sum": z_aux.sum(1), "z_h_given_y_sum": z_h_own.sum(1), "z_f": z_f,
    }


@pytest.mark.parametrize("name", ["toy", "mnist"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_converted_model_computes_the_authors_numbers(name, dtype, request):
    sd = _state_dict(name, request.getfixturevalue("mnist_sd") if name == "mnist" else None)
    exp = _expected(name)
    ref = exp["float64"]
    model = load_released_state_dict(sd, name).to(dtype)
    x = _inputs(name).to(dtype)
    y = torch.tensor(exp["inputs"]["y"])
    got = _quantities(model, x, y)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL[name]
    worst = {}
    for key, value in got.items():
        if key not in ref:
            continue
        want = torch.tensor(ref[key], dtype=torch.float64)
        assert value.shape == want.shape, key
        worst[key] = float((value.double() - want).abs().max())
    print(f"{name} {dtype}: largest differences against the authors' float64 values: {worst}")
    # z_f's statistics are sums of 196 squares of ~1e1: scale their tolerance by their size
    for key, err in worst.items():
        scale = 1.0 if not key.startswith("z_") else max(1.0, float(torch.tensor(ref[key]).abs().max()) / 100)
        assert err <= tol * scale, (key, err, tol * scale)
    assert got["log_joint"].argmax(1).tolist() == ref["predicted"]


def test_toy_reference_agrees_to_rounding():
    """The float64 toy agrees to ~1e-15, not just within 1e-8: the mapping is exact."""
    model = load_released_state_dict(_state_dict("toy"), "toy").double()
    got = _quantities(model, _inputs("toy").double(), torch.tensor(_expected("toy")["inputs"]["y"]))
    want = torch.tensor(_expected("toy")["float64"]["log_joint"], dtype=torch.float64)
    assert (got["log_joint"] - want).abs().max() < 1e-12


def _log_joint_error(model) -> float:
    """The largest |log p(x, y)| difference of ``model`` (float64) from the authors' on the toy inputs."""
    with torch.no_grad():
        lj = model.double().log_joint(_inputs("toy").double())
    return float((lj - torch.tensor(_expected("toy")["float64"]["log_joint"], dtype=torch.float64)).abs().max())


def test_initialised_norms_stay_as_imported_in_train_mode():
    """``requires_init = 0`` (their initialised ActNorm) is ``initialized = True``: a forward in
    train mode changes no weight and computes the authors' numbers; a norm whose
    ``requires_init`` is 1 comes in uninitialised (and initialises from its first batch)."""
    from scnf.nn import ChannelAffine

    model = load_released_state_dict(_toy_sd(), "toy").double()
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("initialized")}
    model.train()
    assert _log_joint_error(model) < 1e-12
    assert [k for k, v in before.items() if not torch.equal(model.state_dict()[k], v)] == []
    norms = [m for m in model.modules() if isinstance(m, ChannelAffine)]
    assert len(norms) == 11 and [bool(m.initialized) for m in norms] == [True] * 11
    sd = _toy_sd()
    sd["flow.module.modules_.2.requires_init"] = torch.ones_like(sd["flow.module.modules_.2.requires_init"])
    fresh = load_released_state_dict(sd, "toy")
    first = fresh.unconditional.layers[2]
    assert isinstance(first, ChannelAffine)
    assert [bool(m.initialized) for m in fresh.modules() if isinstance(m, ChannelAffine)] == [False] + [True] * 10


@pytest.mark.parametrize("prefix", ["flow.module.modules_.", "flow.modules_."], ids=["DataParallel", "plain"])
def test_f_is_read_with_or_without_the_data_parallel_prefix(prefix):
    """Their script saves f under ``flow.module.`` when wrapped in DataParallel and ``flow.`` when
    not: both load, to the same numbers."""
    sd = _toy_sd()
    assert sum(k.startswith("flow.module.modules_.") for k in sd) == 32
    sd = {(prefix + k[len("flow.module.modules_."):]) if k.startswith("flow.module.modules_.") else k: v
          for k, v in sd.items()}
    assert sum(k.startswith(prefix) for k in sd) == 32
    assert _log_joint_error(load_released_state_dict(sd, "toy")) < 1e-12


# ------------------------------------------------------------------ bad checkpoints
def _toy_sd():
    return dict(_state_dict("toy"))


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd.pop("prior.flow.modules_.2.net1.1.net.3.bias"), "missing key 'prior.flow.modules_.2.net1.1.net.3.bias'"),
    (lambda sd: sd.__setitem__("prior.flow.extra.weight", torch.zeros(2)), "unexpected key 'prior.flow.extra.weight'"),
    (lambda sd: sd.__setitem__("flow.module.modules_.0.W", torch.zeros(3, 3)),
     r"key 'flow.module.modules_.0.W' has shape \(3, 3\), expected \(2, 2\)"),
    (lambda sd: sd.__setitem__("prior.deep_prior.mean", torch.ones(2)), "'prior.deep_prior.mean' is not 0"),
    (lambda sd: sd.__setitem__("prior.flow.embeddings.weight", torch.zeros(1, 10)),
     "'prior.flow.embeddings.weight' has shape"),
], ids=["missing", "unexpected", "shape", "prior-mean", "embedding"])
def test_a_wrong_key_is_named(change, match):
    sd = _toy_sd()
    change(sd)
    with pytest.raises(ReleasedCheckpointError, match=match):
        load_released_state_dict(sd, "toy")


def test_the_mnist_masks_are_checked(mnist_sd):
    sd = dict(mnist_sd)
    sd["flow.module.modules_.5.mask"] = 1 - sd["flow.module.modules_.5.mask"]  # parity 0 instead of 1
    with pytest.raises(ReleasedCheckpointError, match=r"modules_.5.mask.*checkerboard of parity 1"):
        load_released_state_dict(sd, "mnist")


def test_a_toy_file_is_not_an_mnist_model():
    with pytest.raises(ReleasedCheckpointError, match="missing key"):
        load_released_state_dict(_toy_sd(), "mnist")


# ------------------------------------------------------------------ the command
def test_import_released_writes_a_run_that_evaluates(tmp_path, capsys):
    from scnf.runs.run import evaluate_run, load_run

    ckpt = tmp_path / "model.torch"
    shutil.copy(reference_file("toy.pt"), ckpt)
    out = tmp_path / "run"
    assert main(["import-released", str(ckpt), "--out", str(out), "--model", "toy"]) == 0
    assert "imported the released toy model" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.toml"]
    cfg, model, data, _ = load_run(out)
    assert cfg.data.dataset == "moons" and cfg.model.h_hidden == 32
    exp = _expected("toy")
    with torch.no_grad():
        lj = model.double().log_joint(_inputs("toy").double())
    assert (lj - torch.tensor(exp["float64"]["log_joint"], dtype=torch.float64)).abs().max() < F64_TOL
    metrics = evaluate_run(out)
    # the run's test rows, scored by hand with the converted model (float32, as the run holds it)
    _, model, data, _ = load_run(out)
    with torch.no_grad():
        lj = model.log_joint(data.x_test.float()).double()
    y = torch.as_tensor(data.y_test)
    assert metrics["error_pct"] == pytest.approx(100.0 * float((lj.argmax(1) != y).double().mean()), abs=1e-9)
    # float32 log-densities of ~1 nat summed in other batches: 1e-5 is 100 times their rounding
    assert metrics["nll"] == pytest.approx(-float(torch.logsumexp(lj, 1).mean()), abs=1e-5)
    from scnf.runs.calibration import expected_calibration_error
    ece = expected_calibration_error(torch.softmax(lj, 1).numpy(), y.numpy())
    assert metrics["ece_pct"] == pytest.approx(ece, abs=1e-3)  # float32 confidences agree to ~1e-6: ECE % to ~1e-4
    # an existing run is not overwritten
    assert main(["import-released", str(ckpt), "--out", str(out), "--model", "toy"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_import_released_mnist_run_directory(tmp_path, mnist_sd):
    """The MNIST run directory: the paper profile's config, and a checkpoint that loads into
    the default builder strictly and computes the authors' numbers."""
    import scnf
    from scnf.training.checkpoint import load_checkpoint, load_model_state
    from scnf.config import load_config
    from scnf.runs.imported import import_released, run_config

    ckpt = tmp_path / "model.torch"
    torch.save(mnist_sd, ckpt)
    out = tmp_path / "run"
    import_released(ckpt, out, "mnist")
    cfg = load_config(out / "config.toml")
    assert cfg == run_config("mnist") and cfg.data.dataset == "mnist" and cfg.train.steps == 117188
    model = scnf.mnist_scnf()
    load_model_state(model, load_checkpoint(out / "checkpoint.pt")["model"], out / "checkpoint.pt")
    with torch.no_grad():
        lj = model.double().eval().log_joint(_inputs("mnist").double())
    want = torch.tensor(_expected("mnist")["float64"]["log_joint"], dtype=torch.float64)
    assert (lj - want).abs().max() < F64_TOL


@pytest.mark.parametrize("change,match", [
    (lambda sd: sd.pop("prior.deep_prior.logsigma"), "missing key 'prior.deep_prior.logsigma'"),
    (lambda sd: sd.__setitem__("surplus", torch.zeros(1)), "unexpected key 'surplus'"),
], ids=["missing", "unexpected"])
def test_import_released_errors_are_one_line_exit_2(tmp_path, capsys, change, match):
    sd = _toy_sd()
    change(sd)
    ckpt = tmp_path / "bad.torch"
    torch.save(sd, ckpt)
    out = tmp_path / "run"
    assert main(["import-released", str(ckpt), "--out", str(out), "--model", "toy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()  # nothing half-written


def test_import_released_refuses_code_and_non_state_dicts(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code from the checkpoint",))

    for name, obj in (("evil.torch", {"x": Evil()}), ("tensor.torch", torch.zeros(3))):
        path = tmp_path / name
        torch.save(obj, path)
        assert main(["import-released", str(path), "--out", str(tmp_path / name / "run")]) == 2
        captured = capsys.readouterr()
        assert "ran code" not in captured.out
        assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert main(["import-released", str(tmp_path / "missing.torch"), "--out", str(tmp_path / "r")]) == 2


# ------------------------------------------------------------------ files that are not the checkpoint
def _write_bad(path, kind):
    import pickle

    if kind == "text":
        path.write_text("(weights)\n")  # the text torch's loader answered with "pop from empty list"
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=2))
    elif kind == "pickle4":
        path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    elif kind in ("truncated", "truncated-legacy"):
        shutil.copy(reference_file("toy.pt"), path)
        if kind == "truncated-legacy":
            torch.save(_toy_sd(), path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("kind, what", [
    ("text", "is a text file, not a PyTorch checkpoint"),
    ("pickle", "is a plain Python pickle, not a file torch.save wrote"),
    ("pickle4", "is a plain Python pickle, not a file torch.save wrote"),
    ("truncated", "is truncated or damaged: a PyTorch zip file"),
    ("truncated-legacy", "is truncated or damaged: a PyTorch file \\(legacy format\\)"),
    ("empty", "is empty"),
])
def test_a_file_that_is_not_a_state_dict_is_one_line_saying_what_it_is(tmp_path, capsys, kind, what):
    f = tmp_path / "model.torch"
    _write_bad(f, kind)
    assert main(["import-released", str(f), "--out", str(tmp_path / "run"), "--model", "toy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    import re

    assert re.search(f"{f} {what}", err) and err.endswith("(their pretrained/model.torch)"), err
    assert "IndexError" not in err and "internal miniz" not in err and not (tmp_path / "run").exists()


def test_a_toy_checkpoint_imported_as_mnist_gets_a_hint_and_the_reverse(tmp_path, capsys, mnist_sd):
    f = tmp_path / "toy.torch"
    shutil.copy(reference_file("toy.pt"), f)
    assert main(["import-released", str(f), "--out", str(tmp_path / "run")]) == 2
    assert "looks like the released toy model, not mnist: pass --model toy" in capsys.readouterr().err
    with pytest.raises(ReleasedCheckpointError, match="looks like the released mnist model, not toy: pass --model mnist"):
        load_released_state_dict(dict(mnist_sd), "toy")


def test_non_finite_weights_are_refused_on_import(tmp_path, capsys):
    sd = _toy_sd()
    key = "prior.flow.modules_.2.net1.0.weight"
    sd[key] = sd[key].clone()
    sd[key].view(-1)[3] = float("nan")
    f = tmp_path / "nan.torch"
    torch.save(sd, f)
    assert main(["import-released", str(f), "--out", str(tmp_path / "run"), "--model", "toy"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"key {key!r} holds 1 NaN or infinite value(s)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
