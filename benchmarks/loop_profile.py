"""Where the training loop's time goes: the bench's end-to-end run, with its calls timed.

    uv run python benchmarks/loop_profile.py [agent_steps] [num_envs]

Runs what ``main.py --mode bench`` measures as ``end_to_end_nature2015`` (default 2,000
agent steps after the warm-up epoch, one game; ``_envs4`` with 4) with timers around the
environment's ``send``, ``receive`` and ``reset``, the replay's ``add`` and ``sample``, each
batched greedy pass and the learner's ``update``.
Prints the rate, then per call: total seconds, count and milliseconds each. The totals cover
the whole run (warm-up epoch and evaluation included): read the per-call times.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from dqn_mlx import bench
from dqn_mlx.accel import platform_compute
from dqn_mlx.core import env, learner, loop, replay

seconds: defaultdict[str, float] = defaultdict(float)
calls: Counter[str] = Counter()


def with_timer(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    """``function``, adding the wall time of each call to ``label``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - start
            calls[label] += 1

    return wrapper


def timed(owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` with a version that adds its wall time to ``label``."""
    setattr(owner, name, with_timer(getattr(owner, name), label))


def timed_policies() -> None:
    """Time each greedy pass of the training loop (the policy ``loop.greedy_actions`` makes)."""
    make = loop.greedy_actions
    loop.greedy_actions = lambda network: with_timer(make(network), "greedy pass")


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000
    num_envs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    timed(env.AtariEnv, "send", "env.send")
    timed(env.AtariEnv, "receive", "env.receive")
    timed(env.AtariEnv, "reset", "env.reset")
    timed(replay.ReplayStreams, "sample", "replay.sample")
    timed(replay.ReplayStreams, "add", "replay.add")
    timed(learner.Learner, "update", "learner.update")
    timed_policies()
    start = time.perf_counter()
    rate = bench.end_to_end_steps_per_s(steps, platform_compute(), num_envs)
    print(f"end_to_end_nature2015 with {num_envs} games: {rate:.1f} agent_steps/s")
    print(f"whole run {time.perf_counter() - start:.1f} s (warm-up epoch and evaluation included)")
    for label, total in seconds.items():
        each = 1000 * total / calls[label]
        print(f"{label:30s} {total:7.2f} s {calls[label]:7d} calls {each:8.3f} ms each")


if __name__ == "__main__":
    main()
