"""Draw docs/results/long_runs.png: the shipped Breakout and Pong runs (README "Results"), from
the files shipped with them in ``weights/<env-id>/<run>/`` (``games.csv``, ``metrics.jsonl``).

    uv run python docs/results/plot_long_runs.py

Beside them, Dopamine's DQN (google/dopamine, ``baselines/atari/data/<game>.json``: mean
training return per iteration of 250,000 agent steps, sticky actions p=0.25): the range of its
runs at 1M and 1.5M agent steps, as issue 17 quotes them.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNS = {  # game -> run folder
    "Breakout": ROOT / "weights/BreakoutNoFrameskip-v4/laptop-seed0-1500k",
    "Pong": ROOT / "weights/PongNoFrameskip-v4/laptop-seed0-1500k",
}
DOPAMINE = {  # game -> {agent steps: (lowest, highest) mean training return of its runs}
    "Breakout": {1_000_000: (5.9, 10.6), 1_500_000: (13.4, 15.9)},
    "Pong": {1_000_000: (-17.3, -13.2), 1_500_000: (-15.5, -3.3)},
}
WINDOW = 50  # training games per point of the moving average


def read_games(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(agent step at which each training game ended, its raw score)."""
    with open(folder / "games.csv") as f:
        rows = list(csv.DictReader(f))
    return (
        np.array([int(r["agent_step"]) for r in rows]),
        np.array([float(r["score"]) for r in rows]),
    )


def read_epochs(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


OUT = Path(__file__).resolve().parent / "long_runs.png"


def main(out: Path = OUT) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), dpi=100)
    q_ax = axes[2]
    for ax, (game, folder) in zip(axes[:2], RUNS.items(), strict=True):
        if not folder.exists():
            print(f"skipped {game}: no {folder}", file=sys.stderr)
            continue
        steps, scores = read_games(folder)
        if len(scores) >= WINDOW:
            mean = np.convolve(scores, np.ones(WINDOW) / WINDOW, mode="valid")
            ax.plot(steps[WINDOW - 1 :], mean, lw=1, label=f"training games (mean of {WINDOW})")
        epochs = read_epochs(folder)
        epoch_steps = [r["agent_steps"] for r in epochs]
        ax.plot(
            epoch_steps,
            [r["eval_score_mean"] for r in epochs],
            "o-",
            label="epoch evaluation (epsilon 0.05, 10,000 agent steps)",
        )
        for i, (at, (low, high)) in enumerate(DOPAMINE[game].items()):
            label = "Dopamine DQN (its runs)" if i == 0 else None
            ax.vlines(at, low, high, color="gray", lw=4, label=label)
        ax.set_title(f"{game}: raw score per game")
        ax.set_ylabel("raw game score")
        q_ax.plot(epoch_steps, [r["avg_max_q"] for r in epochs], "o-", label=game)
    q_ax.set_title("average max-Q on held-out states")
    q_ax.set_ylabel("average max_a Q(s, a)")
    for ax in axes:
        ax.set_xlabel("agent steps (1 agent step = 4 emulator frames)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
