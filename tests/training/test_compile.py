"""train.compile: the training forward compiles to one graph (no data-dependent branch), and a
compiled Trainer takes the eager Trainer's steps."""
import os

import pytest
import torch

import scnf
from scnf.data.batches import SemiSupervisedData
from scnf.config import TrainConfig
from scnf.training.trainer import Trainer


def _initialised(model, x):
    model.train()
    with torch.no_grad():
        model.log_joint(x)  # the ActNorms' data-dependent initialisation, as the Trainer does first
    return model


@pytest.mark.parametrize("name", ["toy-glow", "toy-gmm", "image"])
def test_the_training_forward_is_one_graph(name):
    torch.manual_seed(0)
    model, x = {
        "toy-glow": lambda: (scnf.vector_scnf(2, 2, blocks=2, h_blocks=2, hidden=8, h_hidden=8), torch.randn(8, 2)),
        "toy-gmm": lambda: (scnf.vector_scnf(4, 3, conditional="gmm", blocks=2, hidden=8), torch.randn(8, 4)),
        "image": lambda: (scnf.mnist_scnf(hidden=4, blocks=1, h_hidden=8, h_blocks=1, h_levels=1, h_steps=1),
                          torch.rand(2, 1, 28, 28)),
    }[name]()
    _initialised(model, x)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(model.training_forward)(x)
    assert ex.graph_break_count == 0, [str(b.reason)[:300] for b in ex.break_reasons]


@pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY") == "default",
                    reason="inductor's vectorised C++ does not build when ATen runs its default (non-vector) kernels")
def test_a_compiled_trainer_takes_the_eager_steps():
    torch.manual_seed(0)
    x = torch.randn(96, 2)
    y = torch.full((96,), -1)
    y[:8] = torch.arange(8) % 2
    data = SemiSupervisedData(x, y)
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = scnf.vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=8, h_hidden=8)
        tr = Trainer(model, data, TrainConfig(steps=4, batch_size=32, eval_every=4, progress=False, compile=compiled))
        losses[compiled] = [tr.train_step()["loss"] for _ in range(4)]
    # the first step: the ActNorms initialised on the same batch (eagerly, before compiling), the
    # same loss up to float32 rounding; later steps drift a little more (Adamax divides each
    # moment by its running maximum, so rounding in tiny gradients moves whole lr-sized steps)
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-6)
    assert losses[True][1:] == pytest.approx(losses[False][1:], rel=2e-3)
