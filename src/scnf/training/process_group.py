"""The collective operations of training, for one process or for a ``torch.distributed`` job.

The :class:`~scnf.training.trainer.Trainer` asks a process group for every operation that involves
other processes: its share of a batch, sums over processes, the broadcast of the initial
weights, the gradient all-reduce (a DistributedDataParallel wrapper) and whether it writes
files. :class:`ProcessGroup` is one process (every collective is the identity);
:class:`TorchProcessGroup` is one rank of a job launched by torchrun (gloo on CPU, NCCL on
CUDA with device ``cuda:LOCAL_RANK``), joined with :func:`joined` or :func:`init_distributed`.

Faults: collectives have a timeout (env ``SCNF_DDP_TIMEOUT`` seconds, default 300); one
that fails or times out raises :class:`DistributedError` naming the rank.
"""
from __future__ import annotations

import datetime
import inspect
import os
from contextlib import contextmanager, nullcontext
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..bijectors.ffjord import ODESolverError
from ..errors import TrainingFailed

ENV_TIMEOUT = "SCNF_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0

__all__ = ["DistributedError", "ProcessGroup", "TorchProcessGroup", "cleanup", "init_distributed",
           "is_distributed_env", "joined", "timeout_seconds"]


class DistributedError(RuntimeError):
    """A collective failed: another rank died, or the ``SCNF_DDP_TIMEOUT`` expired."""


def is_distributed_env() -> bool:
    """True when the environment describes a multi-process job (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


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


class ProcessGroup:
    """One process: its share of a batch is the whole batch and every collective returns its input."""

    rank, world, local_rank = 0, 1, 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs, checkpoints and results (rank 0)."""
        return self.rank == 0

    def device_for(self, device: torch.device) -> torch.device:
        """This process's device of the kind ``device`` (CUDA: the one of its local rank)."""
        return device

    def shard(self, rows):
        """This process's rows of a global batch: rows ``rank::world``."""
        return rows[self.rank::self.world]

    def collective(self, what: str):
        """A context turning a failed collective inside it into a :class:`DistributedError`."""
        return nullcontext()

    def all_reduce(self, t: torch.Tensor, what: str = "all-reduce", op: str = "sum") -> torch.Tensor:
        """``t`` summed (``op="sum"``) or maximised (``"max"``) over processes."""
        return t

    def max(self, value: float, what: str = "maximum") -> float:
        return float(self.all_reduce(torch.tensor([float(value)], dtype=torch.float64), what, op="max")[0])

    def barrier(self) -> None:
        pass

    def broadcast_module_(self, module: nn.Module) -> nn.Module:
        """Copy every parameter and buffer of ``module`` from rank 0 to all ranks (in place)."""
        return module

    def parameters_identical(self, module: nn.Module) -> bool:
        """True on every rank when all parameters and buffers equal rank 0's bit for bit."""
        return True

    def run_on_main_first(self, fn: Callable, what: str):
        """``fn()`` on rank 0, then (if it succeeded) on the other ranks; errors reach all ranks."""
        return fn()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` with its gradients averaged over processes in backward (DDP)."""
        return module

    def no_sync(self, engine: nn.Module):
        """A context in which backward passes through ``engine`` (from :meth:`wrap`, maybe
        compiled) accumulate gradients locally; the first one outside it averages them."""
        return nullcontext()


class TorchProcessGroup(ProcessGroup):
    """This process's rank of the initialised default ``torch.distributed`` group."""

    def __init__(self, device: torch.device | None = None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchProcessGroup: no process group; call init_distributed() first")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def device_for(self, device: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else torch.device("cpu")

    @contextmanager
    def collective(self, what: str):
        oom = getattr(torch, "OutOfMemoryError", ())
        try:
            yield
        except (DistributedError, TrainingFailed, ODESolverError, oom):
            raise
        except RuntimeError as e:
            raise DistributedError(
                f"rank {self.rank}/{self.world}: {what} failed; another rank probably exited or stalled "
                f"(collective timeout {ENV_TIMEOUT}={timeout_seconds():g} s): {' '.join(str(e).split())[:500]}"
            ) from e

    def all_reduce(self, t: torch.Tensor, what: str = "all-reduce", op: str = "sum") -> torch.Tensor:
        buf = t.to(self.device)
        with self.collective(what):
            dist.all_reduce(buf, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                                     "min": dist.ReduceOp.MIN}[op])
        return buf.to(t.device)

    def barrier(self) -> None:
        with self.collective("barrier"):
            dist.barrier()

    def broadcast_module_(self, module: nn.Module) -> nn.Module:
        with self.collective("broadcast of the model state"), torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)
        return module

    def parameters_identical(self, module: nn.Module) -> bool:
        ok = torch.ones((), dtype=torch.float64)
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                ref = t.detach().clone()
                with self.collective("parameter comparison"):
                    dist.broadcast(ref, 0)
                if not torch.equal(ref, t.detach()):
                    ok.zero_()
        return bool(self.all_reduce(ok, "parameter comparison", op="min").item() == 1)

    def run_on_main_first(self, fn: Callable, what: str):
        result, err = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001 - re-raised below, and reported to the others
                err = e
        msg = [None if err is None else f"{type(err).__name__}: {err}"]
        with self.collective(what):
            dist.broadcast_object_list(msg, src=0)
        if msg[0] is not None and err is None:
            raise DistributedError(f"rank {self.rank}: rank 0 failed in {what}: {msg[0]}")
        if err is not None:
            raise err
        return result if self.is_main else fn()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # size-0 parameters (e.g. z_aux's prior when deep_dim = dim) never get a gradient
        ignore = [n for n, p in module.named_parameters() if p.numel() == 0]
        DDP._set_params_and_buffers_to_ignore_for_model(module, ignore)
        # buffers never change after the initialisation: sync them at construction only
        # (newer torch renames broadcast_buffers to forward_sync_buffers)
        sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters \
            else "broadcast_buffers"
        with self.collective("DDP construction"):
            return DDP(module, device_ids=[device.index] if device.type == "cuda" else None, **{sync: False})

    def no_sync(self, engine: nn.Module):
        ddp = getattr(engine, "_orig_mod", engine)  # under torch.compile
        return ddp.no_sync() if hasattr(ddp, "no_sync") else nullcontext()


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
def joined(device: str = "auto"):
    """The process group of this process: a :class:`TorchProcessGroup` when the torchrun
    environment describes several processes (joined here and left at the end) or one is
    already initialised, else a one-process :class:`ProcessGroup`."""
    owns = is_distributed_env() and not dist.is_initialized()
    dev = init_distributed(device)
    try:
        yield TorchProcessGroup(dev) if dist.is_available() and dist.is_initialized() else ProcessGroup()
    finally:
        if owns:
            cleanup()
