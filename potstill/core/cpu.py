"""CPU runtime settings that change speed, never results.

``tune_allocator`` keeps glibc's malloc from handing large tensor buffers back to the kernel
on every ``free``. By default glibc serves any block above a (dynamic, at most 32 MiB) threshold
with its own ``mmap`` and ``munmap``s it when freed, so a training step whose activations are
hundreds of MiB page-faults all of them in again every step: on the 2-core machine this project
is sized for, one DM step on Fashion-MNIST (ConvNet-3 w128, 740 images) spent 1.5 s of its 2.1 s
in the kernel (``resource.getrusage`` system time). Raising the mmap and trim thresholds lets the
heap keep and reuse those pages: the same step takes 1.36 s with 0.01 s of system time. The cost
is that the process keeps its peak heap until exit, which is what a training run wants anyway.

jemalloc or tcmalloc through ``LD_PRELOAD`` do the same job; they are not a pip dependency and
must be set before the process starts, so this is done with ``mallopt`` at run time instead.
Set ``POTSTILL_MALLOC_TUNE=0`` to leave the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_INT_MAX = 2**31 - 1
_done: bool | None = None


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; ``True`` if the settings took.

    A no-op (``False``) off Linux, with another libc, or with ``POTSTILL_MALLOC_TUNE=0``.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("POTSTILL_MALLOC_TUNE", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(opt, val) == 1 for opt, val in ((_M_MMAP_THRESHOLD, _INT_MAX), (_M_TRIM_THRESHOLD, _INT_MAX),
                                                     (_M_TOP_PAD, 256 << 20)))
    _done = bool(ok)
    return _done
