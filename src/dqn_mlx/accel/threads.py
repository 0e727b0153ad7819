"""Share a machine: the BLAS threads of the dqn-mlx processes running on it, split between them.

The BLAS (oneDNN's OpenMP or OpenBLAS) starts one thread per core for MLX's matrix products,
and its idle threads spin for a while after each product. Two training processes on one 2-core
machine then keep each other's threads spinning on the cores the other needs: each ran at about
a tenth of a lone run's speed (docs/performance.md). With one thread each they keep about two
thirds.

So every heavy dqn-mlx process (train, bench) registers itself in ``~/.cache/dqn-mlx/running/``
and, every few seconds, sets its BLAS thread count to its cores (the CPU affinity, so
``taskset`` counts) divided by the dqn-mlx processes running, at least 1. A run alone gets
every core again within seconds of the other one ending. ``--threads N`` fixes the count.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from dqn_mlx.accel.blas import cache_dir, set_threads

RUNNING = "running"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


class ThreadShare:
    """Registers this process and keeps its BLAS thread count at its share of the cores.

    Plugs into a run as a ``RunLogger`` (``after_step`` rebalances every ``interval_s``
    seconds), and ``close`` unregisters."""

    def __init__(
        self, fixed: int | None = None, interval_s: float = 5.0, folder: Path | None = None
    ):
        self.fixed, self.interval = fixed, interval_s
        self.folder = folder or cache_dir() / RUNNING
        self.entry = self.folder / str(os.getpid())
        self.last_check, self.count = 0.0, 0

    def start(self) -> ThreadShare:
        """Register (the entry holds this process's start time, so that a reused process id
        is not mistaken for it) and take this process's share. Where the folder cannot be
        written, the process counts itself alone."""
        with suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            self.entry.write_text(str(psutil.Process().create_time()))
        self.rebalance()
        return self

    def running(self) -> int:
        """dqn-mlx processes registered and alive (this one included); stale entries go."""
        try:
            entries = list(self.folder.iterdir())
        except OSError:
            return 1
        alive = sum(1 for entry in entries if _alive(entry) and not _paused(entry))
        return max(alive, 1)

    def rebalance(self) -> int:
        """Set this process's BLAS threads to its share; returns the count."""
        self.last_check = time.monotonic()
        count = self.fixed or max(1, usable_cores() // self.running())
        if count != self.count and set_threads(count):
            self.count = count
        return count

    def after_step(self, *args: Any) -> None:
        if time.monotonic() - self.last_check >= self.interval:
            self.rebalance()

    def end_epoch(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        with suppress(OSError):
            self.entry.unlink(missing_ok=True)


def _alive(entry: Path) -> bool:
    """Whether the registered process still runs; a stale entry (a killed process, or its id
    now taken by another process) is removed."""
    try:
        started = float(entry.read_text() or "nan")
        alive = abs(psutil.Process(int(entry.name)).create_time() - started) < 1.0
    except (ValueError, OSError, psutil.Error):
        alive = False
    if not alive:
        entry.unlink(missing_ok=True)
    return alive


def _paused(entry: Path) -> bool:
    """Whether the registered process is stopped (``kill -STOP``, Ctrl-Z): it uses no core, so
    it does not count, until it is continued."""
    try:
        return psutil.Process(int(entry.name)).status() == psutil.STATUS_STOPPED
    except (ValueError, psutil.Error):
        return False
