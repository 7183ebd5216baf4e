import json

from scnf.reproduce import table1, toy_config


def test_table1_quick_run_writes_table_and_reuses_runs(tmp_path):
    text = table1(tmp_path, seeds=2, rows=[("glow", "gmm")], datasets=["moons"], steps=5, jobs=2)
    assert "| GLOW ∘ GMM |" in text and "LabelSpreading (rbf)" in text and "SelfTraining (SVC)" in text
    assert "1.2 ± 1.2" in text  # the paper's number beside ours
    assert "mean ± std (ddof = 0)" in text
    saved = json.loads((tmp_path / "table1.json").read_text())
    assert len(saved["rows"]["glow-gmm-moons"]["error_pct"]) == 2
    assert (tmp_path / "glow-gmm-moons.png").exists()
    mtime = (tmp_path / "runs" / "glow-gmm-moons-s0" / "metrics.json").stat().st_mtime
    again = table1(tmp_path, seeds=2, rows=[("glow", "gmm")], datasets=["moons"], steps=5)
    assert (tmp_path / "runs" / "glow-gmm-moons-s0" / "metrics.json").stat().st_mtime == mtime  # reused
    assert again.splitlines()[4].split("|")[:6] == text.splitlines()[4].split("|")[:6]  # same numbers


def test_toy_config_per_row():
    assert toy_config("moons", "glow", "gmm", 3).model.init_from_labels
    c = toy_config("circles", "ffjord", "glow", 1)
    assert c.data.dataset == "circles" and c.seed == 1 and c.data.split_seed == 1
    assert c.model.unconditional == "ffjord" and c.train.steps == 500
    assert c.model.ffjord_train_tol == 0.0  # training solves at the evaluation tolerance by default
    assert toy_config("moons", "glow", "ffjord", 0, ffjord_train_tol=1e-3).model.ffjord_train_tol == 1e-3
    assert toy_config("moons", "glow", "glow", 0, ffjord_train_tol=1e-3).model.ffjord_train_tol == 0.0


def test_stopped_reproduction_reuses_finished_runs_and_resumes_the_stopped_one(tmp_path, monkeypatch):
    import pytest

    import scnf.experiment as ex
    import scnf.reproduce as rp
    from tests.helpers import StopTraining, stop_at
    from scnf.experiment import run

    orig_trainer = ex.Trainer

    class StopsInSeed1(orig_trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            if self.run_dir.name.endswith("-s1"):
                self.callback = stop_at(5)

    kw = dict(seeds=2, rows=[("glow", "gmm")], datasets=["moons"], steps=8)
    monkeypatch.setattr(ex, "Trainer", StopsInSeed1)
    with pytest.raises(StopTraining):
        table1(tmp_path, **kw)
    monkeypatch.setattr(ex, "Trainer", orig_trainer)
    s0 = tmp_path / "runs" / "glow-gmm-moons-s0" / "metrics.json"
    mtime = s0.stat().st_mtime
    calls = []
    orig_run = rp.run
    monkeypatch.setattr(rp, "run", lambda cfg, rdir, **k: calls.append((rdir.name, k)) or orig_run(cfg, rdir, **k))
    table1(tmp_path, **kw)
    assert s0.stat().st_mtime == mtime  # the finished run is reused
    assert calls == [("glow-gmm-moons-s1", {"resume": True, "overwrite": False})]  # the stopped one resumes
    full = run(toy_config("moons", "glow", "gmm", 1, steps=8), tmp_path / "full")
    resumed = json.loads((tmp_path / "runs" / "glow-gmm-moons-s1" / "metrics.json").read_text())
    for k in ("error_pct", "nll", "steps"):
        assert resumed[k] == full[k], k
