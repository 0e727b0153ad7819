"""Keep freed heap memory in the process between updates (Linux with glibc only).

Every update allocates and frees the same buffers again: the minibatch's frames (0.9 MB per
stack array), im2col patches (up to 13 MB), activations and gradients. glibc's default
thresholds are "dynamic": the mmap threshold rises to the size of the largest block freed
(at most 32 MB), and the heap's free top is handed back to the kernel once it exceeds twice
that. The next update then touches fresh pages, which the kernel zeroes one 4 KB page fault
at a time: 200-570 minor faults per Nature update in ``benchmarks/update_loop.py`` (counted
with ``/usr/bin/time -f %R``).

``keep_freed_memory`` fixes the mmap threshold at 32 MB (glibc's largest) and the trim
threshold at 256 MB, so blocks below 32 MB come from the heap and up to 256 MB of freed heap
stays mapped: the process may hold up to 256 MB it no longer uses (the bench's peak process
memory was 895-903 MiB with this, 821-896 MiB before, in five rounds each). The replay memory's
arrays (gigabytes) are still mapped and unmapped on their own. In eight alternating pairs of
``benchmarks/loop_profile.py`` runs (glibc's environment variables in six, this function in
two), the training loop ran 0.97-1.10x as many agent steps/s (median 1.05x), with 60,000 minor
page faults per run against 145,000-341,000. Set ``DQN_MLX_MALLOC=default`` to keep glibc's
defaults. Elsewhere (macOS, musl) nothing runs.
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
