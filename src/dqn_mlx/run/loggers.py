"""A run's progress on the console, one of the outputs ``run.train.RunHooks`` feeds.

``ConsoleProgress``: a progress line every few seconds (the phase: random play, learning or
evaluating; agent steps, emulator frames, rate, ETA, epsilon, recent score, loss per sample),
for logs and CI; ``TerminalProgress``: the same as a live progress bar, on a terminal.
``PhaseClock`` gives the ETA, each phase at its own rate. The run's other outputs:
``metrics.jsonl`` and the plots (``run/metrics.py``, ``report/plots.py``) and the live metrics
(``run/live.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dqn_mlx.core.loop import RunState
from dqn_mlx.core.schedule import Schedule
from dqn_mlx.run.clock import PAUSED_S


@dataclass(frozen=True)
class StepCosts:
    """Seconds per update and per greedy pass, timed on a throwaway learner before learning
    starts (``measure_step_costs``): what learning will cost before it has a rate of its own."""

    update_s: float
    act_s: float


class PhaseClock:
    """Which phase a run is in (random play, learning, evaluating) and its ETA, with each phase
    at its own rate: random play's and learning's from the agent steps timed in that phase,
    an evaluation's from the last one. Before learning (or the first evaluation) has been
    timed, its rate is estimated from random play's plus ``costs``, and the ETA says so."""

    def __init__(self, schedule: Schedule, start_step: int, now: float,
                 costs: StepCosts | None = None):  # fmt: skip
        self.schedule, self.costs = schedule, costs
        self.last = (now, start_step)
        self.timed = {"random play": [0.0, 0], "learning": [0.0, 0]}  # seconds, agent steps
        self.evaluation_s: float | None = None

    def phase(self, step: int) -> str:
        return "random play" if step < self.schedule.learning_starts else "learning"

    def observe(self, step: int, now: float) -> None:
        """The run reached agent step ``step`` at ``now``: time the steps since the last call
        in the phase they were played in (a span across the end of random play is dropped)."""
        then, before = self.last
        if step > before and self.phase(before) == self.phase(step - 1):
            timed = self.timed[self.phase(before)]
            timed[0] += now - then
            timed[1] += step - before
        self.last = (now, step)

    def restart_span(self, step: int, now: float) -> None:
        """Time from ``step`` at ``now`` on: the span since the last observation is dropped
        (the process was stopped, not playing)."""
        self.last = (now, step)

    def evaluated(self, step: int, seconds: float, now: float) -> None:
        """An epoch end (evaluation, checkpoint, plots) took ``seconds``; the span that held
        it is not a training rate."""
        self.evaluation_s = seconds
        self.last = (now, step)

    def rate(self, phase: str) -> float | None:
        seconds, steps = self.timed[phase]
        return steps / seconds if steps and seconds > 0 else None

    def eta(self, step: int) -> tuple[float | None, bool]:
        """Seconds to the end of the run, and whether any part of it is an estimate."""
        s, random_rate = self.schedule, self.rate("random play")
        random_left = max(0, s.learning_starts - step)
        learning_left = s.total_steps - max(step, s.learning_starts)
        estimated = False
        if random_left and random_rate is None:
            return None, False
        seconds = random_left / random_rate if random_left and random_rate else 0.0
        learning_rate = self.rate("learning")
        per_step = 1 / learning_rate if learning_rate else self._estimated_learning_step()
        if per_step is None:
            return None, False
        estimated |= learning_rate is None and learning_left > 0
        seconds += learning_left * per_step
        evaluation = self.evaluation_s
        if evaluation is None:
            per_eval_step = self._estimated_acting_step()
            if per_eval_step is None:
                return None, False
            evaluation, estimated = s.eval_steps * per_eval_step, True
        return seconds + s.evaluations_after(step) * evaluation, estimated

    def acting_step_s(self) -> float | None:
        """Seconds per agent step of epsilon-greedy play without learning (a refill of the
        replay memory plays so): the last evaluation's, else estimated."""
        if self.evaluation_s is not None:
            return self.evaluation_s / self.schedule.eval_steps
        return self._estimated_acting_step()

    def _estimated_learning_step(self) -> float | None:
        acting = self._estimated_acting_step()
        if acting is None or self.costs is None:
            return None
        return acting + self.costs.update_s / self.schedule.update_period

    def _estimated_acting_step(self) -> float | None:
        """An emulator step (random play's rate) plus one greedy pass."""
        random_rate = self.rate("random play")
        if random_rate is None or self.costs is None:
            learning = self.rate("learning")
            return None if learning is None else 1 / learning  # acting is a learning step's part
        return 1 / random_rate + self.costs.act_s


class ConsoleProgress:
    """A progress line every ``interval_s`` seconds: the phase, agent steps, emulator frames,
    rate, ETA, epsilon, recent score and loss; during an evaluation, its games and steps. A
    stopped process (a gap of ``PAUSED_S`` between passes) leaves the rates and ETA as they
    were."""

    def __init__(
        self,
        schedule: Schedule,
        frame_skip: int,
        log: Callable[[str], None],
        interval_s: float = 5.0,
        start_step: int = 0,
        costs: StepCosts | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.total, self.frame_skip, self.log = schedule.total_steps, frame_skip, log
        self.interval, self.clock = interval_s, clock
        self.last_time, self.last_step = clock(), start_step
        self.phases = PhaseClock(schedule, start_step, self.last_time, costs)
        self.last_pass = self.last_time

    def after_step(self, run: RunState, epsilon: float, force: bool = False) -> None:
        """Called after every pass of the loop: a line once ``interval_s`` has passed, or at
        once with ``force``."""
        now = self.clock()
        if now - self.last_pass > PAUSED_S:
            self.phases.restart_span(run.step, now)
            self.last_time, self.last_step = now, run.step
        self.last_pass = now
        if (not force and now - self.last_time < self.interval) or run.step == self.last_step:
            return  # (a forced line with nothing new: the epoch end just reported the step)
        rate = (run.step - self.last_step) / max(now - self.last_time, 1e-9)
        self.phases.observe(run.step, now)
        self.show(run, epsilon, rate)
        self.last_time, self.last_step = now, run.step

    def finish(self, run: RunState, epsilon: float, rate: float) -> None:
        """The run's last line, at its last agent step, showing ``rate`` (agent steps/s): the
        span since the line before can be a few agent steps long, too short to time. Nothing
        when a line or the epoch end already showed that step."""
        if run.step == self.last_step:
            return
        now = self.clock()
        self.phases.observe(run.step, now)
        self.show(run, epsilon, rate)
        self.last_time, self.last_step = now, run.step

    def evaluating(self, epoch: int, games: int, steps: int, total: int) -> None:
        """Called at every agent step of an epoch's evaluation (shown every interval)."""
        now = self.clock()
        if now - self.last_time >= self.interval:
            ended = f"{games} game{'' if games == 1 else 's'} ended"
            self.show_evaluation(
                f"evaluating epoch {epoch}: {ended}, {steps:,}/{total:,} agent steps"
            )
            self.last_time = now

    def show_evaluation(self, text: str) -> None:
        self.log(text)

    def phase_text(self, step: int) -> str:
        s = self.phases.schedule
        if self.phases.phase(step) == "random play":
            return f"random play {step:,}/{s.learning_starts:,}"
        return "learning"

    def eta_text(self, step: int) -> str:
        seconds, estimated = self.phases.eta(step)
        if seconds is None:
            return "ETA ?"
        return f"ETA {duration(seconds)}" + (" (estimated)" if estimated else "")

    def show(self, run: RunState, epsilon: float, rate: float) -> None:
        self.log(
            f"{self.phase_text(run.step)} | agent step {run.step:,}/{self.total:,} "
            f"({run.step * self.frame_skip:,} emulator frames) | {rate:,.0f} agent steps/s | "
            f"{self.eta_text(run.step)} | epsilon {epsilon:.3f} | score (last "
            f"{len(run.recent_scores)} episodes) {_recent_score(run)} | loss/sample {_loss(run)}"
        )

    def end_epoch(self, record: dict[str, Any]) -> None:
        """The epoch end began at the last pass of the loop: its evaluation, checkpoint and
        plots are timed for the ETA, and left out of learning's rate."""
        now = self.clock()
        self.phases.evaluated(record["agent_steps"], now - self.last_pass, now)
        self.last_time, self.last_step = now, record["agent_steps"]
        self.last_pass = now

    def close(self) -> None:
        """Lines need no closing; the live display does (``TerminalProgress``)."""


class TerminalProgress(ConsoleProgress):
    """The progress line as a live display on a terminal (rich comes with typer): the phase
    and a bar of agent steps, and below it the ETA, rate, epsilon, recent score and loss. Log
    lines (epoch ends) print above it."""

    def __init__(
        self,
        schedule: Schedule,
        frame_skip: int,
        start_step: int,
        console: Any = None,
        costs: StepCosts | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        from rich.console import Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.text import Text

        super().__init__(schedule, frame_skip, lambda _: None, 0.5, start_step, costs, clock)
        self.bar = Progress(
            TextColumn("{task.description} | agent step {task.completed:,.0f}/{task.total:,.0f}"),
            BarColumn(),
            console=console,
        )
        self.task = self.bar.add_task(
            self.phase_text(start_step), total=schedule.total_steps, completed=start_step
        )
        self.info = Text("")
        self.live = Live(Group(self.bar, self.info), console=console, refresh_per_second=4)
        self.live.start()

    def show(self, run: RunState, epsilon: float, rate: float) -> None:
        self.info.plain = (
            f"{self.eta_text(run.step)} | {run.step * self.frame_skip:,} emulator frames | "
            f"{rate:,.0f} agent steps/s | epsilon {epsilon:.3f} | score (last "
            f"{len(run.recent_scores)}) {_recent_score(run)} | loss/sample {_loss(run)}"
        )
        self.bar.update(self.task, completed=run.step, description=self.phase_text(run.step))

    def show_evaluation(self, text: str) -> None:
        self.bar.update(self.task, description=text)
        self.live.refresh()

    def close(self) -> None:
        self.live.stop()
        if not self.live.console.is_terminal:  # left it (``run.hangup``): end the line
            self.live.console.line()


def _recent_score(run: RunState) -> str:
    return f"{np.mean(run.recent_scores):.1f}" if run.recent_scores else "n/a"


def _loss(run: RunState) -> str:
    count = run.epoch_loss_count
    return f"{run.epoch_loss_sum / count:.4f}" if count else "n/a"


def duration(seconds: float) -> str:
    """``1h02m03s``; ``?`` for a time not known."""
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
