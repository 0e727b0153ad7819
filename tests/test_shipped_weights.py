"""The trained checkpoints in ``weights/`` load with today's code and play real games better than
chance, so that a format change can never strand them (and the README's eval command works on a
fresh clone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from compute import COMPUTE

from dqn_mlx.core.env import make_atari_env
from dqn_mlx.core.policy import epsilon_greedy, greedy_policy
from dqn_mlx.evaluate import play_steps
from dqn_mlx.run.checkpoint import load_checkpoint

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
RUN = "laptop-seed0-1500k"  # README "Results"; the final checkpoint of each
SHIPPED = [
    WEIGHTS / game / RUN / "epoch_15.safetensors"
    for game in ("BreakoutNoFrameskip-v4", "PongNoFrameskip-v4")
]
AGENT_STEPS = 600
MARGIN = 4  # points, net (won - lost) over AGENT_STEPS agent steps


def test_the_shipped_runs_are_complete() -> None:
    """What README "Results" and its quick start point to."""
    for checkpoint in SHIPPED:
        folder = checkpoint.parent
        for name in (
            checkpoint.name,
            "metrics.jsonl",
            "games.csv",
            "updates.csv",
            "rewards_plot.png",
            "q_values_plot.png",
            "RESULTS.md",
            "epoch_15.eval_nature2015.json",
        ):
            assert (folder / name).is_file(), folder / name


def net_points(path: Path, epsilon: float, seed: int) -> float:
    """Points won minus points lost (raw rewards) in ``AGENT_STEPS`` agent steps of
    epsilon-greedy play by the checkpoint, from a fresh game seeded with ``seed``."""
    ckpt = load_checkpoint(path, COMPUTE.layers)
    cfg = ckpt.config
    env = make_atari_env(
        ckpt.env_id,
        cfg.frame_skip,
        cfg.noop_max,
        cfg.max_episode_frames,
        seed,
        cfg.fire_after_life_loss,
    )
    assert env.action_meanings == ckpt.action_meanings
    rng = np.random.default_rng(seed)
    act = epsilon_greedy(greedy_policy(ckpt.network), epsilon, env.num_actions, rng)
    rewards: list[float] = []
    try:
        play_steps(
            env, act, cfg.history_length, AGENT_STEPS, seed, lambda _, s: rewards.append(s.reward)
        )
    finally:
        env.close()
    assert len(rewards) == AGENT_STEPS
    return float(sum(rewards))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parts[-3])
def test_a_shipped_checkpoint_plays_better_than_chance(path: Path) -> None:
    """Against a uniformly random policy on the same seeded game. Measured on the shipped
    checkpoints over 600 agent steps, seeds 1000-1002: Breakout 18-22 points against the
    random policy's 3-6; Pong -3 to 0 against -13 to -16."""
    trained = net_points(path, 0.05, seed=1000)
    chance = net_points(path, 1.0, seed=1000)
    assert trained >= chance + MARGIN, f"{path}: trained {trained} vs random {chance}"
