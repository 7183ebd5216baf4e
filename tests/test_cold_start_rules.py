"""benchmarks/cold_start_rules.py: farthest-first selection and the finds table, known answers."""
import json

import numpy as np
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("cold_start_rules")


def test_kcenter_takes_the_farthest_row_then_the_farthest_from_both(bench):
    cand = np.array([[1.0, 0.0], [5.0, 0.0], [0.0, 3.0], [4.0, 0.0]])
    ref = np.array([[0.0, 0.0]])
    # farthest from the labelled row: (5, 0); then farthest from (0, 0) and (5, 0): (0, 3)
    assert bench.kcenter(cand, ref, 2).tolist() == [1, 2]
    # rows not eligible are never taken
    assert bench.kcenter(cand, ref, 1, eligible=np.array([True, False, True, True])).tolist() == [3]


def test_the_table_counts_draws_with_a_find(bench, tmp_path):
    recs = [{"task": "a", "draw": 0, "random_p": 0.5, "hits": {"x": 2, "y": 0}},
            {"task": "a", "draw": 1, "random_p": 0.5, "hits": {"x": 0, "y": 1}},
            {"task": "b", "draw": 0, "random_p": 0.25, "hits": {"x": 1, "y": 3}}]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    lines = bench.table(path).splitlines()
    assert "| rule | all | a (2) | b (1) |" in lines
    assert "| x | 2 | 1 | 1 |" in lines and "| y | 2 | 1 | 1 |" in lines  # a find is >= 1 row
    assert "| random (expected) | 1.2 | 1.0 | 0.2 |" in lines


def test_the_table_reads_an_older_records_discovery_as_the_latent_space_rule(bench, tmp_path):
    # until 2026-12-04 query("discovery") clustered f's latent codes; newer records name that cover-z
    recs = [{"task": "a", "draw": 0, "random_p": 0.5, "hits": {"discovery": 1, "cover-x": 0}},
            {"task": "a", "draw": 1, "random_p": 0.5, "hits": {"cover-z": 1, "cover-x": 1}}]
    paths = [tmp_path / "old.jsonl", tmp_path / "new.jsonl"]  # two files, read together
    for path, r in zip(paths, recs):
        path.write_text(json.dumps(r) + "\n")
    lines = bench.table(*paths).splitlines()
    assert "| cover-z | 2 | 2 |" in lines and "| cover-x | 1 | 1 |" in lines
    assert not any(line.startswith("| discovery |") for line in lines)


def test_table_of_a_missing_records_file_is_a_usage_error(bench, tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text("")
    with pytest.raises(SystemExit) as e:
        bench.main(["--table", str(tmp_path / "a.jsonl"), str(tmp_path / "none.jsonl")])
    assert e.value.code == 2 and "no records file" in capsys.readouterr().err
