"""Running time: the seconds a training process spent training, for the rates it records.

A process stopped by Ctrl-Z, or by SIGSTOP while the test suite or a benchmark runs, shows a
gap between two passes of the loop (an agent step of each game, and an update when one is
due) that no pass could take; an epoch end's evaluation and saves are not training either.
Both are left out, so that ``updates.csv``'s and ``metrics.jsonl``'s ``agent_steps_per_s``
give the rate of training across them. Wall time (``wall_time_s``) still counts everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PAUSED_S = 60.0
"""Seconds between two passes of the loop beyond which the process was stopped, not slow."""


class RunningClock:
    """A reading in seconds that advances only while the run trains.

    ``tick`` is called at every pass of the loop: a gap of over ``PAUSED_S`` since the last
    one is a stop and is left out. ``leave_out`` drops the time since the last pass whatever
    its length (an epoch end). Differences of ``seconds`` are running time."""

    def __init__(self, clock: Callable[[], float] | None = None):
        self.clock = clock or time.perf_counter  # looked up now: a test may replace it
        self.last_pass = self.clock()
        self.left_out_s = 0.0

    def tick(self) -> None:
        now = self.clock()
        if now - self.last_pass > PAUSED_S:
            self.left_out_s += now - self.last_pass
        self.last_pass = now

    def leave_out(self) -> None:
        now = self.clock()
        self.left_out_s += now - self.last_pass
        self.last_pass = now

    def seconds(self) -> float:
        """Running seconds so far (after a ``tick``, so that a stop just ended is left out)."""
        self.tick()
        return self.last_pass - self.left_out_s
