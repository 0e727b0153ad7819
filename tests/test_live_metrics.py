"""Live metrics: a run writes every finished game and the training numbers as it goes, as CSV
files and TensorBoard event files, and a resumed run continues them without duplicates."""

from __future__ import annotations

import csv
import struct
import time
from pathlib import Path

import pytest
from catch_env import CatchEnv
from compute import COMPUTE
from tensorboardX.proto import event_pb2

from dqn_mlx.config import NIPS2013, with_overrides
from dqn_mlx.run.live import GAMES_FILE, UPDATES_FILE
from dqn_mlx.run.metrics import read_metrics
from dqn_mlx.run.resume import load_training_state
from dqn_mlx.run.train import TrainingInterrupted, train

CONFIG = with_overrides(
    NIPS2013,
    {
        "replay_size": 2_000,
        "learning_starts": 100,
        "epsilon_decay_steps": 300,
        "epoch_updates": 300,
        "total_steps": 700,
        "eval_steps": 30,
        "held_out_states": 16,
        "seed": 2,
        "batch_size": 8,  # the run machinery, not learning: a small minibatch is enough
    },
)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the folder's TensorBoard event files (TFRecord framing: length, its
    CRC, the serialised Event, its CRC), read as TensorBoard reads them: a session start with a
    step purges the events at that step and after from the files before."""
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if event.session_log.status == event_pb2.SessionLog.START and event.step:
                found = {k: [(s, v) for s, v in vs if s < event.step] for k, vs in found.items()}
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_a_run_writes_every_game_and_update_window_as_csv_and_tensorboard(
    tmp_path: Path,
) -> None:
    out = train(CONFIG, "Catch", CatchEnv, tmp_path, log=lambda _: None, compute=COMPUTE)
    games = _rows(out / GAMES_FILE)
    trained = [score for r in read_metrics(out) for score in r["train_scores"]]
    assert [float(r["score"]) for r in games] == trained  # one row per finished game
    assert all(int(r["length_agent_steps"]) == 10 for r in games)  # Catch: 10 agent steps
    steps = [int(r["agent_step"]) for r in games]
    assert steps == sorted(steps) and steps[0] == 10
    updates = _rows(out / UPDATES_FILE)
    assert [int(r["agent_step"]) for r in updates] == [350, 600]  # every 250 updates
    assert all(float(r["loss"]) > 0 and float(r["agent_steps_per_s"]) > 0 for r in updates)
    board = _scalars(out)
    assert [value for _, value in board["game/score"]] == trained
    assert [step for step, _ in board["train/loss"]] == [350, 600]
    assert [step for step, _ in board["eval/score"]] == [400, 700]


@pytest.mark.slow
def test_a_resumed_run_continues_the_live_files_without_duplicates(tmp_path: Path) -> None:
    full = train(CONFIG, "Catch", CatchEnv, tmp_path / "full", log=lambda _: None, compute=COMPUTE)
    calls = {"n": 0}

    def stop_at_560() -> bool:  # a game ends at agent step 560 (Catch games last 10)
        calls["n"] += 1
        return calls["n"] >= 560

    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            "Catch",
            CatchEnv,
            tmp_path / "cut",
            log=lambda _: None,
            save_replay_memory=True,
            should_stop=stop_at_560,
            compute=COMPUTE,
        )
    cut = tmp_path / "cut"
    train(
        CONFIG,
        "Catch",
        CatchEnv,
        tmp_path,
        log=lambda _: None,
        resume=load_training_state(cut),
        compute=COMPUTE,
    )
    assert _rows(cut / GAMES_FILE) == _rows(full / GAMES_FILE)
    assert [r["agent_step"] for r in _rows(cut / UPDATES_FILE)] == ["350", "600"]
    board_full, board_cut = _scalars(full), _scalars(cut)
    for tag in ("game/score", "game/length_agent_steps", "eval/score", "eval/avg_max_q"):
        assert board_cut[tag] == board_full[tag], tag
    assert [s for s, _ in board_cut["train/loss"]] == [350, 600]


def test_a_stopped_run_records_the_rate_of_its_training_not_of_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped for longer than ``PAUSED_S`` between two passes (SIGSTOP while the suite
    runs; here a sleep, with the threshold lowered to keep the test short): the update window
    and the epoch that hold the stop give the rate of their running time, the stop left out
    (``run/clock.py``), however fast the machine trains."""
    monkeypatch.setattr("dqn_mlx.run.clock.PAUSED_S", 1.0)
    stop_s, passes = 4.0, [time.perf_counter()]  # passes[n]: when agent step n ended

    def stopped_after_agent_step_450() -> bool:
        passes.append(time.perf_counter())
        if len(passes) == 451:
            time.sleep(stop_s)
            passes[-1] = time.perf_counter()
        return False

    out = train(
        CONFIG,
        "Catch",
        CatchEnv,
        tmp_path,
        log=lambda _: None,
        should_stop=stopped_after_agent_step_450,
        compute=COMPUTE,
    )
    window = _rows(out / UPDATES_FILE)[1]  # agent steps 350-600, the stop inside
    assert int(window["agent_step"]) == 600
    epoch_end = passes[400] - passes[399]  # left out as well: evaluation, saves, plots
    wall = passes[600] - passes[350] - epoch_end
    assert 250 / float(window["agent_steps_per_s"]) < wall - stop_s / 2
    epoch = read_metrics(out)[1]  # agent steps 400-700
    assert epoch["agent_steps"] == 700
    wall = passes[699] - passes[400]  # its rate is taken before its evaluation
    assert 300 / epoch["agent_steps_per_s"] < wall - stop_s / 2
