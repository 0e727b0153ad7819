"""Evaluation: an epsilon-greedy policy plays full games on its own environment instance.

A lost life never ends an evaluation game; scores are raw game scores. Two entry points:
``play_steps`` (2013 Sec. 5.1: a fixed number of agent steps, the average over the episodes
completed) and ``play_episodes`` (a fixed number of full games).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from dqn_mlx.env import PixelEnv, StackedFrames
from dqn_mlx.network import QNetwork

Policy = Callable[[np.ndarray], int]


def greedy_policy(network: QNetwork) -> Policy:
    """argmax_a Q(s, a) for one uint8 stack (history, 84, 84)."""

    def act(state: np.ndarray) -> int:
        q = network(mx.array(state[None]))  # (1, actions)
        return int(mx.argmax(q, axis=1).item())  # type: ignore[arg-type]

    return act


def epsilon_greedy(
    policy: Policy, epsilon: float, num_actions: int, rng: np.random.Generator
) -> Policy:
    """With probability epsilon a uniformly random action, else the policy's."""

    def act(state: np.ndarray) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(num_actions))
        return policy(state)

    return act


@dataclass
class EvalResult:
    """Raw scores of the episodes played, and how much was played."""

    scores: list[float]
    agent_steps: int
    completed: bool  # False when a step budget ended with no finished episode

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else 0.0


def _play(
    env: PixelEnv,
    act: Policy,
    history: int,
    max_steps: int | None,
    max_episodes: int | None,
    seed: int | None,
) -> EvalResult:
    stack = StackedFrames(history)
    state = stack.reset(env.reset(seed))
    scores: list[float] = []
    score, steps = 0.0, 0
    while (max_steps is None or steps < max_steps) and (
        max_episodes is None or len(scores) < max_episodes
    ):
        step = env.step(act(state))
        score += step.reward
        steps += 1
        if step.game_over or step.truncated:
            scores.append(score)
            score = 0.0
            state = stack.reset(step.frame)
        else:
            state = stack.push(step.frame)
    if not scores:  # the budget ran out inside the first game: report what it reached
        return EvalResult([score], steps, completed=False)
    return EvalResult(scores, steps, completed=True)


def play_steps(
    env: PixelEnv, act: Policy, history: int, agent_steps: int, seed: int | None = None
) -> EvalResult:
    """Play ``agent_steps`` steps from a fresh game (seeded with ``seed``); score = mean over
    completed games."""
    return _play(env, act, history, agent_steps, None, seed)


def play_episodes(
    env: PixelEnv, act: Policy, history: int, episodes: int, seed: int | None = None
) -> EvalResult:
    """Play ``episodes`` full games from a fresh game (seeded with ``seed``)."""
    return _play(env, act, history, None, episodes, seed)


def average_max_q(network: QNetwork, states: np.ndarray, batch_size: int = 256) -> float:
    """Mean over held-out states of max_a Q(s, a) (2013 Sec. 5.1, Figure 2), in batches."""
    total = 0.0
    for start in range(0, len(states), batch_size):
        q = network(mx.array(states[start : start + batch_size]))  # (batch, actions)
        total += float(mx.sum(mx.max(q, axis=1)).item())  # type: ignore[arg-type]
    return total / max(len(states), 1)
