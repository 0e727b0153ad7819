"""The end of an epoch (2013 Sec. 5.1): evaluate, measure average max-Q, save, log.

Every ``epoch_updates`` updates the run
1. plays ``eval_steps`` agent steps at epsilon ``eval_epsilon`` on its own environment (the
   training game is left as it is) and scores the games completed;
2. computes the average max_a Q(s, a) over the held-out states;
3. writes ``epoch_<N>.safetensors``, hands the epoch's record to every ``RunLogger``
   (``metrics.jsonl``, plots) and rewrites the resumable training state.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dqn_mlx.core.env import PixelEnv
from dqn_mlx.core.game import new_game_seed
from dqn_mlx.core.loop import Training
from dqn_mlx.core.policy import epsilon_greedy, exploration_rate, greedy_policy
from dqn_mlx.evaluate import EvalResult, average_max_q, no_game_completed, play_steps
from dqn_mlx.run.checkpoint import save_weights
from dqn_mlx.run.folder import remove_old_replays
from dqn_mlx.run.loggers import RunLogger
from dqn_mlx.run.resume import save_replay, save_training_state


@dataclass
class RunOutput:
    """What a run writes, and where: ``out_dir`` holds checkpoints, metrics and state."""

    out_dir: Path
    env_id: str
    frame_skip: int
    action_meanings: list[str]
    save_replay_memory: bool
    log: Callable[[str], None]
    loggers: Sequence[RunLogger]
    evaluating: Callable[[int, int, int, int], None] | None = None
    """Told at every agent step of an evaluation: epoch, games ended, agent steps, of how many
    (the progress display)."""


class EpochEnd:
    """Called by the loop after every ``epoch_updates`` updates (``LoopHooks.end_epoch``)."""

    def __init__(
        self, t: Training, eval_env: PixelEnv, held_out: np.ndarray, output: RunOutput
    ) -> None:
        self.t, self.eval_env, self.held_out, self.output = t, eval_env, held_out, output
        self.process_start = time.perf_counter()
        self.restart_clock()

    def restart_clock(self) -> None:
        """Time the agent steps from here on. A resumed run starts its clock mid-epoch, at the
        step it was stopped, so the epoch's rate counts only the steps this process made."""
        self.clock_start, self.clock_step = time.perf_counter(), self.t.run.step

    def agent_steps_per_s(self) -> float:
        """The training rate since ``restart_clock``, in agent steps per second."""
        return (self.t.run.step - self.clock_step) / (time.perf_counter() - self.clock_start)

    def __call__(self) -> None:
        t, run = self.t, self.t.run
        run.epoch += 1
        rate = self.agent_steps_per_s()
        evaluation = self.evaluate()
        record = self.record(evaluation, rate)
        path = self.output.out_dir / f"epoch_{run.epoch}.safetensors"
        save_weights(
            path,
            t.learner.online,
            t.config,
            self.output.env_id,
            self.output.action_meanings,
            {key: record[key] for key in ("epoch", "agent_steps", "emulator_frames", "updates")},
        )
        for logger in self.output.loggers:
            logger.end_epoch(record)
        run.start_epoch()
        self.save_state()
        self.restart_clock()  # after the save: writing the state is not training
        scored = (
            f"eval score {evaluation.mean:.2f} over {len(evaluation.scores)} games "
            f"({t.config.eval_steps:,} agent steps)"
            if evaluation.completed
            else f"eval score 0: {no_game_completed(evaluation)}"
        )
        self.output.log(
            f"epoch {run.epoch}: {scored}, avg max-Q {record['avg_max_q']:.3f}, saved {path}"
        )

    def evaluate(self) -> EvalResult:
        """``eval_steps`` agent steps of epsilon-greedy play from a fresh, seeded game."""
        t = self.t
        policy = epsilon_greedy(
            greedy_policy(t.learner.online),
            t.config.eval_epsilon,
            self.eval_env.num_actions,
            t.rng,
        )
        epoch, total, done = t.run.epoch, t.config.eval_steps, [0]
        tell = self.output.evaluating

        def observe(games: int, step: object) -> None:
            done[0] += 1
            if tell is not None:
                tell(epoch, games, done[0], total)

        return play_steps(
            self.eval_env,
            policy,
            t.config.history_length,
            t.config.eval_steps,
            seed=new_game_seed(t.rng),
            observer=observe,
        )

    def record(self, evaluation: EvalResult, rate: float) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (keys documented in ``run/metrics.py``)."""
        t, run = self.t, self.t.run
        count = run.epoch_loss_count
        return {
            "epoch": run.epoch,
            "agent_steps": run.step,
            "emulator_frames": run.step * self.output.frame_skip,
            "updates": t.learner.updates,
            "train_scores": run.epoch_scores,
            "train_score_mean": float(np.mean(run.epoch_scores)) if run.epoch_scores else None,
            "eval_score_mean": evaluation.mean,
            "eval_scores": evaluation.scores,
            "eval_games_completed": len(evaluation.scores),
            "eval_agent_steps": evaluation.agent_steps,
            "avg_max_q": average_max_q(t.learner.online, self.held_out),
            "loss_mean": run.epoch_loss_sum / count if count else None,
            "epsilon": exploration_rate(t.config, run.step),
            "agent_steps_per_s": rate,
            "wall_time_s": self.wall_time_s(),
            "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        }

    def wall_time_s(self) -> float:
        return self.t.run.wall_time_s + time.perf_counter() - self.process_start

    def save_state(self) -> None:
        """Write the resumable training state (and, if asked, the replay memory), paired: the
        replay first under its own name, then the state that names it, then the previous
        replay goes (run/resume.py)."""
        t, output = self.t, self.output
        replay = None
        if output.save_replay_memory:
            path = save_replay(output.out_dir, t.replay, t.run.step)
            output.log(f"replay memory saved: {path} ({path.stat().st_size / 1e6:,.1f} MB)")
            replay = path.name
        snapshot = dataclasses.replace(t.run, wall_time_s=self.wall_time_s())
        save_training_state(
            output.out_dir,
            t.learner,
            snapshot,
            t.rng,
            self.held_out,
            output.env_id,
            output.frame_skip,
            replay,
        )
        remove_old_replays(output.out_dir, replay)
