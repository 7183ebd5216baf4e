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


def _small_model_benchmark():
    from tests.helpers import load_benchmark

    return load_benchmark("small_model")


def test_the_small_model_benchmark_tables_by_hand(monkeypatch, capsys, tmp_path):
    """benchmarks/small_model.py's tables from measurements given by hand: rounds alternate the
    versions' order, each row is the median of its rounds, the speed-up is against the first
    version, and --unfused reaches only the version it names."""
    bench = _small_model_benchmark()
    demo_ms = {("a", False): iter([2.0, 3.0, 10.0]), ("b", True): iter([4.0, 6.0, 5.0])}
    calls = []

    def fake_run(src, what, steps, threads, unfused=False):
        name = "a" if src.endswith("a") else "b"
        calls.append((name, what, unfused))
        if what == "demo":
            return {"ms_per_step": next(demo_ms[(name, unfused)]), "ops_per_step": 100.0 if name == "a" else 250.0,
                    "profile": {"kernels": 0.5, "matmul": 0.25, "autograd_engine": 0.2, "optimiser": 0.1,
                                "python_and_rest": 0.2}}
        return {"wall_s": 8.0 if name == "a" else 10.0, "cpu_s": 9.0, "steps": 500}

    for name in "ab":
        (tmp_path / name / "scnf").mkdir(parents=True)
        (tmp_path / name / "scnf" / "__init__.py").write_text("")
    monkeypatch.setattr(bench, "_run", fake_run)
    bench.main(["--version", f"a={tmp_path / 'a'}", "--version", f"b={tmp_path / 'b'}", "--unfused", "b",
                "--rounds", "3", "--steps", "3", "--estimator-rounds", "1"])
    out = capsys.readouterr().out
    assert calls == [("a", "demo", False), ("b", "demo", True), ("b", "demo", True), ("a", "demo", False),
                     ("a", "demo", False), ("b", "demo", True), ("a", "estimator", False), ("b", "estimator", True)]
    rows = [l for l in out.splitlines() if l.startswith(("| a |", "| b |"))]
    assert rows == ["| a | 3.0 | 333.3 | 1.00x | 100 | 50% (25%) | 20% | 10% | 20% |",  # medians 3.0 and 5.0 ms
                    "| b | 5.0 | 200.0 | 0.60x | 250 | 50% (25%) | 20% | 10% | 20% |",
                    "| a | 8.0 | 9.0 | 500 | 1.00x |",
                    "| b | 10.0 | 9.0 | 500 | 0.80x |"]
    with pytest.raises(SystemExit) as e:
        bench.main(["--version", "x=/nowhere"])
    assert e.value.code == 2 and "DIR/scnf/__init__.py" in capsys.readouterr().err


def test_the_small_model_benchmark_runs_this_checkout():
    """benchmarks/small_model.py run for real on this checkout's source, tiny (one version, one
    round of 3 timed steps, no estimator fit): its row is the round it printed."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "small_model.py"), "--version",
                        f"a={root / 'src'}", "--rounds", "1", "--steps", "3", "--estimator-rounds", "0"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (demo,) = [json.loads(l)["demo"] for l in p.stdout.splitlines() if l.startswith("{")]
    (row,) = [l for l in p.stdout.splitlines() if l.startswith("| a |")]
    ms = demo["ms_per_step"]
    assert row.split(" | ")[1:5] == [f"{ms:.1f}", f"{1e3 / ms:.1f}", "1.00x", f"{demo['ops_per_step']:.0f}"]
    assert 0 < demo["profile"]["matmul"] <= demo["profile"]["kernels"] <= 1


def _mixed_groups():
    """Two groups: float32 ``a``, ``b`` (flat) and ``c`` float32 beside ``d`` float64 (kept per tensor)."""
    torch.manual_seed(0)
    a, b, c = (torch.nn.Parameter(torch.randn(*s)) for s in ((3,), (2, 2), (5,)))
    d = torch.nn.Parameter(torch.randn(2, dtype=torch.float64))
    return [{"params": [a, b], "name": "g0"}, {"params": [c, d], "name": "g1"}]


def _mixed_loss(groups):
    return sum((p.double() ** 2 * (i + 1)).sum() for i, p in enumerate(q for g in groups for q in g["params"]))


def test_a_group_of_mixed_dtypes_is_kept_per_tensor_in_its_dtypes():
    groups = _mixed_groups()
    a, b, c, d = (p for g in groups for p in g["params"])
    before = [p.detach().clone() for p in (a, b, c, d)]
    fg = FlatGroups(groups)
    assert [p.dtype for p in (a, b, c, d)] == [torch.float32] * 3 + [torch.float64]
    assert fg.flat[0] is not None and fg.flat[1] is None
    assert fg.optimizer_groups[1]["params"] == [c, d]
    assert fg.flat[0].dtype == torch.float32
    for p, v in zip((a, b, c, d), before):
        assert torch.equal(p, v)
    # an optimiser step on the groups as given keeps each dtype
    o = torch.optim.Adam(fg.optimizer_groups, lr=0.1)
    _mixed_loss(groups).backward()
    fg.gather_grads()
    o.step()
    assert (c.dtype, d.dtype) == (torch.float32, torch.float64)


def test_a_per_tensor_group_after_a_flat_one_keeps_each_parameter_state():
    """Old state indices 0-3 (a, b | c, d) become 0 (flat a+b) and 1, 2 (c, d): each per-tensor
    parameter resumes with its own ``exp_avg``, not with its neighbour's, nor with none."""
    groups = _mixed_groups()
    o_ref = torch.optim.Adam(groups, lr=0.1)
    for _ in range(2):
        o_ref.zero_grad()
        _mixed_loss(groups).backward()
        o_ref.step()
    saved = copy.deepcopy(o_ref.state_dict())
    assert sorted(saved["state"]) == [0, 1, 2, 3]
    a, b, c, d = (p for g in groups for p in g["params"])
    old = {name: o_ref.state[p]["exp_avg"].clone() for name, p in zip("abcd", (a, b, c, d))}
    fg = FlatGroups(groups)
    o = torch.optim.Adam(fg.optimizer_groups, lr=0.1)
    o.load_state_dict(flat_optimizer_state(saved, fg, [list(g["params"]) for g in groups]))
    flat_state = o.state[fg.flat[0]]
    assert torch.equal(flat_state["exp_avg"], torch.cat([old["a"], old["b"].reshape(-1)]))
    for name, p in (("c", c), ("d", d)):
        assert p in o.state, f"{name} lost its optimiser state"
        assert o.state[p]["exp_avg"].shape == p.shape, name
        assert torch.equal(o.state[p]["exp_avg"], old[name]), name
