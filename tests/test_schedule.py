"""Algorithm 1's timing, asked of one object (``core/schedule.py``): checked against a
brute-force count over every small combination of its counts, and against the real loop's
counters."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from catch_env import CatchEnv
from compute import COMPUTE

from dqn_mlx.config import NIPS2013, DQNConfig, with_overrides
from dqn_mlx.core.game import GameRecord, TrainingGame
from dqn_mlx.core.learner import Learner
from dqn_mlx.core.loop import RunState, Training, run_loop
from dqn_mlx.core.replay import ReplayStreams
from dqn_mlx.core.schedule import Schedule
from dqn_mlx.run.metrics import read_metrics
from dqn_mlx.run.train import train


def brute_force(s: Schedule) -> dict[str, list[int]]:
    """The run's timeline by enumeration, written from the rules in prose rather than from
    the schedule's arithmetic: updates follow agent steps 1, 1 + P, 1 + 2P, ... beyond the
    random play, syncs follow agent steps K, 2K, ..., an epoch ends after the pass (of
    ``num_envs`` agent steps) in which update k x E is made, and a last, shorter epoch
    (``short``: [1] or []) saves the updates made after the last of those."""
    grid = range(1, s.total_steps + 1, s.update_period)
    update_steps = [t for t in grid if t > s.learning_starts]
    period = s.target_update_agent_steps
    sync_steps = list(range(period, s.total_steps + 1, period)) if period else []
    ends, before, saved = [], 0, 0  # epoch ends' agent steps; updates before this pass, saved
    for end in range(s.num_envs, s.total_steps + 1, s.num_envs):
        made = sum(1 for t in update_steps if t <= end)
        if any(n % s.epoch_updates == 0 for n in range(before + 1, made + 1)):
            ends.append(end)
            saved = made
        before = made
    short = [1] if len(update_steps) > saved else []
    return {"updates": update_steps, "syncs": sync_steps, "epoch_ends": ends, "short": short}


COMBINATIONS = [
    Schedule(total, starts, period, epoch, 10, target, games)
    for starts, period, target, epoch, games in itertools.product(
        range(0, 6), range(1, 5), range(0, 4), range(1, 5), range(1, 4)
    )
    for total in (games * 12,)
    if epoch >= -(-games // period)  # what the config's check allows
]


def test_the_schedule_agrees_with_a_brute_force_count_over_every_small_combination() -> None:
    assert len(COMBINATIONS) > 1_000
    for s in COMBINATIONS:
        expected = brute_force(s)
        steps = range(1, s.total_steps + 1)
        assert [t for t in steps if s.updates_at(t)] == expected["updates"], s
        assert [t for t in steps if s.syncs_target_at(t)] == expected["syncs"], s
        for step in range(s.total_steps + 1):
            assert s.updates_by(step) == sum(t <= step for t in expected["updates"]), (s, step)
        for n, step in enumerate(expected["updates"], start=1):
            assert s.step_of_update(n) == step, (s, n)
        assert s.ends_short_epoch() == bool(expected["short"]), s
        assert s.epoch_ends() == len(expected["epoch_ends"]) + len(expected["short"]), s
        for end in range(0, s.total_steps + 1, s.num_envs):
            still = sum(e > end for e in expected["epoch_ends"]) + len(expected["short"])
            assert s.evaluations_after(end) == still, (s, end)
        assert s.most_updates_per_pass() >= max(
            (sum(e - s.num_envs < t <= e for t in expected["updates"])
             for e in range(s.num_envs, s.total_steps + 1, s.num_envs)),
            default=0,
        )  # fmt: skip


def test_a_learning_start_off_the_update_grid_counts_no_update_the_loop_never_makes() -> None:
    """The ETA's old count took the updates from ``learning_starts`` on: with 1 and an update
    per 4 agent steps it counted one by agent step 2, where the loop makes its first after
    agent step 5."""
    s = Schedule(100, 1, 4, 10, 10)
    assert [s.updates_by(t) for t in range(1, 10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert s.step_of_update(1) == 5


def _config(starts: int, period: int, target: int, epoch: int, games: int) -> DQNConfig:
    return with_overrides(
        NIPS2013,
        {
            "replay_size": 400, "batch_size": 4, "held_out_states": 8, "eval_steps": 5,
            "learning_starts": starts, "update_period": period,
            "target_update_agent_steps": target, "epoch_updates": epoch, "num_envs": games,
            "total_steps": 30 * games, "seed": 0,
        },
    ).validate()  # fmt: skip


class Recorder:
    """The loop's hooks, keeping its counters after every pass."""

    def __init__(self, training: Training) -> None:
        self.training = training
        self.passes: list[tuple[int, int, bool]] = []  # agent step, updates, epoch ended
        self.ended = False

    def end_epoch(self) -> None:
        self.ended = True
        self.training.run.start_epoch()

    def after_step(self, epsilon: float, finished: object, updates: object) -> None:
        run, learner = self.training.run, self.training.learner
        self.passes.append((run.step, learner.updates, self.ended))
        self.ended = False

    def stop_requested(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("starts", "period", "target", "epoch", "games"),
    [(1, 4, 0, 2, 1), (3, 4, 5, 2, 1), (5, 2, 3, 2, 3), (3, 1, 4, 3, 3), (6, 3, 7, 1, 2)],
)
def test_the_real_loop_updates_syncs_and_ends_epochs_where_the_schedule_says(
    monkeypatch: pytest.MonkeyPatch, starts: int, period: int, target: int, epoch: int,
    games: int,
) -> None:  # fmt: skip
    config = _config(starts, period, target, epoch, games)
    schedule = Schedule.of(config)
    syncs: list[int] = []
    original = Learner.sync_target

    def counting(self: Learner) -> None:
        syncs.append(getattr(self, "updates", 0))
        original(self)

    monkeypatch.setattr(Learner, "sync_target", counting)
    envs = [CatchEnv(k) for k in range(games)]
    records = [GameRecord() for _ in envs]
    training = Training(
        config, Learner(config, 3, COMPUTE), ReplayStreams(400, 4, 4, games),
        [TrainingGame(env, 4, record) for env, record in zip(envs, records, strict=True)],
        np.random.default_rng(0), RunState(games=records),
    )  # fmt: skip
    for game in training.games:
        game.start(training.rng)
    syncs.clear()  # the copy at construction
    hooks = Recorder(training)
    run_loop(training, hooks)
    for step, updates, ended in hooks.passes:
        assert updates == schedule.updates_by(step), step
        before = schedule.updates_by(step - games)
        assert ended == any(schedule.ends_epoch(n) for n in range(before + 1, updates + 1))
    sync_steps = [t for t in range(1, config.total_steps + 1) if schedule.syncs_target_at(t)]
    assert syncs == [schedule.updates_by(t) for t in sync_steps]
    assert len(syncs) == (config.total_steps // target if target else 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("starts", "period", "epoch", "games", "total", "epochs"),
    [(2, 1, 3, 2, 24, 7), (3, 4, 2, 1, 30, 4)],
)
def test_a_real_run_ends_as_many_epochs_as_the_schedule_counts(
    tmp_path: Path, starts: int, period: int, epoch: int, games: int, total: int, epochs: int
) -> None:
    """Through ``run.train``: the loop's epoch ends and the last, shorter epoch. The first run
    makes 22 updates in epochs of 3 and yet ends no shorter epoch: update 22 falls in the pass
    that ended the epoch of update 21 (a count of updates alone would expect 8 epochs)."""
    config = with_overrides(_config(starts, period, 0, epoch, games), {"total_steps": total})
    out = train(config, "Catch", CatchEnv, tmp_path, log=lambda _: None, compute=COMPUTE)
    records = read_metrics(out)
    schedule = Schedule.of(config)
    assert len(records) == schedule.epoch_ends() == epochs
    assert records[-1]["updates"] == schedule.updates_by(total)
