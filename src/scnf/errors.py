"""Exceptions that say what the user can do, shared by the library and the ``scnf`` command.

* Bad input (usage, config, data, run directory, checkpoint) is a ``ValueError``:
  :class:`~scnf.config.ConfigError`, :class:`~scnf.experiment.RunDirError`,
  :class:`CheckpointError`. The command prints one line and exits 2.
* :class:`TrainingFailed` (a ``RuntimeError``): training stopped on a failure the user can
  act on (divergence, an ODE solver failure); it names the last good checkpoint. The
  command exits 3.
* Anything else is a bug: the command prints the traceback and exits 1.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["CheckpointError", "TrainingFailed", "TrainingDiverged"]


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
