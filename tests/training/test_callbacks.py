"""The trainer's callbacks with known answers: early stopping's patience, ties and the weights it
keeps; the weight average's updates only on applied steps; the trainer hands a callback's
evaluation weights to evaluation."""
from types import SimpleNamespace

import pytest
import torch

from scnf.training.averaging import WeightAverage
from scnf.training.callbacks import Callback, EarlyStopping


def _trainer(model):
    return SimpleNamespace(model=model, step=0, last_eval={}, last_val={}, saved=0,
                           save=lambda: None)


def test_early_stopping_stops_after_patience_evaluations_without_a_strictly_better_nll():
    model = torch.nn.Linear(2, 1)
    t = _trainer(model)
    es = EarlyStopping(patience=2)
    stops = []
    for step, nll in [(1, 5.0), (2, 4.0), (3, 4.0), (4, 4.5), (5, 3.0)]:
        t.step = step
        with torch.no_grad():
            model.bias.fill_(float(step))
        stops.append(es.on_evaluation(t, {"error_pct": float(step)}, {"nll": nll}))
    # step 3 ties the best (not an improvement), step 4 is worse: the second miss stops
    assert stops == [False, False, False, True, False]
    assert es.best["step"] == 5 and es.since_best == 0  # a better NLL after a stop still counts
    es2 = EarlyStopping(patience=2)
    for step, nll in [(1, 5.0), (2, 4.0), (3, 4.0), (4, 4.5)]:
        t.step = step
        with torch.no_grad():
            model.bias.fill_(float(step))
        if es2.on_evaluation(t, {"error_pct": float(step)}, {"nll": nll}):
            break
    assert es2.best["step"] == 2 and es2.since_best == 2
    es2.on_fit_end(t)  # the best weights and their evaluations come back
    assert model.bias.item() == 2.0 and t.last_eval == {"error_pct": 2.0} and t.last_val == {"nll": 4.0}
    assert es2.checkpoint_state()["since_best"] == 2
    fresh = EarlyStopping(2)
    fresh.restore(es2.checkpoint_state())
    assert fresh.best["step"] == 2 and fresh.since_best == 2


def test_early_stopping_without_validation_rows_says_so():
    with pytest.raises(ValueError, match="n_validation"):
        EarlyStopping(1).on_evaluation(_trainer(torch.nn.Linear(1, 1)), {}, {})


def test_the_weight_average_updates_on_applied_steps_only_and_is_what_evaluation_sees():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.5)
    t = _trainer(model)
    with ema.eval_weights(model) as m:  # no update yet: the model's own weights
        assert m.weight.item() == 0.0
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.on_step_end(t, applied=False)
    assert ema.updates == 0
    ema.on_step_end(t, applied=True)  # d = min(0.5, 1/10) = 0.1: 0.9 * 4 + 0.1 * 0
    assert ema.updates == 1 and float(ema.shadow["weight"]) == pytest.approx(3.6)
    with ema.eval_weights(model) as m:
        assert m.weight.item() == pytest.approx(3.6)
    assert model.weight.item() == 4.0  # its own weights back after the block
    with pytest.raises(KeyError, match="no weight average"):
        ema.restore({})


def test_the_trainer_runs_every_callback_hook():
    from scnf import vector_scnf
    from scnf.config import TrainConfig
    from scnf.data.batches import SemiSupervisedData
    from scnf.training.trainer import Trainer

    class Recorder(Callback):
        def __init__(self):
            self.steps, self.evals, self.ended = [], [], 0

        def on_step_end(self, trainer, applied):
            self.steps.append((trainer.step, applied))

        def on_evaluation(self, trainer, ev, val):
            self.evals.append(trainer.step)
            return trainer.step >= 4  # ends the run at the second evaluation

        def on_fit_end(self, trainer):
            self.ended += 1

        def checkpoint_state(self):
            return {"recorder": len(self.steps)}

    x = torch.randn(40, 2)
    y = torch.full((40,), -1)
    y[:4] = torch.tensor([0, 1, 0, 1])
    data = SemiSupervisedData(x, y, x[:8], torch.tensor([0, 1] * 4))
    rec = Recorder()
    tr = Trainer(vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8), data,
                 TrainConfig(steps=10, batch_size=8, eval_every=2, progress=False), callbacks=[rec])
    tr.fit()
    assert rec.steps == [(0, True), (1, True), (2, True), (3, True)]  # before the step counter moves
    assert rec.evals == [2, 4] and rec.ended == 1 and tr.step == 4 and tr.stopped_early
    assert tr.state_dict()["recorder"] == 4
