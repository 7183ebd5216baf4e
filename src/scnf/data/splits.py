"""The labelled subset of a training set."""
from __future__ import annotations

import numpy as np


def labelled_split(labels: np.ndarray, n_labelled: int = 100, seed: int = 0) -> np.ndarray:
    """Pick a class-balanced set of labelled rows.

    Each of the K classes present in ``labels`` gets ``n_labelled // K`` rows,
    drawn without replacement with ``numpy.random.default_rng(seed)``.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: ``labels`` not 1-D integers, ``n_labelled`` negative or not
            divisible by K, or a class with fewer than ``n_labelled // K`` rows.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype}, shape {labels.shape}"
        )
    classes = np.unique(labels)
    k = len(classes)
    if n_labelled < 0 or k == 0 or n_labelled % k != 0:
        raise ValueError(
            f"n_labelled={n_labelled} must be a non-negative multiple "
            f"of the number of classes ({k})"
        )
    per_class = n_labelled // k
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise ValueError(f"class {c} has {len(rows)} rows, fewer than the {per_class} needed")
        chosen.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
