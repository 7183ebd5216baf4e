"""Your own data: an ``.npz`` of arrays (``data.dataset = "npz"``) or a folder of images
(``data.dataset = "folder"``), read into the rows scnf trains on, with a checksum of what was read.

**npz** (read with ``allow_pickle=False``, so loading runs no code): ``x`` and ``y`` (training
rows; ``y = -1`` marks an unlabelled row), optionally ``x_test`` and ``y_test``.

* Vectors: ``x`` float of shape (N, D), finite; the vector models (``model.kind = "scnf"``).
* Images: ``x`` uint8 (0-255) of shape (N, H, W), (N, C, H, W) or (N, H, W, C) (C <= 4 decides
  which axis holds the channels); the image model takes any C and H, W divisible by 4
  (:func:`scnf.models.builders.check_image_shape`), and Kingma et al.'s VAEs take any shape.

**folder**: ``DIR/train/<class>/*`` and ``DIR/train/unlabelled/*`` (the unlabelled images),
optionally ``DIR/test/<class>/*``; classes are the sorted folder names (indices 0, 1, ...).
Files ending in .png, .jpg, .jpeg, .bmp, .gif, .tif or .tiff are read with Pillow; every image
must have the same size; grayscale images give C = 1, colour ones C = 3 (a set mixing them is
read as colour; an alpha channel is dropped).

Every problem is a ``ValueError`` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import OWN_DATASETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
UNLABELLED_DIRS = ("unlabelled", "unlabeled")
#: Pillow modes read, and what each becomes (grayscale L or colour RGB; alpha dropped)
_MODES = {"L": "L", "1": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "RGBX": "RGB", "P": "RGB", "PA": "RGB",
          "CMYK": "RGB", "YCbCr": "RGB"}


@dataclass
class OwnData:
    """Rows read from the user's files (images uint8 (N, C, H, W); vectors float32 (N, D))."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    images: bool
    source: dict = field(default_factory=dict)  #: what was read: path, sha256, counts, classes


def load_own(dataset: str, path: str | Path) -> OwnData:
    """Read ``path`` as ``dataset`` ("npz" or "folder")."""
    if not str(path):
        raise ValueError(f"data.dataset = {dataset!r} needs data.path (the file or folder to read)")
    if dataset == "npz":
        return load_npz(path)
    if dataset == "folder":
        return load_image_folder(path)
    raise ValueError(f"unknown own-data kind {dataset!r}; expected one of {OWN_DATASETS}")


# ---------------------------------------------------------------- npz


def load_npz(path: str | Path) -> OwnData:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data.path: no such file: {path}")
    raw = path.read_bytes()
    not_npz = _not_an_npz(raw)
    if not_npz:
        raise ValueError(f"{path}: {not_npz}, not an .npz (the zip of arrays np.savez writes); save yours with "
                         "np.savez(path, x=..., y=...) and y = -1 on unlabelled rows")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        why = ("an array holds Python objects (dtype object), which are not read because reading them runs "
               "code; save numbers (floats, or uint8 images, and integer labels)" if "pickle" in str(e)
               else f"{type(e).__name__}: {' '.join(str(e).split())}")
        raise ValueError(f"{path}: not a readable .npz of plain arrays ({why})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"{path}: no array {key!r} (it holds {', '.join(sorted(arrays)) or 'nothing'}); "
                             "save with np.savez(path, x=..., y=...) and y = -1 on unlabelled rows")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: x_test and y_test come together (one is missing)")
    x, images = _rows(arrays["x"], f"{path}: x")
    y = _labels(arrays["y"], x.shape[0], f"{path}: y", allow_unlabelled=True)
    x_test = y_test = None
    if "x_test" in arrays:
        x_test, images_test = _rows(arrays["x_test"], f"{path}: x_test")
        if images_test != images or x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"{path}: x_test rows have shape {x_test.shape[1:]}, x rows {x.shape[1:]}")
        y_test = _labels(arrays["y_test"], x_test.shape[0], f"{path}: y_test", allow_unlabelled=False)
        _check_test_classes(y, y_test, f"{path}: y_test")
    source = {"kind": "npz", "path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(),
              "bytes": len(raw)}
    return OwnData(x, y, x_test, y_test, images, _describe(source, x, y, x_test, images))


def _not_an_npz(raw: bytes) -> str | None:
    """What a file that is not a zip archive is instead (None for a zip: an .npz, maybe)."""
    if raw[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return None
    if not raw:
        return "an empty file"
    if raw.startswith(b"\x93NUMPY"):
        return "a .npy file (one array)"
    if raw[:1] == b"\x80":
        return "a Python pickle (not read: reading one runs code)"
    try:
        head = raw[:4096].decode("utf-8")
    except UnicodeDecodeError:
        head = None
    if head is not None and all(c.isprintable() or c in "\r\n\t" for c in head):
        return "a text file (for a CSV: np.loadtxt it first)"
    return f"a file that starts with the bytes {raw[:8]!r}"


def _rows(a: np.ndarray, what: str) -> tuple[np.ndarray, bool]:
    """(rows, images?): uint8 images as (N, C, H, W); float vectors as float32 (N, D)."""
    if a.dtype == np.uint8 and a.ndim in (3, 4):
        if a.ndim == 3:
            a = a[:, None]
        elif a.shape[1] > 4 and a.shape[3] <= 4:  # (N, H, W, C)
            a = a.transpose(0, 3, 1, 2)
        elif a.shape[1] > 4:
            raise ValueError(f"{what}: images of shape {a.shape[1:]} have no channel axis of at most 4 "
                             "(expected (N, C, H, W) or (N, H, W, C))")
        if a.shape[0] == 0:
            raise ValueError(f"{what}: no rows")
        return np.ascontiguousarray(a), True
    if a.ndim == 2 and np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating):
        v = a.astype(np.float32)
        if v.shape[0] == 0 or v.shape[1] == 0:
            raise ValueError(f"{what}: empty array of shape {a.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"{what}: holds NaN or infinite values")
        return v, False
    if a.ndim in (3, 4):
        raise ValueError(f"{what}: images must be uint8 (0-255), got {a.dtype}; e.g. "
                         "(x * 255).round().astype(np.uint8) for intensities in [0, 1]")
    raise ValueError(f"{what}: expected vectors (N, D) or uint8 images (N, H, W) / (N, C, H, W) / (N, H, W, C), "
                     f"got shape {a.shape} of {a.dtype}")


def _labels(y: np.ndarray, n: int, what: str, allow_unlabelled: bool) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{what}: expected {n} labels (one per row), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all():
            y = y.astype(np.int64)
        else:
            raise ValueError(f"{what}: labels must be integers 0, 1, ..., K-1 (and -1 for unlabelled rows), "
                             f"got {y.dtype}")
    y = y.astype(np.int64)
    low = -1 if allow_unlabelled else 0
    if (y < low).any():
        bad = int(y[y < low][0])
        raise ValueError(f"{what}: label {bad}: labels are 0, 1, ..., K-1"
                         + (" and -1 marks an unlabelled row" if allow_unlabelled else ""))
    if allow_unlabelled and not (y >= 0).any():
        raise ValueError(f"{what}: no labelled row (every label is -1)")
    return y


def _check_test_classes(y: np.ndarray, y_test: np.ndarray, what: str) -> None:
    train = set(np.unique(y[y >= 0]).tolist())
    unseen = sorted(set(np.unique(y_test).tolist()) - train)
    if unseen:
        raise ValueError(f"{what}: classes {unseen} have no labelled training row")


def _describe(source: dict, x, y, x_test, images: bool, classes: list[str] | None = None) -> dict:
    out = dict(source)
    out.update(rows=int(x.shape[0]), labelled=int((y >= 0).sum()), test_rows=0 if x_test is None else int(x_test.shape[0]),
               shape=list(x.shape[1:]), images=images, classes=classes or sorted(set(np.unique(y[y >= 0]).tolist())))
    return out


# ---------------------------------------------------------------- image folder


def load_image_folder(path: str | Path) -> OwnData:
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    train = root / "train"
    if not root.is_dir():
        raise ValueError(f"data.path: no such folder: {root}" if not root.exists() else
                         f"data.path: {root} is a file, not a folder (data.dataset = 'folder' reads "
                         "train/<class>/*.png); an .npz file is read with data.dataset = 'npz'")
    if not train.is_dir():
        raise ValueError(f"data.path: {root} has no train/ folder (expected train/<class>/*.png, "
                         "train/unlabelled/*.png and optionally test/<class>/*.png)")
    class_dirs = sorted(d for d in train.iterdir() if d.is_dir() and d.name not in UNLABELLED_DIRS)
    classes = [d.name for d in class_dirs]
    if not classes:
        raise ValueError(f"{train}: no class folders (train/<class>/ with the labelled images)")
    files: list[tuple[Path, int, str]] = []  # (file, label, split)
    for k, d in enumerate(class_dirs):
        files += [(f, k, "train") for f in _images_in(d)]
    for name in UNLABELLED_DIRS:
        if (train / name).is_dir():
            files += [(f, -1, "train") for f in _images_in(train / name)]
    test = root / "test"
    if test.is_dir():
        for d in sorted(d for d in test.iterdir() if d.is_dir()):
            if d.name not in classes:
                raise ValueError(f"{d}: test class {d.name!r} has no folder in train/ (classes: {', '.join(classes)})")
            files += [(f, classes.index(d.name), "test") for f in _images_in(d)]
    if not any(lab >= 0 for _, lab, s in files if s == "train"):
        raise ValueError(f"{train}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    pics, digest = [], hashlib.sha256()
    for f, _, _ in files:
        data = f.read_bytes()
        digest.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(data).digest())
        try:
            with Image.open(f) as im:
                im.load()
                if im.mode not in _MODES:
                    raise ValueError(f"{f}: image mode {im.mode!r} is neither 8-bit grayscale nor colour; "
                                     "convert it to L or RGB")
                pics.append(im.convert(_MODES[im.mode]))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{f}: not a readable image ({e})") from None
    for pic, (f, _, _) in zip(pics, files):
        if pic.size != pics[0].size:
            raise ValueError(f"{f}: size {pic.size[0]}x{pic.size[1]}, but {files[0][0]} is "
                             f"{pics[0].size[0]}x{pics[0].size[1]}: every image must have the same size")
    colour = any(p.mode == "RGB" for p in pics)
    arrays = [np.asarray(p.convert("RGB") if colour else p, dtype=np.uint8) for p in pics]
    arrays = [a.transpose(2, 0, 1) if a.ndim == 3 else a[None] for a in arrays]
    labels = np.array([lab for _, lab, _ in files], dtype=np.int64)
    split = np.array([s for _, _, s in files])
    stack = np.stack(arrays)
    x, y = stack[split == "train"], labels[split == "train"]
    x_test = stack[split == "test"] if (split == "test").any() else None
    y_test = labels[split == "test"] if x_test is not None else None
    source = {"kind": "folder", "path": str(root.resolve()), "sha256": digest.hexdigest(), "files": len(files)}
    return OwnData(x, y, x_test, y_test, True, _describe(source, x, y, x_test, True, classes))


def _images_in(d: Path) -> list[Path]:
    return sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
