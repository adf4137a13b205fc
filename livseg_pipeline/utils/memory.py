"""Process-wide memory allocator settings for large-array work (inference).

glibc serves every allocation above its mmap threshold (dynamic, at most 32 MB by default) with a
fresh ``mmap`` and gives it back to the OS on ``free``. Inference allocates and frees activations of
50-500 MB per layer (a 60 x 75 x 90 box of the paper network: 40-50 channels of 80^3 voxels), so
every layer output was written into freshly mapped pages: one page fault per 4 kB. Measured on the
2-core VM, one thread: a copy or a PReLU of a 97 MB channels-last tensor took 60-70 ms into fresh
pages and 12-23 ms into reused ones, and a whole box of the fine pathway ran at 41.7 GFLOP/s
before and 59.5 after (documentation/benchmarks.md). Training steps are not affected (their
activations are reused by PyTorch's autograd buffers and measured the same either way).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_REUSE_BELOW = 1 << 30        # allocations up to 1 GiB come from the heap and are reused after free
_TRIM_ABOVE = (1 << 31) - 1   # never shrink the heap while the process runs


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse instead of unmapping them; True if applied.

    A no-op (False) where the C library is not glibc (macOS, Windows, musl). The process's resident
    size then stays at its high-water mark until it exits, which is what a one-shot command such as
    ``lvs_predict`` wants; the peak itself does not grow. Tested in tests/test_memory_settings.py
    (in a child process: the setting is process-wide).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _REUSE_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE))
