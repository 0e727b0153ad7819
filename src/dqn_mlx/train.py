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

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from dqn_mlx.checkpoint import run_dir, save_weights
from dqn_mlx.config import DQNConfig
from dqn_mlx.env import PixelEnv, StackedFrames
from dqn_mlx.evaluate import average_max_q, epsilon_greedy, greedy_policy, play_steps
from dqn_mlx.learner import Learner, linear_epsilon
from dqn_mlx.metrics import append_metrics
from dqn_mlx.plots import draw_plots
from dqn_mlx.replay import ReplayMemory, check_replay_fits

EnvFactory = Callable[[int], PixelEnv]  # seed -> environment


@dataclass
class EpochStats:
    """What the loop accumulates between two epoch ends."""

    train_scores: list[float] = field(default_factory=list)
    loss_sum: Any = 0.0  # an mx scalar; read once per log line, not once per update
    loss_count: int = 0
    start_time: float = field(default_factory=time.perf_counter)
    start_step: int = 0


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
        stats: EpochStats,
        force: bool = False,
    ) -> None:
        now = time.perf_counter()
        if not force and now - self.last_time < self.interval:
            return
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        score = f"{np.mean(recent):.1f}" if recent else "n/a"
        loss = (
            f"{float(stats.loss_sum) / stats.loss_count:.4f}"
            if stats.loss_count
            else "n/a (random replay start)"
        )
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


def train(
    config: DQNConfig,
    env_id: str,
    make_env: EnvFactory,
    weights_dir: Path,
    log: Callable[[str], None] = print,
    frame_skip: int = 1,
) -> Path:
    """Train from scratch; returns the run folder holding checkpoints, metrics and plots."""
    config.validate()
    check_replay_fits(config.replay_size)
    out_dir = run_dir(weights_dir, env_id)
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(config.seed)
    mx.random.seed(config.seed)
    env = make_env(config.seed)
    eval_env = make_env(config.seed + 1)  # evaluation never touches the training game
    learner = Learner(config, env.num_actions)
    replay = ReplayMemory(config.replay_size, config.history_length, config.batch_size)
    log(
        f"{env_id}: {env.num_actions} actions {env.action_meanings}; preset {config.preset}; "
        f"{config.total_steps:,} agent steps ({config.total_steps * frame_skip:,} emulator "
        f"frames); replay {config.replay_size:,} transitions"
    )

    held_out = collect_held_out_states(eval_env, config.held_out_states, config.history_length, rng)
    act_greedy = greedy_policy(learner.online)
    progress = ProgressLine(config.total_steps, frame_skip, log)
    recent: deque[float] = deque(maxlen=10)
    stats, epoch, run_start = EpochStats(), 0, time.perf_counter()

    def end_epoch(step: int) -> None:
        nonlocal stats, epoch
        epoch += 1
        train_rate = (step - stats.start_step) / (time.perf_counter() - stats.start_time)
        evaluation = play_steps(
            eval_env,
            epsilon_greedy(act_greedy, config.eval_epsilon, env.num_actions, rng),
            config.history_length,
            config.eval_steps,
        )
        record = {
            "epoch": epoch,
            "agent_steps": step,
            "emulator_frames": step * frame_skip,
            "updates": learner.updates,
            "train_scores": stats.train_scores,
            "train_score_mean": float(np.mean(stats.train_scores)) if stats.train_scores else None,
            "eval_score_mean": evaluation.mean,
            "eval_scores": evaluation.scores,
            "eval_agent_steps": evaluation.agent_steps,
            "avg_max_q": average_max_q(learner.online, held_out),
            "loss_mean": (
                float(stats.loss_sum) / stats.loss_count / config.batch_size
                if stats.loss_count
                else None
            ),
            "epsilon": exploration_rate(config, step),
            "agent_steps_per_s": train_rate,
            "wall_time_s": time.perf_counter() - run_start,
        }
        path = out_dir / f"epoch_{epoch}.safetensors"
        save_weights(
            path,
            learner.online,
            config,
            env_id,
            env.action_meanings,
            {
                "epoch": epoch,
                "agent_steps": step,
                "emulator_frames": step * frame_skip,
                "updates": learner.updates,
            },
        )
        records = append_metrics(out_dir, record)
        draw_plots(out_dir, records, env_id)
        log(
            f"epoch {epoch}: eval score {evaluation.mean:.2f} over {len(evaluation.scores)} "
            f"episodes ({config.eval_steps:,} agent steps), avg max-Q {record['avg_max_q']:.3f}, "
            f"saved {path}"
        )
        stats = EpochStats(start_step=step)

    stack = StackedFrames(config.history_length)
    state = stack.reset(env.reset())
    episode_start, score = True, 0.0
    for step in range(config.total_steps):
        epsilon = exploration_rate(config, step)
        action = int(rng.integers(env.num_actions)) if rng.random() < epsilon else act_greedy(state)
        result = env.step(action)
        score += result.reward
        # Learning sees clipped rewards, and (2015) a lost life as terminal: no bootstrap.
        reward = float(np.clip(result.reward, -config.reward_clip, config.reward_clip))
        terminal = result.game_over or (config.terminal_on_life_loss and result.life_lost)
        replay.add(state[-1], action, reward, terminal, episode_start)

        if result.game_over or result.truncated:  # result.frame already starts the next game
            stats.train_scores.append(score)
            recent.append(score)
            state, episode_start, score = stack.reset(result.frame), True, 0.0
        else:
            state, episode_start = stack.push(result.frame), False

        if step >= config.learning_starts and step % config.update_period == 0:
            batch = replay.sample(config.batch_size, rng)
            stats.loss_sum = stats.loss_sum + learner.update(*batch)
            stats.loss_count += 1
            if learner.updates % config.epoch_updates == 0:
                end_epoch(step + 1)
        progress.maybe_print(step + 1, epsilon, recent, stats)

    progress.maybe_print(
        config.total_steps, exploration_rate(config, config.total_steps), recent, stats, force=True
    )
    if stats.start_step < config.total_steps:  # a final, shorter epoch: nothing is lost
        end_epoch(config.total_steps)
    return out_dir
