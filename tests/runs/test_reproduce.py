import json
import shutil

import pytest

from scnf.runs.reproduce import table1, toy_config


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


def test_table1_jobs_2_gives_the_numbers_of_jobs_1(tmp_path):
    """Runs in separate processes (--jobs 2) give the same records as one process: every run is
    seeded from its config alone."""
    kw = dict(seeds=2, rows=[("glow", "glow")], datasets=["circles"], steps=4)
    table1(tmp_path / "one", jobs=1, **kw)
    table1(tmp_path / "two", jobs=2, **kw)
    one, two = (json.loads((tmp_path / d / "table1.json").read_text())["rows"]["glow-glow-circles"]
                for d in ("one", "two"))
    assert one["error_pct"] == two["error_pct"] and one["nll"] == two["nll"]


def test_toy_config_per_row():
    assert toy_config("moons", "glow", "gmm", 3).model.init_from_labels
    # the default L_clf weight, chosen on validation points, and an explicit one give the same config
    assert toy_config("moons", "glow", "glow", 0).train.clf_weight == 1.0
    assert toy_config("moons", "glow", "glow", 0) == toy_config("moons", "glow", "glow", 0, clf_weight=1.0)
    assert toy_config("moons", "ffjord", "gmm", 0, clf_weight=0.0).train.clf_weight == 0.0
    c = toy_config("circles", "ffjord", "glow", 1)
    assert c.data.dataset == "circles" and c.seed == 1 and c.data.split_seed == 1
    assert c.model.unconditional == "ffjord" and c.train.steps == 1500
    # training solves at 1e-3 by default (chosen on validation points), evaluation at 1e-5
    assert c.model.ffjord_train_tol == 1e-3 and c.model.ffjord_tol == 1e-5
    assert toy_config("moons", "ffjord", "glow", 0, ffjord_train_tol=1e-5).model.ffjord_train_tol == 1e-5
    assert toy_config("moons", "glow", "ffjord", 0, ffjord_train_tol=1e-3).model.ffjord_train_tol == 1e-3
    assert toy_config("moons", "glow", "glow", 0, ffjord_train_tol=1e-3).model.ffjord_train_tol == 0.0


def test_toy_config_labelled_share():
    # the default share of a batch from the labelled points: 0.1, and 0.02 on FFJORD ∘ GLOW (chosen
    # on validation points); None keeps it, a value overrides it on every row and dataset
    defaults = {("glow", "glow"): 0.1, ("glow", "gmm"): 0.1, ("ffjord", "glow"): 0.02, ("ffjord", "gmm"): 0.1}
    for (f, h), share in defaults.items():
        for ds in ("moons", "circles"):
            assert toy_config(ds, f, h, 0).train.labelled_share == share
        assert toy_config("moons", f, h, 0, labelled_share=None) == toy_config("moons", f, h, 0)
        assert toy_config("circles", f, h, 2, labelled_share=0.05).train.labelled_share == 0.05
    assert toy_config("moons", "glow", "glow", 0, labelled_share=0.0).train.labelled_share == 0.0
    # the row's other settings stay the FFJORD rows' own
    assert toy_config("moons", "ffjord", "glow", 0).train.steps == toy_config("moons", "ffjord", "gmm", 0).train.steps
    from scnf.errors import ConfigError
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="train.labelled_share"):
            toy_config("moons", "glow", "gmm", 0, labelled_share=bad)


def test_table1_does_not_reuse_a_run_of_another_labelled_share(tmp_path):
    kw = dict(seeds=1, rows=[("glow", "glow")], datasets=["circles"], steps=2)
    table1(tmp_path, **kw)
    rdir = tmp_path / "runs" / "glow-glow-circles-s0"
    assert "labelled_share = 0.1\n" in (rdir / "config.toml").read_text()
    table1(tmp_path, labelled_share=0.02, **kw)  # another setting: trained again, not the 0.1 run reused
    assert "labelled_share = 0.02\n" in (rdir / "config.toml").read_text()


def test_stopped_reproduction_reuses_finished_runs_and_resumes_the_stopped_one(tmp_path, monkeypatch):
    import pytest

    import scnf.runs.run as ex
    import scnf.runs.reproduce as rp
    from tests.helpers import StopTraining, stop_at
    from scnf.runs.run import run

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


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """60 training and 20 test images written as MNIST's files (checksums registered)."""
    from tests.helpers import write_tiny_dataset

    write_tiny_dataset(tmp_path / "data", "mnist", monkeypatch)
    return tmp_path / "data"


def _quick(data_dir):
    return [f"data.data_dir={str(data_dir)!r}", "data.n_labelled=10", "data.n_validation=10", "train.steps=2",
            "train.batch_size=6",
            "train.eval_every=1", "train.checkpoint_every=1", "train.progress=false", "train.device='cpu'",
            "train.threads=1", "train.max_seconds=0"]


def _configs_keeping_every_m1_dimension(tmp_path):
    """A copy of the configs whose M1+M2 rows keep every dimension of z1: an M1 trained for 2
    steps has none whose posterior mean varies with the recipe's std 0.1."""
    from scnf.runs.reproduce import default_configs_dir

    cdir = tmp_path / "configs"
    shutil.copytree(default_configs_dir(), cdir)
    for name in ("mnist-paper-m1m2.toml", "mnist-cpu-m1m2.toml"):
        f = cdir / name
        f.write_text(f.read_text().replace('kind = "m1m2"', 'kind = "m1m2"\nm1_active_std = 0.0'))
    return cdir


def _check_table2(text, saved, rows):
    assert set(saved["rows"]) == set(rows) and saved["std_ddof"] == 0
    for row, res in saved["rows"].items():
        assert res["steps"] == [2] and 0 <= res["error_pct"][0] <= 100, row
        vae = row.startswith("m")  # Kingma et al.'s Bernoulli: a bound on binarised pixels, in its own column
        assert res["bits_per_dim_binarised" if vae else "bits_per_dim"][0] > 0, row


def test_table2_paper_profile_trains_a_flow_row_and_m1m2_for_a_step(tiny_mnist, tmp_path):
    """The paper profile (GPU-sized models) runs end to end on CPU: one SCNF row and M1+M2 for a step;
    every row's config loads and its model builds (all rows train in the slow test below)."""
    from scnf.data.load import build_data
    from scnf.runs.run import build_model
    from scnf.config import with_overrides
    from scnf.runs.reproduce import TABLE2_PROFILES, table2, table2_configs

    cfgs = table2_configs("paper", splits=[0], overrides=_quick(tiny_mnist))
    assert {r for r, _ in cfgs} == set(TABLE2_PROFILES["paper"])
    # the config's relative m1_run is read against its folder (table2 points it at its shared M1)
    assert cfgs[("m1m2", 0)].model.m1_run == str(REPO / "runs" / "mnist-paper-m1")
    data, _ = build_data(cfgs[("glow-sgd", 0)])
    # M1+M2 counted as the jointly trained variant (the same weights; the sequential one needs a trained M1)
    cfgs[("m1m2", 0)] = with_overrides(cfgs[("m1m2", 0)], ['model.m1_run=""'])
    counts = {r: sum(p.numel() for p in build_model(c, data).parameters()) for (r, _), c in cfgs.items()}
    # the paper-size models: the released SCNF (f 6,300,575 + h 9,574,872; SCNF-GMM: f + 10 x 196
    # means and scales) and Kingma et al.'s M1 (784-600-600-50) + M2 (500 hidden, 50-d z2)
    lin = lambda *sizes: sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))  # noqa: E731
    m1 = lin(784, 600, 600, 100) + lin(50, 600, 600, 784)
    m2_on_z1 = lin(50, 500, 10) + lin(60, 500, 100) + lin(60, 500, 100)
    assert counts["glow-sgd"] == 6_300_575 + 9_574_872
    assert counts["gmm-sgd"] == 6_300_575 + 2 * 10 * 196
    assert counts["m1m2"] == m1 + m2_on_z1
    rows = ["gmm-emsgd-clf", "m1m2"]
    lines = []
    cdir = _configs_keeping_every_m1_dimension(tmp_path)
    text = table2(tmp_path / "t2", profile="paper", rows=rows, splits=[0], configs_dir=cdir,
                  overrides=_quick(tiny_mnist) + ["data.n_test_eval=4"], log=lines.append)
    assert lines == ["table2 shared M1 (unsupervised, mnist-paper-m1.toml): training",
                     "table2 row gmm-emsgd-clf (SCNF-GMM, EM-SGD): gmm-emsgd-clf-split0: training",
                     "table2 row m1m2 (M1+M2 (Kingma et al.), VI): m1m2-split0: training"]
    saved = json.loads((tmp_path / "t2" / "table2.json").read_text())
    _check_table2(text, saved, rows)
    assert "| M1+M2 (Kingma et al.) | VI | ✓ |" in text and "3.33 ± 0.14" in text and "16.9 ± 5.3" in text
    assert saved["rows"]["gmm-emsgd-clf"]["config"]["0"]["train"]["optimisation"] == "em-sgd"
    mtime = (tmp_path / "t2" / "runs" / "m1m2-split0" / "metrics.json").stat().st_mtime
    again = table2(tmp_path / "t2", profile="paper", rows=["m1m2"], splits=[0], configs_dir=cdir,
                   overrides=_quick(tiny_mnist) + ["data.n_test_eval=4"], log=lines.append)
    assert lines[-1].endswith("m1m2-split0: finished, reused")
    assert (tmp_path / "t2" / "runs" / "m1m2-split0" / "metrics.json").stat().st_mtime == mtime  # reused
    assert again.splitlines()[4].split("|")[:6] == text.splitlines()[5].split("|")[:6]


@pytest.mark.slow
def test_table2_paper_profile_runs_every_row_for_a_step(tiny_mnist, tmp_path):
    from scnf.runs.reproduce import TABLE2_PROFILES, table2

    text = table2(tmp_path / "t2", profile="paper", splits=[0], overrides=_quick(tiny_mnist),
                  configs_dir=_configs_keeping_every_m1_dimension(tmp_path))
    saved = json.loads((tmp_path / "t2" / "table2.json").read_text())
    _check_table2(text, saved, TABLE2_PROFILES["paper"])


def test_table2_cpu_rows_are_the_cpu_config_with_the_row_variation(tmp_path):
    from scnf.config import load_config
    from scnf.runs.reproduce import default_configs_dir, table2_configs

    base = load_config(default_configs_dir() / "mnist-cpu.toml")
    c = table2_configs("cpu", rows=["glow-sgd-clf", "gmm-emsgd", "m1m2"], splits=[0, 2])
    assert c[("glow-sgd-clf", 0)] == base
    assert c[("glow-sgd-clf", 2)].data.split_seed == 2 and c[("glow-sgd-clf", 2)].model == base.model
    g = c[("gmm-emsgd", 0)]
    assert (g.model.conditional, g.train.optimisation, g.train.clf_weight) == ("gmm", "em-sgd", 0.0)
    assert g.train.pseudo_threshold == base.train.pseudo_threshold and g.train.steps == base.train.steps
    assert c[("m1m2", 0)].model.kind == "m1m2"


@pytest.mark.parametrize("kw, match", [
    (dict(profile="gpu"), "unknown profile 'gpu'"),
    (dict(rows=["glow-sgd-clf"], profile="paper"), "not in the paper profile"),
    (dict(rows=["m3"]), "row 'm3' is not in the cpu profile"),
    (dict(rows=[]), "no rows"),
    (dict(splits=[-1]), "splits"),
    (dict(configs_dir="/nonexistent"), "config file not found"),
    (dict(overrides=["train.steps=0"]), "train.steps"),
])
def test_table2_bad_arguments_are_value_errors(kw, match, tmp_path):
    from scnf.runs.reproduce import table2

    with pytest.raises(ValueError, match=match):
        table2(tmp_path, **kw)
    assert not (tmp_path / "runs").exists()  # nothing started


def test_cli_table2_errors_are_one_line_exit_2(tmp_path, capsys):
    from scnf.cli import build_parser, main

    # each table's --help lists its own options only
    helps = {w: build_parser()._subparsers._group_actions[0].choices["reproduce"]._subparsers._group_actions[0]
             .choices[w].format_help() for w in ("table1", "table2")}
    assert "--seeds" in helps["table1"] and "--profile" not in helps["table1"]
    assert "--profile" in helps["table2"] and "--seeds" not in helps["table2"]

    for argv in (["reproduce", "table2", "--profile", "gpu"], ["reproduce", "table2", "--rows", "m3"],
                 ["reproduce", "table2", "--splits", "a,b"], ["reproduce", "table1", "--profile", "cpu"],
                 ["reproduce", "table2", "--seeds", "3"]):
        try:
            code = main(argv + ["--out", str(tmp_path / "o")])
        except SystemExit as e:  # an option of the other table: argparse's one-line usage error
            code = e.code
        assert code == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err


def test_validation_points_are_drawn_apart_from_the_test_points():
    """table1 --evaluate-on validation scores on other points of the same distribution: the
    training set is unchanged and no validation point is a test point."""
    import numpy as np

    from scnf.data import toy_problem

    for ds in ("moons", "circles"):
        x, y_semi, _, xt, yt = toy_problem(ds, 200, 300, 10, 0.1, seed=3)
        xv_train, yv_semi, _, xv, yv = toy_problem(ds, 200, 300, 10, 0.1, seed=3, evaluate_on="validation")
        assert np.array_equal(x, xv_train) and np.array_equal(y_semi, yv_semi)
        assert not (np.abs(xv[:, None, :] - xt[None, :, :]).sum(-1) < 1e-9).any()
        assert abs(yv.mean() - yt.mean()) < 0.05  # the same two classes, balanced alike
    with pytest.raises(ValueError, match="evaluate_on"):
        toy_problem("moons", evaluate_on="train")


def test_evaluate_on_is_refused_for_images_and_bad_values():
    from scnf.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="data.evaluate_on"):
        from_dict({"data": {"dataset": "mnist", "evaluate_on": "validation"}})
    with pytest.raises(ConfigError, match="data.evaluate_on"):
        from_dict({"data": {"evaluate_on": "val"}})
    cfg = toy_config("moons", "glow", "glow", 0, evaluate_on="validation")
    assert cfg.data.evaluate_on == "validation"


# ------------------------------------------- the tables' markdown beside the paper (no training)

@pytest.mark.parametrize("ours, paper, kind, better", [
    ("0.6 ± 0.1", "0.6 ± 0.4", "error", True),  # a tie with the paper's mean counts
    ("0.7 ± 0.0", "0.6 ± 0.4", "error", False),  # within the paper's std is not enough for an error
    ("24.9 ± 3.0", "25 ± 2", "error", True),
    ("1.130 ± 0.010", "1.11 ± 0.02", "density", True),  # a tie with mean + std counts, exactly (no float 1.13000...1)
    ("1.131 ± 0.000", "1.11 ± 0.02", "density", False),
    ("0.969 ± 0.048", "1.7 ± 0.2", "density", True),
    ("0.5 ± 0.1", "–", "error", False),  # no paper number, no mark
    ("nan ± nan", "1.2 ± 1.2", "error", False),
])
def test_at_or_better_compares_the_printed_numbers(ours, paper, kind, better):
    from scnf.runs.reproduce import at_or_better

    assert at_or_better(ours, paper, kind) is better


def _t1_row(err, nll, seconds=10.0, train=(4.0, 5.0), nfe=(None, None)):
    return {"error_pct": list(err), "nll": list(nll), "seconds": seconds, "train_seconds": list(train),
            "ffjord_mean_nfe": list(nfe)}


T1_RESULTS = {
    "glow-glow-moons": _t1_row([0.5, 0.7], [1.12, 1.14]),  # 0.6 = paper 0.6; 1.130 = paper 1.11 + 0.02
    "glow-glow-circles": _t1_row([5.0, 5.4], [1.81, 1.83]),  # 5.2 > 5.0; 1.820 > 1.68 + 0.13
    "glow-gmm-moons": _t1_row([1.2, 1.2], [1.17, 1.17], seconds=3.0, train=(1.0, 1.0)),  # 1.2 = 1.2; 1.170 > 1.16
    "glow-gmm-circles": _t1_row([14.3, 14.3], [1.0, 1.0], seconds=3.0, train=(1.0, 1.0)),  # 14.3 > 14.2; 1.000
}
T1_BASE = {"LabelSpreading (rbf)|moons": [1.0, 3.0], "LabelSpreading (rbf)|circles": [0.0, 0.0],
           "SelfTraining (SVC)|moons": [10.0, 20.0], "SelfTraining (SVC)|circles": [2.0, 2.0]}


def test_table1_markdown_marks_the_cells_at_or_better_than_the_paper():
    from scnf.runs.reproduce import table1_markdown

    text = table1_markdown(T1_RESULTS, T1_BASE, [("glow", "glow"), ("glow", "gmm")], ["moons", "circles"], 2)
    assert text.splitlines()[4:8] == [
        "| GLOW ∘ GLOW | 0.6 ± 0.1 ✓ | 1.130 ± 0.010 ✓ | 0.6 ± 0.4 | 1.11 ± 0.02 | "
        "5.2 ± 0.2 | 1.820 ± 0.010 | 5.0 ± 1.9 | 1.68 ± 0.13 | 18 | 20 | – |",
        "| GLOW ∘ GMM | 1.2 ± 0.0 ✓ | 1.170 ± 0.000 | 1.2 ± 1.2 | 1.15 ± 0.01 | "
        "14.3 ± 0.0 | 1.000 ± 0.000 ✓ | 14.2 ± 9.0 | 1.28 ± 0.15 | 4 | 6 | – |",
        "| LabelSpreading (rbf) | 2.0 ± 1.0 | – | – | – | 0.0 ± 0.0 | – | – | – | | | |",
        "| SelfTraining (SVC) | 15.0 ± 5.0 | – | – | – | 2.0 ± 0.0 | – | – | – | | | |",
    ]
    assert text.splitlines()[-1] == ("✓ after our number: at or better than the paper's, both as printed: error % at "
                                     "or below the paper's mean; NLL at or below the paper's mean + its std.")


def test_table2_markdown_marks_error_and_bits_per_dim_against_the_paper():
    from scnf.runs.reproduce import table2_markdown

    def row(err, bpd, binarised=(None, None)):
        return {"splits": [0, 1], "error_pct": list(err), "bits_per_dim": list(bpd),
                "bits_per_dim_binarised": list(binarised), "steps": [10, 12], "train_seconds": [60.0, 120.0],
                "wall_seconds": 30.0}

    results = {"glow-sgd": row([1.9, 1.9], [1.149, 1.149]),  # ties: 1.90 = 1.9, 1.149 = 1.145 + 0.004
               "gmm-sgd": row([14.21, 14.21], [1.155, 1.155]),  # 14.21 > 14.2, 1.155 > 1.143 + 0.011
               "glow-sgd-clf": row([1.0, 1.0], [1.0, 1.0]),  # the paper has no such row
               "m1m2": row([3.0, 3.2], [None, None], [0.19, 0.19])}  # binarised bits/dim: no paper number
    lines = table2_markdown(results, "paper").splitlines()
    tail = " | 0,1 | 10/12 | 1.5 | 0.5 |"  # splits, steps, training minutes per split, wall minutes
    assert lines[4:8] == [
        "| SCNF-GLOW | SGD | ✗ | 1.90 ± 0.00 ✓ | 1.149 ± 0.000 ✓ | – | 1.9 ± 0.3 | 1.145 ± 0.004" + tail,
        "| SCNF-GMM | SGD | ✗ | 14.21 ± 0.00 | 1.155 ± 0.000 | – | 14.2 ± 2.4 | 1.143 ± 0.011" + tail,
        "| SCNF-GLOW | SGD | ✓ | 1.00 ± 0.00 | 1.000 ± 0.000 | – | – | –" + tail,
        "| M1+M2 (Kingma et al.) | VI | ✓ | 3.10 ± 0.10 ✓ | – | 0.190 ± 0.000 | 3.33 ± 0.14 | –" + tail,
    ]
    assert lines[-1].startswith("✓ after our number: at or better than the paper's, both as printed: error % at "
                                "or below the paper's mean; bits/dim (dequantised) at or below the paper's mean "
                                "+ its std.")


def test_markdown_from_json_is_what_the_command_writes(tmp_path):
    from scnf.runs.reproduce import markdown_from_json, rewrite_markdown, table1_markdown

    rows = [("glow", "glow"), ("glow", "gmm")]
    (tmp_path / "table1.json").write_text(json.dumps({"seeds": 2, "rows": T1_RESULTS, "baselines": T1_BASE,
                                                      "evaluate_on": "validation"}))
    want = table1_markdown(T1_RESULTS, T1_BASE, rows, ["moons", "circles"], 2, "validation")
    assert markdown_from_json(tmp_path / "table1.json") == want
    assert rewrite_markdown(tmp_path / "table1.json") == tmp_path / "table1.md"
    assert (tmp_path / "table1.md").read_text() == want
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="neither a table1.json nor a table2.json"):
        markdown_from_json(tmp_path / "other.json")


REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_recorded_table2_md_is_its_json_rewritten():
    """docs/results' table2.md is what `python -m scnf.runs.reproduce .../table2.json` writes."""
    from scnf.runs.reproduce import markdown_from_json

    d = REPO / "docs" / "results" / "table2-kingma-2026-12-01"
    assert (d / "table2.md").read_text() == markdown_from_json(d / "table2.json")


def test_tables_in_readme_and_results_are_the_recorded_files_byte_for_byte():
    """A table shown in README.md or RESULTS.md sits between `<!-- verbatim: PATH -->` and
    `<!-- end verbatim -->` and is the file PATH exactly, so no number in them can be retyped."""
    import re

    block = re.compile(r"^<!-- verbatim: (\S+) -->\n(.*?)^<!-- end verbatim -->$", re.S | re.M)
    shown = {}
    for doc in ("README.md", "RESULTS.md"):
        text = (REPO / doc).read_text()
        found = block.findall(text)
        assert len(found) == text.count("<!-- verbatim:"), doc  # every opened block is closed
        for path, body in found:
            assert body == (REPO / path).read_text(), f"{doc}: {path}"
            shown.setdefault(doc, set()).add(path)
    for doc in ("README.md", "RESULTS.md"):
        assert {"docs/results/table1-released-2026-12-01/table1.md",
                "docs/results/table2-kingma-2026-12-01/table2.md"} <= shown.get(doc, set()), doc
