"""Deep Q-learning with experience replay (2013 Algorithm 1), top to bottom in ``run_loop``.

    initialise replay memory D, Q-network theta (and target theta^- = theta, 2015)
    for each agent step t:
        a_t = random with probability epsilon_t, else argmax_a Q(s_t, a; theta)
        play a_t for frame_skip emulator frames; observe r_t, x_{t+1}
        store (x_t, a_t, clip(r_t), terminal_t) in D
        every update_period steps once D holds learning_starts transitions:
            sample a minibatch from D and take one gradient step on the TD loss (learner.py)
        every target_update_agent_steps agent steps: theta^- <- theta           (2015)
        every epoch_updates updates: evaluate, save, plot                    (the run's hooks)

The order is strict: an update finishes before the next action is chosen, so every action
comes from the newest weights. What a run leaves behind (evaluation, checkpoints, metrics,
resume, progress output) happens in ``dqn_mlx.run`` through ``LoopHooks``.

Units: agent steps (the papers' "frames"); emulator frames = agent steps x frame skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.env import Step
from dqn_mlx.core.game import FinishedGame, GameRecord, TrainingGame
from dqn_mlx.core.learner import Learner, UpdateStats
from dqn_mlx.core.policy import exploration_rate, greedy_policy
from dqn_mlx.core.replay import ReplayMemory

RECENT_GAMES = 10  # games in the progress line's running score


@dataclass
class RunState:
    """How far a run is. Plain data: saved as JSON in the training state."""

    step: int = 0  # agent steps taken
    epoch: int = 0  # epochs completed
    game: GameRecord = field(default_factory=GameRecord)  # the training game in progress
    recent_scores: list[float] = field(default_factory=list)  # last RECENT_GAMES games
    epoch_scores: list[float] = field(default_factory=list)  # games finished this epoch
    epoch_loss_sum: float = 0.0  # summed per-sample losses of this epoch's updates
    epoch_loss_count: int = 0  # updates this epoch
    epoch_start_step: int = 0  # agent step at which this epoch began
    wall_time_s: float = 0.0  # training time before this process

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> RunState:
        """Read a saved state; states written before ``GameRecord`` kept its fields flat."""
        game_fields = set(GameRecord.__dataclass_fields__)
        game = fields.pop("game", None) or {k: fields.pop(k) for k in game_fields & set(fields)}
        return cls(**fields, game=GameRecord(**game))

    def game_finished(self, score: float) -> None:
        self.epoch_scores.append(score)
        self.recent_scores = [*self.recent_scores, score][-RECENT_GAMES:]

    def add_loss(self, loss: float) -> None:
        """Count one update's loss; a non-finite loss stops the run (``NonFiniteLoss``)."""
        if not np.isfinite(loss):
            raise NonFiniteLoss(loss)
        self.epoch_loss_sum += loss
        self.epoch_loss_count += 1

    def start_epoch(self) -> None:
        self.epoch_scores, self.epoch_start_step = [], self.step
        self.epoch_loss_sum, self.epoch_loss_count = 0.0, 0


class NonFiniteLoss(Exception):
    """The TD loss became inf or NaN: nothing after this update may be saved."""


class StopRequested(Exception):
    """The run's hooks asked the loop to stop after the current agent step."""


@dataclass
class Training:
    """Everything Algorithm 1 reads and changes."""

    config: DQNConfig
    learner: Learner
    replay: ReplayMemory
    game: TrainingGame
    rng: np.random.Generator
    run: RunState


class LoopHooks(Protocol):
    """What the loop asks of the run around it (``dqn_mlx.run.train``)."""

    def end_epoch(self) -> None:
        """``epoch_updates`` updates are done: evaluate, save, log."""

    def after_step(
        self, epsilon: float, finished: FinishedGame | None, update: UpdateStats | None
    ) -> None:
        """An agent step is done, with the game it finished and the update it made, if any
        (progress output, live metrics)."""

    def stop_requested(self) -> bool:
        """True to stop after this agent step (Ctrl-C)."""


def run_loop(t: Training, hooks: LoopHooks) -> None:
    """Algorithm 1 from ``t.run.step`` to ``config.total_steps`` agent steps."""
    config, run, game, learner, rng = t.config, t.run, t.game, t.learner, t.rng
    act_greedily = greedy_policy(learner.online)
    while run.step < config.total_steps:
        epsilon = exploration_rate(config, run.step)
        state = game.state
        explore = rng.random() < epsilon
        action = int(rng.integers(game.env.num_actions)) if explore else act_greedily(state)
        result = game.play(action)
        store_transition(config, t.replay, state, action, result, game.record.episode_start)
        finished = game.advance(result, rng)  # s_{t+1}, or the first state of the next game
        if finished is not None:
            run.game_finished(finished.score)
        run.step += 1

        update = None
        if learning_due(config, run.step):
            update = learner.update(*t.replay.sample(config.batch_size, rng))
            run.add_loss(update.loss)
        if learner.target_sync_due(run.step):
            learner.sync_target()
        if update is not None and learner.updates % config.epoch_updates == 0:
            hooks.end_epoch()  # after this step's sync, so that the state it saves has it
        hooks.after_step(epsilon, finished, update)
        if hooks.stop_requested():
            raise StopRequested


def learning_due(config: DQNConfig, step: int) -> bool:
    """Whether an update follows agent step ``step``: one every ``update_period`` agent steps
    once the ``learning_starts`` steps of random play are done."""
    return step > config.learning_starts and (step - 1) % config.update_period == 0


def store_transition(
    config: DQNConfig,
    replay: ReplayMemory,
    state: np.ndarray,
    action: int,
    result: Step,
    episode_start: bool,
) -> None:
    """Store (x_t, a_t, r_t, terminal_t): learning sees the reward clipped to [-1, 1] (both
    papers) and, in the 2015 setting, a lost life as terminal (no bootstrap); the game itself
    goes on, and the reported score stays raw."""
    reward = float(np.clip(result.reward, -config.reward_clip, config.reward_clip))
    terminal = result.game_over or (config.terminal_on_life_loss and result.life_lost)
    replay.add(state[-1], action, reward, terminal, episode_start)
