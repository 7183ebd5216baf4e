"""benchmarks/active_learning.py's table: the AULC columns and the paired comparison with
random sampling, on hand-made records whose answers are worked out here."""
import json

import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("active_learning")


def _rec(task, draw, curves):
    return {"task": task, "draw": draw, "kind": "curves", "n": 2, "rounds": 1, "curves": curves,
            "seconds_per_round": {m: [1.0] for m in curves if m.startswith("scnf-")}}


def test_the_table_pairs_each_strategy_with_random_sampling(bench, tmp_path):
    recs = [  # AULC = the mean of each curve
        _rec("a", 0, {"scnf-density": [0.6, 0.8], "scnf-random": [0.6, 0.6], "logreg-us": [0.5, 0.7]}),
        _rec("a", 1, {"scnf-density": [0.5, 0.5], "scnf-random": [0.6, 0.6], "logreg-us": [0.5, 0.5]}),
        _rec("b", 0, {"scnf-density": [0.9, 0.9], "scnf-random": [0.7, 0.7], "logreg-us": [0.95, 0.95]}),
        _rec("b", 1, {"scnf-density": [0.8, 0.8], "scnf-random": [0.8, 0.8], "logreg-us": [0.95, 0.95]}),  # a tie
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    lines = bench.table(path).splitlines()
    density = next(line for line in lines if line.startswith("| scnf-density | 1 of"))
    # AULC: a 0.7, 0.5 (mean 0.6 against logreg's 0.55: ahead); b 0.9, 0.8 against 0.95: behind;
    # over the four task-draws (0.7 + 0.5 + 0.9 + 0.8) / 4 = 0.725
    assert density.startswith("| scnf-density | 1 of 2 (a) | 0.725 |")
    # paired with random: +0.1, -0.1, +0.2, 0 -> mean +0.05, s.e. std(ddof=1)/sqrt(4) = 0.129/2 = 0.065;
    # 2 ahead (the tie is not ahead)
    assert "+0.050 ± 0.065, 2 of 4" in density
    assert "| scnf-density | 0.600 ± 0.100 | 0.850 ± 0.050 |" in lines


def test_the_cold_start_table_counts_draws_and_first_round_finds(bench, tmp_path):
    cold = [{"task": "iris", "draw": d, "kind": "cold", "cap": 5, "rounds": r} for d, r in enumerate(
        [{"discovery": 1, "novelty": 3, "random": 1}, {"discovery": 1, "novelty": 6, "random": 2},
         {"discovery": 2, "novelty": 1, "random": 1, "density": 4}])]  # density only in the last draw
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in cold))
    lines = bench.table(path).splitlines()  # no learning curves: the cold start alone
    assert lines[0].startswith("Cold start: rounds until") and "(cap 5;" in lines[0]
    assert "| task | discovery | novelty | random | density | random's chance [expected] |" in lines
    # discovery (1 + 1 + 2) / 3 = 1.3, found in the first round twice; novelty (3 + 6 + 1) / 3 = 3.3;
    # records without random sampling's chance and no data to take it from: a dash
    assert "| iris | 1.3 (3) [2] | 3.3 (3) [1] | 1.3 (3) [2] | 4.0 (1) [0] | – |" in lines
    # the chance: the records' own, else from the data (here a stand-in), summed over the draws
    cold[0]["random_p"] = 0.5
    path.write_text("".join(json.dumps(r) + "\n" for r in cold))
    lines = bench.table(path, chance=lambda task, draw: {1: 0.25, 2: 0.125}[draw]).splitlines()
    assert "| iris | 1.3 (3) [2] | 3.3 (3) [1] | 1.3 (3) [2] | 4.0 (1) [0] | [0.9] |" in lines  # 0.875


def test_random_sampling_finds_the_class_without_a_label_with_its_exact_chance(bench):
    import numpy as np
    # three classes of 3, 3 and 1 rows; draw 2 leaves class 2 without a label, the others one each:
    # 5 unlabelled rows, 1 of class 2, batches of 3: 1 - C(4, 3) / C(5, 3) = 1 - 4 / 10
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    assert bench.random_find_chance(y, 2) == pytest.approx(0.6)
    # draw 0 leaves class 0 without a label: 4 unlabelled rows, 3 of class 0: a batch of 3 always finds it
    assert bench.random_find_chance(y, 0) == pytest.approx(1.0)
    # classes 0 and 1 of 2 rows, class 2 of 4; draw 1 leaves class 1 out: 6 unlabelled rows, 2 of class 1:
    # 1 - C(4, 3) / C(6, 3) = 1 - 4 / 20
    assert bench.random_find_chance(np.array([0, 0, 1, 1, 2, 2, 2, 2]), 1) == pytest.approx(0.8)


def test_cold_start_strategies_do_not_share_their_labels_or_their_model(bench, monkeypatch):
    # each strategy goes on from the shared first fit with its own labels and its own copy of the
    # model: every strategy's first query comes from a model fitted on the starting labels alone,
    # and its refit sees those plus its own batch
    import numpy as np

    from scnf import SCNFClassifier
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal((-4, 0), 0.7, (40, 2)), rng.normal((4, 0), 0.7, (40, 2)), [[-4.3, 0.2], [-3.8, -0.4]]])
    y = np.array([0] * 40 + [2] * 40 + [1, 1])  # class 1 (draw 1 mod 3) starts unlabelled: 2 rows of 82
    fits, queries = [], []
    fit, query = SCNFClassifier.fit, SCNFClassifier.query
    monkeypatch.setattr(SCNFClassifier, "fit", lambda self, X, y: (fits.append((y != -1).sum()), fit(self, X, y))[1])
    monkeypatch.setattr(SCNFClassifier, "query",
                        lambda self, **kw: (queries.append(len(self._labelled_X)), query(self, **kw))[1])
    rounds = bench.cold_rounds(X, y, 1, ["random", "entropy"], 2, {"steps": 10})
    assert rounds == {"random": 3, "entropy": 3}  # 3 rows a round miss the 2 rows hidden in class 0 here
    assert fits == [2, 2 + 3, 2 + 3]  # the shared first fit, then each strategy's one refit
    assert queries == [2, 5, 2, 5]  # each strategy: a query on the first fit, one on its refit


def test_paired_table_applies_the_warm_refit_rule(bench, tmp_path):
    """Variant minus scnf-density per task (mean over draws) and over task-draws; a variant
    passes only if the mean drop is at most 0.005 and no task's drop exceeds 0.01."""
    recs = [  # AULC = mean of the curve
        _rec("a", 0, {"scnf-density": [0.5, 0.5], "scnf-density-f0": [0.5, 0.5], "scnf-density-f1": [0.6, 0.6]}),
        _rec("a", 1, {"scnf-density": [0.5, 0.5], "scnf-density-f0": [0.484, 0.484], "scnf-density-f1": [0.6, 0.6]}),
        _rec("b", 0, {"scnf-density": [0.8, 0.8], "scnf-density-f0": [0.81, 0.81], "scnf-density-f1": [0.76, 0.76]}),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in bench.paired_table(path).splitlines()
            if line.startswith("| scnf-density-")}
    # f0: a -0.008 (draws 0, -0.016), b +0.010; mean over 3 task-draws -0.002 -> passes
    assert rows["scnf-density-f0"][1:6] == ["-0.008", "+0.010", "-0.0020 (3)", "-0.008", "yes"]
    # f1: a +0.100, b -0.040: mean +0.0533 but task b drops 0.04 -> fails
    assert rows["scnf-density-f1"][1:6] == ["+0.100", "-0.040", "+0.0533 (3)", "-0.040", "no"]


def test_warm_refit_variants_refit_with_their_own_settings(bench, monkeypatch):
    """scnf_curves: each ``-w`` / ``-f`` curve's warm refits run with its share of the steps or of
    f, the default curve's with the estimator's, and the module's settings come back afterwards."""
    import numpy as np

    import scnf.estimator
    from scnf import SCNFClassifier
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal((-3, 0), 1, (30, 2)), rng.normal((3, 0), 1, (30, 2))])
    y_true = np.array([0] * 30 + [1] * 30)
    y0 = np.full(60, -1)
    y0[[0, 30]] = [0, 1]
    seen, d, df = [], scnf.estimator.WARM_START_SHARE, scnf.estimator.WARM_START_F_SHARE
    fit = SCNFClassifier.fit
    monkeypatch.setattr(SCNFClassifier, "fit", lambda self, X, y: (
        seen.append((self.warm_start, scnf.estimator.WARM_START_SHARE, scnf.estimator.WARM_START_F_SHARE)),
        fit(self, X, y))[1])
    out = bench.scnf_curves(X, y_true, y0, X, y_true, 1, 2, 0, ["random"], {"epochs": 1, "min_steps": 8},
                            warm_shares=[("random", 0.5)], warm_f=[("random", 0.4)])
    assert list(out) == ["scnf-random", "scnf-random-w0.5", "scnf-random-f0.4"]
    assert seen == [(False, d, df), (True, d, df), (True, 0.5, df), (True, d, 0.4)]
    assert (scnf.estimator.WARM_START_SHARE, scnf.estimator.WARM_START_F_SHARE) == (d, df)


def test_the_paired_table_joins_another_runs_curves_by_task_and_draw(bench, tmp_path):
    base = tmp_path / "base.jsonl"
    other = tmp_path / "other.jsonl"
    base.write_text("".join(json.dumps(r) + "\n" for r in [
        _rec("a", 0, {"scnf-density": [0.6, 0.8]}), _rec("b", 0, {"scnf-density": [0.5, 0.5]})]))
    # written in the other order: joined by (task, draw), not by position
    other.write_text("".join(json.dumps(r) + "\n" for r in [
        _rec("b", 0, {"scnf-density": [0.6, 0.6]}), _rec("a", 0, {"scnf-density": [0.7, 0.7]})]))
    lines = bench.paired_table(base, others=[(other, "c")]).splitlines()
    row = next(line for line in lines if line.startswith("| scnf-density-c |"))
    # a: 0.7 - 0.7 = 0; b: 0.6 - 0.5 = +0.1; mean +0.05, worst task 0 (by position: -0.1 and +0.2)
    assert row.startswith("| scnf-density-c | +0.000 | +0.100 | +0.0500 (2) | +0.000 | yes |"), row
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps(_rec("c", 0, {"scnf-density": [0.5, 0.5]})) + "\n")
    with pytest.raises(SystemExit, match="no scnf-density curve of c draw 0"):
        bench.paired_table(base, others=[(missing, "m")])


@pytest.mark.parametrize("params, want", [({"epochs": 1, "min_steps": 8}, 3),
                                          ({"epochs": 1, "min_steps": 8, "random_state": 1000}, 1000)])
def test_scnf_params_may_set_the_models_seed_in_place_of_the_draws(bench, monkeypatch, params, want):
    import numpy as np

    from scnf import SCNFClassifier
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal((-3, 0), 1, (20, 2)), rng.normal((3, 0), 1, (20, 2))])
    y_true = np.array([0] * 20 + [1] * 20)
    y0 = np.full(40, -1)
    y0[[0, 20]] = [0, 1]
    seeds, fit = [], SCNFClassifier.fit
    monkeypatch.setattr(SCNFClassifier, "fit", lambda self, X, y: (seeds.append(self.random_state), fit(self, X, y))[1])
    bench.scnf_curves(X, y_true, y0, X, y_true, 0, 2, 3, ["random"], params)  # draw 3
    assert seeds == [want]


@pytest.mark.parametrize("params, want", [({"epochs": 1, "min_steps": 8}, 4),
                                          ({"epochs": 1, "min_steps": 8, "random_state": 1000}, 1000)])
def test_scnf_params_may_set_the_cold_starts_model_seed_in_place_of_the_draws(bench, monkeypatch, params, want):
    import numpy as np

    from scnf import SCNFClassifier
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal((-3 + 3 * c, 0), 0.5, (15, 2)) for c in range(3)])
    y_true = np.repeat([0, 1, 2], 15)
    seeds, fit = [], SCNFClassifier.fit
    monkeypatch.setattr(SCNFClassifier, "fit", lambda self, X, y: (seeds.append(self.random_state), fit(self, X, y))[1])
    bench.cold_rounds(X, y_true, 4, ["random"], 1, params)  # draw 4; one round: the first fit only
    assert seeds == [want]


def test_table_of_a_missing_records_file_is_a_usage_error(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--table", str(tmp_path / "none.jsonl")])
    assert e.value.code == 2 and "no records file" in capsys.readouterr().err
