"""The trainer: runs the objective (:mod:`scnf.training.objective`) over batches
(:mod:`scnf.data.batches`) for ``cfg.steps`` steps, with evaluation (:mod:`scnf.training.evaluation`),
logs, checkpoints, a weight average (:mod:`scnf.training.averaging`) and signal handling
(:mod:`scnf.training.signals`), in one process or several (:mod:`scnf.training.process_group`).

The loop checkpoints atomically (:mod:`scnf.training.checkpoint`), resumes bit-for-bit (model,
optimiser, schedule, sampler and noise generators are all restored), and never lets a
non-finite loss or gradient reach the weights.
"""
from __future__ import annotations

import dataclasses
import json
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from . import signals
from .averaging import WeightAverage
from .callbacks import Callback, EarlyStopping
from ..data.batches import MixedBatchSampler, SemiSupervisedData, shift_images
from ..bijectors.ffjord import ODESolverError
from .checkpoint import CheckpointError, load_checkpoint, load_model_state, save_checkpoint
from ..config import TrainConfig
from ..errors import TrainingCompileFailed, TrainingDiverged, TrainingFailed, TrainingInterrupted
from .evaluation import evaluate
from .flat import FlatGroups, flat_optimizer_state
from ..noise import noise_from
from ..protocol import TrainableModel
from .objective import backward_objective
from .precision import apply_precision
from .process_group import ProcessGroup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


#: the parameter group that train.h_lr_mult scales and train.warmup_f_steps freezes
CONDITIONAL_GROUP = "h"


def _param_groups(model: TrainableModel) -> list[dict]:
    groups = model.parameter_groups()
    seen = [id(p) for ps in groups.values() for p in ps]
    if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in model.parameters()}:
        raise ValueError(f"{type(model).__name__}.parameter_groups() must hold every parameter exactly once")
    return [{"params": list(ps), "name": name} for name, ps in groups.items()]


def _lr_lambdas(cfg: TrainConfig, names: list[str]):
    def decay(step):
        return max(0.0, 1.0 - step / cfg.steps) if cfg.schedule == "linear" else 1.0

    def h_decay(step):
        return 0.0 if step < cfg.warmup_f_steps else cfg.h_lr_mult * decay(step)

    return [h_decay if name == CONDITIONAL_GROUP else decay for name in names]


_RESUME_KEYS = ("model", "optimizer", "scheduler", "sampler", "torch_rng", "noise_rng", "step", "history",
                "nonfinite_total", "seconds")


class _TrainingForward(nn.Module):
    """A model's ``training_forward`` as a module's ``forward``, for DDP and torch.compile to wrap."""

    def __init__(self, model: TrainableModel):
        super().__init__()
        self.flow = model  # the attribute name keeps DDP's parameter names as before

    def forward(self, x):
        return self.flow.training_forward(x)


class Trainer:
    """Runs the objective for ``cfg.steps`` steps, with evaluation, logs and checkpoints.

    Args:
        model, data, cfg: what to train, on what, how.
        seed: seeds the batch sampler, the dequantisation noise and torch's global RNG.
        run_dir: where ``checkpoint.pt`` and ``log.jsonl`` go (None: nothing is written).
        callback: called as ``callback(trainer, step)`` after every completed step; a true
            return value ends the run after that step, with no further evaluation or
            checkpoint (with several processes it must return the same on every one).
        callbacks: further :class:`~scnf.training.callbacks.Callback` objects, after the
            config's own (the weight average with ``cfg.ema_decay``, early stopping with
            ``cfg.early_stop_patience``).
        init_fn: called as ``init_fn(model, x, y)`` on the batch of step ``warmup_f_steps``
            (class-aware initialisation).
        progress_bar: tqdm keyword arguments overriding the progress bar's (shown with
            ``cfg.progress`` on a terminal), e.g. ``dict(desc=..., disable=False)`` to show it
            whatever the output is.
        group: the :class:`~scnf.training.process_group.ProcessGroup` of this process (default: one
            process). With N processes ``cfg.batch_size`` is the global batch; see below.

    With N processes every process draws the *global* batch from the same sampler and noise
    streams (same seed) and keeps rows ``rank::N`` (the unlabelled rows of the consistency
    view with them), so the global batch is the 1-process batch and sampler and noise states
    (hence checkpoints) do not depend on N.

    Models: any :class:`~scnf.protocol.TrainableModel` (the flows of :mod:`scnf.models.flow` and the
    VAE baselines of :mod:`scnf.models.vae`). Noise inside the model is drawn from the trainer's
    own generator (per process, saved in checkpoints), so training does not depend on
    evaluation or on torch's global generator. The data-dependent initialisation runs on the
    whole first batch, then rank 0's weights are broadcast; the loss is normalised by global
    counts (:func:`backward_objective`) and gradients are averaged by DDP, so N processes
    take the steps of one up to float rounding. Evaluation is sharded by batch
    (:func:`evaluate`); the ``max_seconds`` stop uses the slowest process's clock; only rank 0
    writes the log and checkpoints, every rank reads the checkpoint on resume. Precision
    (``cfg.precision``) and ``cfg.compile`` are set up here for any N.
    """

    def __init__(self, model: TrainableModel, data: SemiSupervisedData, cfg: TrainConfig, seed: int = 0,
                 run_dir: str | Path | None = None, callback: Callable | None = None,
                 init_fn: Callable | None = None, group: ProcessGroup | None = None,
                 progress_bar: dict | None = None, callbacks: list[Callback] | None = None):
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
        torch.manual_seed(seed)
        self.model.to(self.device)
        apply_precision(self.model, cfg.precision, self.device)
        self.engine = None  # the log-joint the steps call: DDP-wrapped and/or compiled; built at the first step
        # checked every step: model.train() itself walks every module through nn.Module.__setattr__,
        # which costs ~10 % of a small model's step, so it runs only when a module is in eval mode
        self._modules = list(self.model.modules())
        groups = _param_groups(model)
        self._group_params = [list(g["params"]) for g in groups]  # as a per-tensor optimiser held them
        # one flat tensor per group: the optimiser step and the gradient check are one op each
        self.flat = FlatGroups(groups)
        opt = {"adamax": torch.optim.Adamax, "adam": torch.optim.Adam}[cfg.optimizer]
        self.optimizer = opt(self.flat.optimizer_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambdas(cfg, [g["name"] for g in groups]))
        self.sampler = MixedBatchSampler(data.y, cfg.batch_size, cfg.labelled_share, seed)
        self.noise = torch.Generator().manual_seed(seed + 1)  # batches: the same stream on every process
        # noise inside the model (VAE samples, FFJORD probes): its own stream, one per process
        self.model_noise = torch.Generator().manual_seed((seed * 1_000_003 + 104_729 + self.group.rank) % 2**63)
        self.step = 0
        self.history: list[dict] = []
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.seconds = 0.0
        self.last_eval: dict = {}
        self.last_val: dict = {}
        self.run_loss, self.run_n = 0.0, 0
        #: the config's callbacks (None when off), then the caller's
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.early_stopping = EarlyStopping(cfg.early_stop_patience) if cfg.early_stop_patience > 0 else None
        self.callbacks: list[Callback] = [c for c in (self.ema, self.early_stopping) if c is not None]
        self.callbacks += list(callbacks or [])
        self.stopped_early = False  # a callback ended the run at an evaluation
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
            "torch_rng": torch.get_rng_state(), "noise_rng": self.noise.get_state(),
            "model_rng": self.model_noise.get_state(), "step": self.step,
            "history": self.history, "nonfinite_total": self.nonfinite_total, "seconds": self.seconds,
            "last_eval": self.last_eval, "last_val": self.last_val, "run_loss": (self.run_loss, self.run_n),
            **{k: v for c in self.callbacks for k, v in c.checkpoint_state().items()},
        }

    def load_state_dict(self, s: dict) -> None:
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(flat_optimizer_state(s["optimizer"], self.flat, self._group_params))
        self.scheduler.load_state_dict(s["scheduler"])
        self.sampler.load_state_dict(s["sampler"])
        torch.set_rng_state(s["torch_rng"])
        self.noise.set_state(s["noise_rng"])
        if "model_rng" in s:  # written since the models draw from the trainer's generator
            self.model_noise.set_state(s["model_rng"])
        self.step, self.history = int(s["step"]), list(s["history"])
        self.nonfinite_total, self.seconds = int(s["nonfinite_total"]), float(s["seconds"])
        self.last_eval = dict(s.get("last_eval", {}))
        self.last_val = dict(s.get("last_val", {}))
        self.run_loss, self.run_n = s.get("run_loss", (0.0, 0))
        for c in self.callbacks:
            c.restore(s)

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
        """The weights evaluation uses: the model as the callbacks hand it on (the weight
        average when ``ema_decay`` > 0)."""
        with ExitStack() as stack:
            m = self.model
            for c in self.callbacks:
                m = stack.enter_context(c.eval_weights(m))
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
        elif self.engine is None and self.group.world > 1 and self.model.needs_initialisation():
            self.model.log_joint(x)
        self.group.broadcast_module_(self.model)

    def _build_engine(self, x: torch.Tensor) -> None:
        if self.cfg.compile and self.model.needs_initialisation():
            # compiled code does not read ActNorm's flag (one graph, no data-dependent branch):
            # the data-dependent initialisation runs here, eagerly, on the first batch
            with torch.no_grad():
                self.model.log_joint(x.to(self.device))
        engine = self.group.wrap(_TrainingForward(self.model), self.device)
        self.engine = torch.compile(engine) if self.cfg.compile else engine

    def _grads_finite(self) -> bool:
        self.flat.gather_grads()
        return self.flat.grads_finite()  # the same on every process: gradients are all-reduced

    def train_step(self) -> dict:
        if not all(m.training for m in self._modules):
            self.model.train()
        xg, yg, view = self._global_batch()
        if self.engine is None or (self.init_fn is not None and self.step == self.cfg.warmup_f_steps):
            self._initialise(xg, yg)
        if self.engine is None:
            self._build_engine(xg)
        x, y, view = self._shard(xg, yg, view)
        self.flat.zero_grad()
        pseudo = self.cfg.pseudo_threshold > 0 and self.step >= self.cfg.pseudo_start
        with noise_from(self.model_noise):
            loss, stats, ok = backward_objective(self.model, x, y, self.cfg, view=view, pseudo=pseudo,
                                                 group=self.group, n_rows=xg.shape[0],
                                                 n_labelled=int((yg >= 0).sum()), forward=self.engine)
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
        else:
            self.flat.zero_grad()
            self.nonfinite_total += 1
            self.nonfinite_run += 1
        for c in self.callbacks:
            c.on_step_end(self, ok)
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

    @contextmanager
    def threads(self):
        """Within the block torch uses ``cfg.threads`` threads, or with 0 the count that is
        fastest for the model's size: one for vector data (small models bound by per-op
        overhead, where a second thread gains a few percent on an idle machine and costs several
        times as much on a busy one), torch's default for images. The caller's setting comes
        back after the block."""
        want = self.cfg.threads or (0 if self.data.images else 1)
        before = torch.get_num_threads()
        if not want or want == before:
            yield
            return
        torch.set_num_threads(want)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def fit(self) -> dict:
        """Train to ``cfg.steps`` (or until a callback, ``max_seconds`` or a signal stops it),
        in :meth:`threads`; returns the last test evaluation."""
        with self.threads():
            return self._fit()

    def _fit(self) -> dict:
        cfg = self.cfg
        bar = tqdm(**{"total": cfg.steps, "initial": self.step, "disable": None if cfg.progress else True,
                      "dynamic_ncols": True, "desc": "train", "leave": False, **self.progress_bar})
        signals.enter_fit()
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
                    rec.update(self.model.diagnostics())  # e.g. FFJORD parts' function evaluations
                    self._log(rec)
                    self.run_loss, self.run_n = 0.0, 0
                    if [c for c in self.callbacks if c.on_evaluation(self, ev, val)]:  # every one is asked
                        self.stopped_early = True
                        break
                saved = (self.step % cfg.checkpoint_every == 0 or last) and self.nonfinite_run == 0
                if saved:
                    self.save()  # never during a run of skipped steps: keep the last good one
                stop = self.callback is not None and bool(self.callback(self, self.step))
                if out_of_time or stop:
                    break
                if signals.requested_stop() is not None and not last:
                    if not saved and self.nonfinite_run == 0:
                        self.save()
                    raise TrainingInterrupted(signals.requested_stop(), checkpoint=self._last_good(), step=self.step)
        except ODESolverError as e:
            raise TrainingFailed(f"the ODE solver failed after step {self.step}: {e}",
                                 checkpoint=self._last_good(), step=self.step) from e
        except torch._dynamo.exc.BackendCompilerFailed as e:  # only train.compile builds with a backend
            raise TrainingCompileFailed(_compile_failure(e), checkpoint=self._last_good(), step=self.step) from e
        finally:
            signals.exit_fit()
            bar.close()
        for c in self.callbacks:  # early stopping: the run ends with the best weights (and saves them)
            c.on_fit_end(self)
        return dict(self.last_eval)


def _compile_failure(e: BaseException) -> str:
    """What a torch.compile backend failure says, on one line: the backend's own exception
    (``inner_exception``; the outer message opens with "backend='inductor' raised:")."""
    inner = getattr(e, "inner_exception", None) or e
    text = str(inner).strip()
    first = text.splitlines()[0][:200] if text else ""
    name = type(inner).__name__
    return first if first.startswith(name) else f"{name}: {first}" if first else name
