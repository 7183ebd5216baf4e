"""Which rows to label next: query strategies on an exact posterior and an exact density.

Every strategy turns, for each candidate row, the model's log p(x, y=k) (the flows' exact
joint, shape (N, K)) into a score; higher is more worth labelling:

* ``"entropy"``: the posterior's entropy H(p(y | x)) (uncertainty sampling);
* ``"margin"``: 1 - (p1 - p2), one minus the gap between the two most probable classes;
* ``"density"``: density-weighted uncertainty (Settles and Craven's information density, with
  the exact density in place of a similarity average): H(p(y | x)) * (p(x) / max p(x))^beta
  over the candidates, so an ambiguous row in a dense region comes before an equally
  ambiguous outlier, on which a label teaches little about the other rows;
* ``"novelty"``: -log p(x): the rows the model finds least likely (outliers; on the benchmark's
  cold start it found a class with no label no sooner than random sampling: the flow fits that
  class's rows like the others', so use ``"discovery"`` for that);
* ``"discovery"``: the rows that stand for the most unlabelled data no label covers (a class
  with no label yet sits there; see :func:`discovery`). It needs the rows' codes and the
  labelled rows' (the estimator clusters its standardised rows, which found the class without a
  label in the first batch a little more often than f's latent codes on the benchmark's
  validation cold starts; image runs cluster f(x)), not only log p(x, y), so :func:`scores`
  does not give it;
* ``"random"``: uniform scores (a baseline).

A batch of ``n`` is chosen by :func:`select`: with ``diversity`` (the default) the ``pool``
best-scored candidates (``pool_factor * n`` of them) are grouped into ``n`` clusters by
k-means in the model's label-free latent space, and the best-scored row of each cluster is
taken (Zhdanov's diverse mini-batch selection), so a batch is not ``n`` near-duplicates;
without it the ``n`` best scores are taken.
"""
from __future__ import annotations

import numpy as np

STRATEGIES = ("entropy", "margin", "density", "novelty", "discovery", "random")
#: the strategy :meth:`scnf.SCNFClassifier.query` uses by default
DEFAULT_STRATEGY = "density"
#: ``"density"``: the exponent of the relative density
DENSITY_BETA = 1.0


def _posterior(log_joint: np.ndarray) -> np.ndarray:
    lj = np.asarray(log_joint, dtype=np.float64)
    lj = lj - lj.max(1, keepdims=True)
    p = np.exp(lj)
    return p / p.sum(1, keepdims=True)


def _log_density(log_joint: np.ndarray) -> np.ndarray:
    lj = np.asarray(log_joint, dtype=np.float64)
    m = lj.max(1)
    return m + np.log(np.exp(lj - m[:, None]).sum(1))


def entropy(log_joint: np.ndarray) -> np.ndarray:
    p = _posterior(log_joint)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(np.where(p > 0, p * np.log(p), 0.0)).sum(1)


def scores(log_joint: np.ndarray, strategy: str, rng: np.random.Generator | None = None,
           beta: float = DENSITY_BETA) -> np.ndarray:
    """Each candidate's score under ``strategy`` (higher: label it sooner), from its (N, K)
    log p(x, y=k)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if strategy == "discovery":
        raise ValueError("the discovery strategy needs latent codes: use discovery(), not scores()")
    lj = np.asarray(log_joint, dtype=np.float64)
    if lj.ndim != 2 or lj.shape[0] == 0:
        raise ValueError(f"log_joint must have shape (N, K) with N >= 1, got {lj.shape}")
    if not np.isfinite(lj).all():
        raise ValueError("log_joint holds NaN or inf")
    if strategy == "entropy":
        return entropy(lj)
    if strategy == "margin":
        p = np.sort(_posterior(lj), 1)
        return 1.0 - (p[:, -1] - p[:, -2]) if p.shape[1] > 1 else np.zeros(len(p))
    if strategy == "density":
        lp = _log_density(lj)
        return entropy(lj) * np.exp(beta * (lp - lp.max()))
    if strategy == "novelty":
        return -_log_density(lj)
    return (rng if rng is not None else np.random.default_rng()).random(lj.shape[0])


def _check_batch(n, n_cand: int) -> None:
    """A batch of ``n`` rows must be a positive integer no larger than the candidates."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n > n_cand:
        raise ValueError(f"n = {n} rows asked for, but there are only {n_cand} candidates")


def select(score: np.ndarray, n: int, latent: np.ndarray | None = None, diversity: bool = True,
           pool_factor: int = 10, random_state: int | None = None) -> np.ndarray:
    """The positions of the ``n`` rows to label, best first (see the module's text for the
    rule). ``latent`` (N, D): the rows' label-free latent codes, needed with ``diversity``."""
    score = np.asarray(score, dtype=np.float64)
    n_cand = score.shape[0]
    _check_batch(n, n_cand)
    order = np.argsort(-score, kind="stable")
    if not diversity or n == 1 or n == n_cand:
        return order[:n]
    if latent is None:
        raise ValueError("diversity needs the candidates' latent codes")
    latent = np.asarray(latent, dtype=np.float64).reshape(n_cand, -1)
    pool = order[: min(n_cand, max(n, pool_factor * n))]
    from sklearn.cluster import KMeans

    labels = KMeans(n, n_init=3, random_state=random_state).fit_predict(latent[pool])
    chosen = [pool[labels == c][0] for c in range(n) if (labels == c).any()]  # pool is best first
    if len(chosen) < n:  # fewer distinct clusters than asked (duplicate rows): fill by score
        rest = [i for i in pool if i not in set(chosen)]
        chosen += rest[: n - len(chosen)]
    chosen = np.asarray(chosen)
    return chosen[np.argsort(-score[chosen], kind="stable")]


def discovery(latent: np.ndarray, labelled_latent: np.ndarray, n: int,
              random_state: int | None = None, min_clusters: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` candidates that stand for the most unlabelled data no label covers, best first,
    and every candidate's score: the rows to label when a class may have no label yet.

    The candidates' and the labelled rows' codes (``latent`` (N, D), ``labelled_latent`` (M, D):
    the estimator passes its standardised rows, image runs f(x)) are grouped together into
    ``max(2 n, min_clusters)`` clusters by k-means (pass the number of labelled classes + 1, so
    that a class without a label can have a cluster of its own when ``n`` is small).
    A cluster that holds no labelled row is a part of the data no label speaks for; the largest
    such clusters come first, then the clusters that hold labels, largest first, and from each
    the candidate nearest its centre is taken. A candidate's score is the share of the
    candidates in its cluster, minus 1 when the cluster holds a labelled row (so every
    label-free cluster's rows score above every covered cluster's). Low density alone
    (``"novelty"``) finds outliers of the labelled classes as readily as an unlabelled class;
    an unlabelled class's rows fill clusters of their own."""
    from sklearn.cluster import KMeans

    latent = np.asarray(latent, dtype=np.float64)
    n_cand = latent.shape[0]
    _check_batch(n, n_cand)
    latent = latent.reshape(n_cand, -1)
    ref = np.asarray(labelled_latent, dtype=np.float64).reshape(-1, latent.shape[1])
    both = np.concatenate([latent, ref])
    k = min(max(2 * int(n), int(min_clusters)), len(np.unique(both, axis=0)))
    km = KMeans(k, n_init=3, random_state=random_state).fit(both)
    cluster, ref_cluster = km.labels_[:n_cand], km.labels_[n_cand:]
    size = np.bincount(cluster, minlength=k) / n_cand
    covered = np.isin(np.arange(k), ref_cluster)
    score = size[cluster] - covered[cluster]
    cluster_order = sorted(range(k), key=lambda c: (covered[c], -size[c], c))
    dist = ((latent - km.cluster_centers_[cluster]) ** 2).sum(1)
    chosen = []
    for c in cluster_order:
        members = np.flatnonzero(cluster == c)
        if members.size:
            chosen.append(int(members[np.argmin(dist[members])]))
        if len(chosen) == n:
            break
    if len(chosen) < n:  # fewer non-empty clusters than n (duplicate rows): the next by score, then nearness
        taken = set(chosen)
        rest = [int(i) for i in np.lexsort((dist, -score)) if int(i) not in taken]
        chosen += rest[: n - len(chosen)]
    return np.asarray(chosen), score


# ---------------------------------------------------------------------- image runs: scnf suggest
#: suggestions.csv's columns; "label" is left blank for you to fill in (data.extra_labels reads it)
SUGGESTIONS_FIELDS = ("rank", "pool_index", "score", "predicted", "probability", "label")


def suggest(run, n: int = 100, strategy: str = DEFAULT_STRATEGY, out=None, seed: int = 0,
            max_candidates: int | None = None, diversity: bool = True, batch_size: int = 500,
            allow_changed_data: bool | None = None) -> dict:
    """The ``n`` unlabelled training images of a run most worth labelling (``scnf suggest``):
    ``suggestions.csv`` (rank, the row's index in the run's training pool, its score, the
    predicted label and its probability) and ``suggestions.png`` (the images, best first) in
    ``out`` (default: the run directory). Candidates are the pool's unlabelled rows (the first
    ``max_candidates`` of them if given), dequantised with a generator seeded by ``seed``;
    diversity clusters f(x) of the ``10 n`` best-scored. ``"discovery"`` clusters every
    candidate's f(x) with the labelled training rows' (``max_candidates`` bounds its cost).
    Returns the paths and the rows."""
    import csv

    import torch

    from ._common import open_run, save_image_grid

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    lr = open_run(run, allow_changed_data=allow_changed_data)
    data, model = lr.data, lr.model.eval()
    cand = np.flatnonzero(data.y.numpy() < 0)
    if max_candidates is not None:
        cand = cand[: int(max_candidates)]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(cand):
        raise ValueError(f"--n must be an integer in [1, {len(cand)}] (the run's unlabelled training rows), "
                         f"got {n!r}")

    def latents(rows):
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            return torch.cat([model.unconditional(data.prepare(data.x[torch.from_numpy(rows[i:i + batch_size])],
                                                               g).to(lr.device))[0].flatten(1).double().cpu()
                              for i in range(0, len(rows), batch_size)]).numpy()

    def log_joint(rows):
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            return torch.cat([model.log_joint(data.prepare(data.x[torch.from_numpy(rows[i:i + batch_size])],
                                                           g).to(lr.device)).double().cpu()
                              for i in range(0, len(rows), batch_size)]).numpy()

    if strategy == "discovery":  # every candidate's latent code and the labelled rows'; no scores
        labelled = np.flatnonzero(data.y.numpy() >= 0)
        chosen, score = discovery(latents(cand), latents(labelled), int(n), random_state=seed,
                                  min_clusters=len(np.unique(data.y.numpy()[labelled])) + 1)
        post = _posterior(log_joint(cand[chosen]))
    else:
        lj = log_joint(cand)
        score = scores(lj, strategy, np.random.default_rng(seed))
        pool = np.argsort(-score, kind="stable")[: min(len(cand), max(n, 10 * n))]
        latent = latents(cand[pool]) if diversity and 1 < n < len(pool) else None
        chosen = pool[select(score[pool], int(n), latent, diversity, random_state=seed)]
        post = _posterior(lj[chosen])
    out = lr.run_dir if out is None else out
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"rank": r + 1, "pool_index": int(cand[c]), "score": float(score[c]),
             "predicted": int(post[r].argmax()), "probability": float(post[r].max()), "label": ""}
            for r, c in enumerate(chosen)]
    with open(out / "suggestions.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SUGGESTIONS_FIELDS)
        w.writeheader()
        w.writerows(rows)
    png = None
    if data.images and data.x.shape[1] == 1:
        cols = min(10, len(rows))
        k = -(-len(rows) // cols)
        imgs = np.zeros((k * cols, *data.x.shape[2:]), np.float32)
        imgs[: len(rows)] = data.x[torch.from_numpy(cand[chosen])][:, 0].float().numpy() / 255.0
        png = out / "suggestions.png"
        save_image_grid(imgs.reshape(k, cols, *imgs.shape[1:]), png,
                        title=f"{len(rows)} rows to label next ({strategy}), best first")
    return {"csv": str(out / "suggestions.csv"), "png": None if png is None else str(png), "rows": rows}
