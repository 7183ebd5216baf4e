"""Reading and writing IDX files (the MNIST file format).

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM``, then ``NDIM``
big-endian uint32 dimensions, then the data in C order.  Only unsigned-byte
data (``TYPE == 0x08``) is supported, which is what MNIST-like datasets use.
Files may be gzip-compressed; the name then ends in ``.gz``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx_bytes", "parse_idx", "idx_bytes"]

_UBYTE = 0x08


def read_idx_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the uncompressed content of an IDX file (``.gz`` or raw).

    Raises:
        ValueError: if a ``.gz`` file is truncated or not valid gzip.
    """
    path = Path(path)
    if path.name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (EOFError, OSError, zlib.error) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise ValueError(f"{path}: corrupt or truncated gzip file ({exc})") from exc
    return path.read_bytes()


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a (writable) uint8 array of the header's shape.

    Args:
        data: the uncompressed IDX content.
        source: the file name, used in error messages.

    Raises:
        ValueError: on a bad magic number, an unsupported data type, or a
            byte length that does not match the header (e.g. truncated file).
    """
    if len(data) < 4:
        raise ValueError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    zero1, zero2, dtype_code, ndim = data[:4]
    if zero1 != 0 or zero2 != 0 or ndim == 0:
        raise ValueError(f"{source}: bad IDX magic number {data[:4].hex()}")
    if dtype_code != _UBYTE:
        raise ValueError(
            f"{source}: unsupported IDX data type 0x{dtype_code:02x} (only 0x08, unsigned byte)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"{source}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = header_len + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{source}: IDX file {kind}: header {shape} needs {expected} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes (header + C-order data)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"IDX writing needs a uint8 array, got {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX writing needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, _UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


