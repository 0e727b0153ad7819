"""The per-epoch plots of 2013 Figure 2: average reward per episode and average max-Q."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dqn_mlx.files import atomic_write

REWARDS_PLOT = "rewards_plot.png"
Q_VALUES_PLOT = "q_values_plot.png"


def _figure(title: str, ylabel: str, xlabel: str = "training epoch") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def draw_plots(run_dir: Path, records: list[dict[str, Any]], env_id: str) -> None:
    """Redraw ``rewards_plot.png`` and ``q_values_plot.png`` in ``run_dir`` (atomically)."""
    epochs = [r["epoch"] for r in records]
    xlabel = epoch_axis_label(records)
    title = f"{env_id}: average reward per episode"
    plt, fig, ax = _figure(title, "raw game score per episode", xlabel)
    ax.plot(
        epochs, [r["eval_score_mean"] for r in records], "o-", label="evaluation (epsilon 0.05)"
    )
    unfinished = unfinished_eval_epochs(records)
    if unfinished:
        ax.plot(unfinished, [0.0] * len(unfinished), "kx", ms=9, label="no evaluation game ended")
    train = [
        (r["epoch"], r["train_score_mean"])
        for r in records
        if r.get("train_score_mean") is not None
    ]
    if train:
        ax.plot(*zip(*train, strict=True), "s--", alpha=0.6, label="training episodes")
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(run_dir) / REWARDS_PLOT, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)

    ylabel = "average max_a Q(s, a) on held-out states"
    plt, fig, ax = _figure(f"{env_id}: average action value", ylabel, xlabel)
    ax.plot(epochs, [r["avg_max_q"] for r in records], "o-", color="tab:red")
    fig.tight_layout()
    atomic_write(Path(run_dir) / Q_VALUES_PLOT, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def unfinished_eval_epochs(records: list[dict[str, Any]]) -> list[int]:
    """Epochs whose evaluation ended no game: scored 0 as DeepMind does, and marked on the plot
    so that 0 is not read as a real score (in Pong it would look like a good one)."""
    return [r["epoch"] for r in records if r.get("eval_games_completed") == 0]


def epoch_axis_label(records: list[dict[str, Any]]) -> str:
    """'training epoch (1 epoch = 2,500 updates; run so far: 130,000 agent steps)': the size
    from the first epoch's update count, the length so far from the last record."""
    if not records:
        return "training epoch"
    return (
        f"training epoch (1 epoch = {records[0]['updates']:,} updates; "
        f"run so far: {records[-1]['agent_steps']:,} agent steps)"
    )


def draw_value_trace(path: Path, max_q: list[float], rewards: list[float], title: str) -> None:
    """max_a Q(s, a) at every agent step of one game, score events marked (2013 Figure 3)."""
    plt, fig, ax = _figure(title, "max_a Q(s, a)")
    ax.set_xlabel("agent step within the game")
    ax.plot(range(len(max_q)), max_q, color="tab:blue", lw=1)
    events = [i for i, r in enumerate(rewards) if r != 0]
    for i in events:
        ax.axvline(i, color="tab:green" if rewards[i] > 0 else "tab:red", alpha=0.35, lw=0.8)
    if events:
        ax.plot([], [], color="tab:green", alpha=0.5, label="score event (reward)")
        ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
