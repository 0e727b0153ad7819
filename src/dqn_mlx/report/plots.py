"""The per-epoch plots of 2013 Figure 2: average reward per episode and average max-Q, against
agent steps (the unit of every other figure and of TensorBoard), epochs along the top; and the
report's figure of every game's learning curve, one panel a game."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dqn_mlx.files import atomic_write

REWARDS_PLOT = "rewards_plot.png"
Q_VALUES_PLOT = "q_values_plot.png"
LEARNING_CURVES = "learning_curves.png"


def _figure(title: str, ylabel: str, xlabel: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: short_count(x)))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return plt, fig, ax


def draw_plots(run_dir: Path, records: list[dict[str, Any]], env_id: str) -> None:
    """Redraw ``rewards_plot.png`` and ``q_values_plot.png`` in ``run_dir`` (atomically)."""
    _save(Path(run_dir) / REWARDS_PLOT, *rewards_figure(records, env_id))
    _save(Path(run_dir) / Q_VALUES_PLOT, *q_values_figure(records, env_id))


def _save(path: Path, plt: Any, fig: Any) -> None:
    if fig.get_layout_engine() is None:  # (a figure with a layout of its own keeps it)
        fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def rewards_figure(records: list[dict[str, Any]], env_id: str) -> Any:
    """2013 Figure 2 (left): each epoch's evaluation score and mean training score, against
    agent steps (TensorBoard's axis too), with the epochs marked along the top."""
    plt, fig, ax = _figure(
        f"{env_id}: average reward per episode", "raw game score per episode", steps_label(records)
    )
    steps = [r["agent_steps"] for r in records]
    evaluations = [_score(r, "eval_score_mean") for r in records]  # no game ended: a gap
    ax.plot(steps, evaluations, "o-", label="evaluation (epsilon 0.05)")
    mark_unfinished_evaluations(ax, records)
    train = [(r["agent_steps"], r["train_score_mean"]) for r in records
             if r.get("train_score_mean") is not None]  # fmt: skip
    if train:
        ax.plot(*zip(*train, strict=True), "s--", alpha=0.6, label="training episodes")
    ax.legend()
    _mark_epochs(ax, records)
    return plt, fig


def q_values_figure(records: list[dict[str, Any]], env_id: str) -> Any:
    """2013 Figure 2 (right): the average max-Q on the held-out states, against agent steps."""
    ylabel = "average max_a Q(s, a) on held-out states"
    plt, fig, ax = _figure(f"{env_id}: average action value", ylabel, steps_label(records))
    ax.plot([r["agent_steps"] for r in records], [r["avg_max_q"] for r in records], "o-",
            color="tab:red")  # fmt: skip
    _mark_epochs(ax, records)
    return plt, fig


Run = tuple[str, Path, list[dict[str, Any]]]  # env id, run folder, its epochs' records


Profile = tuple[str, list[list[float]]]  # a label, and each game's runs' human-normalised scores


def learning_curves_figure(runs: list[Run], profiles: list[Profile] | None = None) -> Any:
    """One panel a game: the epoch evaluations (solid, epsilon 0.05) beside the mean score of
    the training episodes that ended in each epoch (dashed), raw game scores against agent
    steps. Runs of a game that trained the same budget (seeds of one setting) are drawn as
    their mean with the band from their lowest to their highest; a run alone, in its own
    colour. Behind them, in grey, the range of Dopamine's 5 runs' training curves
    (``paper_scores.DOPAMINE_ADAM_MSE``) over the agent steps the game's runs reached. With
    ``profiles``, a last panel: the performance profile of each (``profile_panel``). What
    README "Results" shows for the games of 2013 Table 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    from dqn_mlx.core.env import resolve_game

    games = sorted({env_id for env_id, _, _ in runs})
    panels = len(games) + (1 if profiles else 0)
    columns = min(4, panels)
    rows = -(-panels // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4 * columns, 3.2 * rows + 0.4), dpi=100, squeeze=False,
        layout="constrained",
    )  # fmt: skip
    unfinished = dopamine = False
    for ax, env_id in zip(axes.flat, games, strict=False):
        own = [(folder.name, records) for game, folder, records in runs if game == env_id]
        reached = max((records[-1]["agent_steps"] for _, records in own if records), default=0)
        dopamine |= _draw_dopamine_range(ax, resolve_game(env_id).rom, reached)
        budgets = same_budget(own)
        for colour, group in enumerate(budgets):
            label = group_label(group) if len(budgets) > 1 or len(group) > 1 else None
            unfinished |= _draw_group(ax, f"C{colour}", label, [records for _, records in group])
        ax.set_title(env_id)
        ax.set_xlabel(steps_label(own[0][1]))
        ax.set_ylabel("raw game score per episode")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: short_count(x)))
        ax.grid(alpha=0.3)
        if len(budgets) > 1 or len(budgets[0]) > 1:
            ax.legend(fontsize="small")
    if profiles:
        profile_panel(axes.flat[len(games)], profiles)
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    styles = [
        ("-", "o", "0.3", "evaluation (epsilon 0.05)"),
        ("--", "", "0.3", "training episodes"),
    ]
    if unfinished:
        styles.append(("", "x", "k", UNFINISHED))
    handles: list[Any] = [plt.Line2D([], [], color=c, ls=ls, marker=m) for ls, m, c, _ in styles]
    labels = [label for *_, label in styles]
    if dopamine:
        handles.append(Patch(color=DOPAMINE_GREY, alpha=DOPAMINE_ALPHA))
        labels.append(DOPAMINE_LABEL)
    fig.legend(handles, labels, loc="outside upper center", ncol=len(labels))
    return plt, fig


Named = tuple[str, list[dict[str, Any]]]  # a run's folder name and its epochs' records


def same_budget(own: list[Named]) -> list[list[Named]]:
    """A game's runs grouped by the agent steps they reached (the seeds of one setting reach
    the same epochs), in the order of their first run."""
    groups: dict[int, list[Named]] = {}
    for name, records in own:
        groups.setdefault(int(records[-1]["agent_steps"]), []).append((name, records))
    return list(groups.values())


def group_label(group: list[Named]) -> str:
    """A run's folder name; several runs' count."""
    return group[0][0] if len(group) == 1 else f"{len(group)} runs: mean, lowest to highest"


def _draw_group(ax: Any, colour: str, label: str | None, runs: list[list[dict[str, Any]]]) -> bool:
    """One run's curves, or several runs' mean with their range as a band; whether an
    evaluation ended no game (an epoch where none of the runs' did is marked)."""
    if len(runs) == 1:
        return _draw_curves(ax, colour, label, runs[0])
    epochs = min(len(records) for records in runs)
    steps = [runs[0][e]["agent_steps"] for e in range(epochs)]
    for key, style in (("eval_score_mean", "o-"), ("train_score_mean", "--")):
        values = np.array([[_score(records[e], key) for e in range(epochs)] for records in runs])
        shown = ~np.all(np.isnan(values), axis=0)
        if not shown.any():
            continue
        x, values = np.array(steps)[shown], values[:, shown]
        ax.plot(x, np.nanmean(values, axis=0), style, color=colour, ms=3,
                label=label if key == "eval_score_mean" else None)  # fmt: skip
        ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=colour,
                        alpha=0.2 if key == "eval_score_mean" else 0.1, lw=0)  # fmt: skip
    none_ended = [
        {**runs[0][e], "eval_games_completed": 0}
        for e in range(epochs)
        if all(records[e].get("eval_games_completed") == 0 for records in runs)
    ]
    return mark_unfinished_evaluations(ax, none_ended, label=None)


def _score(record: dict[str, Any], key: str) -> float:
    """An epoch's score, NaN where it has none: no training game ended, or an evaluation that
    ended no game (its 0 is no score)."""
    if key == "eval_score_mean" and record.get("eval_games_completed") == 0:
        return float("nan")
    value = record.get(key)
    return float("nan") if value is None else float(value)


PROFILE_POINTS = 200


def profile_panel(ax: Any, profiles: list[Profile]) -> None:
    """The performance profile (Agarwal et al., NeurIPS 2021): for each human-normalised score
    tau, the fraction of (game, run) scores above it, each game weighing the same, one curve a
    set (``report.table`` chooses them: ours at each protocol, Dopamine's beside ours at its
    measure)."""
    from dqn_mlx.report.aggregate import performance_profile

    top = max((score for _, games in profiles for runs in games for score in runs), default=0.0)
    thresholds = np.linspace(0.0, max(1.0, 1.05 * top), PROFILE_POINTS)
    for colour, (label, games) in enumerate(profiles):
        runs = sum(len(game) for game in games)
        ax.step(thresholds, performance_profile(games, thresholds), where="post",
                color=f"C{colour}", label=f"{label} ({runs} runs)")  # fmt: skip
    ax.set_title("performance profile")
    ax.set_xlabel("human-normalised score tau")
    ax.set_ylabel("fraction of runs with score > tau\n(mean over games)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


DOPAMINE_GREY, DOPAMINE_ALPHA = "0.55", 0.3
DOPAMINE_LABEL = "Dopamine DQN (Adam + MSE) training, 5 runs' range per 250k agent steps"


def _draw_dopamine_range(ax: Any, rom: str, reached: int) -> bool:
    """Dopamine's range for each of its iterations that ends by agent step ``reached``, as a
    grey band of steps (its curves are one mean per iteration); whether there was one."""
    from dqn_mlx.report.paper_scores import DOPAMINE_ADAM_MSE, DOPAMINE_ITERATION

    curve = DOPAMINE_ADAM_MSE.get(rom, [])[: reached // DOPAMINE_ITERATION]
    if not curve:
        return False
    edges = [i * DOPAMINE_ITERATION for i in range(len(curve) + 1)]
    low, high = [lo for lo, _ in curve], [hi for _, hi in curve]
    ax.fill_between(edges, low + low[-1:], high + high[-1:], step="post",
                    color=DOPAMINE_GREY, alpha=DOPAMINE_ALPHA, lw=0)  # fmt: skip
    return True


def _draw_curves(ax: Any, colour: str, label: str | None, records: list[dict[str, Any]]) -> bool:
    """One run's curves; whether an evaluation of it ended no game (marked)."""
    steps = [r["agent_steps"] for r in records]
    evaluations = [_score(r, "eval_score_mean") for r in records]  # no game ended: a gap
    ax.plot(steps, evaluations, "o-", color=colour, ms=3, label=label)
    train = [(r["agent_steps"], r["train_score_mean"]) for r in records
             if r.get("train_score_mean") is not None]  # fmt: skip
    if train:
        ax.plot(*zip(*train, strict=True), "--", color=colour, alpha=0.7)
    return mark_unfinished_evaluations(ax, records, label=None)


def draw_learning_curves(
    path: Path, runs: list[Run], profiles: list[Profile] | None = None
) -> None:
    """Write ``learning_curves_figure`` of ``runs`` (and ``profiles``) to ``path``
    (atomically)."""
    _save(Path(path), *learning_curves_figure(runs, profiles))


UNFINISHED = "no evaluation game ended"


def mark_unfinished_evaluations(
    ax: Any, records: list[dict[str, Any]], label: str | None = UNFINISHED
) -> bool:
    """A black x at 0 on each epoch whose evaluation ended no game: DeepMind scores it 0, but
    it is no score (in Pong 0 would look like a good one; in Beam Rider a game can outlast the
    10,000 agent steps of an evaluation), so the curve leaves a gap there and the x says why.
    Whether any was."""
    unfinished = [r["agent_steps"] for r in records if r.get("eval_games_completed") == 0]
    if unfinished:
        ax.plot(unfinished, [0.0] * len(unfinished), "kx", ms=9, label=label)
    return bool(unfinished)


def steps_label(records: list[dict[str, Any]]) -> str:
    """'agent steps (x 4 = emulator frames)': the frame skip read off the records."""
    if not records or not records[-1].get("agent_steps"):
        return "agent steps"
    skip = records[-1]["emulator_frames"] / records[-1]["agent_steps"]
    return f"agent steps (x {skip:g} = emulator frames)"


def epoch_axis_label(records: list[dict[str, Any]]) -> str:
    """The top axis: 'epoch (2,500 updates each)', the size from the first epoch's count."""
    return f"epoch ({records[0]['updates']:,} updates each)" if records else "epoch"


def short_count(n: float) -> str:
    """1,500,000 -> '1.5M', 250,000 -> '250k', 800 -> '800'."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:g}{suffix}"
    return f"{n:g}"


MAX_EPOCH_TICKS = 12


def _mark_epochs(ax: Any, records: list[dict[str, Any]]) -> None:
    """Epoch numbers along the top axis, at the agent step each epoch ended (at most
    ``MAX_EPOCH_TICKS`` of them, evenly thinned)."""
    if not records:
        return
    every = -(-len(records) // MAX_EPOCH_TICKS)
    shown = records[::-1][::every][::-1]  # always the newest epoch
    top = ax.secondary_xaxis("top")
    top.set_xticks([r["agent_steps"] for r in shown], [str(r["epoch"]) for r in shown])
    top.set_xlabel(epoch_axis_label(records))


def draw_value_trace(path: Path, max_q: list[float], rewards: list[float], title: str) -> None:
    """max_a Q(s, a) at every agent step of one game, score events marked (2013 Figure 3)."""
    plt, fig, ax = _figure(title, "max_a Q(s, a)", "agent step within the game")
    ax.plot(range(len(max_q)), max_q, color="tab:blue", lw=1)
    events = [i for i, r in enumerate(rewards) if r != 0]
    for i in events:
        ax.axvline(i, color="tab:green" if rewards[i] > 0 else "tab:red", alpha=0.35, lw=0.8)
    if events:
        ax.plot([], [], color="tab:green", alpha=0.5, label="score event (reward)")
        ax.legend()
    _save(Path(path), plt, fig)
