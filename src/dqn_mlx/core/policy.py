"""The behaviour policy: epsilon-greedy with respect to Q, and epsilon's schedule.

- ``epsilon_greedy_actions``: for each game's state a uniformly random action with
  probability epsilon, else argmax_a Q(s, a; theta) (2013 Algorithm 1), the greedy ones in one
  compiled pass (``greedy_actions``) with the network's current weights;
- ``greedy_policy`` and ``epsilon_greedy``: the same for one state at a time (evaluation);
- ``exploration_rate``: epsilon is 1 during the random replay start, then annealed linearly
  over ``epsilon_decay_steps`` agent steps and fixed (both papers; counted from the replay
  start, as in DeepMind's code).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import mlx.core as mx
import numpy as np

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.network import QNetwork

Policy = Callable[[np.ndarray], int]  # one uint8 stack (history, 84, 84) -> an action
BatchPolicy = Callable[[np.ndarray], np.ndarray]  # stacks (n, history, 84, 84) -> (n,) actions


def greedy_actions(network: QNetwork) -> BatchPolicy:
    """argmax_a Q(s, a) for each of n uint8 stacks in one compiled pass, with ``network``'s
    weights at each call: a few observations are too small a job for MLX's per-operation
    overhead uncompiled. The parameters are the compiled function's state, so weight updates
    are seen."""

    @partial(mx.compile, inputs=network.state)
    def best_actions(frames: mx.array) -> mx.array:
        return mx.argmax(network(frames), axis=1)

    def act(states: np.ndarray) -> np.ndarray:
        return np.array(best_actions(mx.array(states)))

    return act


def greedy_policy(network: QNetwork) -> Policy:
    """argmax_a Q(s, a) for one uint8 stack (``greedy_actions`` of a batch of one)."""
    act = greedy_actions(network)
    return lambda state: int(act(state[None])[0])


def epsilon_greedy(
    policy: Policy, epsilon: float, num_actions: int, rng: np.random.Generator
) -> Policy:
    """``epsilon_greedy_actions`` for one state, over ``policy``'s action."""

    def act_greedily(states: np.ndarray) -> np.ndarray:
        return np.array([policy(states[0])])

    return lambda state: epsilon_greedy_actions(
        state[None], epsilon, act_greedily, num_actions, rng
    )[0]


def epsilon_greedy_actions(
    states: np.ndarray,
    epsilon: float,
    act_greedily: BatchPolicy,
    num_actions: int,
    rng: np.random.Generator,
) -> list[int]:
    """a_t for each game: uniformly random with probability epsilon, else argmax_a Q(s_t, a)
    (one greedy pass for the games that need it). With one game the draws are those of
    ``rng.random()`` then, when exploring, ``rng.integers(num_actions)``."""
    explore = rng.random(len(states)) < epsilon
    actions = np.empty(len(states), np.int64)
    actions[explore] = rng.integers(num_actions, size=int(explore.sum()))
    if not explore.all():
        actions[~explore] = act_greedily(states[~explore])
    return [int(a) for a in actions]


def exploration_rate(config: DQNConfig, step: int) -> float:
    """epsilon at an agent step: 1 during the random replay start, then linear from
    ``epsilon_start`` to ``epsilon_end`` over ``epsilon_decay_steps`` agent steps (counted from
    the replay start, as in DeepMind's code), then ``epsilon_end``."""
    if step < config.learning_starts:
        return 1.0
    annealed = step - config.learning_starts
    if config.epsilon_decay_steps <= 0 or annealed >= config.epsilon_decay_steps:
        return config.epsilon_end
    change = config.epsilon_end - config.epsilon_start
    return config.epsilon_start + change * annealed / config.epsilon_decay_steps
