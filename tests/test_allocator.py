"""accel/allocator.py: memory freed between updates stays mapped (no fresh page faults), once
``accel.enable()`` ran, and only then."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Three 6 MB arrays allocated, written and freed 20 times, after one 8 MB block freed (which
# raises glibc's dynamic thresholds to 8 / 16 MB, so the 18 MB heap top is trimmed each time).
CYCLES = """
import resource
import sys
import numpy as np
import dqn_mlx
from dqn_mlx import accel
tuned = accel.enable().malloc_tuned if sys.argv[1] == 'enable' else 'not-enabled'
def cycle():
    arrays = [np.ones(6 << 18, np.float32) for _ in range(3)]
    del arrays
np.ones(8 << 18, np.float32)
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def minor_faults(malloc_setting: str | None, enable: bool = True) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "DQN_MLX_MALLOC"}
    if malloc_setting is not None:
        env["DQN_MLX_MALLOC"] = malloc_setting
    out = subprocess.run(
        [sys.executable, "-c", CYCLES, "enable" if enable else "import-only"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_memory_is_reused_without_page_faults() -> None:
    tuned, faults = minor_faults(None)
    assert tuned == "True"
    assert faults < 1_000  # 20 cycles x 18 MB would be about 90,000 fresh 4 KB pages
    # the same cycles with glibc's defaults do fault: the check above can fail
    default, default_faults = minor_faults("default")
    assert default == "False"
    assert default_faults > 10 * max(faults, 100)
    # importing dqn_mlx alone, without accel.enable(), leaves glibc's defaults as they are
    _, import_only_faults = minor_faults(None, enable=False)
    assert import_only_faults > 10 * max(faults, 100)
