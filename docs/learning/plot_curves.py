"""Draw docs/learning/breakout_presets.png: our three presets on Breakout beside CleanRL and
Dopamine, at equal agent steps, from the metrics.jsonl files kept next to this script.

    uv run python docs/learning/plot_curves.py

The run commands behind each metrics file are in docs/learning.md. The reference points:

- CleanRL ``dqn_atari.py`` (vwxyzjn/cleanrl at fe8d8a03, PyTorch 2.13 CPU, gymnasium 0.29.1,
  ale-py 0.9.1) on our 2-core machine, on the same schedule (issue 14): mean training return
  per 40,000 agent steps, full games.
- Dopamine's DQN (google/dopamine, ``baselines/atari/data/breakout.json``, the file's first two
  runs): mean training return per iteration of 250,000 agent steps, sticky actions (p=0.25)
  and its own schedule (epsilon 1 -> 0.01 over 250,000 agent steps, target every 8,000).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RUNS = {  # label -> metrics file beside this script
    "laptop (ours)": "laptop_breakout_metrics.jsonl",
    "nature2015 (ours)": "nature2015_breakout_metrics.jsonl",
    "nips2013 (ours)": "nips2013_breakout_metrics.jsonl",
    "nips2013 with Adam, mean loss (ours)": "nips2013_adam_breakout_metrics.jsonl",
}
CLEANRL_WINDOW = 40_000
CLEANRL_RETURNS = [1.4, 1.3, 1.3, 2.8, 9.7, 14.1, 22.7, 24.0, 28.7, 27.2]
DOPAMINE_ITERATION = 250_000
DOPAMINE_RETURNS = [[1.571, 2.964], [1.651, 3.056]]  # two runs, iterations 0 and 1


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(out: Path = HERE / "breakout_presets.png") -> None:
    fig, (score_ax, q_ax) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for label, name in RUNS.items():
        path = HERE / name
        if not path.exists():
            print(f"skipped {label}: no {path.name}", file=sys.stderr)
            continue
        records = read_records(path)
        steps = [r["agent_steps"] for r in records]
        score_ax.plot(steps, [r["train_score_mean"] for r in records], "o-", label=label)
        q_ax.plot(steps, [r["avg_max_q"] for r in records], "o-", label=label)
    cleanrl_steps = [CLEANRL_WINDOW * (i + 1) for i in range(len(CLEANRL_RETURNS))]
    score_ax.plot(cleanrl_steps, CLEANRL_RETURNS, "k^--", label="CleanRL dqn_atari (our machine)")
    for i, run in enumerate(DOPAMINE_RETURNS):
        steps = [DOPAMINE_ITERATION * (k + 1) for k in range(len(run))]
        score_ax.plot(
            steps,
            run,
            "s:",
            color="gray",
            label="Dopamine DQN (sticky actions)" if i == 0 else None,
        )
    score_ax.set_title("Breakout: mean training return (full games)")
    score_ax.set_ylabel("raw game score per game")
    q_ax.set_title("Breakout: average max-Q on held-out states")
    q_ax.set_ylabel("average max_a Q(s, a)")
    q_ax.set_yscale("symlog", linthresh=0.1)
    for ax in (score_ax, q_ax):
        ax.set_xlabel("agent steps (1 agent step = 4 emulator frames)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
