"""The training loop: deep Q-learning with experience replay (2013 Algorithm 1).

    initialise replay memory D, Q-network theta (and target theta^- = theta, 2015)
    collect held-out states with a random policy                     (2013 Sec. 5.1)
    for each agent step t:
        a_t = random with probability epsilon_t, else argmax_a Q(s_t, a; theta)
        play a_t for frame_skip emulator frames; observe r_t, x_{t+1}
        store (x_t, a_t, clip(r_t), terminal_t) in D
        every update_period steps once D holds learning_starts transitions:
            sample a minibatch from D and take one gradient step on the TD loss (learner.py)
        every epoch_updates updates: evaluate, measure avg max-Q, save, plot

Units: agent steps (the papers' "frames"); emulator frames = agent steps x frame skip.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from dqn_mlx.checkpoint import run_dir, save_weights
from dqn_mlx.config import DQNConfig
from dqn_mlx.env import PixelEnv, StackedFrames, Step
from dqn_mlx.errors import UserError
from dqn_mlx.evaluate import (
    average_max_q,
    epsilon_greedy,
    greedy_policy,
    no_game_completed,
    play_steps,
)
from dqn_mlx.learner import Learner, linear_epsilon
from dqn_mlx.metrics import append_metrics
from dqn_mlx.network import parameter_shapes
from dqn_mlx.plots import draw_plots
from dqn_mlx.replay import ReplayMemory, check_replay_fits, replay_bytes
from dqn_mlx.resume import (
    LoadedState,
    RunState,
    load_replay,
    restore_learner,
    save_replay,
    save_training_state,
)

EnvFactory = Callable[[int], PixelEnv]  # seed -> environment


def exploration_rate(config: DQNConfig, step: int) -> float:
    """epsilon at an agent step: 1 during the random replay start, then annealed linearly over
    ``epsilon_decay_steps`` (counted from the replay start, as in DeepMind's code)."""
    if step < config.learning_starts:
        return 1.0
    return linear_epsilon(
        step - config.learning_starts,
        config.epsilon_start,
        config.epsilon_end,
        config.epsilon_decay_steps,
    )


def collect_held_out_states(
    env: PixelEnv, count: int, history: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` states (count, history, 84, 84) uint8 visited by a uniform random policy."""
    states = np.empty((count, history, 84, 84), dtype=np.uint8)
    stack = StackedFrames(history)
    state = stack.reset(env.reset())
    for i in range(count):
        states[i] = state
        step = env.step(int(rng.integers(env.num_actions)))
        done = step.game_over or step.truncated
        state = stack.reset(step.frame) if done else stack.push(step.frame)
    return states


class ProgressLine:
    """A progress line every ``interval_s`` seconds: steps, frames, rate, ETA, eps, score, loss."""

    def __init__(
        self, total_steps: int, frame_skip: int, log: Callable[[str], None], interval_s: float = 5.0
    ):
        self.total, self.frame_skip, self.log = total_steps, frame_skip, log
        self.interval = interval_s
        self.last_time, self.last_step = time.perf_counter(), 0

    def maybe_print(
        self,
        step: int,
        epsilon: float,
        recent: deque[float],
        loss_count: int,
        loss_sum: Any,
        force: bool = False,
    ) -> None:
        now = time.perf_counter()
        if not force and now - self.last_time < self.interval:
            return
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        score = f"{np.mean(recent):.1f}" if recent else "n/a"
        loss = f"{float(loss_sum) / loss_count:.4f}" if loss_count else "n/a"
        self.log(
            f"agent step {step:,}/{self.total:,} ({step * self.frame_skip:,} emulator "
            f"frames) | {rate:,.0f} agent steps/s | ETA {_duration(eta)} | "
            f"epsilon {epsilon:.3f} | score (last {len(recent)} episodes) {score} | "
            f"loss/sample {loss}"
        )
        self.last_time, self.last_step = now, step


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


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


def _new_game_seed(rng: np.random.Generator) -> int:
    """Every game starts from its own seed drawn from the run's generator, so that a game in
    progress can be restored on resume by replaying its actions from that seed."""
    return int(rng.integers(2**31 - 1))


# One training game in this many starts from a seeded reset (a fresh ROM load); see start_game.
SEEDED_START_PERIOD = 10


def start_game(
    env: PixelEnv, run: RunState, rng: np.random.Generator, ended: Step | None = None
) -> np.ndarray:
    """The first frame of the next training game; ``ended`` is the step that ended the last.

    The first game and every ``SEEDED_START_PERIOD``-th after it start from a seeded reset,
    which reloads the ROM in ale-py (about 130 ms; ``AtariEnv.prepare_reset`` does it in the
    background, so the seed is drawn one seeded start ahead). The games in between start from
    ale-py's automatic reset at the end of the game before (about 11 ms), their no-op counts
    drawn by ale-py's generator, which the last seeded reset seeded. So everything since the
    last seeded start follows from its seed and the actions played since
    (``run.episode_actions`` spans those games), and resume replays them. Not every game is
    seeded: that costs about 10% of the training loop's speed in early training, when games
    are short. Nor is only the first: some games (Seaquest) carry emulator state across
    resets, so a game is reproducible only from the last ROM load, and resume would replay
    the whole run."""
    run.games_since_seed += 1
    if ended is not None and run.games_since_seed < SEEDED_START_PERIOD:
        return ended.frame  # already the first frame of the next game
    seed = run.next_seed if run.next_seed is not None else _new_game_seed(rng)
    frame = env.reset(seed)
    run.episode_seed, run.episode_actions, run.games_since_seed = seed, [], 0
    run.next_seed = _new_game_seed(rng)
    env.prepare_reset(run.next_seed)
    return frame


def train(
    config: DQNConfig,
    env_id: str,
    make_env: EnvFactory,
    weights_dir: Path,
    log: Callable[[str], None] = print,
    frame_skip: int = 1,
    *,
    resume: LoadedState | None = None,
    save_replay_memory: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train from scratch, or continue ``resume``; returns the run folder.

    ``should_stop`` is polled after every agent step: when it returns True the run writes a
    resumable training state and raises ``TrainingInterrupted`` (the CLI wires Ctrl-C and
    SIGTERM to it). A non-finite loss stops the run with a UserError before anything is saved.
    """
    config.validate()
    check_replay_fits(config.replay_size)
    out_dir = run_dir(weights_dir, env_id) if resume is None else resume.path.parent
    check_writable(out_dir)

    rng = np.random.default_rng(config.seed)
    mx.random.seed(config.seed)
    env = make_env(config.seed)
    eval_env = make_env(config.seed + 1)  # evaluation never touches the training game
    learner = Learner(config, env.num_actions)
    check_disk_space(out_dir, config, learner, save_replay_memory)
    replay = ReplayMemory(config.replay_size, config.history_length, config.batch_size)
    log(
        f"{env_id}: {env.num_actions} actions {env.action_meanings}; preset {config.preset}; "
        f"{config.total_steps:,} agent steps ({config.total_steps * frame_skip:,} emulator "
        f"frames); replay {config.replay_size:,} transitions"
    )
    stack = StackedFrames(config.history_length)
    if resume is None:
        held_out = collect_held_out_states(
            eval_env, config.held_out_states, config.history_length, rng
        )
        run = RunState()
        state = stack.reset(start_game(env, run, rng))
    else:
        held_out, run, state = _restore(resume, learner, rng, env, stack, log)
        _restore_replay(config, out_dir, replay, eval_env, learner, rng, run.step, log)

    act_greedy = learner.behaviour_policy()
    progress = ProgressLine(config.total_steps, frame_skip, log)
    recent: deque[float] = deque(run.recent_scores, maxlen=10)
    loss_sum: Any = mx.array(run.epoch_loss_sum, dtype=mx.float32)
    epoch_clock, process_start = time.perf_counter(), time.perf_counter()

    def save_state() -> None:
        snapshot = dataclasses.replace(
            run,
            recent_scores=list(recent),
            epoch_loss_sum=float(loss_sum),
            wall_time_s=run.wall_time_s + time.perf_counter() - process_start,
        )
        save_training_state(out_dir, learner, snapshot, rng, held_out, env_id, frame_skip)
        if save_replay_memory:
            path = save_replay(out_dir, replay)
            log(f"replay memory saved: {path} ({path.stat().st_size / 1e6:,.1f} MB)")

    def end_epoch() -> None:
        nonlocal loss_sum, epoch_clock
        run.epoch += 1
        train_rate = (run.step - run.epoch_start_step) / (time.perf_counter() - epoch_clock)
        evaluation = play_steps(
            eval_env,
            epsilon_greedy(act_greedy, config.eval_epsilon, env.num_actions, rng),
            config.history_length,
            config.eval_steps,
            seed=_new_game_seed(rng),
        )
        count = run.epoch_loss_count
        record = {
            "epoch": run.epoch,
            "agent_steps": run.step,
            "emulator_frames": run.step * frame_skip,
            "updates": learner.updates,
            "train_scores": run.epoch_scores,
            "train_score_mean": float(np.mean(run.epoch_scores)) if run.epoch_scores else None,
            "eval_score_mean": evaluation.mean,
            "eval_scores": evaluation.scores,
            "eval_games_completed": len(evaluation.scores),
            "eval_agent_steps": evaluation.agent_steps,
            "avg_max_q": average_max_q(learner.online, held_out),
            "loss_mean": float(loss_sum) / count if count else None,
            "epsilon": exploration_rate(config, run.step),
            "agent_steps_per_s": train_rate,
            "wall_time_s": run.wall_time_s + time.perf_counter() - process_start,
        }
        path = out_dir / f"epoch_{run.epoch}.safetensors"
        save_weights(
            path,
            learner.online,
            config,
            env_id,
            env.action_meanings,
            {
                "epoch": run.epoch,
                "agent_steps": run.step,
                "emulator_frames": run.step * frame_skip,
                "updates": learner.updates,
            },
        )
        draw_plots(out_dir, append_metrics(out_dir, record), env_id)
        run.epoch_scores, run.epoch_loss_count, run.epoch_start_step = [], 0, run.step
        loss_sum, epoch_clock = mx.array(0.0, dtype=mx.float32), time.perf_counter()
        save_state()
        scored = (
            f"eval score {evaluation.mean:.2f} over {len(evaluation.scores)} games "
            f"({config.eval_steps:,} agent steps)"
            if evaluation.completed
            else f"eval score 0: {no_game_completed(evaluation)}"
        )
        log(f"epoch {run.epoch}: {scored}, avg max-Q {record['avg_max_q']:.3f}, saved {path}")

    while run.step < config.total_steps:
        epsilon = exploration_rate(config, run.step)
        action = int(rng.integers(env.num_actions)) if rng.random() < epsilon else act_greedy(state)
        result = env.step(action)
        run.episode_actions.append(action)
        run.score += result.reward
        store_transition(config, replay, state, action, result, run.episode_start)

        if result.game_over or result.truncated:  # the next game: see start_game
            run.epoch_scores.append(run.score)
            recent.append(run.score)
            first_frame = start_game(env, run, rng, ended=result)
            state, run.episode_start, run.score = stack.reset(first_frame), True, 0.0
        else:
            state, run.episode_start = stack.push(result.frame), False
        run.step += 1

        updating = run.step > config.learning_starts and (run.step - 1) % config.update_period == 0
        if updating:
            batch = replay.sample(config.batch_size, rng)
            loss_sum = _finish_update(learner, run, loss_sum, out_dir)  # the one wait
            learner.start_update(*batch)  # with overlap_acting, computes while we act
        if learner.target_sync_due(run.step):  # theta^- <- theta, counted in agent steps
            loss_sum = _finish_update(learner, run, loss_sum, out_dir)
            learner.sync_target()
        # The epoch ends after this step's sync, so that the state it saves includes it.
        if updating and learner.updates % config.epoch_updates == 0:
            loss_sum = _finish_update(learner, run, loss_sum, out_dir)
            with _stop_cleanly_on_write_errors(out_dir):
                end_epoch()
        progress.maybe_print(run.step, epsilon, recent, run.epoch_loss_count, loss_sum)
        if should_stop is not None and should_stop():
            loss_sum = _finish_update(learner, run, loss_sum, out_dir)
            with _stop_cleanly_on_write_errors(out_dir):
                save_state()
            raise TrainingInterrupted(out_dir, run.step)

    loss_sum = _finish_update(learner, run, loss_sum, out_dir)
    progress.maybe_print(
        run.step,
        exploration_rate(config, run.step),
        recent,
        run.epoch_loss_count,
        loss_sum,
        force=True,
    )
    if run.epoch_loss_count > 0:  # a final, shorter epoch: no update is left unsaved
        with _stop_cleanly_on_write_errors(out_dir):
            end_epoch()
    return out_dir


class TrainingInterrupted(Exception):
    """Raised after a resumable training state was written on request (Ctrl-C, SIGTERM)."""

    def __init__(self, out_dir: Path, step: int):
        super().__init__(f"interrupted at agent step {step:,}")
        self.out_dir, self.step = out_dir, step


def check_writable(out_dir: Path) -> None:
    """Fail before training if the run folder cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"--weights-dir: cannot write to {out_dir} ({exc.strerror or exc}); choose a "
            "writable folder"
        ) from None


def check_disk_space(out_dir: Path, config: DQNConfig, learner: Learner, replay: bool) -> None:
    """Refuse to start when the planned checkpoints clearly cannot fit on the disk."""
    weights = 4 * sum(int(np.prod(shape)) for shape in parameter_shapes(learner.online).values())
    updates = max(0, config.total_steps - config.learning_starts) // config.update_period
    epochs = -(-updates // config.epoch_updates) + 1
    state = 4 * weights + config.held_out_states * config.history_length * 84 * 84
    needed = epochs * weights + 2 * state + (replay_bytes(config.replay_size) if replay else 0)
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise UserError(
            f"--weights-dir {out_dir}: the planned checkpoints need about {needed / 1e9:.2f} GB "
            f"but only {free / 1e9:.2f} GB is free; free some space or choose another folder"
        )


@contextmanager
def _stop_cleanly_on_write_errors(out_dir: Path) -> Iterator[None]:
    """A failed write (disk full, folder removed) ends the run with one line; the previous
    complete files stay, since every file is written to a temporary name and renamed."""
    try:
        yield
    except OSError as exc:
        raise UserError(
            f"could not write to {out_dir} ({exc.strerror or exc}); the run stopped and the "
            "last complete checkpoint there is kept"
        ) from None


def _restore(
    loaded: LoadedState,
    learner: Learner,
    rng: np.random.Generator,
    env: PixelEnv,
    stack: StackedFrames,
    log: Callable[[str], None],
) -> tuple[np.ndarray, RunState, np.ndarray]:
    """Learner, generators and the game in progress, as they were when the state was saved."""
    restore_learner(learner, loaded)
    rng.bit_generator.state = loaded.rng_state
    run = loaded.run
    state = stack.reset(env.reset(run.episode_seed))
    for action in run.episode_actions:  # replay everything since the last seeded start
        step = env.step(action)
        ended = step.game_over or step.truncated
        state = stack.reset(step.frame) if ended else stack.push(step.frame)
    if run.next_seed is not None:
        env.prepare_reset(run.next_seed)
    log(
        f"resumed from {loaded.path}: epoch {run.epoch}, agent step {run.step:,}, "
        f"{learner.updates:,} updates; game in progress restored ({len(run.episode_actions):,} "
        "agent steps replayed since its last seeded start)"
    )
    return np.array(loaded.arrays["held_out"]), run, state


def _finish_update(learner: Learner, run: RunState, loss_sum: Any, out_dir: Path) -> Any:
    """Wait for the update in flight, if any, and add its loss to the epoch's; returns the new
    sum. A non-finite loss stops the run here, before anything is saved."""
    loss = learner.finish_update()
    if loss is None:
        return loss_sum
    value = float(loss.item())  # type: ignore[arg-type]
    if not np.isfinite(value):
        raise UserError(
            f"the loss became {value} at update {learner.updates:,}; stopped at agent step "
            f"{run.step:,} without saving it. The last good checkpoint is in {out_dir}; try a "
            "lower --learning-rate"
        )
    run.epoch_loss_count += 1
    return loss_sum + loss


def _restore_replay(
    config: DQNConfig,
    out_dir: Path,
    replay: ReplayMemory,
    env: PixelEnv,
    learner: Learner,
    rng: np.random.Generator,
    step: int,
    log: Callable[[str], None],
) -> None:
    """Load the saved replay memory; without one, refill it by playing the current policy
    (on the evaluation env, so the training game stays as it was) before learning goes on."""
    if load_replay(out_dir, replay):
        log(f"replay memory restored: {replay.size:,} transitions")
        return
    count = min(
        max(config.learning_starts, config.batch_size + config.history_length), config.replay_size
    )
    log(
        f"no saved replay memory (train with --save-replay to keep it): refilling {count:,} "
        "transitions with the current policy before learning resumes"
    )
    act = epsilon_greedy(
        greedy_policy(learner.online), exploration_rate(config, step), env.num_actions, rng
    )
    stack = StackedFrames(config.history_length)
    state, start = stack.reset(env.reset(_new_game_seed(rng))), True
    for _ in range(count):
        action = act(state)
        result = env.step(action)
        store_transition(config, replay, state, action, result, start)
        if result.game_over or result.truncated:
            state, start = stack.reset(env.reset(_new_game_seed(rng))), True
        else:
            state, start = stack.push(result.frame), False
