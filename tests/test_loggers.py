"""The progress output: plain lines for logs, a live bar on a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from dqn_mlx.core.loop import RunState
from dqn_mlx.run.loggers import ConsoleProgress, TerminalProgress


def _run(step: int) -> RunState:
    return RunState(step=step, recent_scores=[2.0, 4.0], epoch_loss_sum=0.5, epoch_loss_count=2)


def test_plain_lines_name_agent_steps_frames_rate_epsilon_score_and_loss() -> None:
    lines: list[str] = []
    progress = ConsoleProgress(1_000, 4, lines.append)
    progress.after_step(_run(250), 0.5, force=True)
    (line,) = lines
    assert "agent step 250/1,000 (1,000 emulator frames)" in line
    assert "epsilon 0.500" in line and "score (last 2 episodes) 3.0" in line
    assert "loss/sample 0.2500" in line


def test_on_a_terminal_a_bar_shows_the_same_numbers() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=200)
    bar = TerminalProgress(1_000, 4, start_step=0, console=console)
    bar.after_step(_run(250), 0.5, force=True)
    bar.close()
    text = screen.getvalue()
    assert "agent step 250/1,000" in text and "1,000 emulator frames" in text
    assert "epsilon 0.500" in text and "score (last 2) 3.0" in text
    assert "loss/sample 0.2500" in text
