"""Evaluation: an epsilon-greedy policy plays full games on its own environment instance.

A lost life never ends an evaluation game; scores are raw game scores. Two entry points:
``play_steps`` (2013 Sec. 5.1: a fixed number of agent steps, the average over the episodes
completed) and ``play_episodes`` (a fixed number of full games), and the papers' two
protocols built on them (``PROTOCOLS``).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from dqn_mlx.core.env import (
    AtariEnv,
    GameSpec,
    PixelEnv,
    StackedFrames,
    Step,
    comparability_note,
    make_atari_env,
    resolve_game,
)
from dqn_mlx.core.learner import PLAIN, Compute
from dqn_mlx.core.network import QNetwork
from dqn_mlx.core.policy import Policy
from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write_text
from dqn_mlx.report.plots import draw_value_trace
from dqn_mlx.report.video import EpisodeVideos
from dqn_mlx.run.checkpoint import Checkpoint, load_checkpoint
from dqn_mlx.run.device import backend_line
from dqn_mlx.run.folder import is_shipped, results_folder
from dqn_mlx.run.hangup import print_to_log

Observer = Callable[[int, Step], None]  # (episode index, step) after every agent step


@dataclass(frozen=True)
class EvalProtocol:
    """How a paper evaluated an agent."""

    name: str
    epsilon: float
    episodes: int | None  # full games to play, or
    agent_steps: int | None  # a fixed number of agent steps (episodes completed in it count)
    max_episode_frames: int  # emulator frames per game at most
    description: str


PROTOCOLS: dict[str, EvalProtocol] = {
    "nips2013": EvalProtocol(
        "nips2013",
        0.05,
        None,
        10_000,
        108_000,
        "epsilon 0.05 for a fixed number of agent steps; average total reward over the games "
        "completed, and the best game (2013 Table 1, 'DQN' and 'DQN Best')",
    ),
    "nature2015": EvalProtocol(
        "nature2015",
        0.05,
        30,
        None,
        18_000,
        "30 games of at most 18,000 emulator frames (5 minutes), epsilon 0.05, each started "
        "after 0..29 no-op emulator frames (2015 Methods: up to 30 no-op actions)",
    ),
}


@dataclass
class EvalResult:
    """Raw scores of the games completed, and how much was played.

    With a step budget the last game is usually cut off; it does not count. When no game
    completes, the score is 0, as DeepMind's ``run_gpu`` computes it (the completed games'
    total over ``max(1, games)``); ``unfinished_score`` keeps what the cut-off game reached."""

    scores: list[float]
    agent_steps: int
    unfinished_score: float = 0.0

    @property
    def completed(self) -> bool:
        """False when a step budget ended before any game finished."""
        return bool(self.scores)

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
    observer: Observer | None = None,
) -> EvalResult:
    stack = StackedFrames(history)
    state = stack.reset(env.reset(seed))
    scores: list[float] = []
    score, steps = 0.0, 0
    while (max_steps is None or steps < max_steps) and (
        max_episodes is None or len(scores) < max_episodes
    ):
        step = env.step(act(state))
        if observer is not None:
            observer(len(scores), step)
        score += step.reward
        steps += 1
        if step.game_over or step.truncated:
            scores.append(score)
            score = 0.0
            state = stack.reset(step.frame)
        else:
            state = stack.push(step.frame)
    return EvalResult(scores, steps, unfinished_score=score)


def play_steps(
    env: PixelEnv,
    act: Policy,
    history: int,
    agent_steps: int,
    seed: int | None = None,
    observer: Observer | None = None,
) -> EvalResult:
    """Play ``agent_steps`` steps from a fresh game (seeded with ``seed``); score = mean over
    completed games, 0 if none completed (``EvalResult``)."""
    return _play(env, act, history, agent_steps, None, seed, observer)


def play_episodes(
    env: PixelEnv,
    act: Policy,
    history: int,
    episodes: int,
    seed: int | None = None,
    observer: Observer | None = None,
) -> EvalResult:
    """Play ``episodes`` full games from a fresh game (seeded with ``seed``)."""
    return _play(env, act, history, None, episodes, seed, observer)


class ValueRecorder:
    """An epsilon-greedy policy that also records max_a Q(s, a) at every step (Figure 3)."""

    def __init__(
        self, network: QNetwork, epsilon: float, num_actions: int, rng: np.random.Generator
    ):
        self.network, self.epsilon, self.num_actions, self.rng = network, epsilon, num_actions, rng
        self.max_q: list[float] = []

    def __call__(self, state: np.ndarray) -> int:
        q = self.network(mx.array(state[None]))[0]  # (actions,)
        self.max_q.append(float(mx.max(q).item()))  # type: ignore[arg-type]
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_actions))
        return int(mx.argmax(q).item())  # type: ignore[arg-type]


def average_max_q(network: QNetwork, states: np.ndarray, batch_size: int = 256) -> float:
    """Mean over held-out states of max_a Q(s, a) (2013 Sec. 5.1, Figure 2), in batches."""
    total = 0.0
    for start in range(0, len(states), batch_size):
        q = network(mx.array(states[start : start + batch_size]))  # (batch, actions)
        total += float(mx.sum(mx.max(q, axis=1)).item())  # type: ignore[arg-type]
    return total / max(len(states), 1)


def collect_held_out_states(
    env: PixelEnv, count: int, history: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` states (count, history, 84, 84) uint8 visited by a uniform random policy, on
    which the average max-Q is tracked (2013 Sec. 5.1)."""
    states = np.empty((count, history, 84, 84), dtype=np.uint8)
    stack = StackedFrames(history)
    state = stack.reset(env.reset())
    for i in range(count):
        states[i] = state
        step = env.step(int(rng.integers(env.num_actions)))
        done = step.game_over or step.truncated
        state = stack.reset(step.frame) if done else stack.push(step.frame)
    return states


def evaluate_checkpoint(
    load_path: Path | None,
    env_override: str | None,
    episodes: int,
    epsilon: float,
    seed: int | None,
    protocol_name: str | None,
    eval_steps: int | None,
    video: Path | None,
    value_trace: bool,
    compute: Compute = PLAIN,
    video_view: str = "game",
) -> None:
    """``--mode eval``: play a checkpoint, print its raw scores and save them as JSON beside
    it (a shipped run's under ``runs/``: ``results_folder``); optionally record videos and the
    value trace of the first game."""
    _check_eval_flags(load_path, protocol_name, episodes, epsilon, eval_steps, seed)
    assert load_path is not None
    _check_outputs(Path(load_path), video)
    ckpt = load_checkpoint(load_path, compute.layers)
    env_id = env_override or ckpt.env_id
    game, cfg = resolve_game(env_id), ckpt.config
    _check_same_game(game, ckpt.env_id)
    protocol = PROTOCOLS.get(protocol_name or "")
    if protocol is not None:
        epsilon, episodes = protocol.epsilon, protocol.episodes or 0
    steps_budget = (eval_steps or protocol.agent_steps) if protocol and protocol.agent_steps else 0
    seed = cfg.seed + 1000 if seed is None else seed
    env = make_atari_env(
        env_id,
        game.fixed_frame_skip or cfg.frame_skip_for(game.rom),
        cfg.noop_max,
        protocol.max_episode_frames if protocol else cfg.max_episode_frames,
        seed,
        cfg.fire_after_life_loss,
        colour_frames=video is not None and video_view == "game",
    )
    if env.action_meanings != ckpt.action_meanings:
        raise UserError(
            f"--env {env_id} has actions {env.action_meanings} but the checkpoint "
            f"was trained on {ckpt.env_id} with {ckpt.action_meanings}"
        )
    print(backend_line(compute))
    _print_plan(load_path, ckpt, game, protocol, episodes, epsilon, steps_budget, seed)
    recording = _Recording(Path(load_path), env_id, game.rom, video, value_trace)
    if video is not None:
        recording.film(video, _screen_of(env) if video_view == "game" else _agent_frame)
    recorder = ValueRecorder(ckpt.network, epsilon, env.num_actions, np.random.default_rng(seed))
    history = cfg.history_length
    progress = EvalProgress(None if steps_budget else episodes, steps_budget or None,
                            live=sys.stdout.isatty())  # fmt: skip

    def observe(episode: int, step: Step) -> None:
        recording.observe(episode, step)
        progress(episode, step)

    with _play_on_after_hangup(results_folder(Path(load_path), env_id)):
        try:
            if steps_budget:
                result = play_steps(env, recorder, history, steps_budget, seed, observe)
            else:
                result = play_episodes(env, recorder, history, episodes, seed, observe)
        finally:
            progress.close()
        _report_scores(result)
        _write_results(Path(load_path), protocol, game, seed, epsilon, result, ckpt.metadata)
        recording.finish(recorder.max_q)


@contextmanager
def _play_on_after_hangup(folder: Path) -> Iterator[None]:
    """A closed terminal (SIGHUP) does not end the evaluation: it plays on, printing to
    ``folder/hangup.log`` instead, and writes its scores as it would have."""

    previous = signal.signal(signal.SIGHUP, lambda _n, _f: print_to_log(folder))
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


PROGRESS_LINE_S = 30.0
"""Where stdout is no terminal, a game that runs long gets a progress line this often."""
SCORES_SHOWN = 10  # the last games' scores a progress line lists
LIVE_REFRESH_S = 0.25  # the live line's redraws, on a terminal


class EvalProgress:
    """What ``--mode eval`` shows while it plays, from its first agent step (an ``Observer``):
    the game, k of N, its agent steps and running score, the scores of the games so far and
    an ETA. A plain line at the end of every game; on a terminal, a live line below them for
    the game being played, elsewhere (a log, a pipe) a line every ``PROGRESS_LINE_S`` of a
    game that runs long.

    The ETA: with N games, the mean time of a game so far for each game left (the current
    one less what it has played), known once a game has ended; with a step budget, the agent
    steps left at the rate so far."""

    def __init__(
        self,
        games: int | None,
        step_budget: int | None,
        live: bool,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.games, self.budget, self.log, self.clock = games, step_budget, log, clock
        self.start = self.game_start = self.last_line = clock()
        self.scores: list[float] = []
        self.lengths: list[int] = []  # agent steps of each game ended
        self.score, self.steps, self.game_steps = 0.0, 0, 0
        self.live: Any = None
        if live:
            from rich.live import Live
            from rich.text import Text

            self.text = Text(self.line())
            self.live = Live(self.text, refresh_per_second=4, transient=True)
            self.live.start()

    def __call__(self, episode: int, step: Step) -> None:
        """After every agent step: count it, and show what is due."""
        self.steps, self.game_steps = self.steps + 1, self.game_steps + 1
        self.score += step.reward
        now = self.clock()
        ended = step.game_over or step.truncated
        if ended:
            self.scores.append(self.score)
            self.lengths.append(self.game_steps)
            self.score, self.game_steps, self.game_start = 0.0, 0, now
            self.log(self.ended_line(step.truncated))  # on a terminal, above the live line
        if ended or now - self.last_line >= (LIVE_REFRESH_S if self.live else PROGRESS_LINE_S):
            if self.live is not None:
                self.text.plain = self.line()
            elif not ended:
                self.log(self.line())
            self.last_line = now

    def game_name(self, number: int) -> str:
        return f"game {number}" + (f"/{self.games}" if self.games else "")

    def line(self) -> str:
        """The game being played: its agent steps and score so far, the games before it."""
        if self.games and len(self.scores) >= self.games:
            return f"all {self.games} games ended | {self.so_far()} | {self.eta_text()}"
        return (
            f"{self.game_name(len(self.scores) + 1)}: {_agent_steps(self.game_steps)}, score "
            f"{self.score:g} so far | {self.so_far()} | {self.eta_text()}"
        )

    def ended_line(self, truncated: bool) -> str:
        """The game just ended: its score and length, the games so far."""
        cut = " (cut at its frame limit)" if truncated else ""
        return (
            f"{self.game_name(len(self.scores))}: score {self.scores[-1]:g} in "
            f"{_agent_steps(self.lengths[-1])}{cut} | {self.so_far()} | {self.eta_text()}"
        )

    def so_far(self) -> str:
        if not self.scores:
            return "no game ended yet"
        shown = ", ".join(f"{score:g}" for score in self.scores[-SCORES_SHOWN:])
        more = "..., " if len(self.scores) > SCORES_SHOWN else ""
        return f"scores so far {more}{shown} (mean {np.mean(self.scores):.1f})"

    def eta_text(self) -> str:
        seconds = self.eta()
        played = f"{self.steps:,}" + (f"/{self.budget:,}" if self.budget else "") + " agent steps"
        return f"{played} in {_minutes(self.clock() - self.start)}, ETA " + (
            "?" if seconds is None else _minutes(seconds)
        )

    def eta(self) -> float | None:
        now = self.clock()
        if self.budget:
            rate = self.steps / max(now - self.start, 1e-9)
            return (self.budget - self.steps) / rate if self.steps else None
        if not self.scores or not self.games:
            return None
        per_game = (self.game_start - self.start) / len(self.scores)
        left = self.games - len(self.scores)
        return max(0.0, per_game * left - (now - self.game_start)) if left else 0.0

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _minutes(seconds: float) -> str:
    """``1h02m03s``, ``2m05s``, ``41s``."""
    seconds = int(seconds)
    hours, minutes = seconds // 3600, seconds % 3600 // 60
    if hours:
        return f"{hours}h{minutes:02d}m{seconds % 60:02d}s"
    return f"{minutes}m{seconds % 60:02d}s" if minutes else f"{seconds}s"


def _print_plan(
    load_path: Path,
    ckpt: Checkpoint,
    game: GameSpec,
    protocol: EvalProtocol | None,
    episodes: int,
    epsilon: float,
    steps_budget: int,
    seed: int,
) -> None:
    """What the evaluation plays: the checkpoint, the protocol and the game."""
    how = protocol.description if protocol else f"{episodes} full games, epsilon {epsilon}"
    budget = f"; {steps_budget:,} agent steps" if steps_budget else ""
    note = comparability_note(game)
    if note:
        print(note)
    epoch, steps = ckpt.metadata.get("epoch", "?"), ckpt.metadata.get("agent_steps", "?")
    print(
        f"evaluating {load_path} (preset {ckpt.config.preset}, epoch {epoch}, {steps} agent "
        f"steps trained)\n"
        f"protocol {protocol.name if protocol else 'episodes'}: {how}{budget}\n"
        f"game {game.env_id}, sticky actions {'yes' if game.sticky_actions else 'no'}, seed {seed}"
    )


def _check_same_game(game: GameSpec, trained_env_id: str) -> None:
    """``--env`` may name another variant of the checkpoint's game, never another game."""
    trained_rom = resolve_game(trained_env_id).rom
    if game.rom != trained_rom:
        raise UserError(
            f"--env {game.env_id} is another game ({game.rom}) than the checkpoint's "
            f"{trained_env_id} ({trained_rom}); drop --env, or give a variant of {trained_rom} "
            "(the same ROM and actions, e.g. its ALE/...-v5 id)"
        )


def _screen_of(env: AtariEnv) -> Callable[[Step], np.ndarray]:
    """The game's own screen at each agent step (the env's twin emulator)."""

    def screen(step: Step) -> np.ndarray:
        assert env.colour_frame is not None
        return env.colour_frame

    return screen


def _agent_frame(step: Step) -> np.ndarray:
    """What the agent sees: the newest 84x84 grayscale frame."""
    return step.frame


class _Recording:
    """What ``--video`` and ``--value-trace`` keep of an evaluation: one video per game, and
    the first game's rewards beside max-Q at each of its steps (2013 Figure 3)."""

    def __init__(
        self, load_path: Path, env_id: str, rom: str, video: Path | None, value_trace: bool
    ):
        self.load_path, self.env_id, self.video, self.value_trace = (
            load_path,
            env_id,
            video,
            value_trace,
        )
        self.name = f"{rom}_{load_path.stem}"
        self.videos: EpisodeVideos | None = None
        self.first_game_rewards: list[float] = []

    def film(self, folder: Path, frame_of: Callable[[Step], np.ndarray]) -> None:
        self.videos = EpisodeVideos(folder, self.name, frame_of)

    def observe(self, episode: int, step: Step) -> None:
        if episode == 0:
            self.first_game_rewards.append(step.reward)
        if self.videos is not None:
            self.videos(episode, step)

    def finish(self, max_q: list[float]) -> None:
        if self.videos is not None:
            print(f"{len(self.videos.written)} videos in {self.video}")
        if self.value_trace:
            stem = self.load_path.stem
            folder = results_folder(self.load_path, self.env_id)
            folder.mkdir(parents=True, exist_ok=True)
            trace = folder / f"{stem}_value_trace.png"
            first_game = max_q[: len(self.first_game_rewards)]
            title = f"{self.env_id}, {stem}: value over one game"
            draw_value_trace(trace, first_game, self.first_game_rewards, title)
            print(f"value trace written to {trace}")


def _report_scores(result: EvalResult) -> None:
    for i, score in enumerate(result.scores, 1):
        print(f"episode {i}: raw score {score:g}")
    if not result.completed:
        print(f"score 0: {no_game_completed(result)}")
        return
    scores = np.array(result.scores)
    print(
        f"mean {scores.mean():.2f}  std {scores.std():.2f}  min {scores.min():g}  "
        f"max {scores.max():g}  ({len(scores)} episodes, {result.agent_steps:,} agent steps)"
    )


def no_game_completed(result: EvalResult) -> str:
    """The one-line explanation printed and logged wherever a score of 0 means no game ended."""
    return (
        f"no game completed in {result.agent_steps:,} agent steps (scored 0, as DeepMind's "
        f"run_gpu does; the unfinished game had reached {result.unfinished_score:g})"
    )


def _write_results(
    load_path: Path,
    protocol: EvalProtocol | None,
    game: GameSpec,
    seed: int,
    epsilon: float,
    result: EvalResult,
    metadata: dict[str, str],
) -> None:
    """The scores as JSON in the checkpoint's ``results_folder`` (beside it, or for a shipped
    run under ``runs/``): ``<stem>.eval_<protocol>.<env id>.<N>games.seed<S>.json``."""
    scores = np.array(result.scores if result.completed else [0.0])
    name = protocol.name if protocol else "episodes"
    summary = {
        "protocol": name,
        "env_id": game.env_id,
        "rom": game.rom,
        "sticky_actions": game.sticky_actions > 0,
        "seed": seed,
        "epsilon": epsilon,
        "scores": result.scores,
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()) if result.completed else None,
        "max": float(scores.max()) if result.completed else None,
        "completed": result.completed,
        "games_completed": len(result.scores),
        "unfinished_score": result.unfinished_score,
        "agent_steps": result.agent_steps,
        "checkpoint": str(load_path),
        "epoch": metadata.get("epoch"),
        "agent_steps_trained": int(metadata.get("agent_steps", 0)),
        "date": datetime.date.today().isoformat(),
    }
    folder = results_folder(load_path, game.env_id)
    out = folder / results_file_name(load_path, name, game, len(result.scores), seed)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(summary, indent=1))
    except OSError as exc:
        raise UserError(
            f"could not write the results to {out} ({exc.strerror or exc}); the scores are "
            "printed above"
        ) from None
    print(f"results written to {out}")


def results_file_name(load_path: Path, protocol: str, game: GameSpec, games: int, seed: int) -> str:
    """``<stem>.eval_<protocol>.<env id>.<N>games.seed<S>.json``: one evaluation never
    overwrites another of another game, protocol, length or seed."""
    env = game.env_id.replace("/", "_")
    return f"{load_path.stem}.eval_{protocol}.{env}.{games}games.seed{seed}.json"


def _check_outputs(load_path: Path, video: Path | None) -> None:
    """Refuse before playing what could not be written at the end: the results beside the
    checkpoint, and videos into ``video``."""
    folder = load_path.parent  # a shipped run's results go under runs/, made when written
    if not is_shipped(load_path) and folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(
            f"cannot write the results beside {load_path}: {folder} is not writable; copy the "
            "checkpoint into a writable folder and evaluate the copy"
        )
    if video is not None and video.exists() and not video.is_dir():
        raise UserError(
            f"--video {video} is an existing file; --video takes a folder (one video per game "
            "goes into it)"
        )


def _check_eval_flags(
    load_path: Path | None,
    protocol_name: str | None,
    episodes: int,
    epsilon: float,
    eval_steps: int | None,
    seed: int | None = None,
) -> None:
    if load_path is None:
        raise UserError(
            "--mode eval needs --load-path weights/<env-id>/<run-name>/epoch_<N>.safetensors"
        )
    if protocol_name is not None and protocol_name not in PROTOCOLS:
        raise UserError(
            f"unknown --protocol {protocol_name!r}; choose one of: {', '.join(PROTOCOLS)}"
        )
    if episodes <= 0:
        raise UserError(f"--episodes must be positive, got {episodes}")
    if not 0.0 <= epsilon <= 1.0:
        raise UserError(f"--epsilon must be in [0, 1], got {epsilon}")
    if eval_steps is not None and eval_steps <= 0:
        raise UserError(f"--eval-steps must be positive, got {eval_steps}")
    protocol = PROTOCOLS.get(protocol_name or "")
    if eval_steps is not None and not (protocol and protocol.agent_steps):
        played = (
            f"--protocol {protocol_name} plays"
            if protocol_name
            else "without --protocol, eval plays"
        )
        raise UserError(
            f"--eval-steps sets the length of --protocol nips2013 only; {played} a number of "
            "games: drop --eval-steps, or give --protocol nips2013"
        )
    if seed is not None and not 0 <= seed < 2**32 - 1000:
        raise UserError(f"--seed must be in [0, {2**32 - 1001:,}], got {seed}")


def _agent_steps(count: int) -> str:
    return f"{count:,} agent step" + ("" if count == 1 else "s")
