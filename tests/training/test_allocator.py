"""keep_freed_memory: a freed large block is reused without new page faults (glibc)."""
import ctypes
import subprocess
import sys

import pytest

try:
    ctypes.CDLL(None).gnu_get_libc_version
    GLIBC = sys.platform.startswith("linux")
except (OSError, AttributeError):
    GLIBC = False

_CHILD = r"""
import os, resource, sys
import torch
from scnf.training.allocator import keep_freed_memory
applied = keep_freed_memory()
for _ in range(4):  # the heap grows to hold the block (the first two or three rounds fault it in)
    x = torch.ones(16 * 2**20)  # 64 MiB: above glibc's largest mmap threshold
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    x = torch.ones(16 * 2**20)
    del x
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(**env):
    import os
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
    assert out.returncode == 0, out.stderr[-2000:]
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_large_blocks_are_reused_without_page_faults():
    pages = 3 * 64 * 2**20 // 4096  # what re-mapping the 64 MiB block three times faults in
    applied, faults = _faults(SCNF_SYSTEM_MALLOC=None, MALLOC_MMAP_MAX_=None, MALLOC_TRIM_THRESHOLD_=None)
    assert applied and faults < pages // 2, faults  # ~0; at most one stray re-mapping of the three
    applied, faults = _faults(SCNF_SYSTEM_MALLOC="1")
    assert not applied and faults > 0.9 * pages, faults  # the system's default: every block re-mapped


def test_it_is_a_no_op_when_asked_or_off_glibc(monkeypatch):
    from scnf.training import allocator
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("SCNF_SYSTEM_MALLOC", "1")
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.delenv("SCNF_SYSTEM_MALLOC")
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
