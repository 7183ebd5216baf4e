"""The ground floor's helpers, each with a known answer: atomic writes (scnf.fileio) and seeding
(scnf.noise)."""
import json
import os
import stat

import numpy as np
import pytest
import torch

from scnf.fileio import atomic_writer, write_bytes_atomic, write_json_atomic, write_text_atomic
from scnf.noise import seed_everything


def test_an_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "m.json"  # the folder is made
    write_json_atomic(path, {"a": 1, "b": [1.5, "x"]})
    assert path.read_text() == '{\n  "a": 1,\n  "b": [\n    1.5,\n    "x"\n  ]\n}\n'
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, "x"]}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # readable by all, not mkstemp's 0600
    write_text_atomic(path, "é")
    assert path.read_bytes() == "é".encode()
    assert os.listdir(path.parent) == ["m.json"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_writer(path) as fh:
            fh.write(b"half a new file")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_a_compressed_atomic_write_is_deterministic_gzip(tmp_path):
    import gzip

    write_bytes_atomic(tmp_path / "a.gz", b"abc" * 100, compress=True)
    first = (tmp_path / "a.gz").read_bytes()
    write_bytes_atomic(tmp_path / "a.gz", b"abc" * 100, compress=True)
    assert (tmp_path / "a.gz").read_bytes() == first  # zero timestamp: the same bytes each time
    assert gzip.decompress(first) == b"abc" * 100
    assert first[4:8] == b"\x00\x00\x00\x00"  # gzip's MTIME field: zero, not the clock


def test_seed_everything_seeds_torch_and_numpy():
    seed_everything(7)
    a = torch.rand(3), np.random.rand(3)
    seed_everything(7)
    b = torch.rand(3), np.random.rand(3)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    torch.manual_seed(7)
    np.random.seed(7)
    assert torch.equal(torch.rand(3), a[0]) and np.array_equal(np.random.rand(3), a[1])
    seed_everything(2**32 + 7)  # numpy's seed is taken modulo 2**32
    assert np.array_equal(np.random.rand(3), a[1])
