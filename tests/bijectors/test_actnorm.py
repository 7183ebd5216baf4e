import io

import pytest
import torch

from scnf.bijectors import ActNorm


def test_data_dependent_init_normalises():
    a = ActNorm(3)
    x = torch.randn(64, 3, 5, 5) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 2
    z, _ = a(x)
    assert bool(a.initialized)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_no_init_in_eval_mode_and_explicit_initialize():
    a = ActNorm(2).eval()
    x = torch.randn(8, 2) * 3
    z, _ = a(x)
    assert torch.equal(z, x) and not bool(a.initialized)
    a.initialize(x)
    assert bool(a.initialized)


def test_state_dict_round_trip_does_not_reinitialise():
    a = ActNorm(2)
    a(torch.randn(16, 2) * 4 + 1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = ActNorm(2)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert bool(b.initialized)
    b.train()
    other = torch.randn(16, 2) * 100
    za, _ = a(other)
    zb, _ = b(other)
    assert torch.equal(za, zb)
    assert torch.equal(a.bias, b.bias) and torch.equal(a.log_scale, b.log_scale)


def test_zero_variance_channel_raises():
    a = ActNorm(3)
    x = torch.randn(10, 3, 4, 4)
    x[:, 1] = 0.7
    with pytest.raises(ValueError, match="zero variance"):
        a(x)
    assert not bool(a.initialized)


def test_wrong_channels_raise():
    with pytest.raises(ValueError, match="channels"):
        ActNorm(3).initialize(torch.randn(4, 2))
