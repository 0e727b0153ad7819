"""The end of an epoch (2013 Sec. 5.1): evaluate, measure average max-Q, save, log.

Every ``epoch_updates`` updates the run
1. plays ``eval_steps`` agent steps at epsilon ``eval_epsilon`` on its own environment (the
   training game is left as it is) and scores the games completed;
2. computes the average max_a Q(s, a) over the held-out states;
3. writes ``epoch_<N>.safetensors`` and returns the epoch's record, which the run hands to its
   outputs (``metrics.jsonl``, plots, live metrics, progress), then rewrites the resumable
   training state: a record is on disk before the state that counts its epoch done.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dqn_mlx.core.env import PixelEnv
from dqn_mlx.core.game import new_game_seed
from dqn_mlx.core.loop import Training
from dqn_mlx.core.policy import epsilon_greedy, exploration_rate, greedy_policy
from dqn_mlx.evaluate import EvalResult, average_max_q, no_game_completed, play_steps
from dqn_mlx.run.checkpoint import save_weights
from dqn_mlx.run.clock import RunningClock
from dqn_mlx.run.folder import remove_old_replays
from dqn_mlx.run.resume import save_replay, save_training_state

EvaluationProgress = Callable[[int, int, int, int], None]
"""Told at every agent step of an evaluation: epoch, games ended, agent steps, of how many."""


@dataclass
class RunOutput:
    """What a run writes, and where: ``out_dir`` holds checkpoints, metrics and state."""

    out_dir: Path
    env_id: str
    frame_skip: int
    action_meanings: list[str]
    save_replay_memory: bool
    log: Callable[[str], None]


class EndedEpoch(NamedTuple):
    """An epoch that ``EpochEnd.close_epoch`` ended: its record (``run/metrics.py``'s keys)
    and the line that reports it."""

    record: dict[str, Any]
    line: str


class EpochEnd:
    """An epoch's end in two halves, with the run's outputs between them (``RunHooks``):
    ``close_epoch`` evaluates and saves the weights, ``open_next`` starts the next epoch and
    saves the training state."""

    def __init__(
        self,
        training: Training,
        eval_env: PixelEnv,
        held_out: np.ndarray,
        output: RunOutput,
        clock: RunningClock,
    ) -> None:
        self.training, self.eval_env, self.held_out = training, eval_env, held_out
        self.output, self.clock = output, clock
        self.process_start = time.perf_counter()
        self.restart_clock()

    def restart_clock(self) -> None:
        """Time the agent steps from here on, in running time (``run/clock.py``): the epoch
        end just passed is left out. A resumed run starts its clock mid-epoch, at the step it
        was stopped, so the epoch's rate counts only the steps this process made."""
        self.clock.leave_out()
        self.clock_start, self.clock_step = self.clock.seconds(), self.training.run.step

    def agent_steps_per_s(self) -> float:
        """The training rate since ``restart_clock``, in agent steps per second of running
        time."""
        steps = self.training.run.step - self.clock_step
        return steps / max(self.clock.seconds() - self.clock_start, 1e-9)

    def close_epoch(self, progress: EvaluationProgress | None = None) -> EndedEpoch:
        """Count the epoch, evaluate it (telling ``progress``) and write its checkpoint."""
        training, run = self.training, self.training.run
        run.epoch += 1
        rate = self.agent_steps_per_s()
        evaluation = self.evaluate(progress)
        record = self.record(evaluation, rate)
        path = self.output.out_dir / f"epoch_{run.epoch}.safetensors"
        save_weights(
            path,
            training.learner.online,
            training.config,
            self.output.env_id,
            self.output.action_meanings,
            {key: record[key] for key in ("epoch", "agent_steps", "emulator_frames", "updates")},
        )
        scored = (
            f"eval score {evaluation.mean:.2f} over {len(evaluation.scores)} games "
            f"({training.config.eval_steps:,} agent steps)"
            if evaluation.completed
            else f"eval score 0: {no_game_completed(evaluation)}"
        )
        line = f"epoch {run.epoch}: {scored}, avg max-Q {record['avg_max_q']:.3f}, saved {path}"
        return EndedEpoch(record, line)

    def open_next(self, ended: EndedEpoch) -> None:
        """Start the next epoch, save the training state that counts ``ended`` done, and log
        its line."""
        self.training.run.start_epoch()
        self.save_state()
        self.restart_clock()  # after the save: writing the state is not training
        self.output.log(ended.line)

    def evaluate(self, progress: EvaluationProgress | None = None) -> EvalResult:
        """``eval_steps`` agent steps of epsilon-greedy play from a fresh, seeded game."""
        training, config = self.training, self.training.config
        policy = epsilon_greedy(
            greedy_policy(training.learner.online),
            config.eval_epsilon,
            self.eval_env.num_actions,
            training.rng,
        )
        epoch, total, done = training.run.epoch, config.eval_steps, [0]

        def observe(games: int, step: object) -> None:
            done[0] += 1
            if progress is not None:
                progress(epoch, games, done[0], total)

        return play_steps(
            self.eval_env,
            policy,
            config.history_length,
            config.eval_steps,
            seed=new_game_seed(training.rng),
            observer=observe,
        )

    def record(self, evaluation: EvalResult, rate: float) -> dict[str, Any]:
        """The epoch's line of ``metrics.jsonl`` (keys documented in ``run/metrics.py``)."""
        training, run = self.training, self.training.run
        count = run.epoch_loss_count
        return {
            "epoch": run.epoch,
            "agent_steps": run.step,
            "emulator_frames": run.step * self.output.frame_skip,
            "updates": training.learner.updates,
            "train_scores": run.epoch_scores,
            "train_score_mean": float(np.mean(run.epoch_scores)) if run.epoch_scores else None,
            "eval_score_mean": evaluation.mean,
            "eval_scores": evaluation.scores,
            "eval_games_completed": len(evaluation.scores),
            "eval_agent_steps": evaluation.agent_steps,
            "avg_max_q": average_max_q(training.learner.online, self.held_out),
            "loss_mean": run.epoch_loss_sum / count if count else None,
            "epsilon": exploration_rate(training.config, run.step),
            "agent_steps_per_s": rate,
            "wall_time_s": self.wall_time_s(),
            "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
        }

    def wall_time_s(self) -> float:
        return self.training.run.wall_time_s + time.perf_counter() - self.process_start

    def save_state(self) -> None:
        """Write the resumable training state (and, if asked, the replay memory), paired: the
        replay first under its own name, then the state that names it, then the previous
        replay goes (run/resume.py)."""
        training, output = self.training, self.output
        replay = None
        if output.save_replay_memory:
            path = save_replay(output.out_dir, training.replay, training.run.step)
            output.log(f"replay memory saved: {path} ({path.stat().st_size / 1e6:,.1f} MB)")
            replay = path.name
        snapshot = dataclasses.replace(training.run, wall_time_s=self.wall_time_s())
        save_training_state(
            output.out_dir,
            training.learner,
            snapshot,
            training.rng,
            self.held_out,
            output.env_id,
            output.frame_skip,
            replay,
        )
        remove_old_replays(output.out_dir, replay)
