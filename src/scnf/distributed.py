"""Multi-process training with ``torch.distributed`` and DistributedDataParallel.

Launch with ``torchrun --nproc-per-node N -m scnf train CONFIG`` or ``scnf train CONFIG
--nproc N`` (which re-launches itself through :func:`launch`). Every process reads the
usual torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); the backend is gloo on CPU and NCCL on CUDA (device ``cuda:LOCAL_RANK``).

Design, chosen so that an N-process run with per-rank batch ``B/N`` reproduces a
1-process run with batch ``B`` (same seed) up to float rounding:

* **Batches.** Every rank runs the *global* :class:`~scnf.training.MixedBatchSampler`
  (batch ``B``, same seed) and the global dequantisation-noise generator, so every rank
  knows the whole global batch; rank ``r`` keeps rows ``r::N`` of it. Hence the global
  batch is exactly the 1-process batch, within an epoch no unlabelled row is duplicated or
  skipped across ranks (the global permutation is split), labelled rows are the 1-process
  draws, and each rank's rows get distinct noise (each is a slice of one global draw).
  Sampler and noise states are identical on all ranks, so checkpoints are world-size
  independent. ``B`` must be divisible by ``N``.
* **Loss.** Each rank's loss is normalised by the *global* counts (``B`` rows, global number
  of labelled rows for ``L_clf``) and multiplied by ``N``; DDP's gradient averaging then
  yields exactly the gradient of the 1-process per-example mean, even when the ranks hold
  different numbers of labelled rows.
* **ActNorm.** The data-dependent initialisation runs once, before DDP wraps the model,
  on the *full global first batch* on every rank (the same statistics the 1-process run
  uses); then all parameters and buffers are broadcast from rank 0 explicitly (DDP's
  constructor also broadcasts module state from rank 0, ``init_sync=True``), so every rank
  starts bit-identical.
* **Evaluation** is sharded by evaluation batch (batch ``i`` on rank ``i % N``); the noise
  generator is advanced over *all* batches on every rank so each image gets the noise of
  the 1-process :func:`~scnf.training.evaluate`; sums of log p, error counts and N are
  all-reduced in float64.
* **Writes.** Only rank 0 writes checkpoints, ``log.jsonl``, metrics and plots; all ranks
  read the checkpoint on resume.
* **Faults.** The process group has a timeout (env ``SCNF_DDP_TIMEOUT`` seconds, default
  300); a failed or timed-out collective raises :class:`DistributedError` naming the rank.
* **Precision** (``train.precision``): ``fp32`` (TF32 off), ``tf32`` (TF32 matmuls and
  convolutions on CUDA) or ``bf16-mixed``: autocast to bfloat16 *only inside the coupling
  networks* (their outputs are cast back to float32), so every log-determinant,
  log-density and loss is computed and summed in float32. Coupling layers stay exactly
  invertible because the inverse evaluates the same network on the same input.
  ``train.compile = true`` wraps the DDP module in :func:`torch.compile`.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .bijectors.ffjord import ODESolverError
from .errors import TrainingFailed
from .training import LN2, SemiSupervisedData, Trainer, has_uninitialised_actnorm, loss_terms

ENV_TIMEOUT = "SCNF_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
PRECISIONS = ("fp32", "tf32", "bf16-mixed")

__all__ = [
    "DistributedError", "DistributedTrainer", "PRECISIONS", "apply_precision", "barrier",
    "broadcast_module_", "check_invertibility", "cleanup", "evaluate_sharded", "init_distributed",
    "is_distributed_env", "is_main_process", "launch", "local_launch", "parameters_identical", "rank",
    "run_distributed", "shard", "sharded_objective", "world_size",
]


class DistributedError(RuntimeError):
    """A collective failed: another rank died, or the ``SCNF_DDP_TIMEOUT`` expired."""


# ---------------------------------------------------------------- process group
def is_distributed_env() -> bool:
    """True when the environment describes a multi-process job (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def timeout_seconds() -> float:
    """The collective timeout: env ``SCNF_DDP_TIMEOUT`` (seconds), default 300."""
    raw = os.environ.get(ENV_TIMEOUT, "")
    try:
        t = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    if not t > 0:
        raise ValueError(f"{ENV_TIMEOUT} must be positive, got {raw!r}")
    return t


def init_distributed(device: str = "auto", timeout: float | None = None) -> torch.device:
    """Join the process group described by the torchrun environment; returns this rank's device.

    gloo on CPU, NCCL on CUDA with device ``cuda:LOCAL_RANK``. Idempotent. Without a
    multi-process environment nothing is initialised and the device is returned as is.
    """
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    if dist.is_initialized() or not is_distributed_env():
        return dev
    t = timeout if timeout is not None else timeout_seconds()
    backend = "nccl" if want_cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=t),
                                **({"device_id": dev} if want_cuda else {}))
    except Exception as e:  # noqa: BLE001 - rendezvous failures come in many types
        raise DistributedError(
            f"rank {os.environ.get('RANK', '?')}: could not join the {backend} process group at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within {t:g} s: {e}") from e
    return dev


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def _collective(what: str):
    """Turn a failed collective into a :class:`DistributedError` with a clear message."""
    try:
        yield
    except (DistributedError, TrainingFailed, ODESolverError):
        raise
    except RuntimeError as e:
        if world_size() == 1:
            raise
        raise DistributedError(
            f"rank {rank()}/{world_size()}: {what} failed; another rank probably exited or stalled "
            f"(collective timeout {ENV_TIMEOUT}={timeout_seconds():g} s): {' '.join(str(e).split())[:500]}"
        ) from e


def barrier() -> None:
    if world_size() > 1:
        with _collective("barrier"):
            dist.barrier()


def _all_reduce(t: torch.Tensor, what: str) -> torch.Tensor:
    if world_size() > 1:
        with _collective(what):
            dist.all_reduce(t)
    return t


def _run_on_main_first(fn: Callable, what: str):
    """Run ``fn`` on rank 0, then (if it succeeded) on the other ranks; errors reach all ranks."""
    result, err = None, None
    if is_main_process():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, and reported to the others
            err = e
    if world_size() > 1:
        msg = [None if err is None else f"{type(err).__name__}: {err}"]
        with _collective(what):
            dist.broadcast_object_list(msg, src=0)
        if msg[0] is not None and err is None:
            raise DistributedError(f"rank {rank()}: rank 0 failed in {what}: {msg[0]}")
    if err is not None:
        raise err
    return result if is_main_process() else fn()


def broadcast_module_(module: nn.Module, src: int = 0) -> nn.Module:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks (in place)."""
    if world_size() > 1:
        with _collective("broadcast of the model state"), torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src)
    return module


def parameters_identical(module: nn.Module) -> bool:
    """True on every rank when all parameters and buffers equal rank 0's bit for bit."""
    ok = torch.ones((), dtype=torch.float64)
    if world_size() == 1:
        return True
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            ref = t.detach().clone()
            with _collective("parameter comparison"):
                dist.broadcast(ref, 0)
            if not torch.equal(ref, t.detach()):
                ok.zero_()
    dev = next(module.parameters()).device
    ok = ok.to(dev)
    with _collective("parameter comparison"):
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item() == 1)


# ---------------------------------------------------------------- data and loss
def shard(global_rows, rank_: int, world: int):
    """Rank ``rank_``'s share of a global batch: rows ``rank_::world``."""
    return global_rows[rank_::world]


def sharded_objective(log_joint: torch.Tensor, y: torch.Tensor, cfg, global_batch: int, global_labelled: int,
                      world: int):
    """This rank's loss and statistic sums for its rows of a global batch.

    Mirrors :func:`scnf.training.objective` but normalises by the *global* batch size and
    global number of labelled rows and multiplies by ``world``, so the mean over ranks (what
    DDP does to gradients) is the 1-process loss of the global batch.

    Returns ``(loss, sums)``; ``sums`` is a float64 vector ``[loss part, -sum log p, clf sum,
    correct labelled, finite]`` to be all-reduced (``finite`` is 1 when this rank's loss is
    finite).
    """
    lj = log_joint if log_joint.dtype in (torch.float32, torch.float64) else log_joint.float()
    part, lp_lab, lp_unl, clf_sum, correct, _ = loss_terms(lj, y, cfg, global_batch, global_labelled)
    loss = part * world
    with torch.no_grad():
        sums = torch.stack([part.double(), -(lp_lab.sum() + lp_unl.sum()).double(), clf_sum.double(),
                            correct.double(), torch.isfinite(loss).double()])
    return loss, sums


@torch.no_grad()
def evaluate_sharded(model, data: SemiSupervisedData, x: torch.Tensor, y: torch.Tensor | None,
                     batch_size: int = 1000, seed: int = 12345) -> dict:
    """:func:`scnf.training.evaluate`, sharded over ranks by batch, with exact all-reduced totals.

    Must be called on every rank. Gives the same numbers as the 1-process function: the
    same batches, the same dequantisation noise per image (the generator is advanced over
    all batches on every rank), float64 sums of log p, error counts and N.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    r, w = rank(), world_size()
    g = torch.Generator().manual_seed(seed)
    tot = torch.zeros(3, dtype=torch.float64)  # sum log p, errors, n
    for j, i in enumerate(range(0, x.shape[0], batch_size)):
        xb = data.prepare(x[i:i + batch_size], g)  # every rank advances the noise stream
        if j % w != r:
            continue
        lj = model.log_joint(xb.to(dev)).double()
        tot[0] += torch.logsumexp(lj, 1).double().sum().cpu()
        if y is not None:
            tot[1] += (lj.argmax(1).cpu() != torch.as_tensor(y[i:i + batch_size])).sum().double()
        tot[2] += xb.shape[0]
    model.train(was_training)
    tot = _all_reduce(tot.to(dev), "evaluation all-reduce").cpu()
    n = float(tot[2])
    mean_lp = float(tot[0]) / n if n else float("nan")
    out = {"nll": -mean_lp}
    if y is not None:
        out["error_pct"] = float(tot[1]) / n * 100 if n else float("nan")
    if data.images:
        out["bits_per_dim"] = 8.0 - mean_lp / (data.dims * LN2)
    return out


# ---------------------------------------------------------------- precision
def _coupling_nets(model: nn.Module):
    from .bijectors.coupling import AffineCoupling, CouplingLayer, MaskedCouplingLayer

    for m in model.modules():
        if isinstance(m, MaskedCouplingLayer):
            yield m.net
        elif isinstance(m, (AffineCoupling, CouplingLayer)):
            yield from (n for n in (m.net1, m.net2) if n is not None)


_AUTOCAST_CLASSES: dict = {}


def _autocast_class(cls):
    """A subclass of ``cls`` whose forward runs under bf16 autocast and returns float32."""
    if getattr(cls, "_scnf_autocast", False):
        return cls
    if cls not in _AUTOCAST_CLASSES:
        def forward(self, *args, **kwargs):
            with torch.autocast(self._scnf_device_type, dtype=torch.bfloat16):
                out = cls.forward(self, *args, **kwargs)
            return out.float()

        _AUTOCAST_CLASSES[cls] = type(f"BF16{cls.__name__}", (cls,), {"forward": forward, "_scnf_autocast": True})
    return _AUTOCAST_CLASSES[cls]


def apply_precision(model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
    """Configure ``precision`` (one of :data:`PRECISIONS`) for ``model`` on ``device``, in place.

    ``fp32`` turns TF32 off, ``tf32`` on (CUDA matmuls and cuDNN convolutions);
    ``bf16-mixed`` additionally makes every coupling network run under bfloat16 autocast and
    return float32 (its class is swapped for a subclass; state-dict keys are unchanged), so
    log-determinants and densities are still accumulated in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        tf32 = precision != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if precision == "bf16-mixed":
        for net in _coupling_nets(model):
            net.__class__ = _autocast_class(type(net))
            net._scnf_device_type = dev.type
    return model


@torch.no_grad()
def check_invertibility(model, x: torch.Tensor, y=None) -> float:
    """Max abs error of ``decode(encode(x, y), y)`` against ``x`` (y: predicted labels by default).

    Run in eval mode under the model's current precision; report it after training.
    """
    was_training = model.training
    model.eval()
    try:
        x = x.to(next(model.parameters()).device)
        if y is None:
            y = model.predict(x)
        z_aux, _, z_h = model.encode(x, y)
        x_rec = model.decode(z_aux, z_h, y)
        return float((x_rec.float() - x.float()).abs().max())
    finally:
        model.train(was_training)


# ---------------------------------------------------------------- trainer
class _LogJoint(nn.Module):
    """Gives the flow a ``forward`` (log p(x, y=k) for every k) for DDP to wrap."""

    def __init__(self, flow):
        super().__init__()
        self.flow = flow

    def forward(self, x):
        return self.flow.log_joint(x)


class DistributedTrainer(Trainer):
    """:class:`~scnf.training.Trainer` for one rank of a DDP job (also runs with one process).

    Same arguments as the Trainer; ``cfg.batch_size`` is the *global* batch. Reads
    ``cfg.precision`` (default ``"fp32"``) and ``cfg.compile`` (default False). The process
    group, if any, must be initialised first (:func:`init_distributed`). The model is
    wrapped in DDP lazily at the first step, after the data-dependent initialisation.
    """

    def __init__(self, model, data: SemiSupervisedData, cfg, seed: int = 0, run_dir=None,
                 callback: Callable | None = None, init_fn: Callable | None = None,
                 device: torch.device | None = None):
        self.rank, self.world = rank(), world_size()
        if cfg.batch_size % self.world:
            raise ValueError(f"train.batch_size = {cfg.batch_size} is not divisible by the {self.world} processes")
        for key in ("consistency_weight", "micro_batch", "pseudo_threshold", "ema_decay", "max_seconds"):
            if getattr(cfg, key, 0) > 0:
                raise ValueError(f"train.{key} is not supported by distributed training; set it to 0")
        if data.x_val is not None:
            raise ValueError("data.n_validation is not supported by distributed training; set it to 0")
        if self.rank != 0 and cfg.progress:
            cfg = dataclasses.replace(cfg, progress=False)
        super().__init__(model, data, cfg, seed=seed, run_dir=run_dir, callback=callback, init_fn=init_fn)
        if device is None and self.world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) \
                if self.device.type == "cuda" else torch.device("cpu")
        if device is not None:
            self.device = torch.device(device)
            self.model.to(self.device)
        self.precision = getattr(cfg, "precision", "fp32")
        self.compile = bool(getattr(cfg, "compile", False))
        apply_precision(self.model, self.precision, self.device)
        self._reseed_rank()
        self.engine = None  # the DDP-wrapped (and maybe compiled) forward, built at the first step

    def _reseed_rank(self):
        # torch's global RNG is the only randomness that differs by rank (nothing in the
        # Glow models uses it during training); batches and noise come from global streams.
        if self.rank:
            torch.manual_seed((self.seed * 1_000_003 + self.rank * 7919 + self.step) % 2**63)

    # ------------------------------------------------------------ state and writes
    def save(self, extra: dict | None = None) -> None:
        if self.rank == 0:
            super().save(extra)

    def resume(self) -> bool:
        loaded = super().resume()
        self._reseed_rank()
        return loaded

    def _rewrite_log(self):
        if self.rank == 0:
            super()._rewrite_log()

    def _log(self, rec: dict):
        if self.rank == 0:
            super()._log(rec)
        else:
            self.history.append(rec)

    def evaluate(self) -> dict:
        if self.data.x_test is None:
            return {}
        return evaluate_sharded(self.model, self.data, self.data.x_test, self.data.y_test)

    # ------------------------------------------------------------ steps
    def _global_batch(self):
        return self._draw_batch()  # every rank draws the whole global batch, then keeps its slice

    @torch.no_grad()
    def _initialise(self, xg: torch.Tensor, yg: torch.Tensor) -> None:
        """Data-dependent init on the full global first batch, then broadcast from rank 0."""
        xg, yg = xg.to(self.device), yg.to(self.device)
        if self.init_fn is not None and self.step == self.cfg.warmup_f_steps:
            self.init_fn(self.model, xg, yg)
        elif has_uninitialised_actnorm(self.model):
            self.model.train()
            self.model.log_joint(xg)  # every ActNorm initialises on its first training forward
        broadcast_module_(self.model)

    def _build_engine(self):
        wrapper = _LogJoint(self.model)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # size-0 parameters (e.g. z_aux's prior when deep_dim = dim) never get a gradient
            ignore = [f"flow.{n}" for n, p in self.model.named_parameters() if p.numel() == 0]
            DDP._set_params_and_buffers_to_ignore_for_model(wrapper, ignore)
            # buffers never change after the init: sync them at construction only (newer torch
            # renames broadcast_buffers to forward_sync_buffers)
            import inspect

            sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
                else "broadcast_buffers"
            with _collective("DDP construction"):
                wrapper = DDP(wrapper, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                              **{sync: False})
        self.engine = torch.compile(wrapper) if self.compile else wrapper

    def train_step(self) -> dict:
        self.model.train()
        xg, yg = self._global_batch()
        if self.engine is None:
            if self.step == 0:
                self._initialise(xg, yg)
            self._build_engine()
        if self.init_fn is not None and self.step == self.cfg.warmup_f_steps > 0:
            self._initialise(xg, yg)  # class-aware init after the warm-up of f, as in Trainer
        x = shard(xg, self.rank, self.world).to(self.device)
        y = shard(yg, self.rank, self.world).to(self.device)
        n_lab = int((yg >= 0).sum())
        self.optimizer.zero_grad(set_to_none=True)
        with _collective("forward pass"):
            lj = self.engine(x)
        loss, sums = sharded_objective(lj, y, self.cfg, xg.shape[0], n_lab, self.world)
        sums = _all_reduce(sums.to(self.device), "loss all-reduce").cpu()
        ok = int(sums[4]) == self.world
        if ok:
            with _collective("backward pass (gradient all-reduce)"):
                loss.backward()
            ok = self._grads_finite()  # gradients are identical on every rank after the all-reduce
        b = xg.shape[0]
        stats = {"loss": float(sums[0]), "nll": float(sums[1]) / b,
                 "clf": float(sums[2]) / n_lab if (self.cfg.clf_weight > 0 and n_lab) else 0.0,
                 "labelled_acc": float(sums[3]) / n_lab if n_lab else float("nan"), "skipped": not ok}
        self._finish_step(ok)
        return stats


# ---------------------------------------------------------------- runs and launching
def run_distributed(cfg, out: str | Path, resume: bool = False, overwrite: bool = False) -> dict:
    """:func:`scnf.experiment.run` for one rank of a torchrun job (or one process).

    All ranks build the data and model and train; rank 0 alone prepares the run directory
    and writes the log, checkpoints, metrics, figures and report. Returns metrics.json's
    content on every rank. Joins (and finally leaves) the process group itself.
    """
    from . import experiment as ex

    owns_group = not dist.is_initialized()
    device = init_distributed(cfg.train.device)
    try:
        out = Path(out)
        t0 = time.perf_counter()
        _run_on_main_first(lambda: ex.prepare_run_dir(out, cfg, resume, overwrite), "run directory setup")
        ex.set_seed(cfg.seed)
        data, raw = _run_on_main_first(lambda: ex.build_data(cfg), "loading the data")
        model = ex.build_model(cfg, data)
        trainer = DistributedTrainer(model, data, cfg.train, seed=cfg.seed, run_dir=out,
                                     init_fn=ex.class_aware_init if cfg.model.init_from_labels else None,
                                     device=device)
        if resume:
            trainer.resume()
        final = trainer.fit()
        metrics = ex.base_metrics(cfg, trainer, final, t0)
        metrics.update(world_size=trainer.world, precision=trainer.precision)
        lab = data.y >= 0
        metrics["train_labelled_error_pct"] = evaluate_sharded(model, data, data.x[lab], data.y[lab])["error_pct"]
        n_check = min(64, data.x.shape[0])
        metrics["max_reconstruction_error"] = check_invertibility(
            model, data.prepare(data.x[:n_check], torch.Generator().manual_seed(0)))
        if is_main_process():
            figures = []
            if data.dims == 2 and not data.images:
                from .plots import decision_boundary

                name = f"{cfg.model.unconditional.upper()} ∘ {cfg.model.conditional.upper()} on {cfg.data.dataset}"
                decision_boundary(model, raw["x"], raw["y_semi"], out / "decision_boundary.png",
                                  title=f"{name}: test error {metrics['error_pct']:.1f} %, "
                                        f"NLL {metrics['nll']:.3f}")
                figures.append("decision_boundary.png")
            ex.write_json_atomic(out / "metrics.json", metrics)
            ex.write_report(out, cfg, metrics, figures)
        barrier()
        return metrics
    finally:
        if owns_group:
            cleanup()


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Re-run ``scnf ARGV`` (e.g. ``["train", "cfg.toml", "--out", "runs/x"]``) as ``nproc``
    processes through torchrun on this machine; returns torchrun's exit code."""
    if int(nproc) < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(int(nproc)),
           "-m", "scnf", *strip_nproc(argv)]
    return subprocess.call(cmd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_launch(nproc: int, target: str, kwargs: dict | None = None, timeout: float = 120.0,
                 env: dict | None = None, cwd: str | Path | None = None) -> list[tuple[int, str]]:
    """Run ``module:function(**kwargs)`` in ``nproc`` fresh processes forming one job on localhost.

    For tests and benchmarks: sets the torchrun variables itself (no agent, so one rank's
    failure does not kill the others), waits up to ``timeout`` seconds (then kills them) and
    returns ``[(returncode, output), ...]`` by rank. ``function`` joins the group via
    :func:`init_distributed`.
    """
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc), OMP_NUM_THREADS="1")
    base.update(env or {})
    procs = []
    for r in range(nproc):
        e = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen([sys.executable, "-m", "scnf.distributed", target, json.dumps(kwargs or {})],
                                      env=e, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + timeout
    results = []
    for p in procs:
        try:
            o, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            o, _ = p.communicate()
            o += "\n[local_launch: killed after timeout]"
        results.append((p.returncode, o))
    return results


def _worker_main(argv: Sequence[str]) -> int:
    import importlib

    target, kwargs = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    mod, fn = target.split(":")
    getattr(importlib.import_module(mod), fn)(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
