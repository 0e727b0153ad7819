"""Resume: a run stopped and continued gives the same updates as a run never stopped."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from catch_env import CatchEnv
from compute import COMPUTE
from terminal import close_terminal_when

from dqn_mlx.config import NIPS2013, with_overrides
from dqn_mlx.core.replay import ReplayMemory
from dqn_mlx.run import clock as run_clock
from dqn_mlx.run import train as run_train
from dqn_mlx.run.metrics import read_metrics
from dqn_mlx.run.resume import STATE_FILE, load_training_state, replay_file
from dqn_mlx.run.train import TrainingInterrupted, train

pytestmark = pytest.mark.slow  # trains or runs main.py end to end (-m 'not slow' skips)

CONFIG = with_overrides(
    NIPS2013,
    {
        "replay_size": 2_000,
        "learning_starts": 100,
        "epsilon_decay_steps": 300,
        "epoch_updates": 100,
        "total_steps": 500,
        "eval_steps": 60,
        "held_out_states": 16,
        "seed": 4,
        "learning_rate": 0.002,
        "batch_size": 8,  # the run machinery, not learning: a small minibatch is enough
    },
)
COMPARED = ("loss_mean", "avg_max_q", "eval_scores", "train_scores", "updates", "agent_steps")


def _stop_after(steps: int):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= steps

    return should_stop


def _quiet(_: str) -> None:
    pass


@pytest.mark.parametrize(
    ("num_envs", "stop_pass"),
    [(1, 300), (1, 257), (4, 65)],  # an epoch end; mid-epoch and mid-game, with 1 or 4 games
)
def test_resumed_run_matches_the_uninterrupted_run(
    tmp_path: Path, num_envs: int, stop_pass: int
) -> None:
    config = with_overrides(CONFIG, {"num_envs": num_envs})
    full = train(config, "Catch", CatchEnv, tmp_path / "full", log=_quiet, compute=COMPUTE)
    with pytest.raises(TrainingInterrupted):
        train(
            config,
            "Catch",
            CatchEnv,
            tmp_path / "cut",
            log=_quiet,
            save_replay_memory=True,
            should_stop=_stop_after(stop_pass),
            compute=COMPUTE,
        )
    cut = tmp_path / "cut"
    loaded = load_training_state(cut)
    assert loaded.replay_file == replay_file(loaded.run.step)
    assert [p.name for p in cut.glob("replay*.npz")] == [loaded.replay_file]
    assert loaded.run.step == stop_pass * num_envs
    assert len(loaded.run.games) == num_envs
    logs: list[str] = []
    train(
        loaded.config, "Catch", CatchEnv, tmp_path, log=logs.append, resume=loaded, compute=COMPUTE
    )
    assert any("resumed from" in line for line in logs)

    expected, got = read_metrics(full), read_metrics(cut)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(expected, got, strict=True):
        assert [a[k] for k in COMPARED] == [b[k] for k in COMPARED], a["epoch"]
    final_a = mx.load(str(full / "epoch_4.safetensors"))
    final_b = mx.load(str(cut / "epoch_4.safetensors"))
    assert all(np.array_equal(np.array(final_a[k]), np.array(final_b[k])) for k in final_a)


def test_a_run_extended_from_its_last_epoch_matches_the_longer_run(tmp_path: Path) -> None:
    """The state saved at an epoch end must include that step's target sync: here the epochs
    end at agent steps 200 and 300, exactly where theta^- is synced (every 100 agent steps)."""
    config = with_overrides(CONFIG, {"target_update_agent_steps": 100})
    full = train(config, "Catch", CatchEnv, tmp_path / "full", log=_quiet, compute=COMPUTE)
    short = with_overrides(config, {"total_steps": 300})
    cut = train(
        short,
        "Catch",
        CatchEnv,
        tmp_path / "cut",
        log=_quiet,
        save_replay_memory=True,
        compute=COMPUTE,
    )
    loaded = load_training_state(cut)
    assert loaded.run.step == 300
    resumed = dataclasses.replace(loaded.config, total_steps=500)
    train(resumed, "Catch", CatchEnv, tmp_path, log=_quiet, resume=loaded, compute=COMPUTE)
    expected, got = read_metrics(full), read_metrics(cut)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(expected, got, strict=True):
        assert [a[k] for k in COMPARED] == [b[k] for k in COMPARED], a["epoch"]


def test_resume_without_saved_replay_refills_it_and_says_so(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            "Catch",
            CatchEnv,
            tmp_path,
            log=_quiet,
            should_stop=_stop_after(220),
            compute=COMPUTE,
        )
    run_dir = tmp_path
    assert not list(run_dir.glob("replay*.npz"))
    logs: list[str] = []
    loaded = load_training_state(run_dir)
    train(
        loaded.config, "Catch", CatchEnv, tmp_path, log=logs.append, resume=loaded, compute=COMPUTE
    )
    assert any("refilling" in line for line in logs)
    assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2, 3, 4]


def test_a_replay_memory_saved_at_another_step_is_not_loaded(tmp_path: Path) -> None:
    """A replay memory of another step under the name the state gives (a file copied in by
    hand) never joins the training state: the run refills and says why."""
    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            "Catch",
            CatchEnv,
            tmp_path,
            log=_quiet,
            save_replay_memory=True,
            should_stop=_stop_after(220),
            compute=COMPUTE,
        )
    old_replay = (tmp_path / replay_file(220)).read_bytes()
    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            "Catch",
            CatchEnv,
            tmp_path,
            log=_quiet,
            resume=load_training_state(tmp_path),
            save_replay_memory=True,
            should_stop=_stop_after(37),
            compute=COMPUTE,
        )
    assert not (tmp_path / replay_file(220)).exists()  # replaced by the state of step 257's
    (tmp_path / replay_file(257)).write_bytes(old_replay)
    logs: list[str] = []
    train(
        CONFIG,
        "Catch",
        CatchEnv,
        tmp_path,
        log=logs.append,
        resume=load_training_state(tmp_path),
        compute=COMPUTE,
    )
    assert any(
        "replay-257.npz is from agent step 220, the training state from 257: refilling" in line
        for line in logs
    ), logs


def test_after_a_refill_no_sampled_transition_mixes_two_games(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refill plays its own games on the evaluation env; the resumed training game goes on
    mid-game. No transition that can be sampled may take frames from both (its state or its
    next state reaching across the boundary, or bootstrapping into the other game)."""
    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            "Catch",
            CatchEnv,
            tmp_path,
            log=_quiet,
            should_stop=_stop_after(223),
            compute=COMPUTE,
        )
    source = {"now": "training"}
    slots: dict[int, str] = {}
    memories: list[ReplayMemory] = []
    add, refill = ReplayMemory.add, run_train.refill_replay

    def tagged_add(self: ReplayMemory, *args: Any) -> None:
        slots[self.cursor] = source["now"]
        memories[:] = [self]
        add(self, *args)

    def tagged_refill(*args: Any) -> None:
        source["now"] = "refill"
        refill(*args)
        source["now"] = "training"

    monkeypatch.setattr(ReplayMemory, "add", tagged_add)
    monkeypatch.setattr(run_train, "refill_replay", tagged_refill)
    resumed = dataclasses.replace(CONFIG, total_steps=400)
    train(
        resumed,
        "Catch",
        CatchEnv,
        tmp_path,
        log=_quiet,
        resume=load_training_state(tmp_path),
        compute=COMPUTE,
    )
    (replay,) = memories
    assert set(slots.values()) == {"refill", "training"}
    valid = np.flatnonzero(replay.is_valid(np.arange(replay.size)))
    for index in valid:  # the state's frames, and the next state's where it bootstraps
        bootstraps = not replay.terminals[index]
        newest = np.array([index, (index + 1) % replay.capacity][: 1 + bootstraps])
        idx, keep = replay.stack_indices(newest)
        used = {slots[int(i)] for i in idx[keep]}
        assert len(used) == 1, (int(index), used)


ROOT = Path(__file__).resolve().parents[1]


def _resume(run_dir: Path, steps: int) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(ROOT / "main.py"),
        "--mode",
        "train",
        "--resume",
        str(run_dir),
        "--steps",
        str(steps),
    ]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_ctrl_c_writes_a_resumable_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    args = [
        sys.executable,
        str(ROOT / "main.py"),
        "--mode",
        "train",
        "--weights-dir",
        str(tmp_path),
        "--run-name",
        "run",
        "--steps",
        "4000",
        "--learning-starts",
        "300",
        "--replay-size",
        "2000",
        "--epoch-updates",
        "100",
        "--eval-steps",
        "100",
        "--held-out-states",
        "16",
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_dir = tmp_path / "BreakoutNoFrameskip-v4" / "run"
    deadline = time.time() + 120
    while not (run_dir / "epoch_1.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with: uv run main.py --mode train --resume" in err
    assert "the resume first refills 300 transitions" in err and "add --save-replay" in err
    assert "Traceback" not in err
    stopped_at = load_training_state(run_dir).run.step
    assert 400 <= stopped_at < 4000
    resumed = _resume(run_dir, stopped_at + 300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "refilling" in resumed.stdout
    assert load_training_state(run_dir).run.step == stopped_at + 300


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.time() + seconds
    while text not in path.read_text() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert text in path.read_text(), path.read_text()


def test_ctrl_c_during_the_refill_stops_at_once_and_leaves_the_run_as_it_was(
    tmp_path: Path,
) -> None:
    """Without --save-replay a resume refills the replay memory (learning_starts
    transitions) before it learns: it shows progress, and one Ctrl-C stops it within a
    transition, with the run's files as they were, so that the same command continues it.
    (Issue 45: the refill used to ignore Ctrl-C for 45 s and more, with nothing on screen.)"""
    run_dir = tmp_path / "BreakoutNoFrameskip-v4" / "run"
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    environ = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(*args: str) -> subprocess.Popen[str]:
        command = [sys.executable, str(ROOT / "main.py"), "--mode", "train", *args]
        with out.open("w") as stdout, err.open("w") as stderr:
            return subprocess.Popen(command, cwd=ROOT, stdout=stdout, stderr=stderr, env=environ)

    first = start("--weights-dir", str(tmp_path), "--run-name", "run", "--steps", "100000",
                  "--learning-starts", "20000", "--replay-size", "25000", "--eval-steps",
                  "100", "--held-out-states", "16")  # fmt: skip
    _wait_for(out, "random play", first, 120)
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) == 130, err.read_text()
    assert "the resume first refills 20,000 transitions" in err.read_text()
    assert "add --save-replay" in err.read_text()
    state = (run_dir / STATE_FILE).read_bytes()
    files = sorted(p.name for p in run_dir.iterdir())
    stopped_at = load_training_state(run_dir).run.step

    resumed = start("--resume", str(run_dir))
    _wait_for(out, "refilling: ", resumed, 120)  # a line of progress
    asked = time.monotonic()
    resumed.send_signal(signal.SIGINT)
    assert resumed.wait(timeout=60) == 130, err.read_text()
    assert time.monotonic() - asked < 10
    message = err.read_text()
    assert "stopped refilling the replay memory" in message and "Traceback" not in message
    assert "the resume first refills 20,000 transitions" in message
    assert f"resume with: uv run main.py --mode train --resume {run_dir}" in message
    assert (run_dir / STATE_FILE).read_bytes() == state
    assert sorted(p.name for p in run_dir.iterdir()) == files
    assert load_training_state(run_dir).run.step == stopped_at


def test_kill_9_at_random_moments_always_leaves_a_loadable_resumable_run(tmp_path: Path) -> None:
    """SIGKILL can land anywhere, in the middle of a checkpoint write too: the newest files
    must always load, and the run must resume from them."""
    from dqn_mlx.run.checkpoint import load_checkpoint

    args = [
        sys.executable,
        str(ROOT / "main.py"),
        "--mode",
        "train",
        "--weights-dir",
        str(tmp_path),
        "--run-name",
        "run",
        "--steps",
        "100000",
        "--learning-starts",
        "200",
        "--replay-size",
        "1000",
        "--epoch-updates",
        "15",
        "--eval-steps",
        "20",
        "--held-out-states",
        "8",
    ]
    run_dir = tmp_path / "BreakoutNoFrameskip-v4" / "run"
    rng = np.random.default_rng(0)
    resume = [
        sys.executable,
        str(ROOT / "main.py"),
        "--mode",
        "train",
        "--resume",
        str(run_dir),
        "--steps",
        "100000",
    ]
    for attempt in range(3):
        command = args if attempt == 0 else resume
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 120
        while not (run_dir / STATE_FILE).exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(float(rng.uniform(0.5, 4.0)))
        proc.kill()
        proc.wait()
        epochs = sorted(
            run_dir.glob("epoch_*.safetensors"), key=lambda p: int(p.stem.split("_")[1])
        )
        assert epochs, "no checkpoint written"
        load_checkpoint(epochs[-1])  # raises if damaged
        state = load_training_state(run_dir)
        assert state.run.epoch >= 1
    # After three kills, the run still resumes and makes progress.
    before = load_training_state(run_dir).run.step
    done = _resume(run_dir, before + 100)
    assert done.returncode == 0, done.stderr
    assert load_training_state(run_dir).run.step == before + 100


def test_a_resumed_epoch_reports_the_rate_of_the_steps_made_after_the_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The epoch cut by a stop must not count its steps from before the resume in the resumed
    process's time: with a clock that ticks one second per agent step, the rate reads 1."""
    with pytest.raises(TrainingInterrupted):
        train(
            CONFIG,
            "Catch",
            CatchEnv,
            tmp_path / "cut",
            log=_quiet,
            should_stop=_stop_after(257),
            compute=COMPUTE,
        )
    loaded = load_training_state(tmp_path / "cut")
    clock = {"agent_steps": 0}

    def tick() -> bool:  # polled once per agent step (one game)
        clock["agent_steps"] += 1
        return False

    fake_time = SimpleNamespace(perf_counter=lambda: clock["agent_steps"])
    monkeypatch.setattr(run_clock, "time", fake_time)
    train(
        loaded.config,
        "Catch",
        CatchEnv,
        tmp_path,
        log=_quiet,
        resume=loaded,
        should_stop=tick,
        compute=COMPUTE,
    )
    records = read_metrics(tmp_path / "cut")
    cut = next(i for i, r in enumerate(records) if r["agent_steps"] > 257)
    assert records[cut - 1]["agent_steps"] < 257  # the stop fell inside this epoch
    # the epoch ends inside a pass, before that pass's poll: one tick fewer than steps made
    made = records[cut]["agent_steps"] - 257
    assert records[cut]["agent_steps_per_s"] == pytest.approx(made / (made - 1))


def test_an_epoch_waiting_for_the_runs_end_ends_when_a_resume_extends_the_run(
    tmp_path: Path,
) -> None:
    """An update every 4 agent steps: the 100th and last of a 500-step run follows agent step
    497 and completes epoch 2, which waits for the run's end. Stopped at 498 and resumed with
    --steps 700, the run ends that epoch first: its epochs keep 50 updates each."""
    config = with_overrides(CONFIG, {"update_period": 4, "epoch_updates": 50})
    with pytest.raises(TrainingInterrupted):
        train(config, "Catch", CatchEnv, tmp_path, log=_quiet, should_stop=_stop_after(498),
              compute=COMPUTE)  # fmt: skip
    loaded = load_training_state(tmp_path)
    assert (loaded.run.step, loaded.run.epoch, loaded.updates) == (498, 1, 100)
    longer = dataclasses.replace(loaded.config, total_steps=700)
    train(longer, "Catch", CatchEnv, tmp_path, log=_quiet, resume=loaded, compute=COMPUTE)
    records = read_metrics(tmp_path)
    assert [(r["epoch"], r["updates"]) for r in records] == [(1, 50), (2, 100), (3, 150)]
    assert [r["agent_steps"] for r in records] == [297, 498, 700]


def test_closing_the_terminal_saves_the_run_and_logs_the_resume_command(tmp_path: Path) -> None:
    """The run trains on a terminal of its own (a pty, its controlling terminal, as a shell's
    window gives it); closing the terminal sends it SIGHUP, and writes to the terminal fail
    from then on. The run stops as for SIGTERM: a state saved at the agent step it reached
    with its replay memory (an epoch end is far away: nothing else saved one), the lock
    released, the resume command in the run folder's log; and it resumes from exactly there."""
    run_dir = tmp_path / "BreakoutNoFrameskip-v4" / "hup"
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "train", "--weights-dir"]
    command += [str(tmp_path), "--run-name", "hup", "--steps", "1200", "--learning-starts"]
    command += ["100", "--replay-size", "2000", "--epoch-updates", "250", "--eval-steps", "100"]
    command += ["--held-out-states", "16", "--batch-size", "8", "--save-replay"]
    code = close_terminal_when(command, lambda _: _learning(run_dir), ROOT, timeout=120)
    log = (run_dir / "hangup.log").read_text()
    assert code == 130, log
    assert not (run_dir / ".lock").exists()
    saved = load_training_state(run_dir)
    stopped_at = saved.run.step
    assert 100 < stopped_at < 1200 and saved.run.epoch == 0  # mid-epoch: no epoch end saved it
    assert not list(run_dir.glob("epoch_*.safetensors"))
    assert saved.replay_file == replay_file(stopped_at) and (run_dir / saved.replay_file).exists()
    assert f"interrupted at agent step {stopped_at:,}; resume with: uv run main.py --mode " in log
    resume_command = log.split("resume with: uv run main.py ")[1].splitlines()[0].split()
    # the run saved its replay memory: the command keeps --save-replay for the next stop
    assert resume_command == ["--mode", "train", "--resume", str(run_dir), "--save-replay"]
    resumed = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *resume_command],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"agent step {stopped_at:,}, " in resumed.stdout.split("resumed from ")[1]
    assert "replay memory restored" in resumed.stdout and "refilling" not in resumed.stdout
    assert load_training_state(run_dir).run.step == 1200


def _learning(run_dir: Path) -> bool:
    """Whether the run has made updates: a training game ended after random play's 100 agent
    steps (Breakout's random games last longer)."""
    games = run_dir / "games.csv"
    return games.exists() and len(games.read_text().splitlines()) > 1
