"""The results report's own measures, on files as a run writes them."""

from __future__ import annotations

from pathlib import Path

from dqn_mlx.report.table import TRAINING_WINDOW, training_window_scores


def test_the_training_window_is_the_last_250k_agent_steps_up_to_the_last_epoch(
    tmp_path: Path,
) -> None:
    """Dopamine's iteration: games that ended after ``trained - 250,000`` and by ``trained``;
    a game of an epoch still running (after ``trained``) is not in it."""
    assert TRAINING_WINDOW == 250_000
    rows = [
        (1_000_000, 1.0),
        (1_250_000, 2.0),
        (1_250_001, 3.0),
        (1_500_000, 4.0),
        (1_500_900, 9.0),
    ]
    lines = ["agent_step,score,length_agent_steps"]
    lines += [f"{step},{score},100" for step, score in rows]
    (tmp_path / "games.csv").write_text("\n".join(lines) + "\n")
    assert training_window_scores(tmp_path, 1_500_000) == [3.0, 4.0]
    assert training_window_scores(tmp_path, 1_250_000) == [2.0]  # 1,000,000 is before it
    assert training_window_scores(tmp_path / "older-run", 1_500_000) == []  # no games.csv


def test_dopamines_range_is_the_iteration_that_ends_at_the_agent_step() -> None:
    """Iteration 5 ends at 1.5M agent steps (the issue's anchor for Breakout: 27.1-28.3);
    a step inside an iteration, before the first, past the published ones, or a game
    Dopamine's table lacks has none."""
    from dqn_mlx.report.paper_scores import DOPAMINE_ADAM_MSE, TABLE1_2013, dopamine_range

    assert set(DOPAMINE_ADAM_MSE) == set(TABLE1_2013)  # the 2013 paper's seven games
    assert dopamine_range("breakout", 1_500_000) == (27.1, 28.3)
    assert dopamine_range("breakout", 250_000) == DOPAMINE_ADAM_MSE["breakout"][0]
    assert dopamine_range("breakout", 2_000_000) == DOPAMINE_ADAM_MSE["breakout"][-1]
    for rom, steps in [("breakout", 1_400_000), ("breakout", 0), ("breakout", 2_250_000),
                       ("ms_pacman", 1_500_000)]:  # fmt: skip
        assert dopamine_range(rom, steps) is None, (rom, steps)
    assert all(len(curve) == 8 and all(lo <= hi for lo, hi in curve)
               for curve in DOPAMINE_ADAM_MSE.values())  # fmt: skip
