"""Training by the objective of Eq. (1): labelled rows contribute log p(x, y), unlabelled
rows log p(x); plain SGD or EM-SGD (Appendix B); optional classification loss.

The loop checkpoints atomically (:mod:`scnf.checkpoint`), resumes bit-for-bit (model,
optimiser, schedule, sampler and noise generators are all restored), and never lets a
non-finite loss or gradient reach the weights.
"""
from __future__ import annotations

import dataclasses
import json
import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .bijectors.ffjord import ODESolverError
from .bijectors.logits import dequantize
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from .config import TrainConfig
from .errors import TrainingDiverged, TrainingFailed, TrainingInterrupted
from .model import SemiConditionalFlow
from .precision import apply_precision
from .process_group import ProcessGroup

LN2 = math.log(2.0)


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


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


def loss_terms(lj: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, n_rows: int | None = None,
               n_labelled: int | None = None, target: torch.Tensor | None = None, pseudo: bool = False):
    """The loss of Eq. (1) from a batch's log p(x, y=k) (B, K) and labels (-1: unlabelled).

    SGD: labelled rows -log p(x, y), unlabelled rows -log p(x), summed and divided by
    ``n_rows`` (default: the rows here). EM-SGD: unlabelled rows -E_q log p(x, y) with
    q = p_old(y|x) held fixed (E-step); one gradient step on it is the M-step (its gradient at
    theta_old equals that of log p(x), by Fisher's identity). L_clf: cross-entropy of
    log p(y|x) on labelled rows, summed and divided by ``n_labelled`` (default: the labelled
    rows here), times ``clf_weight``. Distributed training passes global counts.
    ``target`` (unlabelled rows, K), when given: posteriors of a second view of the
    unlabelled rows; adds ``consistency_weight`` times the mean KL(target || p(y|x)) over them.

    Returns (loss, log p(x, y) of labelled rows, log p(x) of unlabelled rows, L_clf sum,
    labelled-row predictions correct, consistency KL sum).
    """
    lab = y >= 0
    lj_lab, y_lab, lj_unl = lj[lab], y[lab], lj[~lab]
    lp_lab = lj_lab.gather(1, y_lab[:, None]).squeeze(1)
    lp_unl = torch.logsumexp(lj_unl, 1)
    if cfg.optimisation == "em-sgd":
        q = torch.softmax(lj_unl.detach(), 1)
        unl_term = (q * lj_unl).sum(1)
    else:
        unl_term = lp_unl
    n_rows = lj.shape[0] if n_rows is None else n_rows
    n_labelled = int(lab.sum()) if n_labelled is None else n_labelled
    loss = -(cfg.labelled_weight * lp_lab.sum() + unl_term.sum()) / n_rows
    clf_sum = lj.new_zeros(())
    if cfg.clf_weight > 0 and n_labelled > 0:
        if lab.any():
            clf_sum = F.cross_entropy(lj_lab, y_lab, reduction="sum")
        loss = loss + cfg.clf_weight * clf_sum / n_labelled
    kl_sum = lj.new_zeros(())
    if target is not None and lj_unl.shape[0] > 0:
        if target.shape != lj_unl.shape:
            raise ValueError(f"target has shape {tuple(target.shape)}, expected {tuple(lj_unl.shape)} "
                             "(one posterior per unlabelled row)")
        log_post = torch.log_softmax(lj_unl, 1)
        kl_sum = (torch.xlogy(target, target) - target * log_post).sum()
        loss = loss + cfg.consistency_weight * kl_sum / (n_rows - n_labelled)
    if pseudo and cfg.pseudo_threshold > 0 and lj_unl.shape[0] > 0:
        conf, y_hat = torch.softmax(lj_unl.detach(), 1).max(1)
        sure = conf >= cfg.pseudo_threshold
        if sure.any():
            pl = F.cross_entropy(lj_unl[sure], y_hat[sure], reduction="sum")
            loss = loss + cfg.pseudo_weight * pl / max(n_rows - n_labelled, 1)
    with torch.no_grad():
        correct = (lj_lab.argmax(1) == y_lab).sum()
    return loss, lp_lab, lp_unl, clf_sum, correct, kl_sum


def _consistency_target(model: SemiConditionalFlow, view: torch.Tensor | None, cfg: TrainConfig):
    if view is None:
        return None
    with torch.no_grad():
        return torch.softmax(model.log_joint(view) / cfg.consistency_temperature, 1)


def _stats(n: int, n_lab: int, lp_sum: float, clf_sum: float, kl_sum: float, correct: int) -> dict:
    return {"nll": -lp_sum / n, "clf": clf_sum / max(n_lab, 1), "consistency": kl_sum / max(n - n_lab, 1),
            "labelled_acc": correct / n_lab if n_lab else float("nan")}


def objective(model: SemiConditionalFlow, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
              view: torch.Tensor | None = None, pseudo: bool = False):
    """The per-example mean loss (nats) of one batch, and statistics (see :func:`loss_terms`).

    ``view``: a perturbed copy of the unlabelled rows of ``x``; its posterior, without
    gradient and at ``consistency_temperature``, is the target of the consistency term."""
    lj = model.log_joint(x)  # first: a not yet initialised ActNorm initialises on x, not on the view
    target = _consistency_target(model, view, cfg)
    loss, lp_lab, lp_unl, clf_sum, correct, kl_sum = loss_terms(lj, y, cfg, target=target, pseudo=pseudo)
    with torch.no_grad():
        lp_sum = float(lp_lab.sum() + lp_unl.sum())
    return loss, _stats(x.shape[0], lp_lab.shape[0], lp_sum, float(clf_sum.detach()), float(kl_sum.detach()),
                        int(correct))


def has_uninitialised_actnorm(model: torch.nn.Module) -> bool:
    from .bijectors.actnorm import ActNorm

    return any(isinstance(m, ActNorm) and not bool(m.initialized) for m in model.modules())


def backward_objective(model: SemiConditionalFlow, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                       view: torch.Tensor | None = None, pseudo: bool = False, *, group: ProcessGroup | None = None,
                       n_rows: int | None = None, n_labelled: int | None = None, forward: Callable | None = None):
    """Backpropagate :func:`objective`'s loss of the batch, ``cfg.micro_batch`` rows at a time.

    With ``cfg.micro_batch`` in (0, B) the rows go through forward and backward in chunks and
    their gradients add up in ``.grad``: every term of the loss is a sum over rows divided by
    whole-batch counts, so the gradient is that of the whole batch (up to the order of float
    sums) while only one chunk's activations are held. ActNorms not yet initialised are
    initialised on the whole batch first, as without chunks. Stops at the first non-finite
    chunk loss. Returns (loss: float, stats: dict, finite: bool); ``.grad`` is accumulated,
    not zeroed.

    In a process ``group`` of N processes, ``x``, ``y`` and ``view`` are this process's rows
    of a batch of ``n_rows`` rows of which ``n_labelled`` are labelled (defaults: the rows
    given), and ``forward`` (default ``model.log_joint``) is the DDP-wrapped log-joint: each
    process's loss is divided by the global counts and multiplied by N, so the gradient
    DDP averages is the whole batch's. Loss and statistics are summed over processes, and
    all processes stop together at a chunk whose loss is non-finite on any of them.
    """
    group = group if group is not None else ProcessGroup()
    forward = forward if forward is not None else _training_forward(model)
    terms = getattr(model, "loss_terms", loss_terms)
    rows, lab = x.shape[0], y >= 0
    n = rows if n_rows is None else n_rows
    n_lab = int(lab.sum()) if n_labelled is None else n_labelled
    chunk = cfg.micro_batch if 0 < cfg.micro_batch < rows else rows
    if chunk < rows and model.training and has_uninitialised_actnorm(model):
        with torch.no_grad():
            model.log_joint(x)
    target, unl_seen = None, 0
    totals = torch.zeros(5, dtype=torch.float64)  # loss, sum log p, L_clf sum, KL sum, correct
    for start in range(0, rows, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        last = start + chunk >= rows
        with (nullcontext() if last else group.no_sync(forward)), group.collective("forward and backward pass"):
            lj = forward(xs)  # first: a not yet initialised ActNorm initialises on x, not on the view
            if view is not None and target is None:
                target = _consistency_target(model, view, cfg)
            ts = None
            if target is not None:
                k = int((ys < 0).sum())
                ts, unl_seen = target[unl_seen:unl_seen + k], unl_seen + k
            loss, lp_lab, lp_unl, clf, corr, kl = terms(lj, ys, cfg, n_rows=n, n_labelled=n_lab,
                                                        target=ts, pseudo=pseudo)
            sums = torch.stack([loss.detach().double(), (lp_lab.detach().sum() + lp_unl.detach().sum()).double(),
                                clf.detach().double(), kl.detach().double(), corr.double(),
                                torch.isfinite(loss.detach()).double()])
            sums = group.all_reduce(sums, "loss all-reduce")
            if int(sums[5]) < group.world:
                return float(sums[0]), _stats(n, n_lab, float("nan"), float("nan"), float("nan"), 0), False
            (loss * group.world if group.world > 1 else loss).backward()
        totals += sums[:5].cpu()
    total, lp_sum, clf_sum, kl_sum, correct = totals.tolist()
    return total, _stats(n, n_lab, lp_sum, clf_sum, kl_sum, int(correct)), True


@torch.no_grad()
def evaluate(model: SemiConditionalFlow, data: SemiSupervisedData, x: torch.Tensor, y: torch.Tensor | None,
             batch_size: int = 1000, seed: int = 12345, group: ProcessGroup | None = None) -> dict:
    """Test error (%), mean NLL (nats) and, for images, bits/dim on (x, y).

    In a process ``group`` (called on every process) evaluation batch ``i`` runs on process
    ``i % N``; every process advances the dequantisation noise over all batches, so each
    image gets the noise it gets in one process, and the float64 sums of log p, errors and
    rows are added over processes."""
    group = group if group is not None else ProcessGroup()
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    tot = torch.zeros(3, dtype=torch.float64)  # sum log p, errors, rows
    for j, i in enumerate(range(0, x.shape[0], batch_size)):
        xb = data.prepare(x[i:i + batch_size], g)  # every process advances the noise stream
        if j % group.world != group.rank:
            continue
        lj = model.log_joint(xb.to(dev))
        tot[0] += torch.logsumexp(lj, 1).double().sum().cpu()
        if y is not None:
            scores = model.classifier_logits(xb.to(dev)) if hasattr(model, "classifier_logits") else lj
            tot[1] += (scores.argmax(1).cpu() != torch.as_tensor(y[i:i + batch_size])).sum().double()
        tot[2] += xb.shape[0]
    model.train(was_training)
    lp_sum, errors, rows = group.all_reduce(tot, "evaluation all-reduce").tolist()
    mean_lp = lp_sum / rows if rows else float("nan")
    out = {"nll": -mean_lp}
    if y is not None:
        out["error_pct"] = errors / rows * 100 if rows else float("nan")
    if data.images:
        out["bits_per_dim"] = 8.0 - mean_lp / (data.dims * LN2)
    return out


_stop_signal: int | None = None  # set by stop_on_signals' handler, read by Trainer.fit
_fitting = 0  # Trainer.fit loops running (the handler defers to them only)


@contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """While active, SIGINT and SIGTERM ask a running :meth:`Trainer.fit` to stop after its
    current step: it writes a checkpoint and raises
    :class:`~scnf.errors.TrainingInterrupted`. Outside a training loop, and for a second
    signal, the previous handler acts at once. Outside the main thread this does nothing."""
    global _stop_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, frame):
        global _stop_signal
        if _fitting and _stop_signal is None:
            _stop_signal = signum
            return
        prev = previous[signum]
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    _stop_signal = None
    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop_signal = None


def _param_groups(model: SemiConditionalFlow, cfg: TrainConfig):
    if hasattr(model, "parameter_groups"):  # the VAE baselines: M1, M2
        f_params, h_params = model.parameter_groups()
        return [{"params": f_params, "name": "f"}, {"params": h_params, "name": "h"}]
    h_params = list(model.conditional.parameters()) + list(model.latent_prior.parameters())
    h_ids = {id(p) for p in h_params}
    f_params = [p for p in model.parameters() if id(p) not in h_ids]
    return [{"params": f_params, "name": "f"}, {"params": h_params, "name": "h"}]


def _lr_lambdas(cfg: TrainConfig):
    def decay(step):
        return max(0.0, 1.0 - step / cfg.steps) if cfg.schedule == "linear" else 1.0

    def h_decay(step):
        return 0.0 if step < cfg.warmup_f_steps else cfg.h_lr_mult * decay(step)

    return [decay, h_decay]


class WeightAverage:
    """An exponential moving average of a model's floating-point parameters and buffers
    (integer and boolean buffers are copied), for evaluation. The decay at update t is
    ``min(decay, (1 + t) / (10 + t))``, so early averages are not dominated by the start."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), 1.0 - d)
            else:
                self.shadow[k].copy_(v)
        self.updates += 1

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Within the block the model holds the averaged weights; its own come back after."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, s: dict) -> None:
        self.shadow = {k: v.clone() for k, v in s["shadow"].items()}
        self.updates = int(s["updates"])


_RESUME_KEYS = ("model", "optimizer", "scheduler", "sampler", "torch_rng", "noise_rng", "step", "history",
                "nonfinite_total", "seconds")


def _training_forward(model: nn.Module) -> Callable:
    """What a training step runs on a batch: a flow's log p(x, y=k) (B, K), or a model's own
    ``training_forward`` (the VAE baselines), whose output its ``loss_terms`` reads."""
    return getattr(model, "training_forward", None) or model.log_joint


class _LogJoint(nn.Module):
    """The flow's log p(x, y=k) for every k as a ``forward``, for DDP and torch.compile to wrap."""

    def __init__(self, flow: SemiConditionalFlow):
        super().__init__()
        self.flow = flow

    def forward(self, x):
        return _training_forward(self.flow)(x)


class Trainer:
    """Runs the objective for ``cfg.steps`` steps, with evaluation, logs and checkpoints.

    Args:
        model, data, cfg: what to train, on what, how.
        seed: seeds the batch sampler, the dequantisation noise and torch's global RNG.
        run_dir: where ``checkpoint.pt`` and ``log.jsonl`` go (None: nothing is written).
        callback: called as ``callback(trainer, step)`` after every completed step; a true
            return value ends the run after that step, with no further evaluation or
            checkpoint (early stopping; with several processes it must return the same on
            every one).
        init_fn: called as ``init_fn(model, x, y)`` on the batch of step ``warmup_f_steps``
            (class-aware initialisation).
        progress_bar: tqdm keyword arguments overriding the progress bar's (shown with
            ``cfg.progress`` on a terminal), e.g. ``dict(desc=..., disable=False)`` to show it
            whatever the output is.
        group: the :class:`~scnf.process_group.ProcessGroup` of this process (default: one
            process). With N processes ``cfg.batch_size`` is the global batch; see below.

    With N processes every process draws the *global* batch from the same sampler and noise
    streams (same seed) and keeps rows ``rank::N`` (the unlabelled rows of the consistency
    view with them), so the global batch is the 1-process batch and sampler and noise states
    (hence checkpoints) do not depend on N.

    Models: a :class:`SemiConditionalFlow` (the step runs ``log_joint`` and :func:`loss_terms`), or
    any module with ``training_forward`` / ``loss_terms`` (same return value) / ``log_joint`` /
    ``classifier_logits`` / ``parameter_groups``, as the VAE baselines of :mod:`scnf.baselines`
    (prediction then comes from ``classifier_logits``). The data-dependent initialisation runs on the
    whole first batch, then rank 0's weights are broadcast; the loss is normalised by global
    counts (:func:`backward_objective`) and gradients are averaged by DDP, so N processes
    take the steps of one up to float rounding. Evaluation is sharded by batch
    (:func:`evaluate`); the ``max_seconds`` stop uses the slowest process's clock; only rank 0
    writes the log and checkpoints, every rank reads the checkpoint on resume. Precision
    (``cfg.precision``) and ``cfg.compile`` are set up here for any N.
    """

    def __init__(self, model: SemiConditionalFlow, data: SemiSupervisedData, cfg: TrainConfig, seed: int = 0,
                 run_dir: str | Path | None = None, callback: Callable | None = None,
                 init_fn: Callable | None = None, group: ProcessGroup | None = None,
                 progress_bar: dict | None = None):
        self.group = group if group is not None else ProcessGroup()
        self.progress_bar = dict(progress_bar or {})
        if cfg.batch_size % self.group.world:
            raise ValueError(f"train.batch_size = {cfg.batch_size} is not divisible by the {self.group.world} "
                             "processes")
        if not self.group.is_main and cfg.progress:
            cfg = dataclasses.replace(cfg, progress=False)
        self.model, self.data, self.cfg, self.seed = model, data, cfg, seed
        if cfg.consistency_weight > 0 and not (data.images and cfg.augment_shift > 0):
            raise ValueError("train.consistency_weight needs image data and train.augment_shift > 0 "
                             "(the shifted copy is the second view)")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callback = callback
        self.init_fn = init_fn
        self.device = self.group.device_for(resolve_device(cfg.device))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(seed)
        self.model.to(self.device)
        apply_precision(self.model, cfg.precision, self.device)
        self.engine = None  # the log-joint the steps call: DDP-wrapped and/or compiled; built at the first step
        self.optimizer = torch.optim.Adamax(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambdas(cfg))
        self.sampler = MixedBatchSampler(data.y, cfg.batch_size, cfg.labelled_share, seed)
        self.noise = torch.Generator().manual_seed(seed + 1)
        self.step = 0
        self.history: list[dict] = []
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.seconds = 0.0
        self.last_eval: dict = {}
        self.last_val: dict = {}
        self.run_loss, self.run_n = 0.0, 0
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self._reseed_rank()

    def _reseed_rank(self):
        # torch's global RNG is the only randomness that differs by rank (nothing in the
        # models uses it during training); batches and noise come from global streams
        if self.group.rank:
            torch.manual_seed((self.seed * 1_000_003 + self.group.rank * 7919 + self.step) % 2**63)

    # ------------------------------------------------------------ state
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "checkpoint.pt"

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(), "noise_rng": self.noise.get_state(), "step": self.step,
            "history": self.history, "nonfinite_total": self.nonfinite_total, "seconds": self.seconds,
            "last_eval": self.last_eval, "last_val": self.last_val, "run_loss": (self.run_loss, self.run_n),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.sampler.load_state_dict(s["sampler"])
        torch.set_rng_state(s["torch_rng"])
        self.noise.set_state(s["noise_rng"])
        self.step, self.history = int(s["step"]), list(s["history"])
        self.nonfinite_total, self.seconds = int(s["nonfinite_total"]), float(s["seconds"])
        self.last_eval = dict(s.get("last_eval", {}))
        self.last_val = dict(s.get("last_val", {}))
        if self.ema is not None:
            if "ema" not in s:
                raise KeyError("ema: the checkpoint has no weight average but train.ema_decay > 0")
            self.ema.load_state_dict(s["ema"])
        self.run_loss, self.run_n = s.get("run_loss", (0.0, 0))

    def save(self, extra: dict | None = None) -> None:
        if self.checkpoint_path is not None and self.group.is_main:
            state = self.state_dict()
            state.update(extra or {})
            save_checkpoint(self.checkpoint_path, state)

    def resume(self) -> bool:
        """Load ``run_dir/checkpoint.pt`` if it exists; True when something was loaded."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return False
        path = self.checkpoint_path
        state = load_checkpoint(path, required=_RESUME_KEYS)
        load_model_state(self.model, state["model"], path)
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            raise CheckpointError(f"checkpoint {path} cannot resume this run: {type(e).__name__}: "
                                  f"{' '.join(str(e).split())[:300]}") from None
        # keep the log consistent with the checkpoint: drop lines written after it
        self._rewrite_log()
        self._reseed_rank()
        return True

    def _rewrite_log(self):
        if not self.group.is_main:
            return
        log = self.run_dir / "log.jsonl"
        with open(log, "w") as fh:
            for rec in self.history:
                fh.write(json.dumps(rec) + "\n")

    def _log(self, rec: dict):
        self.history.append(rec)
        if self.run_dir is not None and self.group.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "log.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    # ------------------------------------------------------------ loop
    @contextmanager
    def eval_weights(self):
        """The weights evaluation uses: the weight average when ``ema_decay`` > 0."""
        if self.ema is None or self.ema.updates == 0:
            yield self.model
        else:
            with self.ema.applied(self.model) as m:
                yield m

    def evaluate(self) -> dict:
        if self.data.x_test is None:
            return {}
        with self.eval_weights() as m:
            return evaluate(m, self.data, self.data.x_test, self.data.y_test, group=self.group)

    def evaluate_validation(self) -> dict:
        if self.data.x_val is None:
            return {}
        with self.eval_weights() as m:
            return evaluate(m, self.data, self.data.x_val, self.data.y_val, group=self.group)

    def _draw_batch(self, with_view: bool = False):
        """The next mixed batch (labelled image rows shifted when ``augment_shift`` is set),
        dequantised where needed, on the CPU. ``with_view``: also return a shifted copy of
        the unlabelled rows (the consistency term's second view)."""
        idx = torch.from_numpy(self.sampler.next())
        raw, yb = self.data.x[idx], self.data.y[idx]
        xb = raw
        if self.cfg.augment_shift and self.data.images:
            xb = shift_images(raw, yb >= 0, self.cfg.augment_shift, self.noise)
        x = self.data.prepare(xb, self.noise)
        if self.cfg.input_noise > 0 and not self.data.images:  # smooths the rows' distribution
            x = x + self.cfg.input_noise * torch.randn(x.shape, generator=self.noise, dtype=x.dtype)
        if not with_view:
            return x, yb
        unl = raw[yb < 0]
        view = shift_images(unl, torch.ones(unl.shape[0], dtype=torch.bool), self.cfg.augment_shift, self.noise)
        return x, yb, self.data.prepare(view, self.noise)

    def _global_batch(self):
        """(x, y, view or None): the whole batch of this step, on the CPU."""
        if self.cfg.consistency_weight > 0:
            return self._draw_batch(with_view=True)
        return (*self._draw_batch(), None)

    def _shard(self, x, y, view):
        """This process's rows of a global batch (and their consistency view), on its device."""
        if self.group.world > 1:
            mine = self.group.shard(torch.arange(x.shape[0]))
            if view is not None:
                owner = torch.zeros(x.shape[0], dtype=torch.bool)
                owner[mine] = True
                view = view[owner[y < 0]]
            x, y = x[mine], y[mine]
        return x.to(self.device), y.to(self.device), None if view is None else view.to(self.device)

    def _batch(self):
        return self._shard(*self._global_batch())

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Data-dependent initialisation on the whole batch (every process), then rank 0's
        weights everywhere: ``init_fn`` at step ``warmup_f_steps``; else, at the first step
        of several processes, the ActNorms not yet initialised (one process initialises them
        in its first training forward, which sees the whole batch)."""
        x, y = x.to(self.device), y.to(self.device)
        if self.init_fn is not None and self.step == self.cfg.warmup_f_steps:
            self.init_fn(self.model, x, y)  # class-aware, after the warm-up of f alone when there is one
        elif self.engine is None and self.group.world > 1 and has_uninitialised_actnorm(self.model):
            self.model.log_joint(x)
        self.group.broadcast_module_(self.model)

    def _build_engine(self) -> None:
        engine = self.group.wrap(_LogJoint(self.model), self.device)
        self.engine = torch.compile(engine) if self.cfg.compile else engine

    def _grads_finite(self) -> bool:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return True
        norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        return bool(torch.isfinite(norm))  # the same on every process: gradients are all-reduced

    def train_step(self) -> dict:
        self.model.train()
        xg, yg, view = self._global_batch()
        if self.engine is None or (self.init_fn is not None and self.step == self.cfg.warmup_f_steps):
            self._initialise(xg, yg)
        if self.engine is None:
            self._build_engine()
        x, y, view = self._shard(xg, yg, view)
        self.optimizer.zero_grad(set_to_none=True)
        pseudo = self.cfg.pseudo_threshold > 0 and self.step >= self.cfg.pseudo_start
        loss, stats, ok = backward_objective(self.model, x, y, self.cfg, view=view, pseudo=pseudo, group=self.group,
                                             n_rows=xg.shape[0], n_labelled=int((yg >= 0).sum()),
                                             forward=self.engine)
        ok = ok and self._grads_finite()
        stats.update(loss=loss, skipped=not ok)
        self._finish_step(ok)
        return stats

    def _finish_step(self, ok: bool) -> None:
        """Apply the update (or skip it and count a non-finite step), advance the schedule,
        and stop after ``max_nonfinite`` skipped steps in a row."""
        if ok:
            self.optimizer.step()
            self.nonfinite_run = 0
            if self.ema is not None:
                self.ema.update(self.model)
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_total += 1
            self.nonfinite_run += 1
        self.scheduler.step()
        self.step += 1
        if self.nonfinite_run >= self.cfg.max_nonfinite:
            raise TrainingDiverged(
                f"{self.nonfinite_run} consecutive non-finite losses or gradients at step {self.step}; stopping",
                checkpoint=self._last_good(), step=self.step)

    def _last_good(self) -> Path | None:
        p = self.checkpoint_path
        return p if p is not None and p.exists() else None

    def _out_of_time(self) -> bool:
        """Whether ``max_seconds`` is spent; decided on the slowest process's clock, so every
        process stops after the same step."""
        if self.cfg.max_seconds <= 0:
            return False
        self.seconds = self.group.max(self.seconds, "max_seconds check")
        return self.seconds >= self.cfg.max_seconds

    def fit(self) -> dict:
        cfg = self.cfg
        bar = tqdm(**{"total": cfg.steps, "initial": self.step, "disable": None if cfg.progress else True,
                      "dynamic_ncols": True, "desc": "train", "leave": False, **self.progress_bar})
        global _fitting
        _fitting += 1
        try:
            while self.step < cfg.steps and not self._out_of_time():
                t0 = time.perf_counter()
                stats = self.train_step()
                if not stats["skipped"]:
                    self.run_loss += stats["loss"]
                    self.run_n += 1
                self.seconds += time.perf_counter() - t0
                bar.update(1)
                post = {"loss": f"{stats['loss']:.3f}"}
                if "error_pct" in self.last_eval:
                    post["err%"] = f"{self.last_eval['error_pct']:.1f}"
                bar.set_postfix(post, refresh=False)
                out_of_time = self._out_of_time()
                last = self.step == cfg.steps or out_of_time
                if self.step % cfg.eval_every == 0 or last:
                    t0 = time.perf_counter()
                    ev = self.evaluate()
                    val = self.evaluate_validation()
                    self.seconds += time.perf_counter() - t0
                    self.last_eval, self.last_val = ev, val
                    rec = {"step": self.step, "epoch": self.sampler.epoch,
                           "train_loss": self.run_loss / max(self.run_n, 1),
                           "lr": self.optimizer.param_groups[0]["lr"], "skipped_steps": self.nonfinite_total,
                           "seconds": round(self.seconds, 3)}
                    rec.update({f"val_{k}": v for k, v in val.items()})
                    rec.update({f"test_{k}": v for k, v in ev.items()})
                    nfe = [m.last_nfe for m in self.model.modules() if hasattr(m, "last_nfe")]
                    if nfe:  # FFJORD parts: function evaluations of their last solve
                        rec["ffjord_last_nfe"] = nfe
                    self._log(rec)
                    self.run_loss, self.run_n = 0.0, 0
                saved = (self.step % cfg.checkpoint_every == 0 or last) and self.nonfinite_run == 0
                if saved:
                    self.save()  # never during a run of skipped steps: keep the last good one
                stop = self.callback is not None and bool(self.callback(self, self.step))
                if out_of_time or stop:
                    break
                if _stop_signal is not None and not last:
                    if not saved and self.nonfinite_run == 0:
                        self.save()
                    raise TrainingInterrupted(_stop_signal, checkpoint=self._last_good(), step=self.step)
        except ODESolverError as e:
            raise TrainingFailed(f"the ODE solver failed after step {self.step}: {e}",
                                 checkpoint=self._last_good(), step=self.step) from e
        finally:
            _fitting -= 1
            bar.close()
        return dict(self.last_eval)
