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


def build_data(cfg: RunConfig) -> tuple[SemiSupervisedData, dict]:
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


def _build_own_data(cfg: RunConfig) -> tuple[SemiSupervisedData, dict]:
    """The user's npz file or image folder (:mod:`scnf.data.own`). ``data.n_validation`` rows are
    held out of the LABELLED rows (the unlabelled ones have no label to score), drawn by
    ``data.split_seed``; ``data.n_unlabelled`` subsamples the unlabelled ones."""
    d = cfg.data
    own = load_own(d.dataset, d.path)
    check_for_data(cfg, own.images)
    x, y = own.x, own.y
    lab = np.flatnonzero(y >= 0)
    if d.n_validation and d.n_validation >= len(lab):
        raise ValueError(f"data.n_validation = {d.n_validation}: your data have {len(lab)} labelled rows; the "
                         "validation rows are held out of them and at least one must stay for training")
    keep, val = hold_out(len(y), lab, lab, d.n_validation, d.n_unlabelled, d.split_seed)
    xt, yt = own.x_test, own.y_test
    if xt is not None and d.n_test_eval:
        xt, yt = xt[: d.n_test_eval], yt[: d.n_test_eval]
    t = (lambda a: None if a is None else torch.from_numpy(a))  # noqa: E731
    data = SemiSupervisedData(t(x[keep]), t(y[keep]), t(xt), t(yt), images=own.images,
                              x_val=t(x[val]) if len(val) else None, y_val=t(y[val]) if len(val) else None)
    raw = {"source": own.source, "validation_indices": val}
    if not own.images:
        raw.update(x=x[keep], y_semi=y[keep])
    return data, raw
