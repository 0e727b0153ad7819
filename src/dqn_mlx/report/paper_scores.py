"""The papers' score tables, for the results report (``--mode report``).

Sources, the papers themselves:
- ``TABLE1_2013``: Mnih et al. 2013, "Playing Atari with Deep Reinforcement Learning", Table 1
  (rows Random, DQN, Human, DQN Best; average total reward of an epsilon=0.05 policy for a
  fixed number of steps; "Best" is the best single episode).
- ``NATURE_2015``: Mnih et al. 2015, Nature 518, Extended Data Table 2 (no-op starts; 30
  episodes of up to 5 minutes, epsilon 0.05): Random, Human, DQN mean and std.
- ``DOPAMINE_RUNS``: not a paper's table but the anchor at a laptop's budget: Dopamine's
  published training curves (google/dopamine ``baselines/atari/data/<game>.json``, commit
  5873f54; agent "DQN (Adam + MSE in JAX)", the setting of our ``laptop`` preset; 5 runs,
  sticky actions, epsilon 0.01 after 250,000 agent steps), shipped as data in
  ``dopamine_adam_mse.json``: per iteration of ``DOPAMINE_ITERATION`` agent steps, each run's
  mean training return (its first 8 iterations, 2M agent steps). ``DOPAMINE_ADAM_MSE`` is
  their range per iteration.
Keys are ALE ROM names.
"""

from __future__ import annotations

import json
from pathlib import Path

TABLE1_2013: dict[str, dict[str, float]] = {
    "beam_rider": {"random": 354, "dqn": 4092, "human": 7456, "dqn_best": 5184},
    "breakout": {"random": 1.2, "dqn": 168, "human": 31, "dqn_best": 225},
    "enduro": {"random": 0, "dqn": 470, "human": 368, "dqn_best": 661},
    "pong": {"random": -20.4, "dqn": 20, "human": -3, "dqn_best": 21},
    "qbert": {"random": 157, "dqn": 1952, "human": 18900, "dqn_best": 4500},
    "seaquest": {"random": 110, "dqn": 1705, "human": 28010, "dqn_best": 1740},
    "space_invaders": {"random": 179, "dqn": 581, "human": 3690, "dqn_best": 1075},
}

NATURE_2015: dict[str, dict[str, float]] = {
    "beam_rider": {"random": 363.9, "human": 5774.7, "dqn": 6846, "dqn_std": 1619},
    "breakout": {"random": 1.7, "human": 31.8, "dqn": 401.2, "dqn_std": 26.9},
    "enduro": {"random": 0.0, "human": 309.6, "dqn": 301.8, "dqn_std": 24.6},
    "pong": {"random": -20.7, "human": 9.3, "dqn": 18.9, "dqn_std": 1.3},
    "qbert": {"random": 163.9, "human": 13455, "dqn": 10596, "dqn_std": 3294},
    "seaquest": {"random": 68.4, "human": 20181.8, "dqn": 5286, "dqn_std": 1310},
    "space_invaders": {"random": 148.0, "human": 1652.3, "dqn": 1976, "dqn_std": 893},
}

DOPAMINE_FILE = Path(__file__).with_name("dopamine_adam_mse.json")


def _dopamine_runs() -> dict[str, list[list[float]]]:
    """``DOPAMINE_FILE``'s scores: per game, per iteration, each of the 5 runs' mean training
    return (the file names its source commit, agent and measure)."""
    scores: dict[str, list[list[float]]] = json.loads(DOPAMINE_FILE.read_text())["scores"]
    return scores


DOPAMINE_ITERATION = 250_000  # agent steps (1M emulator frames) behind each point of its curves
DOPAMINE_RUNS = _dopamine_runs()
DOPAMINE_ADAM_MSE: dict[str, list[tuple[float, float]]] = {
    rom: [(min(runs), max(runs)) for runs in curve] for rom, curve in DOPAMINE_RUNS.items()
}  # per iteration, the lowest and the highest run


def dopamine_iteration(agent_steps: int) -> int | None:
    """The index of Dopamine's iteration that ends at ``agent_steps`` (1,500,000: iteration 5,
    agent steps 1.25M-1.5M); None where none of its published ones ends there."""
    iteration, rest = divmod(agent_steps, DOPAMINE_ITERATION)
    if rest or not 0 < iteration <= min(len(curve) for curve in DOPAMINE_RUNS.values()):
        return None
    return iteration - 1


def dopamine_scores(rom: str, agent_steps: int) -> list[float] | None:
    """Dopamine's 5 runs' scores over the iteration that ends at ``agent_steps``; None where it
    has no iteration ending there, or not this game."""
    iteration = dopamine_iteration(agent_steps)
    if iteration is None or rom not in DOPAMINE_RUNS:
        return None
    return DOPAMINE_RUNS[rom][iteration]


def dopamine_range(rom: str, agent_steps: int) -> tuple[float, float] | None:
    """The lowest and the highest of ``dopamine_scores``."""
    runs = dopamine_scores(rom, agent_steps)
    return None if runs is None else (min(runs), max(runs))
