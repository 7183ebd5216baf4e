import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield




_LOGDET_ERRORS: list = []


@pytest.fixture
def logdet_errors():
    """Collects |log-det - autograd log-det| so the session can report the largest."""
    return _LOGDET_ERRORS


def pytest_terminal_summary(terminalreporter):
    if _LOGDET_ERRORS:
        terminalreporter.write_line(
            f"largest log-det error against autograd slogdet: {max(_LOGDET_ERRORS):.3e} "
            f"over {len(_LOGDET_ERRORS)} checks")


@pytest.fixture
def tiny_images(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST (60 train, 20 test images) in tmp_path/data; (its folder, the train images)."""
    from tests.helpers import write_tiny_dataset

    tx = write_tiny_dataset(tmp_path / "data", "fashion-mnist", monkeypatch)
    return tmp_path / "data", tx


@pytest.fixture
def torch_threads():
    """``torch_threads(n)`` sets torch's thread count for the test; the count before comes back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
