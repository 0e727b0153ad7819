"""The game the agent trains on: the emulator, the agent's state, and a record to resume it.

``TrainingGame`` keeps the current state s_t (the last ``history`` frames, ``StackedFrames``)
and starts the next game when one ends. ``GameRecord`` is plain data saved with the training
state: the seed of the last seeded game start and the actions played since, from which resume
rebuilds the game in progress exactly (ALE's vector env has no state snapshot, and what it
plays is deterministic given the seed and the actions).

Seeded starts: the first game and every ``SEEDED_START_PERIOD``-th after it start from a
seeded reset, which reloads the ROM in ale-py, far slower than an automatic reset
(docs/performance.md); ``AtariEnv.prepare_reset`` does it in the background, so the seed is
drawn one seeded start ahead. The games in between start from ale-py's automatic reset at the
end of the game before, their no-op counts drawn by ale-py's generator, which the last seeded
reset seeded. Not every game is seeded: ROM loads would then slow the loop while games are
short. Nor is only the first: some games (Seaquest) carry emulator state across resets, so a
game is reproducible only from the last ROM load, and resume would replay the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from dqn_mlx.core.env import PixelEnv, StackedFrames, Step

SEEDED_START_PERIOD = 10
"""One training game in this many starts from a seeded reset (a fresh ROM load)."""


@dataclass
class GameRecord:
    """Where the training game is. Plain data: saved as JSON in the training state."""

    episode_seed: int = 0  # seed of the last seeded game start
    episode_actions: list[int] = field(default_factory=list)  # actions played since then
    games_since_seed: int = 0  # games started since then from ale-py's automatic reset
    next_seed: int | None = None  # seed of the next seeded start (drawn one ahead)
    episode_start: bool = True  # the current state is the first of a game
    score: float = 0.0  # the game's raw score so far
    length: int = 0  # the game's agent steps so far


class FinishedGame(NamedTuple):
    """A training game that ended: its raw score and length."""

    score: float
    length: int  # agent steps


def new_game_seed(rng: np.random.Generator) -> int:
    """A seed for a game, drawn from the run's generator."""
    return int(rng.integers(2**31 - 1))


class TrainingGame:
    """The training game and the agent's state s_t in it."""

    def __init__(self, env: PixelEnv, history: int, record: GameRecord):
        """``record``: the run's (one of ``RunState.games``), which this game keeps up to date."""
        self.env, self.stack, self.record = env, StackedFrames(history), record

    @property
    def state(self) -> np.ndarray:
        """s_t: (history, 84, 84) uint8, zero-padded at a game's start. Changed in place by
        ``advance``: copy it to keep it."""
        return self.stack.state

    def start(self, rng: np.random.Generator) -> None:
        """Start the run's first game (seeded)."""
        self.stack.reset(self._next_game_frame(rng, ended=None))

    def send(self, action: int) -> None:
        """Start playing a_t for frame_skip emulator frames; ``receive`` waits for r_t and the
        next frame, so that several games play at once."""
        self.env.send(action)
        self.record.episode_actions.append(action)

    def receive(self) -> Step:
        """r_t and the next frame of the action ``send`` started."""
        result = self.env.receive()
        self.record.score += result.reward
        self.record.length += 1
        return result

    def advance(self, result: Step, rng: np.random.Generator) -> FinishedGame | None:
        """Move to s_{t+1}. When the game ended, start the next one and return the finished
        game; otherwise None."""
        record = self.record
        if not (result.game_over or result.truncated):
            self.stack.push(result.frame)
            record.episode_start = False
            return None
        finished = FinishedGame(record.score, record.length)
        record.score, record.length, record.episode_start = 0.0, 0, True
        self.stack.reset(self._next_game_frame(rng, ended=result))
        return finished

    def _next_game_frame(self, rng: np.random.Generator, ended: Step | None) -> np.ndarray:
        """The first frame of the next game: ale-py's automatic reset, or a seeded start every
        ``SEEDED_START_PERIOD`` games (see the module docstring)."""
        record = self.record
        record.games_since_seed += 1
        if ended is not None and record.games_since_seed < SEEDED_START_PERIOD:
            return ended.frame  # already the first frame of the next game
        seed = record.next_seed if record.next_seed is not None else new_game_seed(rng)
        frame = self.env.reset(seed)
        record.episode_seed, record.episode_actions, record.games_since_seed = seed, [], 0
        record.next_seed = new_game_seed(rng)
        self.env.prepare_reset(record.next_seed)
        return frame

    def restore(self) -> None:
        """Rebuild the game in progress from the record: replay every action since the last
        seeded start."""
        self.stack.reset(self.env.reset(self.record.episode_seed))
        for action in self.record.episode_actions:
            step = self.env.step(action)
            ended = step.game_over or step.truncated
            self.stack.reset(step.frame) if ended else self.stack.push(step.frame)
        if self.record.next_seed is not None:
            self.env.prepare_reset(self.record.next_seed)
