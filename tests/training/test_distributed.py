"""Multi-process training (one Trainer with a scnf.training.process_group.TorchProcessGroup):
equivalence of a 2-process gloo job with a 1-process run (whole batches, micro-batches, and
consistency + pseudo-labels + weight average + validation together), identical ActNorm init
across ranks, sharded evaluation, the max_seconds stop, sharding, faults, precision modes
and launching.

The multi-process tests start real processes on localhost with ``local_launch`` (the
torchrun variables set by hand, one thread each) and call back into this module.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import scnf.runs.run as ex
import scnf.training.launch as L
import scnf.training.process_group as PG
from scnf.models.builders import mnist_scnf, vector_scnf
from scnf.config import TrainConfig
from scnf.training.launch import local_launch
from scnf.models.flow import check_invertibility
from scnf.training.precision import apply_precision
from scnf.data.batches import MixedBatchSampler, SemiSupervisedData
from scnf.training.trainer import Trainer
from scnf.training.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[2]
STEPS = {"toy": 4, "mnist": 3}
EQUIVALENCE = ["toy", "mnist", "toy-micro", "mnist-micro", "mnist-options"]


# ------------------------------------------------------------------ problems
class _Float64Data(SemiSupervisedData):
    """The same rows and noise, fed to the model in float64."""

    def prepare(self, xb, generator):
        return super().prepare(xb, generator).double()


def _problem(name: str, float64: bool = False):
    """(model, data, cfg) built deterministically, identical in every process.

    ``toy`` and ``mnist``; ``-micro``: with ``micro_batch = 3`` (chunks of 3 of each rank's
    rows); ``mnist-options``: micro-batches, the consistency term, pseudo-labels, a weight
    average and a validation set together.

    ``float64``: model and inputs in double precision. The equivalence tests use it
    because Adamax normalises each step by the largest |gradient| seen, so a parameter
    whose exact gradient is ~0 (ActNorm biases right after their data-dependent init have
    float32 gradients ~1e-7 of pure rounding noise) moves by +-lr in a noise-determined
    direction; in float32 the 1- and 2-process runs then differ by ~lr after one step
    although their gradients agree to 1e-7. In float64 that noise is far below Adamax's
    eps = 1e-8 and the runs agree to ~1e-12.
    """
    torch.manual_seed(0)
    Data = _Float64Data if float64 else SemiSupervisedData
    base, _, variant = name.partition("-")
    if base == "toy":
        from scnf.data import toy_problem

        x, y_semi, _, xt, yt = toy_problem("moons", 200, 64, 10, 0.1, seed=0)
        data = Data(torch.from_numpy(x), torch.from_numpy(y_semi), torch.from_numpy(xt), torch.from_numpy(yt))
        model = vector_scnf(2, 2, "glow", blocks=2, hidden=16, h_blocks=2, h_hidden=16)
        cfg = TrainConfig(batch_size=16, steps=STEPS["toy"], lr=3e-3, clf_weight=0.5, device="cpu",
                          progress=False, eval_every=1000, checkpoint_every=1000)
    else:
        g = torch.Generator().manual_seed(1)
        x = torch.randint(0, 256, (48, 1, 28, 28), generator=g, dtype=torch.uint8)
        y = torch.full((48,), -1, dtype=torch.long)
        y[:20] = torch.arange(20) % 10
        xt = torch.randint(0, 256, (20, 1, 28, 28), generator=g, dtype=torch.uint8)
        yt = torch.arange(20) % 10
        val = {}
        if variant == "options":
            val = dict(x_val=torch.randint(0, 256, (10, 1, 28, 28), generator=g, dtype=torch.uint8),
                       y_val=torch.arange(10) % 10)
        data = Data(x, y, xt, yt, images=True, **val)
        model = mnist_scnf(hidden=4, blocks=1, h_hidden=8, h_blocks=1)
        cfg = TrainConfig(batch_size=8, steps=STEPS["mnist"], lr=1e-3, device="cpu", progress=False,
                          eval_every=1000, checkpoint_every=1000)
    if variant in ("micro", "options"):
        cfg.micro_batch = 3
    if variant == "options":
        cfg.augment_shift, cfg.consistency_weight, cfg.consistency_temperature = 1, 0.5, 0.8
        cfg.pseudo_threshold, cfg.pseudo_weight, cfg.ema_decay = 0.104, 0.5, 0.9  # some rows pass, some not
    return (model.double() if float64 else model), data, cfg


def _flat_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ workers (run in child processes)
def _equivalence_worker(out: str) -> None:
    torch.set_num_threads(1)
    G = PG.TorchProcessGroup(PG.init_distributed("cpu"))
    r = G.rank
    res = {}
    for name in EQUIVALENCE:
        model, data, cfg = _problem(name, float64=True)
        tr = Trainer(model, data, cfg, seed=0, group=G)
        losses, identical = [], []
        for _ in range(cfg.steps):
            losses.append(tr.train_step()["loss"])
            identical.append(G.parameters_identical(model))
        ev = evaluate(model, data, data.x_test, data.y_test, batch_size=6, group=G)
        local = evaluate(model, data, data.x_test, data.y_test, batch_size=6)  # this process alone
        res[name] = {"losses": losses, "identical": identical, "eval": ev, "eval_local": local,
                     "trainer_eval": tr.evaluate(), "trainer_val": tr.evaluate_validation()}
        torch.save(_flat_state(model), Path(out) / f"{name}_rank{r}.pt")
    # a non-finite loss on one rank only: every rank skips the step together, none hangs
    model, data, cfg = _problem("toy")
    tr = Trainer(model, data, cfg, seed=0, group=G)
    real = model.loss_terms

    def poisoned(*a, **k):
        out = real(*a, **k)
        if r == 1 and tr.step == 1:
            return (out[0] * float("nan"), *out[1:])
        return out

    model.loss_terms = poisoned  # the objective asks the model for its terms
    try:
        skipped = [tr.train_step()["skipped"] for _ in range(3)]
    finally:
        del model.loss_terms
    res["nan_skipped"] = skipped
    res["nan_identical"] = G.parameters_identical(model)
    # max_seconds: rank 1's clock runs fast; both ranks stop after the same step
    model, data, cfg = _problem("toy")
    cfg.steps, cfg.max_seconds = 200, 1.0

    def fast_clock(trainer, step):
        if r == 1:
            trainer.seconds += 0.3

    tr = Trainer(model, data, cfg, seed=0, group=G, callback=fast_clock)
    tr.fit()
    res["max_seconds_step"] = tr.step
    # explicit broadcast: a rank-1 perturbation is detected, then undone by broadcast_module_
    model, _, _ = _problem("toy")
    with torch.no_grad():
        next(model.parameters()).add_(float(r))
    res["perturbed_identical"] = G.parameters_identical(model)
    G.broadcast_module_(model)
    res["after_broadcast_identical"] = G.parameters_identical(model)
    try:  # the end-to-end resume, here to share this job's start-up; its own test reads the result
        res["resume"] = _resume_runs(Path(out), G)
    except Exception:  # noqa: BLE001 - reported by test_run_distributed_resumes_to_the_uninterrupted_run
        import traceback

        res["resume"] = {"error": traceback.format_exc()}
    (Path(out) / f"result_rank{r}.json").write_text(json.dumps(res))
    PG.cleanup()


class _Crash(Exception):
    pass


def _e2e_config():
    from scnf.config import from_dict

    return from_dict({"seed": 0, "data": {"dataset": "moons", "n_train": 200, "n_test": 100},
                      "model": {"blocks": 1, "hidden": 8, "h_blocks": 1, "h_hidden": 8},
                      "train": {"batch_size": 16, "steps": 8, "eval_every": 4, "checkpoint_every": 4,
                                "device": "cpu", "progress": False}})


def _resume_runs(out: Path, G) -> dict:
    """``experiment.run`` three times with one config: uninterrupted into ``full``; into
    ``cut``, every rank stopping with an exception after step 6 (the last checkpoint is step
    4's); then resumed in ``cut`` (config.toml untouched). Returns both metrics and whether
    the stop happened."""
    full = ex.run(_e2e_config(), out / "full")
    real = ex.Trainer

    class Crashing(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.callback = self._crash

        @staticmethod
        def _crash(trainer, step):
            if step == 6:
                raise _Crash

    ex.Trainer = Crashing
    crashed = False
    try:
        ex.run(_e2e_config(), out / "cut")
    except _Crash:
        crashed = True
    finally:
        ex.Trainer = real
    G.barrier()
    ckpt_step = int(torch.load(out / "cut" / "checkpoint.pt", weights_only=False)["step"])
    resumed = ex.run(_e2e_config(), out / "cut", resume=True)
    return {"full": full, "resumed": resumed, "crashed": crashed, "checkpoint_step_at_crash": ckpt_step}


def _fault_worker(steps: int = 50) -> None:
    torch.set_num_threads(1)
    G = PG.TorchProcessGroup(PG.init_distributed("cpu"))
    model, data, cfg = _problem("toy")
    cfg.steps = steps

    def die(trainer, step):
        if trainer.group.rank == 1 and step == 1:
            os._exit(3)

    Trainer(model, data, cfg, seed=0, callback=die, group=G).fit()
    PG.cleanup()


# ------------------------------------------------------------------ 2-process equivalence
@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    res = local_launch(2, "tests.training.test_distributed:_equivalence_worker", {"out": str(out)}, timeout=300, cwd=ROOT)
    for rc, log in res:
        assert rc == 0, log[-3000:]
    return out, [json.loads((out / f"result_rank{r}.json").read_text()) for r in range(2)]


def _reference(name: str, trainer: bool = False):
    torch.set_num_threads(1)
    model, data, cfg = _problem(name, float64=True)
    tr = Trainer(model, data, cfg, seed=0)
    losses = [tr.train_step()["loss"] for _ in range(cfg.steps)]
    return (model, data, losses, tr) if trainer else (model, data, losses)


@pytest.mark.parametrize("name", EQUIVALENCE)
def test_two_processes_match_one_process(two_ranks, name):
    out, res = two_ranks
    model, data, losses, tr = _reference(name, trainer=True)
    # ranks report the same all-reduced loss, equal to the 1-process loss of the global batch
    assert res[0][name]["losses"] == res[1][name]["losses"]
    # Not bit-equal: two processes sum each gradient in another order (half-batch sums, then
    # the all-reduce), which moves float64 results by ~B * eps64 ~ 1e-14 relative at step 0.
    # Adamax then amplifies it for parameters whose exact gradient is ~0 (ActNorm biases just
    # after their data-dependent init): their update lr * g / (u + 1e-8) is set by rounding
    # noise, up to lr * 1e-6 ~ 3e-9 per step, and the next steps' losses move with those
    # parameters. Measured largest relative difference over the five problems: 7.7e-11 on AMD
    # (avx2 and default kernels), 1.4e-10 on Intel AVX-512. 1e-8 leaves ~70x; a real divergence
    # (a wrong world-size factor, an unsynchronised gradient) moves the losses by >= 1e-4.
    np.testing.assert_allclose(res[0][name]["losses"], losses, rtol=1e-8, atol=1e-10)
    ref = _flat_state(model)
    s0, s1 = (torch.load(out / f"{name}_rank{r}.pt") for r in range(2))
    assert s0.keys() == ref.keys()
    for k in ref:
        assert torch.equal(s0[k], s1[k]), k  # DDP keeps the ranks bit-identical
        torch.testing.assert_close(s0[k], ref[k], rtol=1e-6, atol=1e-8, msg=lambda m: f"{k}: {m}")
    # the trainer's evaluations (weight average, validation set) agree too
    for got, want in ((res[0][name]["trainer_eval"], tr.evaluate()), (res[0][name]["trainer_val"],
                                                                     tr.evaluate_validation())):
        assert got.keys() == want.keys()
        for k in want:
            assert got[k] == pytest.approx(want[k], rel=1e-7, abs=1e-9), k
    if name == "mnist-options":
        assert tr.ema is not None and tr.data.x_val is not None and res[0][name]["trainer_val"]


@pytest.mark.parametrize("name", EQUIVALENCE)
def test_parameters_identical_across_ranks_after_init(two_ranks, name):
    _, res = two_ranks
    assert all(res[0][name]["identical"]) and all(res[1][name]["identical"])


def test_nonfinite_loss_on_one_rank_skips_the_step_on_all(two_ranks):
    _, res = two_ranks
    for r in res:
        assert r["nan_skipped"] == [False, True, False]
        assert r["nan_identical"] is True


def test_max_seconds_stops_every_rank_after_the_same_step(two_ranks):
    _, res = two_ranks
    assert res[0]["max_seconds_step"] == res[1]["max_seconds_step"] < 200


def test_broadcast_module_makes_ranks_identical(two_ranks):
    _, res = two_ranks
    for r in res:
        assert r["perturbed_identical"] is False
        assert r["after_broadcast_identical"] is True


@pytest.mark.parametrize("name", ["toy", "mnist"])
def test_sharded_evaluation_matches_single_process(two_ranks, name):
    _, res = two_ranks
    model, data, _ = _reference(name)
    want = evaluate(model, data, data.x_test, data.y_test, batch_size=6)
    for r in res:
        got = r[name]["eval"]
        assert got.keys() == want.keys() == r[name]["eval_local"].keys()
        for k in want:
            # same model: the sharded totals equal the 1-process evaluation to rounding
            assert got[k] == pytest.approx(r[name]["eval_local"][k], rel=1e-13, abs=1e-12), k
            # the 1-process reference run (parameters equal to ~1e-8)
            assert got[k] == pytest.approx(want[k], rel=1e-7, abs=1e-9), k
    assert res[0][name]["eval"] == res[1][name]["eval"]


# ------------------------------------------------------------------ single-process pieces
def _rank(r: int, world: int) -> PG.ProcessGroup:
    """A stand-in for rank ``r`` of ``world`` processes (sharding and checks only; no collectives)."""
    g = PG.ProcessGroup()
    g.rank, g.world = r, world
    return g


def test_shards_have_equal_size_and_share_the_labelled_rows():
    y = np.full(40, -1)
    y[:5] = [0, 1, 0, 1, 0]
    s = MixedBatchSampler(torch.from_numpy(y), 8, 0.25, seed=3)
    for _ in range(10):
        g = s.next()
        parts = [_rank(r, 2).shard(g) for r in range(2)]
        assert [len(p) for p in parts] == [4, 4]
        assert sorted(np.concatenate(parts)) == sorted(g)
        assert [int((y[p] >= 0).sum()) for p in parts] == [1, 1]


def test_unlabelled_rows_once_per_epoch_across_ranks():
    y = np.full(37, -1)
    y[:1] = 0
    s = MixedBatchSampler(torch.from_numpy(y), 6, 0.0, seed=0)  # 36 unlabelled rows, 6 batches/epoch
    rows = [[], []]
    for _ in range(6):
        g = s.next()
        for r in range(2):
            rows[r] += list(_rank(r, 2).shard(g))
    assert not set(rows[0]) & set(rows[1])
    assert sorted(rows[0] + rows[1]) == list(range(1, 37))


def test_batch_not_divisible_raises():
    model, data, cfg = _problem("toy")
    cfg.batch_size = 15
    with pytest.raises(ValueError, match="not divisible"):
        Trainer(model, data, cfg, group=_rank(0, 2))


def test_view_rows_follow_their_rows_to_the_shard():
    """Consistency: each rank gets the second views of exactly its own unlabelled rows."""
    model, data, cfg = _problem("mnist")
    x = torch.arange(8.0)[:, None]
    y = torch.tensor([0, 1, -1, -1, 2, -1, -1, -1])
    view = x[y < 0] + 100
    for r in range(2):
        tr = Trainer(model, data, cfg, group=_rank(r, 2))
        xs, ys, vs = tr._shard(x, y, view)
        assert torch.equal(vs, xs[ys < 0] + 100)


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
@pytest.mark.parametrize("name", ["toy", "mnist"])
def test_precision_modes_train_and_invert(name, precision):
    model, data, cfg = _problem(name)
    cfg.steps = 2
    cfg.precision = precision
    tr = Trainer(model, data, cfg, seed=0)
    stats = [tr.train_step() for _ in range(2)]
    assert all(np.isfinite(s["loss"]) and not s["skipped"] for s in stats)
    flags = {m.autocast for m in model.modules() if hasattr(m, "autocast")}
    assert flags == ({"cpu"} if precision == "bf16-mixed" else {None})
    assert set(model.state_dict()) == set(_problem(name)[0].state_dict())  # checkpoints unchanged
    x = data.prepare(data.x[:8], torch.Generator().manual_seed(0))
    err = check_invertibility(model, x)
    assert err < 1e-3, err


def test_unknown_precision_rejected():
    with pytest.raises(ValueError, match="precision"):
        apply_precision(torch.nn.Linear(1, 1), "fp16", "cpu")


def test_timeout_from_env(monkeypatch):
    monkeypatch.setenv(PG.ENV_TIMEOUT, "12.5")
    assert PG.timeout_seconds() == 12.5
    monkeypatch.delenv(PG.ENV_TIMEOUT)
    assert PG.timeout_seconds() == 300
    monkeypatch.setenv(PG.ENV_TIMEOUT, "soon")
    with pytest.raises(ValueError, match=PG.ENV_TIMEOUT):
        PG.timeout_seconds()


def test_launch_starts_the_processes_with_the_torchrun_variables(monkeypatch):
    started = []

    class _Proc:
        def __init__(self, cmd, env):
            started.append((cmd, env))
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(L.subprocess, "Popen", _Proc)
    assert L.launch(2, ["train", "c.toml", "--nproc", "2", "--out", "o", "--nproc=3"]) == 0
    assert [cmd[1:] for cmd, _ in started] == [["-m", "scnf", "train", "c.toml", "--out", "o"]] * 2
    envs = [env for _, env in started]
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert envs[0]["MASTER_PORT"] == envs[1]["MASTER_PORT"] and L.WORKER_ERRORS_ENV in envs[0]


def test_launch_reports_the_cause_once_with_its_code(tmp_path, capsys):
    """A job whose rank 1 hit a data error and whose rank 0 then lost its peer: the data error
    is printed, once, with its code."""
    (tmp_path / "rank0").write_text("3\tDistributedError\tanother rank stopped")
    (tmp_path / "rank1").write_text("2\tValueError\tdata.n_labelled = 7 is odd")
    assert L._report([3, 2], tmp_path) == 2
    assert capsys.readouterr().err == "scnf: error: data.n_labelled = 7 is odd\n"
    assert L._report([0, 0], tmp_path) == 0


@pytest.mark.parametrize("extra,match", [
    (["--set", "train.batch_size=3"], "train.batch_size = 3 is not divisible by --nproc 2"),
    (["--out", "EXISTING"], "already holds a run"),
], ids=["batch", "existing-run"])
def test_nproc_usage_errors_are_one_line_exit_2(tmp_path, extra, match):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "metrics.json").write_text("{}")
    extra = [str(existing) if a == "EXISTING" else a for a in extra]
    if "--out" not in extra:
        extra += ["--out", str(tmp_path / "new")]
    p = subprocess.run([sys.executable, "-m", "scnf", "train", "configs/moons.toml", "--nproc", "2", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and match in lines[0], p.stderr


def test_an_error_inside_the_processes_is_one_line_with_its_code(tmp_path):
    """A corrupt checkpoint is found by the processes themselves (after the launcher's checks):
    exit 2 and one line, as with one process, not a traceback per process."""
    from scnf.config import dump_config, load_config

    out = tmp_path / "run"
    out.mkdir()
    cfg = load_config(ROOT / "configs" / "moons.toml")
    (out / "config.toml").write_text(dump_config(cfg))
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    p = subprocess.run([sys.executable, "-m", "scnf", "train", "configs/moons.toml", "--nproc", "2", "--out",
                        str(out), "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr[-3000:]
    assert len(lines) == 1 and "checkpoint" in lines[0] and "Traceback" not in p.stderr, p.stderr[-3000:]


# ------------------------------------------------------------------ faults
def test_rank_death_stops_the_others_within_the_timeout():
    t0 = time.monotonic()
    res = local_launch(2, "tests.training.test_distributed:_fault_worker", {}, timeout=60, cwd=ROOT,
                       env={PG.ENV_TIMEOUT: "10"})
    took = time.monotonic() - t0
    (rc0, log0), (rc1, _) = res
    assert rc1 == 3
    assert rc0 != 0 and "DistributedError" in log0 and "another rank" in log0, log0[-2000:]
    assert took < 40, took


# ------------------------------------------------------------------ end to end
def test_run_distributed_resumes_to_the_uninterrupted_run(two_ranks):
    """A 2-process run stopped after step 6 and resumed from its step-4 checkpoint, with the
    same config (config.toml kept), ends where the uninterrupted run ends: same metrics, same
    log, bit-identical weights."""
    out, res = two_ranks
    for r in res:
        assert "error" not in r["resume"], r["resume"].get("error")
        assert r["resume"]["crashed"] and r["resume"]["checkpoint_step_at_crash"] == 4
    full, cut = out / "full", out / "cut"
    m_full, m_cut = (json.loads((d / "metrics.json").read_text()) for d in (full, cut))
    assert m_cut["steps"] == 8 and m_cut["world_size"] == 2
    for k in ("error_pct", "nll", "train_labelled_error_pct", "max_reconstruction_error", "skipped_steps"):
        assert m_cut[k] == m_full[k], k
    timing = ("seconds", "wall_seconds_this_process")  # each rank returns its own clock readings
    for r in res:
        assert {k: v for k, v in r["resume"]["resumed"].items() if k not in timing} == {
            k: v for k, v in m_cut.items() if k not in timing}
    strip = lambda d: [{k: v for k, v in json.loads(s).items() if k != "seconds"}  # noqa: E731
                       for s in (d / "log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in strip(cut)] == [4, 8] and strip(cut) == strip(full)
    s_full, s_cut = (torch.load(d / "checkpoint.pt", weights_only=False)["model"] for d in (full, cut))
    assert s_full.keys() == s_cut.keys() and all(torch.equal(s_full[k], s_cut[k]) for k in s_full)
    from scnf.config import load_config

    assert load_config(cut / "config.toml") == _e2e_config()
