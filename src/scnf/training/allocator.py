"""Keep freed memory in the process instead of handing it back to the operating system.

glibc's malloc serves every block above 32 MiB (its largest ``mmap`` threshold) with a fresh
``mmap`` and unmaps it on ``free``. PyTorch's CPU allocator does not cache, so a training step
whose activations exceed that size (the Appendix E model at batch 256: ~50 MiB tensors)
re-maps them every step and the kernel zero-fills every page again on first touch: ~0.7-1.5
million page faults and 0.8-2 CPU seconds of system time a step, ~10 % of the step
(benchmarks/RESULTS.md). :func:`keep_freed_memory` tells glibc to take every block from its
heap (``M_MMAP_MAX = 0``) and not to trim it (``M_TRIM_THRESHOLD``), so freed blocks are reused
by the next step as they are. The resident size stays at the step's high-water mark (which a
training process reaches every step anyway) instead of rising and falling.

It changes the whole process, so the library never calls it on its own: the ``scnf`` command
does, at start (set ``SCNF_SYSTEM_MALLOC=1`` to keep the system's settings), and a program
that trains large models in-process can. Elsewhere than Linux with glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # bytes of free memory at the heap's top before it is handed back (the int maximum)

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module docstring). Returns
    whether the settings are in force (False off glibc, with ``SCNF_SYSTEM_MALLOC=1``, or when
    the user set ``MALLOC_MMAP_MAX_``/``MALLOC_TRIM_THRESHOLD_`` themselves, which are kept).
    Calling it again does nothing more."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if (not sys.platform.startswith("linux") or os.environ.get("SCNF_SYSTEM_MALLOC", "") not in ("", "0")
            or "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl and others have no such mallopt parameters
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
    return _applied
