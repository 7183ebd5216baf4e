"""The dataset files: their names and checksums, the errors of finding and fetching them, and
how a file is found (raw or ``.gz``) and hashed."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

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

IMAGE_SHAPE = (28, 28)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not in the data directory and cannot be fetched here."""


class DatasetFetchError(RuntimeError):
    """Fetching the dataset failed (e.g. no network)."""


def _find_file(directory: Path, filename: str) -> Path | None:
    """Return ``directory/filename`` or its ``.gz`` variant, if present (raw first)."""
    for candidate in (directory / filename, directory / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_sha256(what: str | os.PathLike[str], actual: str, expected: str) -> None:
    if actual != expected:
        raise ValueError(f"checksum mismatch for {what}: expected {expected}, got {actual}")


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
