"""The per-epoch plots: real PNG files, and an x axis that names its units."""

from __future__ import annotations

from dqn_mlx.report.plots import (
    Q_VALUES_PLOT,
    REWARDS_PLOT,
    draw_plots,
    epoch_axis_label,
    q_values_figure,
    rewards_figure,
)


def _record(epoch: int) -> dict[str, object]:
    return {
        "epoch": epoch,
        "agent_steps": 10_000 * epoch,
        "emulator_frames": 40_000 * epoch,
        "updates": 2_500 * epoch,
        "train_score_mean": 1.0 + epoch,
        "eval_score_mean": 2.0 * epoch,
        "avg_max_q": 0.1 * epoch,
    }


def test_both_plots_have_agent_steps_on_the_x_axis_and_the_epochs_along_the_top():
    records = [_record(1), _record(2), _record(3)]
    for plt, fig in (rewards_figure(records, "Pong"), q_values_figure(records, "Pong")):
        ax = fig.axes[0]
        assert ax.get_xlabel() == "agent steps (x 4 = emulator frames)"
        assert list(ax.get_lines()[0].get_xdata()) == [10_000, 20_000, 30_000]
        top = ax.child_axes[0]  # the secondary axis
        assert top.get_xlabel() == "epoch (2,500 updates each)"
        assert [t.get_text() for t in top.get_xticklabels()] == ["1", "2", "3"]
        assert list(top.get_xticks()) == [10_000, 20_000, 30_000]
        plt.close(fig)
    assert epoch_axis_label([]) == "epoch"


def test_a_long_run_marks_at_most_twelve_epochs_and_always_the_last():
    plt, fig = rewards_figure([_record(e) for e in range(1, 201)], "Breakout")
    labels = [t.get_text() for t in fig.axes[0].child_axes[0].get_xticklabels()]
    plt.close(fig)
    assert len(labels) <= 12 and labels[-1] == "200"


def test_both_plots_are_written_as_png(tmp_path):
    draw_plots(tmp_path, [_record(1), _record(2)], "BreakoutNoFrameskip-v4")
    for name in (REWARDS_PLOT, Q_VALUES_PLOT):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([REWARDS_PLOT, Q_VALUES_PLOT])


def _marks(ax) -> list[list[float]]:
    """The agent steps of the black x's on a panel: the epochs whose evaluation ended no game."""
    return [list(line.get_xdata()) for line in ax.get_lines() if line.get_marker() == "x"]


def test_epochs_whose_evaluation_ended_no_game_are_marked(tmp_path):
    from pathlib import Path

    from dqn_mlx.report.plots import UNFINISHED, learning_curves_figure

    records = [_record(1), {**_record(2), "eval_games_completed": 0, "eval_score_mean": 0.0}]
    records[0]["eval_games_completed"] = 3
    plt, fig = rewards_figure(records, "BeamRiderNoFrameskip-v4")
    assert _marks(fig.axes[0]) == [[20_000]]
    plt.close(fig)
    plt, fig = rewards_figure([_record(1)], "Pong")  # metrics written before the field
    assert _marks(fig.axes[0]) == []
    plt.close(fig)
    runs = [("BeamRiderNoFrameskip-v4", Path("w/BeamRider/a"), records),
            ("PongNoFrameskip-v4", Path("w/Pong/a"), [_record(1)])]  # fmt: skip
    plt, fig = learning_curves_figure(runs)
    assert [_marks(ax) for ax in fig.axes] == [[[20_000]], []]
    assert UNFINISHED in [text.get_text() for text in fig.legends[0].get_texts()]
    plt.close(fig)
    plt, fig = learning_curves_figure(runs[1:])
    assert UNFINISHED not in [text.get_text() for text in fig.legends[0].get_texts()]
    plt.close(fig)
    draw_plots(tmp_path, records, "BeamRiderNoFrameskip-v4")
    assert (tmp_path / REWARDS_PLOT).read_bytes().startswith(b"\x89PNG")


def test_agent_step_ticks_read_as_counts():
    from dqn_mlx.report.plots import short_count

    assert [short_count(n) for n in (0, 800, 250_000, 1_500_000)] == ["0", "800", "250k", "1.5M"]


def test_the_learning_curves_have_one_panel_a_game_and_a_colour_a_run(tmp_path):
    from pathlib import Path

    from dqn_mlx.report.plots import (
        DOPAMINE_LABEL,
        LEARNING_CURVES,
        draw_learning_curves,
        learning_curves_figure,
    )

    runs = [
        ("PongNoFrameskip-v4", Path("w/Pong/a"), [_record(1), _record(2)]),
        ("BreakoutNoFrameskip-v4", Path("w/Breakout/a"), [_record(1), _record(2), _record(3)]),
        ("BreakoutNoFrameskip-v4", Path("w/Breakout/b"), [_record(1)]),
        ("EnduroNoFrameskip-v4", Path("w/Enduro/a"), [{**_record(1), "train_score_mean": None}]),
        ("SeaquestNoFrameskip-v4", Path("w/Seaquest/a"), [_record(1)]),
        ("QbertNoFrameskip-v4", Path("w/Qbert/a"), [_record(1)]),
    ]
    plt, fig = learning_curves_figure(runs)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [
        "BreakoutNoFrameskip-v4",
        "EnduroNoFrameskip-v4",
        "PongNoFrameskip-v4",
        "QbertNoFrameskip-v4",
        "SeaquestNoFrameskip-v4",
    ]
    assert len(fig.axes) == 8  # two rows of four, the last three hidden
    breakout, enduro = panels[0], panels[1]
    # run a: evaluation and training; run b: the same, in the next colour
    lines = breakout.get_lines()
    assert [list(line.get_xdata()) for line in lines] == [
        [10_000, 20_000, 30_000],
        [10_000, 20_000, 30_000],
        [10_000],
        [10_000],
    ]
    assert list(lines[0].get_ydata()) == [2.0, 4.0, 6.0]  # evaluation
    assert list(lines[1].get_ydata()) == [2.0, 3.0, 4.0]  # training episodes
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [t.get_text() for t in breakout.get_legend().get_texts()] == ["a", "b"]
    assert len(enduro.get_lines()) == 1 and enduro.get_legend() is None  # no training game ended
    assert breakout.get_xlabel() == "agent steps (x 4 = emulator frames)"
    assert not any(ax.collections for ax in panels)  # no run reached a Dopamine iteration's end
    assert DOPAMINE_LABEL not in [text.get_text() for text in fig.legends[0].get_texts()]
    plt.close(fig)
    draw_learning_curves(tmp_path / LEARNING_CURVES, runs)
    assert (tmp_path / LEARNING_CURVES).read_bytes().startswith(b"\x89PNG")


def test_dopamines_range_is_drawn_behind_a_game_over_the_iterations_its_runs_reached():
    """Breakout's runs reached 600,000 agent steps: Dopamine's iterations 0 and 1 (ending at
    250k and 500k), as one band from its lowest to its highest run; a game it did not publish
    gets none."""
    from pathlib import Path

    from dqn_mlx.report.paper_scores import DOPAMINE_ADAM_MSE
    from dqn_mlx.report.plots import DOPAMINE_LABEL, learning_curves_figure

    long = [{**_record(e), "agent_steps": 100_000 * e} for e in range(1, 7)]
    runs = [("BreakoutNoFrameskip-v4", Path("w/Breakout/a"), long),
            ("BreakoutNoFrameskip-v4", Path("w/Breakout/b"), long[:2]),
            ("MsPacmanNoFrameskip-v4", Path("w/MsPacman/a"), long)]  # fmt: skip
    plt, fig = learning_curves_figure(runs)
    breakout, ms_pacman = fig.axes[0], fig.axes[1]
    assert ms_pacman.get_title() == "MsPacmanNoFrameskip-v4" and not ms_pacman.collections
    (band,) = breakout.collections
    extent = band.get_paths()[0].get_extents()
    (low0, high0), (low1, high1) = DOPAMINE_ADAM_MSE["breakout"][:2]
    assert (extent.x0, extent.x1) == (0, 500_000)
    assert (extent.y0, extent.y1) == (min(low0, low1), max(high0, high1))
    assert DOPAMINE_LABEL in [text.get_text() for text in fig.legends[0].get_texts()]
    plt.close(fig)
