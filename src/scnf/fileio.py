"""Atomic file writes, the one way scnf writes a file that a crash must not leave half-written
(checkpoints, metrics, reports, downloaded data): a temporary file in the same folder, flushed
to disk, then renamed over the target. On any error the temporary file is removed, so the
target is either untouched or complete."""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


@contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` when the block ends without error.
    The temporary file is ``<name>.<random>.tmp`` beside ``path`` (readable by all, 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache file may be shared read-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, compress: bool = False) -> None:
    """Write ``data`` to ``path`` atomically; ``compress=True`` gzips it (deterministically, with a
    zero timestamp)."""
    with atomic_writer(path) as fh:
        if compress:
            with gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=6, mtime=0) as gz:
                gz.write(data)
        else:
            fh.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (and a final newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
