"""Analyses of the latent spaces: t-SNE of z_f and z_h (Fig. 3) and the obfuscation
probes of Sec. 4.4 (classifiers trained on z_f, z_h and z_aux)."""
from __future__ import annotations

import time
import warnings
from typing import Sequence

import numpy as np
import torch

from ..noise import seed_everything
from ._common import (AnalysisResult, latents, md_table, metrics_line, open_run, out_dir, plt, require_images,
    short_title, take_test, write_section)

PALETTE = "tab10"


def _knn_accuracy(z: np.ndarray, y: np.ndarray, seed: int, k: int = 5) -> float:
    """5-fold cross-validated k-nearest-neighbour accuracy (stratified, seeded)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    folds = int(min(5, np.bincount(y).min())) if len(np.unique(y)) > 1 else 0
    if folds < 2:
        return float("nan")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), z, y, cv=cv).mean())


@torch.no_grad()
def tsne(run, out=None, seed: int = 0, n: int = 2000, perplexity: float = 30.0,
         device: str = "cpu") -> AnalysisResult:
    """Fig. 3: scikit-learn t-SNE of z_f and of z_h for the first ``n`` test images, coloured
    by class, side by side. z_h is computed with the TRUE labels.

    Numbers per space: 5-fold 5-NN class accuracy and silhouette score (by class) of the
    2-D embedding, and 5-NN accuracy in the latent space itself.
    """
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    lr = open_run(run, device)
    seed_everything(seed)
    x, y = take_test(lr, n, seed)
    _, z_f, z_h = latents(lr, x, y, seed)
    y_np = np.asarray(y)
    n_pts = len(y_np)
    perp = float(min(perplexity, max(2.0, (n_pts - 1) / 3.0)))
    numbers: dict = {"n": n_pts, "perplexity": perp, "labels_for_z_h": "true"}
    embs = {}
    for name, z in (("z_f", z_f), ("z_h", z_h)):
        emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=int(seed)).fit_transform(
            z.double().numpy())
        embs[name] = emb
        numbers[name] = {
            "knn5_accuracy_tsne": _knn_accuracy(emb, y_np, seed),
            "silhouette_tsne": float(silhouette_score(emb, y_np)) if len(np.unique(y_np)) > 1 else float("nan"),
            "knn5_accuracy_latent": _knn_accuracy(z.double().numpy(), y_np, seed),
        }
    p = plt()
    fig, axes = p.subplots(1, 2, figsize=(10, 4.8), dpi=110)
    for ax, (name, emb) in zip(axes, embs.items()):
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=y_np, cmap=PALETTE, s=4, vmin=-0.5, vmax=9.5)
        s = numbers[name]
        ax.set_title(f"t-SNE of {name}: 5-NN acc. {s['knn5_accuracy_tsne'] * 100:.1f} %, "
                     f"silhouette {s['silhouette_tsne']:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=list(axes), ticks=range(10), label="class", fraction=0.03)
    fig.suptitle(f"{short_title(lr)}; {n_pts} test images, z_h from the true labels", fontsize=9)
    o = out_dir(lr, out)
    path = o / "tsne.png"
    fig.savefig(path)
    n_axes = len(axes)
    p.close(fig)
    md = ["## t-SNE of z_f and z_h (paper Fig. 3)", "", f"Run: {metrics_line(lr)}. Seed {seed}.", "",
          f"The first {n_pts} test images; z_h = h(z_f; y) with the TRUE labels. scikit-learn TSNE "
          f"(perplexity {perp:g}, PCA init, random_state {seed}). 5-NN accuracy: 5-fold cross-validated "
          f"k-nearest-neighbour (k = 5) class accuracy.", "",
          *md_table(["space", "5-NN acc. (t-SNE 2-D)", "silhouette (t-SNE 2-D)", "5-NN acc. (latent itself)"],
                    [[nm, numbers[nm]["knn5_accuracy_tsne"], numbers[nm]["silhouette_tsne"],
                      numbers[nm]["knn5_accuracy_latent"]] for nm in ("z_f", "z_h")]), "",
          "The paper finds class clusters in z_f and none in z_h.", "", f"![t-SNE]({path.name})"]
    text = "\n".join(md)
    write_section(o, "tsne", text, lr.run_dir)
    return AnalysisResult("tsne", numbers, [path], (n_axes,), text)


def _fit_probe(clf, ztr, ytr, zte, yte) -> dict:
    from sklearn.exceptions import ConvergenceWarning

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(ztr, ytr)
    converged = not any(issubclass(x.category, ConvergenceWarning) for x in w)
    return {"train_accuracy": float(clf.score(ztr, ytr)), "test_accuracy": float(clf.score(zte, yte)),
            "converged": converged, "seconds": round(time.perf_counter() - t0, 2)}


def class_mean_separation(z: torch.Tensor, y) -> dict:
    """How far apart the classes' means lie in a latent space: per class the Euclidean norm
    of the class mean of ``z`` (N, D), and the mean over classes and dimensions of the
    within-class standard deviation. Under a model whose z_h | y is the same Gaussian for
    every y, the norms are ~0 (sampling noise only)."""
    z = torch.as_tensor(z).double().reshape(len(z), -1)
    y = torch.as_tensor(np.asarray(y))
    norms, stds = {}, []
    for k in torch.unique(y).tolist():
        zk = z[y == k]
        norms[int(k)] = float(zk.mean(0).norm())
        if len(zk) > 1:
            stds.append(float(zk.std(0).mean()))
    return {"class_mean_norm": norms, "within_class_std": float(np.mean(stds)) if stds else float("nan"),
            "dims": int(z.shape[1])}


@torch.no_grad()
def obfuscation(run, out=None, seed: int = 0, n_train: int = 10000, n_test: int | None = None,
                hidden: Sequence[int] = (256, 256), max_iter: int = 200, device: str = "cpu") -> AnalysisResult:
    """Sec. 4.4: two MLP classifiers of the same size (``hidden``), one on z_f and one on
    z_h (z_h from the true labels), trained with the labels of a seeded random subset of
    ``n_train`` training images of the run's dataset (all training labels are used by this
    probe), tested on the run's test set (the first ``n_test``); plus a linear probe
    (logistic regression) on z_aux. Features are standardised on the training subset.

    Returns train and test accuracy of each probe. The paper: both MLPs fit the training
    data; the z_f probe is near perfect on test, the z_h probe near chance.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..data import load as data_load  # the module's name: tests replace its load_dataset

    lr = open_run(run, device)
    require_images(lr, "obfuscation")
    seed_everything(seed)
    xi, yi = data_load.load_dataset(lr.cfg.data.dataset, "train", lr.cfg.data.data_dir or None)
    rng = np.random.default_rng(seed)
    sel = np.sort(rng.choice(len(yi), min(int(n_train), len(yi)), replace=False))
    x_tr = torch.from_numpy(np.ascontiguousarray(xi[sel]))[:, None]
    y_tr = torch.from_numpy(np.asarray(yi[sel], dtype=np.int64))
    x_te, y_te = take_test(lr, n_test, seed)
    a_tr, f_tr, h_tr = latents(lr, x_tr, y_tr, seed)
    a_te, f_te, h_te = latents(lr, x_te, y_te, seed)
    ytr, yte = y_tr.numpy(), np.asarray(y_te)
    hidden = tuple(int(h) for h in hidden)
    probes = {}
    for name, ztr, zte in (("z_f", f_tr, f_te), ("z_h", h_tr, h_te)):
        clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=hidden, max_iter=int(max_iter),
                                                            random_state=int(seed)))
        probes[f"mlp_{name}"] = _fit_probe(clf, ztr.double().numpy(), ytr, zte.double().numpy(), yte)
    if lr.model.aux_dim > 0:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max(int(max_iter), 500)))
        probes["linear_z_aux"] = _fit_probe(clf, a_tr.double().numpy(), ytr, a_te.double().numpy(), yte)
    else:
        probes["linear_z_aux"] = None
    k = lr.model.num_classes
    sep = class_mean_separation(h_te, yte)
    numbers = {**probes, "n_train": int(len(sel)), "n_test": int(len(yte)), "hidden": list(hidden),
               "chance": 1.0 / k, "labels_for_z_h": "true", "z_h_class_means": sep}
    # figure: train/test accuracy bars per probe
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6), dpi=110)
    names = [nm for nm in ("mlp_z_f", "mlp_z_h", "linear_z_aux") if probes.get(nm)]
    xs = np.arange(len(names))
    ax.bar(xs - 0.18, [probes[nm]["train_accuracy"] for nm in names], 0.36, label="train")
    ax.bar(xs + 0.18, [probes[nm]["test_accuracy"] for nm in names], 0.36, label="test")
    ax.axhline(1.0 / k, color="black", ls="--", lw=1, label="chance")
    ax.set_xticks(xs)
    ax.set_xticklabels([nm.replace("_", " ", 1) for nm in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    ax.set_title(f"{short_title(lr)}\nprobes on {len(sel)} training images", fontsize=8)
    fig.tight_layout()
    o = out_dir(lr, out)
    path = o / "obfuscation.png"
    fig.savefig(path)
    p.close(fig)
    rows = []
    for nm, desc in (("mlp_z_f", f"MLP {hidden} on z_f"), ("mlp_z_h", f"MLP {hidden} on z_h (true labels)"),
                     ("linear_z_aux", "logistic regression on z_aux")):
        r = probes.get(nm)
        rows.append([desc, r["train_accuracy"] if r else None, r["test_accuracy"] if r else None,
                     r["converged"] if r else None])
    md = ["## Semi-supervised data obfuscation (paper Sec. 4.4)", "", f"Run: {metrics_line(lr)}. Seed {seed}.", "",
          f"Probes trained with the labels of {len(sel)} random training images (all training labels are "
          f"available to the probe), tested on {len(yte)} test images; features standardised; z_h = h(z_f; y) "
          f"with the true labels. Chance: {1.0 / k:.2f}.", "",
          *md_table(["probe", "train acc.", "test acc.", "converged"], rows), "",
          "Paper: both MLPs fit the training data; the z_f probe is near perfect on test, the z_h probe near "
          "chance.", "",
          f"Class means of z_h on the test images (z_h ~ N(0, diag) for every class under a perfect model, so "
          f"these norms would be ~0): norm of each class's mean over {sep['dims']} dimensions "
          f"{min(sep['class_mean_norm'].values()):.2f}–{max(sep['class_mean_norm'].values()):.2f}; "
          f"within-class standard deviation {sep['within_class_std']:.2f} per dimension.", "",
          f"![obfuscation]({path.name})"]
    text = "\n".join(md)
    write_section(o, "obfuscation", text, lr.run_dir)
    return AnalysisResult("obfuscation", numbers, [path], (1,), text)
