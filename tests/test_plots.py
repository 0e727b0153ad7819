"""The per-epoch plots: real PNG files, and an x axis that names its units."""

from __future__ import annotations

from dqn_mlx.report.plots import (
    Q_VALUES_PLOT,
    REWARDS_PLOT,
    draw_plots,
    epoch_axis_label,
    unfinished_eval_epochs,
)


def _record(epoch: int) -> dict[str, object]:
    return {
        "epoch": epoch,
        "agent_steps": 10_000 * epoch,
        "updates": 2_500 * epoch,
        "train_score_mean": 1.0 + epoch,
        "eval_score_mean": 2.0 * epoch,
        "avg_max_q": 0.1 * epoch,
    }


def test_the_epoch_axis_names_updates_per_epoch_and_agent_steps_so_far():
    label = epoch_axis_label([_record(1), _record(2), _record(3)])
    assert label == "training epoch (1 epoch = 2,500 updates; run so far: 30,000 agent steps)"
    assert epoch_axis_label([]) == "training epoch"


def test_both_plots_are_written_as_png(tmp_path):
    draw_plots(tmp_path, [_record(1), _record(2)], "BreakoutNoFrameskip-v4")
    for name in (REWARDS_PLOT, Q_VALUES_PLOT):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([REWARDS_PLOT, Q_VALUES_PLOT])


def test_epochs_whose_evaluation_ended_no_game_are_marked(tmp_path):
    records = [_record(1), {**_record(2), "eval_games_completed": 0, "eval_score_mean": 0.0}]
    records[0]["eval_games_completed"] = 3
    assert unfinished_eval_epochs(records) == [2]
    assert unfinished_eval_epochs([_record(1)]) == []  # metrics written before the field
    draw_plots(tmp_path, records, "PongNoFrameskip-v4")
    assert (tmp_path / REWARDS_PLOT).read_bytes().startswith(b"\x89PNG")


def test_the_epoch_axis_ticks_whole_epochs_only() -> None:
    from dqn_mlx.report.plots import _figure

    plt, fig, ax = _figure("t", "y")
    ax.plot([1, 2], [0.0, 1.0])
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
    plt.close(fig)
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
