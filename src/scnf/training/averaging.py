"""An exponential moving average of a model's weights, for evaluation (a trainer callback)."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from .callbacks import Callback


class WeightAverage(Callback):
    """An exponential moving average of a model's floating-point parameters and buffers
    (integer and boolean buffers are copied), for evaluation. The decay at update t is
    ``min(decay, (1 + t) / (10 + t))``, so early averages are not dominated by the start.

    Not ``torch.optim.swa_utils.AveragedModel``: with ``use_buffers=True`` it applies the
    averaging function to every buffer, and ActNorm's boolean ``initialized`` flag makes that
    fail (bool subtraction); with ``use_buffers=False`` floating-point buffers are not averaged
    and the copy keeps the buffers it had when made (ActNorm flags of a model not yet
    initialised). Its parameters would match this average's only with an ``avg_fn`` holding
    the same schedule and an update at construction."""

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

    # ---------------------------------------------------------------- as the trainer's callback
    def on_step_end(self, trainer, applied: bool) -> None:
        if applied:
            self.update(trainer.model)

    @contextmanager
    def eval_weights(self, model: torch.nn.Module):
        """The average once it has been updated; the model's own weights before."""
        if self.updates == 0:
            yield model
        else:
            with self.applied(model) as m:
                yield m

    def checkpoint_state(self) -> dict:
        return {"ema": self.state_dict()}

    def restore(self, state: dict) -> None:
        if "ema" not in state:
            raise KeyError("ema: the checkpoint has no weight average but train.ema_decay > 0")
        self.load_state_dict(state["ema"])

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, s: dict) -> None:
        self.shadow = {k: v.clone() for k, v in s["shadow"].items()}
        self.updates = int(s["updates"])
