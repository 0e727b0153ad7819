"""The progress output: plain lines for logs, a live bar on a terminal, and an ETA that counts
each phase of a run (random play, learning, evaluations) at its own rate."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from dqn_mlx.core.loop import RunState
from dqn_mlx.run.clock import PAUSED_S, RunningClock
from dqn_mlx.run.loggers import ConsoleProgress, PhaseClock, Schedule, StepCosts, TerminalProgress

# The main command's schedule (laptop preset): 80,000 agent steps of random play, then an
# update every 4 agent steps, an epoch every 12,500 updates, 10,000 agent steps per evaluation.
MAIN = Schedule(10_000_000, 80_000, 4, 12_500, 10_000)


def _run(step: int) -> RunState:
    return RunState(step=step, recent_scores=[2.0, 4.0], epoch_loss_sum=0.5, epoch_loss_count=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_name_phase_agent_steps_frames_rate_epsilon_score_and_loss() -> None:
    lines: list[str] = []
    progress = ConsoleProgress(Schedule(1_000, 100, 1, 50, 10), 4, lines.append)
    progress.after_step(_run(250), 0.5, force=True)
    (line,) = lines
    assert line.startswith("learning | agent step 250/1,000 (1,000 emulator frames)")
    assert "epsilon 0.500" in line and "score (last 2 episodes) 3.0" in line
    assert "loss/sample 0.2500" in line


def test_on_a_terminal_a_bar_shows_the_same_numbers() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200)
    bar = TerminalProgress(Schedule(1_000, 500, 1, 50, 10), 4, start_step=0, console=console)
    bar.after_step(_run(250), 0.5, force=True)
    bar.close()
    text = screen.getvalue()
    assert "random play 250/500 | agent step 250/1,000" in text and "1,000 emulator frames" in text
    assert "epsilon 0.500" in text and "score (last 2) 3.0" in text
    assert "loss/sample 0.2500" in text


def test_the_eta_of_random_play_counts_the_learning_to_come_at_its_estimated_cost() -> None:
    """The first command's complaint: random play at 1,000 agent steps/s showed an ETA of
    hours computed at that rate, for a run that would learn at about 90 agent steps/s."""
    lines: list[str] = []
    clock = FakeClock()
    costs = StepCosts(update_s=0.040, act_s=0.001)
    progress = ConsoleProgress(MAIN, 4, lines.append, costs=costs, clock=clock)
    clock.now = 10.0
    progress.after_step(_run(10_000), 1.0)  # 1,000 agent steps/s of random play
    assert lines[-1].startswith("random play 10,000/80,000 | agent step 10,000/10,000,000")
    seconds, estimated = progress.phases.eta(10_000)
    assert estimated
    # random play left: 70 s; learning: 9.92M agent steps x (1 ms + 1 ms + 40 ms / 4) = 119,040
    # s; 199 evaluations of 10,000 x 2 ms = 3,980 s
    assert seconds == pytest.approx(70 + 9_920_000 * 0.012 + 199 * 20.0)
    assert "ETA 34h11m30s (estimated)" in lines[-1]
    # the old ETA: what is left at random play's rate
    assert seconds > 10 * (10_000_000 - 10_000) / 1_000


def play(progress: ConsoleProgress, clock: FakeClock, steps: tuple[int, int], to: float) -> None:
    """Passes of the loop, one a second, from the clock's time to ``to``, playing agent steps
    ``steps[0]`` (done at the last pass) to ``steps[1]`` at an even rate."""
    start_time, (start_step, to_step) = clock.now, steps
    passes = round(to - start_time)
    for n in range(1, passes + 1):
        clock.now = start_time + n
        progress.after_step(_run(start_step + (to_step - start_step) * n // passes), 1.0)


def test_once_learning_and_an_evaluation_are_timed_the_eta_uses_them_and_is_not_estimated() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = ConsoleProgress(MAIN, 4, lines.append, costs=StepCosts(0.04, 0.001), clock=clock)
    play(progress, clock, (0, 80_000), 80.0)  # random play: 1,000 agent steps/s
    play(progress, clock, (80_000, 89_000), 180.0)  # learning: 9,000 agent steps in 100 s = 90/s
    assert progress.phases.rate("learning") == pytest.approx(90)
    seconds, estimated = progress.phases.eta(89_000)
    assert estimated  # no evaluation timed yet
    play(progress, clock, (89_000, 130_000), 230.0)
    clock.now = 300.0  # the epoch end took 70 s after the last pass of the loop
    progress.end_epoch({"agent_steps": 130_000})
    assert progress.phases.evaluation_s == pytest.approx(70.0)
    seconds, estimated = progress.phases.eta(130_000)
    assert not estimated
    rate = progress.phases.rate("learning")
    assert rate is not None
    assert seconds == pytest.approx((10_000_000 - 130_000) / rate + 198 * 70.0)
    # the span holding the epoch end is not counted as learning
    clock.now = 310.0
    progress.after_step(_run(131_000), 1.0, force=True)
    assert progress.phases.timed["learning"][0] == pytest.approx(100 + 50 + 10)


def test_a_stopped_process_leaves_the_rate_and_the_eta_as_they_were() -> None:
    """Stopped for 10 minutes (Ctrl-Z, or SIGSTOP while the suite runs) and continued: the
    line after shows the rate of play, not of play and the stop, and the ETA stays put."""
    lines: list[str] = []
    clock = FakeClock()
    progress = ConsoleProgress(MAIN, 4, lines.append, clock=clock)
    play(progress, clock, (0, 80_000), 80.0)
    play(progress, clock, (80_000, 89_000), 180.0)  # 90 agent steps/s
    eta = progress.phases.eta(89_000)
    clock.now += 600.0  # stopped between two passes
    progress.after_step(_run(89_001), 1.0)
    play(progress, clock, (89_001, 89_451), clock.now + 5)
    assert progress.phases.rate("learning") == pytest.approx(90, rel=0.01)
    assert "| 90 agent steps/s |" in lines[-1]
    seconds, _ = progress.phases.eta(89_451)
    assert seconds == pytest.approx(eta[0] - 5, rel=0.01)
    assert lines[-1].count("agent step ") == 1 and "agent step 89,451/" in lines[-1]


def test_an_evaluation_shows_its_progress_instead_of_freezing() -> None:
    lines: list[str] = []
    clock = FakeClock()
    progress = ConsoleProgress(MAIN, 4, lines.append, clock=clock)
    clock.now = 6.0
    progress.evaluating(3, 2, 4_000, 10_000)
    assert lines == ["evaluating epoch 3: 2 games ended, 4,000/10,000 agent steps"]
    progress.evaluating(3, 2, 4_001, 10_000)  # within the interval: no new line
    assert len(lines) == 1


def test_without_a_timed_phase_or_an_estimate_the_eta_is_unknown() -> None:
    clock = PhaseClock(MAIN, 0, 0.0)
    assert clock.eta(0) == (None, False)
    assert ConsoleProgress(MAIN, 4, print).eta_text(0) == "ETA ?"


def test_the_schedule_counts_updates_and_epoch_ends_as_the_loop_does() -> None:
    from dqn_mlx.config import LAPTOP

    schedule = Schedule.of(LAPTOP)
    small = Schedule(3_000, 1_000, 4, 100, 50)
    updates = sum(Schedule.of(small_config()).updates_at(s) for s in range(1, 3_001))
    assert small.updates_by(3_000) == updates == 500
    assert small.evaluations_after(0) == 5 and small.evaluations_after(3_000) == 0
    assert schedule.updates_by(LAPTOP.total_steps) == (10_000_000 - 80_000) // 4


def small_config():  # type: ignore[no-untyped-def]
    import dataclasses

    from dqn_mlx.config import LAPTOP

    return dataclasses.replace(LAPTOP, total_steps=3_000, learning_starts=1_000, update_period=4)


@pytest.mark.slow
def test_timing_the_update_for_the_eta_leaves_a_seeded_run_unchanged(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx.core as mx
    import numpy as np
    from catch_env import CatchEnv
    from compute import COMPUTE
    from test_resume import COMPARED, CONFIG

    from dqn_mlx.config import with_overrides
    from dqn_mlx.run import train as train_module
    from dqn_mlx.run.metrics import read_metrics

    timed: list[object] = []
    measure = train_module.measure_step_costs
    monkeypatch.setattr(train_module, "measure_step_costs",
                        lambda *a: timed.append(measure(*a)) or timed[-1])  # fmt: skip
    config = with_overrides(CONFIG, {"total_steps": 250, "epoch_updates": 50})
    runs = {}
    for name, threshold in (("plain", 10**9), ("timed", 0)):
        monkeypatch.setattr(train_module, "ESTIMATE_FROM_RANDOM_STEPS", threshold)
        runs[name] = train_module.train(
            config, "Catch", CatchEnv, tmp_path / name, log=lambda _: None, compute=COMPUTE
        )
    assert len(timed) == 1  # only the second run timed its update
    plain, with_timing = read_metrics(runs["plain"]), read_metrics(runs["timed"])
    assert [[r[k] for k in COMPARED] for r in plain] == [
        [r[k] for k in COMPARED] for r in with_timing
    ]
    assert len(plain) == 3
    a = mx.load(str(runs["plain"] / "epoch_3.safetensors"))
    b = mx.load(str(runs["timed"] / "epoch_3.safetensors"))
    assert all(np.array_equal(np.array(a[k]), np.array(b[k])) for k in a)


def test_running_time_leaves_out_stops_and_epoch_ends() -> None:
    clock = FakeClock()
    running = RunningClock(clock)
    for now in (1.0, 2.0, 3.0):  # passes a second apart: all running
        clock.now = now
        running.tick()
    assert running.seconds() == pytest.approx(3.0)
    clock.now = 3.0 + PAUSED_S + 1  # stopped between two passes
    assert running.seconds() == pytest.approx(3.0)
    clock.now += 2.0
    running.tick()
    clock.now += 30.0  # an epoch end: shorter than PAUSED_S, left out all the same
    running.leave_out()
    assert running.seconds() == pytest.approx(5.0)
