"""The results report's own measures, on files as a run writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    assert dopamine_range("breakout", 1_500_000) == pytest.approx((27.1, 28.3), abs=0.05)
    assert dopamine_range("breakout", 250_000) == DOPAMINE_ADAM_MSE["breakout"][0]
    assert dopamine_range("breakout", 2_000_000) == DOPAMINE_ADAM_MSE["breakout"][-1]
    for rom, steps in [("breakout", 1_400_000), ("breakout", 0), ("breakout", 2_250_000),
                       ("ms_pacman", 1_500_000)]:  # fmt: skip
        assert dopamine_range(rom, steps) is None, (rom, steps)
    assert all(len(curve) == 8 and all(lo <= hi for lo, hi in curve)
               for curve in DOPAMINE_ADAM_MSE.values())  # fmt: skip


def test_dopamines_data_file_holds_the_published_runs() -> None:
    """The 35 iteration-5 runs (agent steps 1.25M-1.5M) as ../shared/reference/dqn-paper.md
    reads them off google/dopamine's files, to one decimal."""
    from dqn_mlx.report.paper_scores import DOPAMINE_RUNS, dopamine_scores

    published = {
        "beam_rider": [5024.8, 4190.0, 4813.1, 4423.9, 5358.8],
        "breakout": [28.1, 28.3, 28.2, 27.1, 27.5],
        "enduro": [569.8, 548.2, 547.8, 601.5, 553.6],
        "pong": [-14.3, -13.3, -10.7, -8.4, 8.0],
        "qbert": [1172.3, 952.2, 814.2, 1170.0, 1133.6],
        "seaquest": [537.0, 374.7, 446.0, 463.8, 388.3],
        "space_invaders": [580.0, 632.0, 539.9, 592.4, 545.5],
    }
    for rom, runs in published.items():
        assert [round(x, 1) for x in dopamine_scores(rom, 1_500_000) or []] == runs, rom
        assert len(DOPAMINE_RUNS[rom]) == 8 and {len(i) for i in DOPAMINE_RUNS[rom]} == {5}


def _made_up_run(folder: Path, env_id: str, rom: str, score: float, games: int = 1) -> None:
    """A run's files as training and ``--mode eval`` write them, at 1,500,000 agent steps:
    three epochs, training games in Dopamine's last window, a 30-game nature2015 result."""
    import json

    folder.mkdir(parents=True)
    records = [
        {"epoch": e, "agent_steps": 500_000 * e, "emulator_frames": 2_000_000 * e,
         "updates": 25_000 * e, "train_score_mean": score * e / 3, "eval_score_mean": score,
         "eval_scores": [score] * games, "eval_games_completed": games, "avg_max_q": 1.0}
        for e in (1, 2, 3)
    ]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [f"{1_300_000 + i},{score + (-1) ** i},100" for i in range(10)]
    (folder / "games.csv").write_text("agent_step,score,length_agent_steps\n" + "\n".join(rows))
    result = {
        "protocol": "nature2015", "env_id": env_id, "rom": rom, "sticky_actions": False,
        "scores": [score - 2, score + 2], "mean": score, "std": 2.0, "max": score + 2,
        "completed": True, "agent_steps_trained": 1_500_000, "date": "2026-12-07",
    }  # fmt: skip
    (folder / "epoch_3.eval_nature2015.json").write_text(json.dumps(result))


def test_the_report_over_several_seeds_gives_intervals_beside_dopamines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three seeds of Pong and of Breakout: per game the mean over runs with its bootstrap
    interval and each run's score; over games the IQM and median with their stratified
    intervals, Dopamine's over the same games beside the training rows; one figure. An
    evaluation that ended no game, and files that cannot be read, are in no row, each bad
    file named in one warning line."""
    import json

    import numpy as np

    from dqn_mlx.report.aggregate import aggregates, game_mean
    from dqn_mlx.report.paper_scores import dopamine_scores
    from dqn_mlx.report.table import human_normalised, write_report

    pong, breakout = [-5.0, 0.0, 7.0], [20.0, 30.0, 40.0]
    for seed, (p, b) in enumerate(zip(pong, breakout, strict=True)):
        _made_up_run(tmp_path / "PongNoFrameskip-v4" / f"laptop-seed{seed}", "PongNoFrameskip-v4",
                     "pong", p)  # fmt: skip
        _made_up_run(tmp_path / "BreakoutNoFrameskip-v4" / f"laptop-seed{seed}",
                     "BreakoutNoFrameskip-v4", "breakout", b)  # fmt: skip
    # a fourth Pong run whose evaluation and last epoch ended no game: no score anywhere
    _made_up_run(tmp_path / "PongNoFrameskip-v4" / "laptop-seed3", "PongNoFrameskip-v4", "pong",
                 0.0, games=0)  # fmt: skip
    nogame = tmp_path / "PongNoFrameskip-v4" / "laptop-seed3" / "epoch_3.eval_nature2015.json"
    nogame.write_text(json.dumps({**json.loads(nogame.read_text()), "completed": False,
                                  "scores": [], "mean": 0.0, "std": 0.0, "max": None}))  # fmt: skip
    (tmp_path / "PongNoFrameskip-v4" / "laptop-seed3" / "games.csv").unlink()
    # damaged files: a garbage result, a NaN result, a metrics line of the wrong types
    bad = tmp_path / "BreakoutNoFrameskip-v4" / "bad"
    _made_up_run(bad, "BreakoutNoFrameskip-v4", "breakout", 99.0)
    nan = json.loads((bad / "epoch_3.eval_nature2015.json").read_text())
    (bad / "epoch_2.eval_nature2015.json").write_text(json.dumps({**nan, "mean": float("nan")}))
    (bad / "epoch_3.eval_nature2015.json").write_text("{garbage")
    (bad / "metrics.jsonl").write_text('{"epoch": "five", "agent_steps": null}\n')

    table, curves = write_report(tmp_path)
    printed = capsys.readouterr()
    warnings = printed.err.splitlines()
    assert len(warnings) == 3 and all(line.startswith("warning: ") for line in warnings)
    assert any("epoch_3.eval_nature2015.json: not an evaluation result" in w for w in warnings)
    assert any("epoch_2.eval_nature2015.json: a score that is not a finite" in w for w in warnings)
    assert any("metrics.jsonl: line 1: epoch is 'five', not a number" in w for w in warnings)
    text = table.read_text()
    lines = text.splitlines()

    row = next(line for line in lines if line.startswith("| PongNoFrameskip-v4 | nature2015 "))
    cells = row.split(" | ")
    assert cells[3:6] == ["3", str(game_mean(pong)), "-5.0, 0.0, 7.0"], row  # seed 3 is not in
    assert "no game ended" in next(line for line in lines if "| laptop-seed3 | nature2015" in line)
    assert "| laptop-seed3 | epoch | no game ended |" in text

    games = [[human_normalised(rom, s) or 0.0 for s in scores]
             for rom, scores in (("breakout", breakout), ("pong", pong))]  # fmt: skip
    iqm, median = aggregates(games)
    assert iqm.low is not None and iqm.low < iqm.value < (iqm.high or 0)
    nature = next(line for line in lines if line.startswith("| nature2015 | 1,500,000 |"))
    percent = [e.scaled(100).text("{:.0f}%") for e in (iqm, median)]
    assert nature == f"| nature2015 | 1,500,000 | 2 | 6 | {percent[0]} | {percent[1]} | — | — |"
    assert nature.strip("| ") in printed.out.splitlines()  # printed too
    # the training protocol: each run's training games in 1.25M-1.5M, beside Dopamine's
    training = next(line for line in lines if line.startswith("| training | 1,500,000 |"))
    theirs = [[human_normalised(rom, s) or 0.0 for s in dopamine_scores(rom, 1_500_000) or []]
              for rom in ("breakout", "pong")]  # fmt: skip
    dopamine = [e.scaled(100).text("{:.0f}%") for e in aggregates(theirs)]
    assert training.endswith(f"| {dopamine[0]} | {dopamine[1]} |"), training
    assert training.split(" | ")[2:4] == ["2", "6"]
    pong_training = next(line for line in lines if line.startswith("| PongNoFrameskip-v4 | trai"))
    window = [float(np.mean([p + (-1) ** i for i in range(10)])) for p in pong]
    assert pong_training.split(" | ")[4] == str(game_mean(window))
    assert pong_training.endswith(f"| {game_mean(dopamine_scores('pong', 1_500_000) or [])} |")
    assert curves.read_bytes().startswith(b"\x89PNG")


def test_the_aggregate_row_says_when_games_have_different_numbers_of_runs() -> None:
    """The row says how many runs each game has; each game still weighs the same: Breakout's one
    run counts three times beside Pong's three, so the IQM is of 0.1, 0.2, 0.3, 0.5, 0.5, 0.5
    with one cut at each end, 38% (pooled as they are, 0.1-0.5 would give 25%)."""
    from dqn_mlx.report.table import _aggregate_lines

    even = {("nature2015", 1_500_000): {"pong": [0.1, 0.2], "breakout": [0.5, 0.6]}}
    uneven = {("nature2015", 1_500_000): {"pong": [0.1, 0.2, 0.3], "breakout": [0.5]}}
    assert _aggregate_lines(even)[2].startswith("| nature2015 | 1,500,000 | 2 | 4 | ")
    uneven_row = _aggregate_lines(uneven)[2]
    assert uneven_row.startswith("| nature2015 | 1,500,000 | 2 | 4 (1-3 per game) | 38% | ")


def test_the_figure_draws_seeds_as_mean_and_range_and_a_performance_profile() -> None:
    from dqn_mlx.report.plots import learning_curves_figure

    records = [
        [{"epoch": 1, "agent_steps": 100, "emulator_frames": 400, "eval_score_mean": score,
          "eval_games_completed": 1, "train_score_mean": None}]
        for score in (1.0, 2.0, 6.0)
    ]  # fmt: skip
    records[2][0]["eval_games_completed"] = 0  # no score: out of the mean and the band
    runs = [("PongNoFrameskip-v4", Path(f"w/Pong/seed{i}"), r) for i, r in enumerate(records)]
    plt, fig = learning_curves_figure(runs, [("ours", [[0.1], [0.5]]), ("theirs", [[0.2]])])
    pong, profile = fig.axes[0], fig.axes[1]
    (mean,) = pong.get_lines()
    assert list(mean.get_ydata()) == [1.5]
    assert [t.get_text() for t in pong.get_legend().get_texts()] == [
        "3 runs: mean, lowest to highest"
    ]
    assert profile.get_title() == "performance profile"
    ours, theirs = profile.get_lines()
    assert ours.get_ydata()[0] == 1.0 and ours.get_ydata()[-1] == 0.0
    assert theirs.get_ydata()[0] == 1.0 and theirs.get_ydata()[-1] == 0.0
    assert [t.get_text() for t in profile.get_legend().get_texts()] == [
        "ours (2 runs)",
        "theirs (1 runs)",
    ]
    plt.close(fig)
