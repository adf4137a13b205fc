"""keep_freed_memory: large arrays come from the reusable heap, not from fresh mappings."""

from __future__ import annotations

import subprocess
import sys

import pytest

# run in a child: the setting is process-wide; mallinfo2 reports bytes in mmap'ed blocks (hblkhd)
CHILD = r"""
import ctypes, sys
import numpy as np
from livseg_pipeline.utils.memory import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "on" else False
a = np.ones(100 * 2**20 // 8)          # 100 MB
mapped = libc.mallinfo2().hblkhd
del a
held = libc.mallinfo2().fordblks        # free bytes the heap keeps for reuse
print(int(applied), mapped >= 100 * 2**20, held >= 100 * 2**20)
"""


def _glibc_with_mallinfo2() -> bool:
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc_with_mallinfo2(), reason="glibc >= 2.33 only")
def test_large_blocks_are_kept_for_reuse():
    def child(mode):
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
        return out.stdout.split()
    # default glibc: a 100 MB array is a fresh mapping, returned to the OS on free
    assert child("off") == ["0", "True", "False"]
    # after the call: it comes from the heap and its memory stays there for the next array
    assert child("on") == ["1", "False", "True"]

