"""Flat parameter groups (scnf.training.flat): the optimiser on one flat tensor per group takes the
per-tensor optimiser's steps, the gradient check sees every parameter, frozen parameters stay
out, and an optimiser state written per tensor (older checkpoints) resumes."""
import copy

import pytest
import torch

import scnf
from scnf.training.flat import FlatGroups, flat_optimizer_state
from scnf.training.trainer import _param_groups

OPTIMISERS = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam}


def _model():
    torch.manual_seed(0)
    m = scnf.vector_scnf(3, 2, blocks=2, h_blocks=2, hidden=8, h_hidden=8)
    m.log_joint(torch.randn(32, 3))  # ActNorm initialisation
    return m


def _loss_backward(m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g)
    y = torch.randint(0, 2, (16,), generator=g)
    (-m.log_prob(x, y).mean()).backward()


def _per_tensor(m, opt):
    groups = _param_groups(m)
    return OPTIMISERS[opt](groups, lr=1e-2, weight_decay=1e-3), groups


@pytest.mark.parametrize("opt", sorted(OPTIMISERS))
def test_flat_steps_equal_per_tensor_steps(opt):
    ref, flat_m = _model(), _model()
    o_ref, _ = _per_tensor(ref, opt)
    fg = FlatGroups(_param_groups(flat_m))
    o_flat = OPTIMISERS[opt](fg.optimizer_groups, lr=1e-2, weight_decay=1e-3)
    for step in range(5):
        o_ref.zero_grad(set_to_none=True)
        fg.zero_grad()
        _loss_backward(ref, step)
        _loss_backward(flat_m, step)
        fg.gather_grads()
        assert fg.grads_finite()
        o_ref.step()
        o_flat.step()
    for (k, a), b in zip(ref.state_dict().items(), flat_m.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=k)
    # the steps moved the weights: the comparison is not of two untouched models
    assert any(not torch.equal(a, b) for a, b in zip(ref.state_dict().values(), _model().state_dict().values()))


def test_parameters_are_views_of_the_flat_tensor_and_keep_their_keys():
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fg = FlatGroups(_param_groups(m))
    assert list(m.state_dict()) == list(before)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    flat = [f for f in fg.flat if f is not None]
    assert sum(f.numel() for f in flat) == sum(p.numel() for p in m.parameters())
    with torch.no_grad():
        for f in flat:
            f.add_(1.0)
    for name, p in m.named_parameters():
        assert torch.equal(p, before[name] + 1), name  # every parameter is a view


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_non_finite_gradient_anywhere_is_caught(bad, where):
    m = _model()
    fg = FlatGroups(_param_groups(m))
    _loss_backward(m, 0)
    fg.gather_grads()
    assert fg.grads_finite()
    ps = [p for p in m.parameters() if p.numel()]
    p = ps[0] if where == "first" else ps[-1]
    p.grad[(0,) * p.grad.dim()] = bad
    fg.gather_grads()
    assert not fg.grads_finite()


def test_frozen_parameters_stay_out_and_unchanged():
    m = _model()
    frozen = next(iter(m.unconditional.parameters()))
    frozen.requires_grad_(False)
    kept = frozen.detach().clone()
    fg = FlatGroups(_param_groups(m))
    o = torch.optim.Adamax(fg.optimizer_groups, lr=1e-1, weight_decay=1e-2)
    for step in range(3):
        fg.zero_grad()
        _loss_backward(m, step)
        fg.gather_grads()
        o.step()
    assert torch.equal(frozen, kept)
    assert sum(f.numel() for f in fg.flat if f is not None) == sum(p.numel() for p in m.parameters()) - kept.numel()


@pytest.mark.parametrize("opt", sorted(OPTIMISERS))
def test_an_optimiser_state_written_per_tensor_resumes_in_the_flat_form(opt):
    ref = _model()
    o_ref, groups = _per_tensor(ref, opt)
    for step in range(3):
        o_ref.zero_grad(set_to_none=True)
        _loss_backward(ref, step)
        o_ref.step()
    saved = copy.deepcopy(o_ref.state_dict())
    resumed = copy.deepcopy(ref)
    fg = FlatGroups(_param_groups(resumed))
    o_flat = OPTIMISERS[opt](fg.optimizer_groups, lr=1e-2, weight_decay=1e-3)
    o_flat.load_state_dict(flat_optimizer_state(saved, fg, [list(g["params"]) for g in _param_groups(resumed)]))
    for step in (3, 4):
        o_ref.zero_grad(set_to_none=True)
        fg.zero_grad()
        _loss_backward(ref, step)
        _loss_backward(resumed, step)
        fg.gather_grads()
        o_ref.step()
        o_flat.step()
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=k)
    # a state already flat is passed through
    sd = o_flat.state_dict()
    assert flat_optimizer_state(sd, fg, [list(g["params"]) for g in _param_groups(resumed)]) is sd


def test_the_small_model_benchmark_runs_and_reports_both_versions(tmp_path):
    """benchmarks/small_model.py as benchmarks/RESULTS.md runs it, tiny: two names for this
    checkout's source, one round of a few steps, no estimator fit."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = str(root / "src")
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "small_model.py"), "--version", f"a={src}",
                        "--version", f"b={src}", "--rounds", "1", "--steps", "3", "--estimator-rounds", "0"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [l for l in p.stdout.splitlines() if l.startswith("| a |") or l.startswith("| b |")]
    assert len(rows) == 2 and "1.00x" in rows[0]
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "small_model.py"), "--version", "x=/nowhere"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "DIR/scnf/__init__.py" in bad.stderr
