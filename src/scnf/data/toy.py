"""The paper's toy problems (Sec. 4.1): moons and concentric circles with 10 labels."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import make_circles, make_moons

from ..config import TOY_DATASETS


def make_toy(name: str, n: int = 1000, noise: float = 0.1, seed: int = 0, factor: float = 0.2):
    """(X float32 (n, 2), y int64 (n,)) from scikit-learn's generators.

    moons: noise 0.1; circles: noise 0.1, factor 0.2 (the paper's settings).
    """
    if name == "moons":
        x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    elif name == "circles":
        x, y = make_circles(n_samples=n, noise=noise, factor=factor, random_state=seed)
    else:
        raise ValueError(f"unknown toy dataset {name!r}: expected one of {TOY_DATASETS}")
    return x.astype(np.float32), y.astype(np.int64)


#: seeds of validation draws start here, far from the training (2s) and test (2s + 1) seeds
VALIDATION_SEED_BASE = 1_000_000


def toy_problem(name: str, n_train: int = 1000, n_test: int = 1000, n_labelled: int = 10,
                noise: float = 0.1, seed: int = 0, evaluate_on: str = "test"):
    """Training set with ``n_labelled`` labels (stratified; the rest marked -1) and a
    separately drawn test set. Returns (x_train, y_train_semi, y_train_true, x_test, y_test).

    ``evaluate_on="validation"`` returns, in place of the test set, ``n_test`` points drawn
    from the same distribution with another seed (never the test points): for choosing
    settings without looking at the test set."""
    from .images import labelled_split

    if evaluate_on not in ("test", "validation"):
        raise ValueError(f"evaluate_on must be 'test' or 'validation', got {evaluate_on!r}")
    x, y = make_toy(name, n_train, noise, seed=2 * seed)
    eval_seed = 2 * seed + 1 if evaluate_on == "test" else VALIDATION_SEED_BASE + seed
    xt, yt = make_toy(name, n_test, noise, seed=eval_seed)
    idx = labelled_split(y, n_labelled, seed=seed)
    y_semi = np.full_like(y, -1)
    y_semi[idx] = y[idx]
    return x, y_semi, y, xt, yt
