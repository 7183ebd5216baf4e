"""Exceptions that say what the user can do, shared by the library and the ``scnf`` command.

* Bad input (usage, config, data, run directory, checkpoint) is a ``ValueError``:
  :class:`ConfigError`, :class:`RunDirError`, :class:`DataChangedError`,
  :class:`CheckpointError`. The command prints one line and exits 2.
* :class:`ChangedDataWarning`: a run is used on data other than those it recorded, because the
  caller allowed it (``--allow-changed-data``).
* :class:`TrainingFailed` (a ``RuntimeError``): training stopped on a failure the user can
  act on (divergence, an ODE solver failure, a compiled step that could not be built); it
  names the last good checkpoint. The
  command exits 3.
* :class:`TrainingInterrupted`: a signal stopped training after a step and a checkpoint;
  the command exits 128 + the signal number (130 SIGINT, 143 SIGTERM).
* Anything else is a bug: the command prints the traceback and exits 1.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["ChangedDataWarning", "CheckpointError", "ConfigError", "DataChangedError", "RunDirError",
           "TrainingCompileFailed", "TrainingDiverged", "TrainingFailed", "TrainingInterrupted"]


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class RunDirError(ValueError):
    """A run directory cannot be used as asked (not a run, already holds one, another config)."""


class DataChangedError(RunDirError):
    """The data a run directory recorded (``data.json``) are not the data its config reads now."""


class ChangedDataWarning(UserWarning):
    """A run is used on changed data, as the caller allowed (``allow_changed_data=True``)."""


class CheckpointError(ValueError):
    """A file is not a loadable scnf checkpoint, or not one of this run (nothing in it was run)."""


class TrainingFailed(RuntimeError):
    """Training stopped on a failure the user can act on.

    ``reason``: what happened; ``checkpoint``: the last good checkpoint (None when none was
    written); ``step``: the step at which training stopped. The message names both.
    """

    def __init__(self, reason: str, checkpoint: str | Path | None = None, step: int | None = None):
        self.reason = reason
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.step = step
        where = f"the last good checkpoint is {self.checkpoint}" if self.checkpoint else "no checkpoint was written"
        super().__init__(f"{reason}; {where}")


class TrainingDiverged(TrainingFailed):
    """Too many consecutive non-finite losses or gradients."""


class TrainingCompileFailed(TrainingFailed):
    """``train.compile``: torch.compile could not build the training step (e.g. no working C++
    compiler); training without it, or with a compiler, works. ``detail``: the compiler's own
    complaint, on one line."""

    def __init__(self, detail: str, checkpoint: str | Path | None = None, step: int | None = None):
        self.detail = detail
        super().__init__(f"train.compile: torch.compile could not build the training step ({detail}); "
                         "set train.compile = false or install a working C++ compiler", checkpoint, step)


class TrainingInterrupted(Exception):
    """A signal (SIGINT, SIGTERM) stopped training after a whole step; ``checkpoint`` holds
    that step (None when it could not be written, e.g. during a run of skipped steps)."""

    def __init__(self, signum: int, checkpoint: str | Path | None = None, step: int | None = None):
        import signal

        self.signum = int(signum)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.step = step
        try:
            name = signal.Signals(self.signum).name
        except ValueError:
            name = f"signal {self.signum}"
        self.signal_name = name
        where = f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint was written"
        super().__init__(f"training stopped by {name} after step {step}; {where}")
