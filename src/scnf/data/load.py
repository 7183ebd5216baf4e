"""The semi-supervised data of a run config: the toy problems, MNIST / Fashion-MNIST with a
labelled split, or your own file (:mod:`scnf.data.own`), with the validation rows held out and
the unlabelled pool subsampled the one way :func:`hold_out` does it."""
from __future__ import annotations

import numpy as np
import torch

from ..config import OWN_DATASETS, TOY_DATASETS, RunConfig, check_for_data
from .batches import SemiSupervisedData
from .images import labelled_split, load_dataset
from .own import load_own
from .toy import toy_problem


def hold_out(n_rows: int, labelled: np.ndarray, candidates: np.ndarray, n_validation: int, n_unlabelled: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows kept, validation rows), both sorted: ``n_validation`` rows drawn from
    ``candidates`` (by ``[seed, 1]``) are held out of training; then, with ``n_unlabelled`` > 0,
    only that many of the remaining unlabelled rows are kept (drawn by ``seed``) beside every
    remaining labelled row."""
    keep = np.arange(n_rows)
    val = np.empty(0, dtype=np.int64)
    if n_validation:
        val = np.sort(np.random.default_rng([seed, 1]).choice(candidates, n_validation, replace=False))
        keep = np.setdiff1d(keep, val)
    if n_unlabelled:
        unl = np.setdiff1d(keep, labelled)
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([np.intersect1d(keep, labelled),
                                       rng.choice(unl, min(n_unlabelled, len(unl)), replace=False)]))
    return keep, val


def _build_data(cfg: RunConfig) -> tuple[SemiSupervisedData, dict]:
    """The semi-supervised data of a config, and raw arrays for plots."""
    d = cfg.data
    if d.dataset in TOY_DATASETS:
        x, y_semi, y_true, xt, yt = toy_problem(d.dataset, d.n_train, d.n_test, d.n_labelled, d.noise,
                                                seed=d.split_seed, evaluate_on=d.evaluate_on)
        data = SemiSupervisedData(torch.from_numpy(x), torch.from_numpy(y_semi), torch.from_numpy(xt),
                                  torch.from_numpy(yt))
        return data, {"x": x, "y_semi": y_semi, "y_true": y_true}
    if d.dataset in OWN_DATASETS:
        return _build_own_data(cfg)
    data_dir = d.data_dir or None
    xi, yi = load_dataset(d.dataset, "train", data_dir)
    xt, yt = load_dataset(d.dataset, "test", data_dir)
    lab = labelled_split(yi, d.n_labelled, seed=d.split_seed)
    y_semi = np.full_like(yi, -1)
    y_semi[lab] = yi[lab]
    rest = np.setdiff1d(np.arange(len(yi)), lab)
    if d.n_validation > len(rest):
        raise ValueError(f"data.n_validation = {d.n_validation} exceeds the {len(rest)} unlabelled training images")
    # held out of training altogether: its labels only score choices (never the test set's)
    keep, val = hold_out(len(yi), lab, rest, d.n_validation, d.n_unlabelled, d.split_seed)
    if d.n_test_eval:
        xt, yt = xt[: d.n_test_eval], yt[: d.n_test_eval]
    data = SemiSupervisedData(torch.from_numpy(xi[keep][:, None]), torch.from_numpy(y_semi[keep]),
                              torch.from_numpy(xt[:, None]), torch.from_numpy(yt), images=True,
                              x_val=torch.from_numpy(xi[val][:, None]) if len(val) else None,
                              y_val=torch.from_numpy(yi[val]) if len(val) else None)
    return data, {"labelled_indices": lab, "validation_indices": val}


def class_names(source: dict) -> list[str]:
    """The user's name of each class index 0..K-1 of own data: the folder's class names, or
    the npz file's label values."""
    classes = source.get("classes", [])
    if source.get("kind") == "folder":
        return [str(c) for c in classes]
    return [str(k) for k in range(max((int(c) for c in classes), default=-1) + 1)]


def _name_of(source: dict, k: int) -> str:
    if source.get("kind") == "folder":
        return f"class {class_names(source)[k]!r} (train/{class_names(source)[k]}/)"
    return f"class {k}"


def _build_own_data(cfg: RunConfig) -> tuple[SemiSupervisedData, dict]:
    """The user's npz file or image folder (:mod:`scnf.data.own`). ``data.n_validation`` rows are
    held out of the LABELLED rows (the unlabelled ones have no label to score), drawn by
    ``data.split_seed``; ``data.n_unlabelled`` subsamples the unlabelled ones. ``raw["source"]``
    is the record of what was read (the run directory's ``data.json``): the file's path, size
    and SHA-256, its shapes, its labelled rows per class and the split that was drawn."""
    d = cfg.data
    own = load_own(d.dataset, d.path)
    check_for_data(cfg, own.images)
    x, y = own.x, own.y
    lab = np.flatnonzero(y >= 0)
    where = own.source.get("path", d.path)
    k = int(max(y.max(), -1 if own.y_test is None else own.y_test.max())) + 1
    counts = np.bincount(y[lab], minlength=k)
    if (counts == 0).any():
        missing = ", ".join(_name_of(own.source, int(c)) for c in np.flatnonzero(counts == 0))
        need = ("every class folder in train/ needs at least one image" if own.source.get("kind") == "folder"
                else f"every class (labels 0, 1, ..., {k - 1}) needs at least one")
        raise ValueError(f"{where}: no labelled row of {missing}; {need}")
    if d.n_validation and d.n_validation >= len(lab):
        raise ValueError(f"data.n_validation = {d.n_validation}: your data have {len(lab)} labelled rows; the "
                         "validation rows are held out of them and at least one must stay for training")
    keep, val = hold_out(len(y), lab, lab, d.n_validation, d.n_unlabelled, d.split_seed)
    left = np.bincount(y[keep][y[keep] >= 0], minlength=k)
    if (left == 0).any():
        c = int(np.flatnonzero(left == 0)[0])
        raise ValueError(f"data.n_validation = {d.n_validation} (split seed {d.split_seed}) holds out every labelled "
                         f"row of {_name_of(own.source, c)} ({int(counts[c])} in {where}): lower data.n_validation, "
                         "choose another data.split_seed or label more rows of it")
    xt, yt = own.x_test, own.y_test
    if xt is not None and d.n_test_eval:
        xt, yt = xt[: d.n_test_eval], yt[: d.n_test_eval]
    t = (lambda a: None if a is None else torch.from_numpy(a))  # noqa: E731
    data = SemiSupervisedData(t(x[keep]), t(y[keep]), t(xt), t(yt), images=own.images,
                              x_val=t(x[val]) if len(val) else None, y_val=t(y[val]) if len(val) else None)
    names = class_names(own.source)
    source = dict(own.source)
    source.update(
        labelled_per_class={names[c]: int(counts[c]) for c in range(k)},
        test_shape=None if own.x_test is None else list(own.x_test.shape[1:]),
        split={"split_seed": d.split_seed, "n_validation": d.n_validation, "n_unlabelled": d.n_unlabelled,
               "n_test_eval": d.n_test_eval, "training_rows": int(len(keep)), "validation_rows": int(len(val))})
    raw = {"source": source, "validation_indices": val}
    if not own.images:
        raw.update(x=x[keep], y_semi=y[keep])
    return data, raw


def build_data(cfg: RunConfig) -> tuple[SemiSupervisedData, dict]:
    """The semi-supervised data of a config, and raw arrays for plots; with
    ``data.extra_labels`` the CSV's labels are added to the training pool (:func:`add_labels`)."""
    data, raw = _build_data(cfg)
    if cfg.data.extra_labels:
        add_labels(data, cfg.data.extra_labels)
        if "y_semi" in raw:
            raw["y_semi"] = data.y.numpy().copy()
    return data, raw


def add_labels(data: SemiSupervisedData, path) -> int:
    """Label rows of the training pool from a CSV with the columns ``pool_index`` (the row of the
    run's training pool, as ``scnf suggest`` writes it) and ``label`` (a class number; a blank
    label skips the row); other columns are ignored. Every problem is a ValueError naming the
    file and line: an unknown index, a label outside the classes, a row labelled otherwise
    already or twice with different labels. Returns the number of rows newly labelled."""
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data.extra_labels: no such file: {path}")
    y = data.y.clone()
    k = int(max(int(data.y.max()), -1 if data.y_test is None else int(data.y_test.max()))) + 1
    n, new = len(y), {}
    try:
        with open(path, newline="") as fh:
            table = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"data.extra_labels: {path} is not a CSV file ({type(e).__name__})") from None
    header = [h.strip() for h in table[0]] if table else []
    fields = set(header)
    rows = [dict(zip(header, r)) for r in table[1:]]
    if not {"pool_index", "label"} <= fields:
        raise ValueError(f"data.extra_labels: {path} needs the columns pool_index and label, has "
                         f"{', '.join(sorted(f for f in fields if f)) or 'none'}")
    for line, row in enumerate(rows, start=2):
        where = f"data.extra_labels: {path}, line {line}"
        text = (row.get("label") or "").strip()
        if not text:
            continue
        try:
            i, label = int(row["pool_index"]), int(text)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: pool_index and label must be integers, got "
                             f"{row.get('pool_index')!r} and {text!r}") from None
        if not 0 <= i < n:
            raise ValueError(f"{where}: pool_index {i} is not a row of the training pool (0 to {n - 1})")
        if not 0 <= label < k:
            raise ValueError(f"{where}: label {label} is not a class (0 to {k - 1})")
        if int(y[i]) >= 0 and int(y[i]) != label:
            raise ValueError(f"{where}: row {i} is already labelled {int(y[i])}, not {label}")
        if new.get(i, label) != label:
            raise ValueError(f"{where}: row {i} is labelled {new[i]} on an earlier line and {label} here")
        new[i] = label
    added = sum(int(y[i]) < 0 for i in new)
    for i, label in new.items():
        y[i] = label
    data.y = y
    return added
