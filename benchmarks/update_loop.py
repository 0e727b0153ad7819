"""Run compiled DQN updates in a loop, for a profiler to look inside one update.

    perf record -F 2000 -g .venv/bin/python benchmarks/update_loop.py nature2015 150
    perf report --no-children --sort sym -g none

(The venv's python directly: under ``uv run``, perf missed most samples.)
Arguments: the preset (default nature2015) and the number of timed updates (default 150).
Updates run on one random batch of 32; the median and minimum times are printed at the end.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from dqn_mlx.accel import platform_compute
from dqn_mlx.bench import random_batch
from dqn_mlx.config import PRESETS
from dqn_mlx.core.learner import Learner


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "nature2015"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    learner = Learner(PRESETS[preset], 4, platform_compute())
    batch = random_batch(np.random.default_rng(0), 4)
    for _ in range(5):  # compile and warm up
        learner.update(*batch)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        learner.update(*batch)
        times.append(time.perf_counter() - start)
    median, fastest = 1000 * statistics.median(times), 1000 * min(times)
    print(f"update_ms_{preset} median {median:.1f} min {fastest:.1f} over {count} updates")


if __name__ == "__main__":
    main()
