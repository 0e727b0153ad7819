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

When each "every" falls, and how updates are counted, is ``core.schedule.Schedule``'s to say;
the loop asks it at every agent step.

With ``num_envs`` N > 1 the agent plays N games at once: one pass of the loop is one agent
step in each game (N agent steps), the N actions chosen in one batched greedy pass with the
epsilon of the pass's first agent step, the N emulators stepping together, each game's
transitions stored in its own replay stream. Every count stays in agent steps summed over the
games, so the updates (one per ``update_period`` agent steps) and target syncs are those of N
single steps, made in order after the N steps; an epoch ends after the pass in which its last
update falls. N = 1 is the papers' loop.

The order is strict: the updates finish before the next actions are chosen, so every action
comes from the newest weights. What a run leaves behind (evaluation, checkpoints, metrics,
resume, progress output) happens in ``dqn_mlx.run``, in the one object the loop calls,
``LoopHooks``.

Units: agent steps (the papers' "frames"); emulator frames = agent steps x frame skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.env import Step
from dqn_mlx.core.game import FinishedGame, GameRecord, TrainingGame
from dqn_mlx.core.learner import Learner, UpdateStats
from dqn_mlx.core.policy import epsilon_greedy_actions, exploration_rate, greedy_actions
from dqn_mlx.core.replay import ReplayMemory, ReplayStreams
from dqn_mlx.core.schedule import Schedule

RECENT_GAMES = 10  # games in the progress line's running score


@dataclass
class RunState:
    """How far a run is. Plain data: saved as JSON in the training state."""

    step: int = 0  # agent steps taken
    epoch: int = 0  # epochs completed
    games: list[GameRecord] = field(default_factory=lambda: [GameRecord()])  # one per game
    recent_scores: list[float] = field(default_factory=list)  # last RECENT_GAMES games
    epoch_scores: list[float] = field(default_factory=list)  # games finished this epoch
    epoch_loss_sum: float = 0.0  # summed per-sample losses of this epoch's updates
    epoch_loss_count: int = 0  # updates this epoch
    wall_time_s: float = 0.0  # training time before this process

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> RunState:
        """Read a state saved in today's format (older ones: ``run/formats.py``)."""
        return cls(**{**fields, "games": [GameRecord(**game) for game in fields["games"]]})

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
        self.epoch_scores = []
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
    replay: ReplayStreams
    games: list[TrainingGame]
    rng: np.random.Generator
    run: RunState

    @property
    def num_actions(self) -> int:
        return self.games[0].env.num_actions


class LoopHooks(Protocol):
    """The run around the loop, the one object the loop calls (``run.train.RunHooks``
    assembles it: epoch ends, progress, metrics, stop requests)."""

    def end_epoch(self) -> None:
        """``epoch_updates`` updates are done: evaluate, save, log."""

    def after_step(
        self, epsilon: float, finished: Sequence[FinishedGame], updates: Sequence[UpdateStats]
    ) -> None:
        """A pass of the loop is done (one agent step per game), with the games it finished
        and the updates it made (progress output, live metrics)."""

    def stop_requested(self) -> bool:
        """True to stop after this pass of the loop (Ctrl-C)."""


def run_loop(training: Training, hooks: LoopHooks) -> None:
    """Algorithm 1 from ``training.run.step`` to ``config.total_steps`` agent steps."""
    config, run, games = training.config, training.run, training.games
    learner, rng, replay = training.learner, training.rng, training.replay
    schedule = Schedule.of(config)
    act_greedily = greedy_actions(learner.online)
    while run.step < config.total_steps:
        epsilon = exploration_rate(config, run.step)
        states = np.stack([game.state for game in games])  # s_t of each game (a copy)
        actions = epsilon_greedy_actions(states, epsilon, act_greedily, training.num_actions, rng)
        for game, action in zip(games, actions, strict=True):
            game.send(action)  # the emulators step together
        finished = []
        for k, (game, state, action) in enumerate(zip(games, states, actions, strict=True)):
            result = game.receive()
            start = game.record.episode_start
            replay.add(k, *learned_transition(config, state, action, result, start))
            ended = game.advance(result, rng)  # s_{t+1}, or the first state of the next game
            if ended is not None:
                run.game_finished(ended.score)
                finished.append(ended)

        updates = []
        for step in range(run.step + 1, run.step + len(games) + 1):
            if schedule.updates_at(step):
                update = learner.update(*replay.sample(config.batch_size, rng))
                run.add_loss(update.loss)
                updates.append(update)
            if schedule.syncs_target_at(step):
                learner.sync_target()
        run.step += len(games)
        if any(schedule.ends_epoch(update.updates) for update in updates):
            hooks.end_epoch()  # after this pass's syncs, so that the state it saves has them
        hooks.after_step(epsilon, finished, updates)
        if hooks.stop_requested():
            raise StopRequested


def learned_transition(
    config: DQNConfig, state: np.ndarray, action: int, result: Step, episode_start: bool
) -> tuple[np.ndarray, int, float, bool, bool]:
    """(x_t, a_t, r_t, terminal_t, whether x_t starts a game) as the replay memory stores it:
    learning sees the reward clipped to [-1, 1] (both papers) and, in the 2015 setting, a lost
    life as terminal (no bootstrap); the game itself goes on, and the reported score stays
    raw."""
    reward = float(np.clip(result.reward, -config.reward_clip, config.reward_clip))
    terminal = result.game_over or (config.terminal_on_life_loss and result.life_lost)
    return state[-1], action, reward, terminal, episode_start


def store_transition(
    config: DQNConfig,
    replay: ReplayMemory,
    state: np.ndarray,
    action: int,
    result: Step,
    episode_start: bool,
) -> None:
    """Store the ``learned_transition`` in one game's stream (resume's refill)."""
    replay.add(*learned_transition(config, state, action, result, episode_start))
