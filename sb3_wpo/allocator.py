"""Keep glibc from handing WPO's update buffers back to the kernel after every update.

A WPO update evaluates the critic on N·B rows (N sampled actions per state): tens of MB of activations, freed at the
end of the update. glibc returns freed memory at the top of its heap to the kernel once more than its trim threshold
is free (by default at most twice the largest buffer freed so far), so the next update page-faults it all back in:
about 3,000 page faults per update at Pendulum sizes, 10,000 at HalfCheetah and humanoid sizes, a fifth of the
update's time (``benchmarks/update_cost.py``). SAC's buffers are N times smaller and barely fault.

``keep_freed_memory()`` raises the two thresholds, so that freed memory stays in the process for the next update
(PyTorch's CPU performance tuning guide suggests a caching allocator, jemalloc or tcmalloc, for the same reason).
It is process-wide and cannot be undone, so WPO calls it once, when it builds its networks, and leaves the allocator
alone where the user has chosen already: glibc's own variables (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``,
``GLIBC_TUNABLES``) or a preloaded allocator (``LD_PRELOAD``). Off glibc (macOS, Windows, musl) it does nothing.
The cost: the process keeps up to ``TRIM_THRESHOLD`` of freed memory mapped instead of returning it.
"""

import ctypes
import ctypes.util
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # buffers below this come from the heap: glibc's own ceiling for its dynamic threshold
TRIM_THRESHOLD = 256 * 2**20  # free memory kept at the top of the heap
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")

_applied: bool | None = None  # None: not tried yet in this process


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds, once per process; return whether they are raised."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success; setting either threshold also turns off glibc's dynamic adjustment of both
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
