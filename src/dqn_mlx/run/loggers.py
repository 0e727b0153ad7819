"""Where a run's numbers go: one seam, ``RunLogger``, that every output plugs into.

- ``ConsoleProgress``: a progress line every few seconds (agent steps, emulator frames, rate,
  ETA, epsilon, recent score, loss per sample), for logs and CI; ``TerminalProgress``: the same
  as a live progress bar, on a terminal;
- ``MetricsFiles``: each epoch's record appended to ``metrics.jsonl`` and the two plots
  redrawn;
- ``LiveMetrics`` (``run/live.py``): every finished game and every few hundred updates, as CSV
  files and TensorBoard event files, from the first minute of a run.
A new backend is one more class with these methods, added to the list ``run.train`` builds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dqn_mlx.core.game import FinishedGame
from dqn_mlx.core.learner import UpdateStats
from dqn_mlx.core.loop import RunState
from dqn_mlx.report.plots import draw_plots
from dqn_mlx.run.metrics import append_metrics


class RunLogger(Protocol):
    def after_step(
        self,
        run: RunState,
        epsilon: float,
        finished: Sequence[FinishedGame],
        updates: Sequence[UpdateStats],
    ) -> None:
        """Called after every pass of the loop (one agent step of each game), with the games
        it finished and the updates it made: keep it cheap."""

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Called with each epoch's record (keys: ``dqn_mlx.run.metrics``)."""

    def close(self) -> None:
        """The run ended (finished, interrupted or failed): flush and close files."""


class ConsoleProgress:
    """A progress line every ``interval_s`` seconds."""

    def __init__(
        self,
        total_steps: int,
        frame_skip: int,
        log: Callable[[str], None],
        interval_s: float = 5.0,
        start_step: int = 0,
    ):
        self.total, self.frame_skip, self.log = total_steps, frame_skip, log
        self.interval = interval_s
        self.last_time, self.last_step = time.perf_counter(), start_step

    def after_step(
        self,
        run: RunState,
        epsilon: float,
        finished: Sequence[FinishedGame] = (),
        updates: Sequence[UpdateStats] = (),
        force: bool = False,
    ) -> None:
        now = time.perf_counter()
        if not force and now - self.last_time < self.interval:
            return
        rate = (run.step - self.last_step) / max(now - self.last_time, 1e-9)
        self.show(run, epsilon, rate)
        self.last_time, self.last_step = now, run.step

    def show(self, run: RunState, epsilon: float, rate: float) -> None:
        eta = (self.total - run.step) / rate if rate > 0 else float("inf")
        self.log(
            f"agent step {run.step:,}/{self.total:,} ({run.step * self.frame_skip:,} emulator "
            f"frames) | {rate:,.0f} agent steps/s | ETA {_duration(eta)} | "
            f"epsilon {epsilon:.3f} | score (last {len(run.recent_scores)} episodes) "
            f"{_recent_score(run)} | loss/sample {_loss(run)}"
        )

    def end_epoch(self, record: dict[str, Any]) -> None:
        pass  # the epoch's own line is logged by the epoch end, with the checkpoint's path

    def close(self) -> None:
        pass


class TerminalProgress(ConsoleProgress):
    """The progress line as a live display on a terminal (rich comes with typer): a bar of
    agent steps with the ETA, and below it the rate, epsilon, recent score and loss. Log lines
    (epoch ends) print above it."""

    def __init__(self, total_steps: int, frame_skip: int, start_step: int, console: Any = None):
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.text import Text

        super().__init__(total_steps, frame_skip, lambda _: None, 0.5, start_step)
        self.bar = Progress(
            TextColumn("agent step {task.completed:,.0f}/{task.total:,.0f}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("train", total=total_steps, completed=start_step)
        self.info = Text("")
        self.live = Live(Group(self.bar, self.info), console=console, refresh_per_second=4)
        self.live.start()

    def show(self, run: RunState, epsilon: float, rate: float) -> None:
        self.info.plain = (
            f"{run.step * self.frame_skip:,} emulator frames | {rate:,.0f} agent steps/s | "
            f"epsilon {epsilon:.3f} | score (last {len(run.recent_scores)}) "
            f"{_recent_score(run)} | loss/sample {_loss(run)}"
        )
        self.bar.update(self.task, completed=run.step)

    def close(self) -> None:
        self.live.stop()


def _recent_score(run: RunState) -> str:
    return f"{np.mean(run.recent_scores):.1f}" if run.recent_scores else "n/a"


def _loss(run: RunState) -> str:
    count = run.epoch_loss_count
    return f"{run.epoch_loss_sum / count:.4f}" if count else "n/a"


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


class MetricsFiles:
    """``metrics.jsonl`` and the rewards and average max-Q plots in the run folder."""

    def __init__(self, out_dir: Path, env_id: str):
        self.out_dir, self.env_id = out_dir, env_id

    def after_step(
        self,
        run: RunState,
        epsilon: float,
        finished: Sequence[FinishedGame],
        updates: Sequence[UpdateStats],
    ) -> None:
        pass

    def end_epoch(self, record: dict[str, Any]) -> None:
        draw_plots(self.out_dir, append_metrics(self.out_dir, record), self.env_id)

    def close(self) -> None:
        pass
