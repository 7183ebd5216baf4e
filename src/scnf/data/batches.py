"""Semi-supervised training data and the batches drawn from it: the rows (``y = -1`` marks
unlabelled), the authors' mixed batch sampler, and shifted copies of images."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..bijectors.logits import dequantize


@dataclass
class SemiSupervisedData:
    """Training rows (``y = -1`` marks unlabelled) and an optional test set.

    With ``images=True`` the objects are uint8 pixels, fed to the model as
    dequantised values ``(x*255 + u)/256`` in [0, 1) at train and at test time.
    """

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    images: bool = False
    x_val: torch.Tensor | None = None  # held out from training; its labels only score choices
    y_val: torch.Tensor | None = None

    def __post_init__(self):
        self.y = torch.as_tensor(self.y, dtype=torch.long)
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")
        if not (self.y >= 0).any():
            raise ValueError("no labelled rows: at least one label must be >= 0 (-1 marks unlabelled)")
        if self.x.is_floating_point() and not torch.isfinite(self.x).all():
            bad = torch.nonzero(~torch.isfinite(self.x.reshape(self.x.shape[0], -1)).all(1)).flatten().tolist()
            raise ValueError(f"x holds NaN or infinite values (rows {bad[:10]}{' ...' if len(bad) > 10 else ''})")

    def prepare(self, xb: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.images:
            return dequantize(xb.float() / 255.0, generator=generator)
        return xb.float()

    @property
    def dims(self) -> int:
        return math.prod(self.x.shape[1:])


def shift_images(x: torch.Tensor, rows: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of the images ``x`` (..., H, W) whose selected ``rows`` are translated by a
    random integer offset in [-max_shift, max_shift] along each axis, filled with zeros
    (the MNIST background). Offsets come from ``generator``, so a resumed run draws the same."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    out = x.clone()
    sel = torch.nonzero(torch.as_tensor(rows, dtype=torch.bool)).flatten()
    if max_shift == 0 or sel.numel() == 0:
        return out
    h, w = x.shape[-2:]
    offsets = torch.randint(-max_shift, max_shift + 1, (sel.numel(), 2), generator=generator)
    for i, (dy, dx) in zip(sel.tolist(), offsets.tolist()):
        img = torch.zeros_like(x[i])
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        img[..., yd, xd] = x[i][..., ys, xs]
        out[i] = img
    return out


class MixedBatchSampler:
    """Batches that mix labelled and unlabelled rows, as the authors' weighted sampler does.

    ``round(share * B)`` labelled rows are drawn with replacement; the rest are unlabelled
    rows taken without replacement from a fresh permutation each epoch. The state is a
    plain dict, saved in checkpoints.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, labelled_share: float, seed: int):
        y = np.asarray(labels)
        self.labelled = np.flatnonzero(y >= 0)
        self.unlabelled = np.flatnonzero(y < 0)
        self.batch_size = batch_size
        if len(self.unlabelled) == 0:
            self.n_lab = batch_size
        else:
            self.n_lab = int(round(labelled_share * batch_size))
        self.rng = np.random.default_rng(seed)
        self.perm = np.empty(0, dtype=np.int64)
        self.pos = 0
        self.epoch = 0

    def _next_unlabelled(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos >= len(self.perm):
                self.perm = self.rng.permutation(self.unlabelled)
                self.pos = 0
                self.epoch += 1
            take = self.perm[self.pos:self.pos + n]
            self.pos += len(take)
            n -= len(take)
            out.append(take)
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        lab = self.rng.choice(self.labelled, self.n_lab, replace=True) if self.n_lab else np.empty(0, np.int64)
        return np.concatenate([lab, self._next_unlabelled(self.batch_size - self.n_lab)])

    def state_dict(self) -> dict:
        # a tensor, not a numpy array: checkpoints load with torch.load(weights_only=True)
        return {"rng": self.rng.bit_generator.state, "perm": torch.from_numpy(self.perm.astype(np.int64)),
                "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]
        perm = s["perm"].numpy() if isinstance(s["perm"], torch.Tensor) else np.asarray(s["perm"])
        self.perm, self.pos, self.epoch = perm.astype(np.int64), int(s["pos"]), int(s["epoch"])
