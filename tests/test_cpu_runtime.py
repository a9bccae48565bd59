"""The CPU allocator setting (potstill/core/cpu.py): big tensors come from the heap, not mmap."""
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
import torch
from potstill.core.cpu import tune_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
tuned = tune_allocator() if sys.argv[1] == "tune" else False
x = torch.empty(64 << 20, dtype=torch.uint8)      # 64 MiB: above glibc's default mmap threshold
print(int(tuned), libc.mallinfo2().hblkhd >> 20, int(tune_allocator() == tuned))
"""


def _probe(mode, env=None):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    tuned, mmapped_mib, idempotent = map(int, out.stdout.split()[-3:])
    return tuned, mmapped_mib, idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tuned_allocator_serves_big_tensors_from_the_heap():
    try:
        _, default_mib, _ = _probe("default")
    except (subprocess.CalledProcessError, AttributeError):
        pytest.skip("no glibc mallinfo2 here")
    assert default_mib >= 64          # glibc default: the 64 MiB block is its own mmap
    tuned, mib, idempotent = _probe("tune")
    assert tuned == 1 and idempotent == 1
    assert mib < 64                   # tuned: the block lives in the heap and is reused


def test_opt_out_leaves_the_allocator_alone():
    import os

    env = dict(os.environ, POTSTILL_MALLOC_TUNE="0")
    tuned, _, _ = _probe("tune", env)
    assert tuned == 0
