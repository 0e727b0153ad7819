"""A tiny pixel game for the learning test: catch a falling ball with a paddle, on an 84x84
screen, through the same ``PixelEnv`` interface the Atari games use.

The ball starts in a random column at the top and falls 8 pixels per agent step (10 steps per
game); the paddle (12 pixels wide) starts in the middle and moves 8 pixels left or right per
step. The only reward is at the end: +1 for a catch, -1 for a miss. Reaching far columns takes
up to 5 well-chosen moves before the reward, so an agent must propagate value through the TD
target to do well: without bootstrapping only the last move is learnt. Random play catches
about a fifth of the balls; the optimal policy catches all (return +1 per game).
"""

from __future__ import annotations

import numpy as np

from dqn_mlx.core.env import Step

SIZE, BALL, PADDLE_W, PADDLE_H, FALL, MOVE = 84, 4, 12, 4, 8, 8


class CatchEnv:
    num_actions = 3

    def __init__(self, seed: int):
        self.action_meanings = ["NOOP", "LEFT", "RIGHT"]
        self.rng = np.random.default_rng(seed)
        self.ball_x = self.ball_y = self.paddle_x = 0
        self._sent = 0

    def _frame(self) -> np.ndarray:
        frame = np.zeros((SIZE, SIZE), dtype=np.uint8)
        frame[self.ball_y : self.ball_y + BALL, self.ball_x : self.ball_x + BALL] = 255
        frame[SIZE - PADDLE_H :, self.paddle_x : self.paddle_x + PADDLE_W] = 200
        return frame

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.ball_x = int(self.rng.integers(0, SIZE - BALL + 1))
        self.ball_y = 0
        self.paddle_x = (SIZE - PADDLE_W) // 2
        return self._frame()

    def prepare_reset(self, seed: int) -> None:
        """Nothing to prepare: a reset here is instant."""

    def send(self, action: int) -> None:
        self._sent = action

    def receive(self) -> Step:
        return self.step(self._sent)

    def step(self, action: int) -> Step:
        move = {0: 0, 1: -MOVE, 2: MOVE}[int(action)]
        self.paddle_x = int(np.clip(self.paddle_x + move, 0, SIZE - PADDLE_W))
        self.ball_y += FALL
        if self.ball_y + BALL >= SIZE - PADDLE_H:
            caught = self.paddle_x - BALL < self.ball_x < self.paddle_x + PADDLE_W
            return Step(self.reset(), 1.0 if caught else -1.0, True, False, True)
        return Step(self._frame(), 0.0, False, False, False)
