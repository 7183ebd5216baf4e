"""The trainer's thread count: one thread for vector data by default, train.threads when set,
the caller's setting back after fit."""
import pytest
import torch

from scnf import vector_scnf
from scnf.config import TrainConfig
from scnf.data.batches import SemiSupervisedData
from scnf.training.trainer import Trainer


def _threads_during_fit(cfg_threads: int, images: bool = False) -> list[int]:
    seen = []
    if images:
        from scnf import image_scnf
        x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
        model = image_scnf((1, 8, 8), "gmm", num_classes=2, hidden=4, blocks=1, h_hidden=4, h_blocks=1)
    else:
        x = torch.randn(16, 2)
        model = vector_scnf(2, 2, blocks=1, h_blocks=1, hidden=4, h_hidden=4)
    y = torch.tensor([0, 1] + [-1] * 14)
    cfg = TrainConfig(steps=2, batch_size=8, eval_every=2, progress=False, threads=cfg_threads)
    Trainer(model, SemiSupervisedData(x, y, images=images), cfg,
            callback=lambda t, s: seen.append(torch.get_num_threads())).fit()
    return seen


@pytest.fixture
def two_threads(torch_threads):
    torch_threads(2)


def test_vector_data_train_on_one_thread_and_the_callers_setting_comes_back(two_threads):
    assert _threads_during_fit(0) == [1, 1]
    assert torch.get_num_threads() == 2
    assert _threads_during_fit(2) == [2, 2]  # train.threads wins
    assert _threads_during_fit(0, images=True) == [2, 2]  # images: torch's default, untouched
    assert torch.get_num_threads() == 2
