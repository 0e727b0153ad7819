"""Atari environments with the papers' preprocessing, through ale-py's native vector env.

ale-py's ``AtariVectorEnv`` (C++) does the per-frame work the papers describe, and we use it
rather than re-writing it: repeat each action for ``frame_skip`` emulator frames, take the
pixel-wise max over the last two raw frames (sprite flicker, 2015 Methods), convert to
grayscale, resize to 84x84, play a random number of no-op emulator frames after each reset
(0..noop_max-1, single frames), and press FIRE after a reset in games that need it. We ask it
for single frames (``stack_num=1``) and unclipped rewards, and add here only what it does not
do:

- ``StackedFrames``: the agent's input, the last 4 frames, zero-padded at an episode start,
  the same rule the replay memory uses to rebuild stacks (so what is learnt from is what was
  seen).
- a lost life is reported (``life_lost``) without ending the game; the training loop decides
  whether it is terminal for learning (2015) and evaluation never treats it as an end;
- FIRE after a lost life for games that need it (``fire_after_life_loss``; otherwise the agent
  can stall until the frame cap): a deviation from DeepMind's code, which presses nothing;
- raw rewards: clipping for learning happens in the training loop, scores stay raw.

Accepted ids: ``<Game>NoFrameskip-v4`` (no sticky actions, our frame skip: the paper's
setting) and ``ALE/<Game>-v5`` (sticky actions p=0.25 and its own frame skip of 4: not
comparable with the papers).
"""

from __future__ import annotations

import difflib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np

from dqn_mlx.errors import UserError

SCREEN = (210, 160)
"""The Atari 2600 screen, height x width, in pixels."""


@dataclass(frozen=True)
class GameSpec:
    """What an env id means for the emulator."""

    env_id: str
    rom: str  # ALE ROM name, e.g. "breakout"
    sticky_actions: float  # repeat_action_probability
    fixed_frame_skip: int | None  # v5 ids impose 4; None = the config's frame skip


class Step(NamedTuple):
    """One agent step. When the game ended (over or truncated), ``frame`` is already the first
    frame of the next game: the caller starts a new episode with it."""

    frame: np.ndarray  # (84, 84) uint8, newest preprocessed frame
    reward: float  # raw game score change over the skipped frames
    game_over: bool  # the game ended (all lives lost)
    truncated: bool  # the episode hit its emulator-frame cap
    life_lost: bool  # a life was lost (also True when the last one was)


class PixelEnv(Protocol):
    """What the training loop and evaluation need from an environment."""

    num_actions: int
    action_meanings: list[str]

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def prepare_reset(self, seed: int) -> None:
        """A hint: ``reset(seed)`` comes next; an env may start that game ahead of time."""

    def step(self, action: int) -> Step: ...

    def send(self, action: int) -> None:
        """Start ``step(action)``; ``receive`` returns its result. Between the two, an env may
        compute on its own thread, so that several games step at once (``--num-envs``)."""

    def receive(self) -> Step: ...


def _atari_ids() -> list[str]:
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    return [
        i
        for i, s in gymnasium.registry.items()
        if "ale_py" in str(s.entry_point)
        and (i.endswith("NoFrameskip-v4") or (i.startswith("ALE/") and i.endswith("-v5")))
    ]


def resolve_game(env_id: str) -> GameSpec:
    """Map an env id to its ROM and settings, or raise UserError with close names."""
    import ale_py
    import gymnasium

    gymnasium.register_envs(ale_py)
    spec = gymnasium.registry.get(env_id)
    if spec is None:
        close = difflib.get_close_matches(env_id, _atari_ids(), n=3, cutoff=0.5)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else ("; use an Atari id such as BreakoutNoFrameskip-v4 or ALE/Breakout-v5")
        )
        raise UserError(f"unknown environment id {env_id!r}{hint}")
    if "ale_py" not in str(spec.entry_point):
        raise UserError(
            f"{env_id!r} is not an Atari game; DQN here plays ALE games such as "
            "BreakoutNoFrameskip-v4"
        )
    kwargs = spec.kwargs
    game = str(kwargs.get("game"))
    if env_id.startswith("ALE/") and env_id.endswith("-v5"):
        return GameSpec(
            env_id,
            game,
            float(kwargs.get("repeat_action_probability", 0.25)),
            int(kwargs.get("frameskip", 4)),
        )
    if kwargs.get("frameskip") == 1 and not kwargs.get("repeat_action_probability"):
        return GameSpec(env_id, game, 0.0, None)
    suggestion = "".join(part.capitalize() for part in game.split("_")) + "NoFrameskip-v4"
    raise UserError(
        f"{env_id!r} has its own frame skipping; use {suggestion} (the papers' "
        f"setting) or ALE/{suggestion.replace('NoFrameskip-v4', '-v5')}"
    )


def comparability_note(game: GameSpec) -> str | None:
    """A log line for v5 ids, whose sticky actions make scores incomparable with the papers."""
    if game.sticky_actions > 0:
        return (
            f"note: {game.env_id} uses sticky actions (p={game.sticky_actions}) and its own "
            "frame skip of 4; scores are not comparable with the papers' (use "
            "<Game>NoFrameskip-v4 for that)"
        )
    return None


class AtariEnv:
    """One ALE game with the papers' preprocessing; see the module docstring. ``game``: its
    ``GameSpec`` or env id; ``colour_frames``: also keep the screen of every step as
    ``colour_frame`` (for videos)."""

    def __init__(
        self,
        game: GameSpec | str,
        frame_skip: int,
        noop_max: int,
        max_episode_frames: int,
        seed: int,
        fire_after_life_loss: bool = True,
        colour_frames: bool = False,
    ):
        from ale_py.vector_env import AtariVectorEnv

        game = resolve_game(game) if isinstance(game, str) else game
        self.game = game
        self.frame_skip = game.fixed_frame_skip or frame_skip
        emulator = partial(
            AtariVectorEnv,
            game.rom,
            1,
            stack_num=1,
            frameskip=self.frame_skip,
            noop_max=noop_max,
            use_fire_reset=True,
            episodic_life=False,
            life_loss_info=False,
            reward_clipping=False,
            repeat_action_probability=game.sticky_actions,
            max_num_frames_per_episode=max_episode_frames,
            autoreset_mode="SameStep",
            num_threads=1,
        )
        self._make_emulator = partial(
            emulator, maxpool=True, grayscale=True, img_height=84, img_width=84
        )
        self._env = self._make_emulator()
        # For videos: a twin emulator given the same seeds and actions, so it plays the same
        # game, that returns the screen itself (210x160 RGB, the last frame of each step).
        self._colour: Any = (
            emulator(maxpool=False, grayscale=False, img_height=SCREEN[0], img_width=SCREEN[1])
            if colour_frames
            else None
        )
        self.colour_frame: np.ndarray | None = None
        # A second emulator that prepares the next seeded game while this one plays.
        self._spare: Any = None
        self._prepared: tuple[int, Future[Any]] | None = None
        self._preparer: ThreadPoolExecutor | None = None
        action_set = list(self._env.ale.get_action_set())
        self.action_meanings = [a.name for a in action_set]
        self.num_actions = len(action_set)
        # The "needs FIRE to start" rule used by ale-py and common Atari wrappers.
        needs_fire = len(action_set) >= 3 and self.action_meanings[1] == "FIRE"
        self.fire_action = 1 if needs_fire and fire_after_life_loss else None
        self._seed: int | None = seed
        self._lives = 0
        self.reset_frame_number = 0
        self._action = np.zeros(1, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new game: with ``seed``, the game (no-op count, sticky-action draws) is a
        function of the seed alone; without, the first reset uses the constructor's seed.
        A game that ``prepare_reset(seed)`` started is handed over at once."""
        seed = seed if seed is not None else self._seed
        prepared, self._prepared = self._prepared, None
        if prepared is not None and seed is not None and prepared[0] == seed:
            obs, info = prepared[1].result()
            self._env, self._spare = self._spare, self._env
        else:
            if prepared is not None:
                prepared[1].result()  # not the game asked for: let it finish, then ignore it
            obs, info = self._env.reset(seed=seed)
        if self._colour is not None:
            colour, _ = self._colour.reset(seed=seed)
            self.colour_frame = colour[0, 0]
        self._seed = None
        self._lives = int(info["lives"][0])
        self.reset_frame_number = int(info["episode_frame_number"][0])  # no-ops + FIRE
        return obs[0, 0]

    def prepare_reset(self, seed: int) -> None:
        """Start the game ``reset(seed)`` will return, on a spare emulator, in the background.

        A seeded start reloads the ROM in ale-py, far slower than an unseeded reset
        (docs/performance.md); the training loop seeds one game in ten so that resume can
        replay the game in progress exactly (``core/game.py``). Loading the ROM releases the
        GIL, so it overlaps with the current game; the spare emulator loaded with the same
        seed is in the same state as this one would be."""
        if self._preparer is None:
            self._preparer = ThreadPoolExecutor(1, thread_name_prefix="dqn-mlx-reset")
        self._prepared = (seed, self._preparer.submit(self._reset_spare, seed))

    def _reset_spare(self, seed: int) -> Any:
        if self._spare is None:
            self._spare = self._make_emulator()
        return self._spare.reset(seed=seed)

    def step(self, action: int) -> Step:
        self.send(action)
        return self.receive()

    def send(self, action: int) -> None:
        """Start the agent step on ale-py's worker thread (its vector env of one game); the GIL
        is free while it emulates, so several games' emulators run at once."""
        self._action[0] = action
        self._env.send(self._action)
        if self._colour is not None:
            self._colour.send(self._action)

    def receive(self) -> Step:
        """Wait for the step ``send`` started, then press FIRE after a lost life if asked."""
        frame, reward, over, truncated, lives = self._received()
        life_lost = (lives < self._lives and not (over or truncated)) or over
        self._lives = lives
        if life_lost and not over and not truncated and self.fire_action is not None:
            # Relaunch after a lost life, as the reset does (ale-py only fires on resets).
            frame, extra, over, truncated, self._lives = self._raw_step(self.fire_action)
            reward += extra
        return Step(frame, reward, over, truncated, life_lost)

    def _raw_step(self, action: int) -> tuple[np.ndarray, float, bool, bool, int]:
        self.send(action)
        return self._received()

    def _received(self) -> tuple[np.ndarray, float, bool, bool, int]:
        obs, reward, terminated, truncated, info = self._env.recv()
        if self._colour is not None:
            colour, *twin = self._colour.recv()
            if [twin[0][0], twin[1][0], twin[3]["lives"][0]] != [
                reward[0], terminated[0], info["lives"][0]
            ]:  # fmt: skip
                raise RuntimeError("the colour emulator no longer plays the agent's game")
            self.colour_frame = colour[0, 0]
        return (
            obs[0, 0],
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            int(info["lives"][0]),
        )

    def close(self) -> None:
        if self._preparer is not None:
            self._preparer.shutdown(wait=True)
        if self._spare is not None:
            self._spare.close()
        if self._colour is not None:
            self._colour.close()
        self._env.close()


make_atari_env = AtariEnv
"""The game of an env id with the papers' preprocessing, by the name the callers read."""


class StackedFrames:
    """The agent's state: the last ``history`` frames, zero-padded after an episode start."""

    def __init__(self, history: int = 4, shape: tuple[int, int] = (84, 84)):
        self.state = np.zeros((history, *shape), dtype=np.uint8)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        self.state[:-1] = 0
        self.state[-1] = frame
        return self.state

    def push(self, frame: np.ndarray) -> np.ndarray:
        self.state[:-1] = self.state[1:]
        self.state[-1] = frame
        return self.state
