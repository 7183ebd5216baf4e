"""What the trainer runs around its steps besides the objective: the callback protocol, and the
two callbacks a config can switch on, the weight average (``train.ema_decay``,
:class:`scnf.training.averaging.WeightAverage`) and early stopping (``train.early_stop_patience``,
:class:`EarlyStopping`).

A callback's hooks, all optional (:class:`Callback` has them as no-ops):

* ``on_step_end(trainer, applied)`` after every step (``applied``: the update was finite and
  taken);
* ``on_evaluation(trainer, ev, val) -> bool`` after each evaluation, with the test and
  validation results; a true return ends the run there;
* ``on_fit_end(trainer)`` when ``fit`` ends normally;
* ``eval_weights(model)``: a context manager that yields the model evaluation should use;
* ``checkpoint_state() -> dict`` (top-level checkpoint keys) and ``restore(state)`` on resume.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class Callback:
    """No-op hooks; subclasses override what they need."""

    def on_step_end(self, trainer, applied: bool) -> None:
        pass

    def on_evaluation(self, trainer, ev: dict, val: dict) -> bool:
        return False

    def on_fit_end(self, trainer) -> None:
        pass

    @contextmanager
    def eval_weights(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        yield model

    def checkpoint_state(self) -> dict:
        return {}

    def restore(self, state: dict) -> None:
        pass


class EarlyStopping(Callback):
    """Track the best validation NLL (its weights, step and evaluations); end the run once
    ``patience`` evaluations in a row did not improve on it, and end every run with the best
    weights (saved in the last checkpoint) and their evaluations as the run's last."""

    def __init__(self, patience: int):
        self.patience = int(patience)
        self.best: dict | None = None
        self.since_best = 0

    def on_evaluation(self, trainer, ev: dict, val: dict) -> bool:
        if "nll" not in val:
            raise ValueError("train.early_stop_patience needs a validation set (data.n_validation > 0)")
        if self.best is None or val["nll"] < self.best["val"]["nll"]:
            self.best = {"step": trainer.step, "val": dict(val), "eval": dict(ev),
                         "model": {k: v.detach().clone().cpu() for k, v in trainer.model.state_dict().items()}}
            self.since_best = 0
            return False
        self.since_best += 1
        return self.since_best >= self.patience

    def on_fit_end(self, trainer) -> None:
        if self.best is None:
            return
        trainer.model.load_state_dict(self.best["model"])
        trainer.last_eval, trainer.last_val = dict(self.best["eval"]), dict(self.best["val"])
        trainer.save()

    def checkpoint_state(self) -> dict:
        return {"best": self.best, "since_best": self.since_best} if self.best is not None else {}

    def restore(self, state: dict) -> None:
        self.best, self.since_best = state.get("best"), int(state.get("since_best", 0))
