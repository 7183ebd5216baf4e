"""scnf suggest on an image run, and its suggestions.csv fed back with data.extra_labels."""
import csv

import numpy as np
import pytest

from scnf.cli import main
from tests.helpers import TINY_IMAGE_FLOW, write_config


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A tiny npz image run: 40 8x8 images, two classes, 4 labelled; 12 test images."""
    tmp = tmp_path_factory.mktemp("suggest")
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = np.where(y[:, None, None] == 1, 200, 40) + rng.integers(0, 50, (40, 8, 8))
    y_semi = np.full(40, -1)
    y_semi[[0, 1, 20, 21]] = [0, 0, 1, 1]
    np.savez(tmp / "img.npz", x=x.astype(np.uint8), y=y_semi, x_test=x[::4].astype(np.uint8), y_test=y[::4])
    cfg = write_config(tmp / "c.toml", {"dataset": "npz", "path": "img.npz"}, TINY_IMAGE_FLOW)
    assert main(["train", str(cfg), "--out", str(tmp / "run")]) == 0
    return tmp, y


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_suggest_writes_the_rows_to_label_best_first(image_run, capsys):
    tmp, y = image_run
    assert main(["suggest", str(tmp / "run"), "--n", "5", "--strategy", "entropy", "--out", str(tmp / "s")]) == 0
    rows = _read(tmp / "s" / "suggestions.csv")
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    idx = [int(r["pool_index"]) for r in rows]
    assert len(set(idx)) == 5 and not set(idx) & {0, 1, 20, 21}  # unlabelled rows of the pool only
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= np.log(2) + 1e-12 for s in scores)
    assert all(0.5 <= float(r["probability"]) <= 1 and r["label"] == "" for r in rows)
    assert (tmp / "s" / "suggestions.png").stat().st_size > 500
    # the scores are the model's: entropy of its posterior on those rows, dequantised as suggest does
    from scnf.analysis.active import suggest
    again = suggest(tmp / "run", n=5, strategy="entropy", out=tmp / "s2")
    assert [r["pool_index"] for r in again["rows"]] == idx
    # without diversity: the 3 highest entropies of all 36 unlabelled rows, computed here by hand
    # (3 x 10 = 30 best-scored candidates make the pool: fewer than all of them)
    import torch

    from scnf.runs.run import load_run
    _, model, data, _ = load_run(tmp / "run")
    cand = np.flatnonzero(data.y.numpy() < 0)
    with torch.no_grad():
        lj = model.log_joint(data.prepare(data.x[torch.from_numpy(cand)], torch.Generator().manual_seed(0))).double()
    p = torch.softmax(lj, 1).numpy()
    h = -(p * np.log(np.clip(p, 1e-300, None))).sum(1)
    top = suggest(tmp / "run", n=3, strategy="entropy", out=tmp / "s3", diversity=False)["rows"]
    assert [r["pool_index"] for r in top] == cand[np.argsort(-h, kind="stable")[:3]].tolist()
    assert [r["score"] for r in top] == pytest.approx(np.sort(h)[::-1][:3].tolist(), abs=1e-9)


def test_labels_fed_back_label_those_rows_and_bad_files_are_one_line(image_run, capsys):
    tmp, y = image_run
    main(["suggest", str(tmp / "run"), "--n", "3", "--out", str(tmp / "f")])
    rows = _read(tmp / "f" / "suggestions.csv")
    for r in rows:
        r["label"] = str(y[int(r["pool_index"])])
    with open(tmp / "f" / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    from scnf.config import from_dict
    from scnf.data.load import build_data
    cfg = from_dict({"data": {"dataset": "npz", "path": str(tmp / "img.npz"),
                              "extra_labels": str(tmp / "f" / "labels.csv")}})
    data, _ = build_data(cfg)
    labelled = sorted(int(i) for i in np.flatnonzero(data.y.numpy() >= 0))
    assert labelled == sorted({0, 1, 20, 21} | {int(r["pool_index"]) for r in rows})
    assert all(int(data.y[int(r["pool_index"])]) == y[int(r["pool_index"])] for r in rows)
    bad = {"unknown index": "pool_index,label\n40,1\n", "not a class": "pool_index,label\n5,2\n",
           "clash": "pool_index,label\n0,1\n", "twice": "pool_index,label\n5,0\n5,1\n",
           "columns": "row,label\n5,0\n"}
    msgs = {"unknown index": "line 2: pool_index 40 is not a row of the training pool (0 to 39)",
            "not a class": "line 2: label 2 is not a class (0 to 1)",
            "clash": "line 2: row 0 is already labelled 0, not 1",
            "twice": "line 3: row 5 is labelled 0 on an earlier line and 1 here",
            "columns": "needs the columns pool_index and label, has label, row"}
    for name, text in bad.items():
        (tmp / f"{name}.csv").write_text(text)
        c = write_config(tmp / f"{name}.toml", {"dataset": "npz", "path": "img.npz", "extra_labels": f"{name}.csv"},
                         TINY_IMAGE_FLOW)
        assert main(["train", str(c), "--out", str(tmp / f"r-{name}")]) == 2, name
        err = capsys.readouterr().err.strip()
        assert msgs[name] in err and len(err.splitlines()) == 1, err
        assert not (tmp / f"r-{name}" / "checkpoint.pt").exists()


def test_suggest_refuses_bad_arguments_in_one_line(image_run, capsys):
    tmp, _ = image_run
    assert main(["suggest", str(tmp / "run"), "--n", "1000"]) == 2
    assert "--n must be an integer in [1, 36]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse's usage error: one line, exit 2
        main(["suggest", str(tmp / "run"), "--strategy", "bald"])
    assert e.value.code == 2 and "invalid choice: 'bald'" in capsys.readouterr().err


def test_discovery_suggests_the_largest_groups_no_label_covers(image_run):
    tmp, _ = image_run
    assert main(["suggest", str(tmp / "run"), "--n", "3", "--strategy", "discovery", "--out", str(tmp / "d")]) == 0
    rows = _read(tmp / "d" / "suggestions.csv")
    idx = [int(r["pool_index"]) for r in rows]
    assert len(set(idx)) == 3 and not set(idx) & {0, 1, 20, 21}
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(-1 < s <= 1 for s in scores)
    # the same rows as discovery() on f(x) of the candidates against f(x) of the labelled rows,
    # both dequantised as suggest does
    import torch

    from scnf.analysis.active import discovery
    from scnf.runs.run import load_run
    _, model, data, _ = load_run(tmp / "run")
    cand, lab = np.flatnonzero(data.y.numpy() < 0), np.flatnonzero(data.y.numpy() >= 0)

    def f(rows):
        with torch.no_grad():
            x = data.prepare(data.x[torch.from_numpy(rows)], torch.Generator().manual_seed(0))
            return model.unconditional(x)[0].flatten(1).double().numpy()
    pos, score = discovery(f(cand), f(lab), 3, random_state=0, min_clusters=len(np.unique(data.y.numpy()[lab])) + 1)
    assert idx == cand[pos].tolist() and scores == pytest.approx(score[pos].tolist(), abs=1e-12)
    # one row: at least one more cluster than the 2 labelled classes (3, not 2 n = 2)
    assert main(["suggest", str(tmp / "run"), "--n", "1", "--strategy", "discovery", "--out", str(tmp / "d1")]) == 0
    one = [int(r["pool_index"]) for r in _read(tmp / "d1" / "suggestions.csv")]
    three = discovery(f(cand), f(lab), 1, random_state=0, min_clusters=3)[0]
    two = discovery(f(cand), f(lab), 1, random_state=0)[0]
    assert one == cand[three].tolist()
    assert one != cand[two].tolist()  # so the check can tell them apart
    # the predicted label and its probability: the posterior of the chosen rows themselves
    with torch.no_grad():
        x = data.prepare(data.x[torch.from_numpy(cand[pos])], torch.Generator().manual_seed(0))
        p = torch.softmax(model.log_joint(x).double(), 1).numpy()
    assert [int(r["predicted"]) for r in rows] == p.argmax(1).tolist()
    assert [float(r["probability"]) for r in rows] == pytest.approx(p.max(1).tolist(), abs=1e-9)
