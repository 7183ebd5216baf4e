"""Image analyses of a trained SCNF: reconstructions from the deepest components (Fig. 2),
label swaps (Fig. 4, Appendix A) and class-conditional samples."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..noise import seed_everything
from ._common import (AnalysisResult, md_table, metrics_line, open_run, out_dir, predict, require_images,
    save_image_grid, short_title, take_test, to_cells, write_section)

RECON_SIZES = (49, 98, 196, 392, 784)


@torch.no_grad()
def reconstructions(run, out=None, seed: int = 0, sizes: Sequence[int] = RECON_SIZES, n_images: int = 10,
                    n_eval: int = 500, device: str = "cpu") -> AnalysisResult:
    """Fig. 2: keep only the deepest d components of z = f(x) (the rest zeroed, as the
    paper zeroes z_aux) and invert f, for each d in ``sizes``.

    The figure has one row per size and the originals as the last row (``n_images``
    columns). ``numbers["mse"][d]`` is the mean squared pixel error (pixels in [0, 1])
    against the dequantised input over the first ``n_eval`` test images.
    """
    lr = open_run(run, device)
    require_images(lr, "reconstructions")
    seed_everything(seed)
    model, total = lr.model.eval(), lr.model.total_dim
    sizes = [int(s) for s in sizes]
    for s in sizes:
        if not 1 <= s <= total:
            raise ValueError(f"reconstruction sizes must lie in [1, {total}], got {s}")
    x_u8, _ = take_test(lr, max(n_eval, n_images), seed)
    g = torch.Generator().manual_seed(int(seed))
    sq_err = {s: 0.0 for s in sizes}
    grid_rows = {s: None for s in sizes}
    originals = None
    n_done = 0
    for i in range(0, x_u8.shape[0], 250):
        x = lr.data.prepare(x_u8[i:i + 250], g).to(lr.device)
        z, _ = model.unconditional(x)
        for s in sizes:
            zk = z.clone()
            zk[:, : total - s] = 0
            rec, _ = model.unconditional.inverse(zk)
            rec = rec.reshape(x.shape)
            if n_done < n_eval:
                m = min(n_eval - n_done, x.shape[0])
                sq_err[s] += float(((rec[:m] - x[:m]) ** 2).flatten(1).mean(1).double().sum())
            if grid_rows[s] is None:
                grid_rows[s] = rec[:n_images].cpu()
        if originals is None:
            originals = x[:n_images].cpu()
        n_done += x.shape[0]
    n_mse = min(n_eval, x_u8.shape[0])
    mse = {s: sq_err[s] / n_mse for s in sizes}
    n_cols = originals.shape[0]
    cells = np.concatenate([to_cells(grid_rows[s], 1, n_cols) for s in sizes] + [to_cells(originals, 1, n_cols)])
    o = out_dir(lr, out)
    fig = o / "reconstructions.png"
    panels = save_image_grid(cells, fig, title=f"{short_title(lr)}\nrows: deepest d kept, last row originals",
                             row_labels=[f"d={s}" for s in sizes] + ["orig."])
    md = ["## Reconstructions from the deepest components (paper Fig. 2)", "",
          f"Run: {metrics_line(lr)}. Seed {seed}.", "",
          f"z = f(x) is flat with the deepest components last; all but the deepest d are set to zero "
          f"(z_aux and, for d < {lr.model.deep_dim}, part of z_f) and f is inverted. Rows: d = "
          f"{', '.join(map(str, sizes))}; last row: the (dequantised) originals.", "",
          *md_table(["d", "MSE (pixels in [0, 1])"], [[s, mse[s]] for s in sizes]), "",
          f"MSE over the first {n_mse} test images.", "", f"![reconstructions]({fig.name})"]
    text = "\n".join(md)
    write_section(o, "reconstructions", text, lr.run_dir)
    return AnalysisResult("reconstructions", {"mse": mse, "n_eval": n_mse}, [fig], panels, text)


def _one_per_class(y: torch.Tensor, n: int, k: int, seed: int) -> np.ndarray:
    """n test indices, cycling through the classes (a random image of each), seeded."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    pools = {c: list(rng.permutation(np.flatnonzero(y == c))) for c in range(k)}
    out: list[int] = []
    while len(out) < n and any(pools.values()):
        for c in range(k):
            if pools[c] and len(out) < n:
                out.append(int(pools[c].pop()))
    return np.asarray(out, dtype=np.int64)


@torch.no_grad()
def label_swap(run, out=None, seed: int = 0, n_images: int = 10, device: str = "cpu") -> AnalysisResult:
    """Fig. 4 / Appendix A: encode ``n_images`` test images (a random one of each class in
    turn) with their true labels to z_h, zero z_aux, and decode with every label.

    The grid has one row per source image: the source, then one column per label
    (``n_images`` x (K + 1)). ``numbers["swap_accuracy"]`` is the fraction of decoded
    images that the model itself classifies as the label they were decoded with (all
    K labels); ``swap_accuracy_other`` excludes the true label, ``true_label_accuracy``
    is the true-label column alone.
    """
    lr = open_run(run, device)
    require_images(lr, "label-swap")
    seed_everything(seed)
    model, k = lr.model.eval(), lr.model.num_classes
    idx = _one_per_class(lr.data.y_test, n_images, k, seed)
    x = lr.data.prepare(lr.data.x_test[idx], torch.Generator().manual_seed(int(seed))).to(lr.device)
    y_true = lr.data.y_test[idx].to(lr.device)
    n = x.shape[0]
    _, _, z_h = model.encode(x, y_true)
    z_h_rep = z_h.repeat_interleave(k, 0)                      # row i*k + j: image i, label j
    labels = torch.arange(k, device=lr.device).repeat(n)
    z_aux = torch.zeros(n * k, model.aux_dim, device=lr.device)
    dec = model.decode(z_aux, z_h_rep, labels).cpu()
    pred = predict(lr, dec).view(n, k)
    lab = labels.cpu().view(n, k)
    hit = (pred == lab)
    is_true = lab == y_true.cpu()[:, None]
    numbers = {"swap_accuracy": float(hit.float().mean()),
               "swap_accuracy_other": float(hit[~is_true].float().mean()) if (~is_true).any() else None,
               "true_label_accuracy": float(hit[is_true].float().mean()),
               "source_labels": y_true.cpu().tolist()}
    cells = np.concatenate([to_cells(x.cpu(), n, 1), to_cells(dec, n, k)], axis=1)
    o = out_dir(lr, out)
    fig = o / "label_swap.png"
    panels = save_image_grid(cells, fig, title=f"{short_title(lr)}\nsource, then decoded with each label "
                                               f"(z_h from the true label, z_aux = 0)",
                             row_labels=[f"y={v}" for v in numbers["source_labels"]],
                             col_labels=["src"] + list(range(k)))
    md = ["## Label swap (paper Fig. 4, Appendix A)", "", f"Run: {metrics_line(lr)}. Seed {seed}.", "",
          f"{n} test images (a random one of each class in turn) are encoded with their true labels to z_h; "
          f"z_aux is set to zero and each z_h is decoded with every one of the {k} labels. Columns: the source "
          f"image, then labels 0..{k - 1}.", "",
          *md_table(["measure", "value"], [
              ["decoded images classified as the label used (all labels)", numbers["swap_accuracy"]],
              ["... swapped labels only", numbers["swap_accuracy_other"]],
              ["... true label only (reconstruction with z_aux = 0)", numbers["true_label_accuracy"]]]),
          "", "Classification is by the model itself (argmax_y log p(x, y)).", "", f"![label swap]({fig.name})"]
    text = "\n".join(md)
    write_section(o, "label-swap", text, lr.run_dir)
    return AnalysisResult("label-swap", numbers, [fig], panels, text)


@torch.no_grad()
def samples(run, out=None, seed: int = 0, temperature: float = 1.0, per_class: int = 10, n_eval: int = 1000,
            device: str = "cpu") -> AnalysisResult:
    """Class-conditional samples, one row per class (``per_class`` columns), with the
    priors' scales multiplied by ``temperature``.

    ``numbers["accuracy"]`` is the fraction of ``max(n_eval, K * per_class)`` samples
    (equally many per class) that the model classifies as the class they were drawn from.
    """
    lr = open_run(run, device)
    require_images(lr, "samples")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if per_class <= 0:
        raise ValueError(f"per_class must be positive, got {per_class}")
    seed_everything(seed)
    model, k = lr.model.eval(), lr.model.num_classes
    n_per = max(per_class, -(-int(n_eval) // k))
    y = torch.arange(k).repeat_interleave(n_per)
    g = torch.Generator(device=lr.device).manual_seed(int(seed))  # the priors draw on the model's device
    xs, preds = [], []
    for i in range(0, y.shape[0], 500):
        yb = y[i:i + 500].to(lr.device)
        xb, _ = model.sample(yb.shape[0], yb, temperature=float(temperature), generator=g)
        xb = xb.cpu()
        finite = torch.isfinite(xb.flatten(1)).all(1)
        xs.append(xb)
        preds.append(torch.where(finite, predict(lr, xb), torch.full_like(yb.cpu(), -1)))
    x, pred = torch.cat(xs), torch.cat(preds)
    acc = float((pred == y).float().mean())
    per = {c: float((pred[y == c] == c).float().mean()) for c in range(k)}
    grid = x.view(k, n_per, *x.shape[1:])[:, :per_class].reshape(k * per_class, *x.shape[1:])
    o = out_dir(lr, out)
    fig = o / f"samples_T{temperature:g}.png"
    panels = save_image_grid(to_cells(grid, k, per_class), fig,
                             title=f"{short_title(lr)}\nsamples at temperature {temperature:g}, one row per class",
                             row_labels=[f"y={c}" for c in range(k)])
    md = [f"## Class-conditional samples, temperature {temperature:g}", "", f"Run: {metrics_line(lr)}. Seed {seed}.",
          "", f"z_h ~ p(z_h | y) and z_aux ~ p(z_aux) with their scales times {temperature:g}, decoded with y; one "
              f"row per class. The model classifies {acc * 100:.1f} % of {y.shape[0]} samples ({n_per} per class) "
              f"as the class they were drawn from.", "",
          *md_table(["class"] + [str(c) for c in range(k)], [["accuracy"] + [per[c] for c in range(k)]]), "",
          f"![samples]({fig.name})"]
    text = "\n".join(md)
    write_section(o, f"samples-T{temperature:g}", text, lr.run_dir)
    return AnalysisResult("samples", {"accuracy": acc, "per_class_accuracy": per, "n": int(y.shape[0]),
                                      "temperature": float(temperature)}, [fig], panels, text)
