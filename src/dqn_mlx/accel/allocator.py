"""Keep heap memory freed between updates mapped in the process (Linux with glibc only).

Every update allocates and frees the same buffers again (the minibatch, im2col patches,
activations, gradients). With glibc's dynamic thresholds the heap's free top is handed back to
the kernel between updates, and the next update touches fresh pages that the kernel zeroes one
page fault at a time (hundreds per Nature update).

``keep_freed_memory`` fixes the mmap threshold at 32 MB (glibc's largest) and the trim
threshold at 256 MB, so blocks below 32 MB come from the heap and up to 256 MB of freed heap
stays mapped: the process may hold that much it no longer uses. The replay memory's arrays
(gigabytes) are still mapped and unmapped on their own. Measured effect on the training loop:
docs/linux-cpu.md. Set ``DQN_MLX_MALLOC=default`` to keep glibc's defaults. Elsewhere (macOS,
musl) nothing runs.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's maximum on 64-bit: HEAP_MAX_SIZE / 2
TRIM_THRESHOLD_BYTES = 256 << 20


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (see the module docstring). True if both were set."""
    if not sys.platform.startswith("linux") or os.environ.get("DQN_MLX_MALLOC") == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
