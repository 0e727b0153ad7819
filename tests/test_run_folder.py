"""A run folder never loses a run: one process per folder, a state paired with its replay,
leftovers removed, damaged files that do not stop a resume (run/folder.py, run/resume.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from catch_env import CatchEnv
from compute import COMPUTE

from dqn_mlx.config import NIPS2013, with_overrides
from dqn_mlx.errors import UserError
from dqn_mlx.run import resume as run_resume
from dqn_mlx.run.checkpoint import load_checkpoint, read_safetensors
from dqn_mlx.run.folder import RUNS, check_run_name, is_shipped, results_folder
from dqn_mlx.run.metrics import METRICS_FILE, read_metrics
from dqn_mlx.run.resume import STATE_FILE, find_state, load_training_state, replay_file
from dqn_mlx.run.train import TrainingInterrupted, check_no_other_run, train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "PongNoFrameskip-v4" / "laptop-seed0-1500k" / "epoch_15.safetensors"
CONFIG = with_overrides(
    NIPS2013,
    {
        "replay_size": 2_000, "learning_starts": 100, "epsilon_decay_steps": 300,
        "epoch_updates": 100, "total_steps": 500, "eval_steps": 60, "held_out_states": 16,
        "seed": 4, "learning_rate": 0.002, "batch_size": 8,
    },
)  # fmt: skip


def _stop_after(passes: int):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= passes

    return should_stop


def _cut(folder: Path, passes: int = 220, **kwargs: object) -> None:
    """Train Catch in ``folder`` and stop it after ``passes`` agent steps (state and replay)."""
    with pytest.raises(TrainingInterrupted):
        train(CONFIG, "Catch", CatchEnv, folder, log=lambda _: None, save_replay_memory=True,
              should_stop=_stop_after(passes), compute=COMPUTE, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def _resume(folder: Path, logs: list[str], **kwargs: object) -> Path:
    loaded = load_training_state(folder)
    return train(loaded.config, "Catch", CatchEnv, folder, log=logs.append, resume=loaded,
                 compute=COMPUTE, **kwargs)  # type: ignore[arg-type]  # fmt: skip


def run_main(*args: str) -> subprocess.Popen[str]:
    command = [sys.executable, str(ROOT / "main.py"), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


TINY = ["--mode", "train", "--env", "BreakoutNoFrameskip-v4", "--steps", "3000"]
TINY += ["--learning-starts", "1500", "--replay-size", "3000", "--epoch-updates", "75"]
TINY += ["--eval-steps", "100", "--held-out-states", "16", "--save-replay"]
TINY += ["--batch-size", "8"]  # the run machinery, not learning: a small minibatch is enough


@pytest.mark.slow
def test_one_process_per_run_folder_two_starts_and_a_resume_while_it_trains(
    tmp_path: Path,
) -> None:
    weights = tmp_path / "weights with space"
    folder = weights / "BreakoutNoFrameskip-v4" / "same"
    first, second = (run_main(*TINY, "--weights-dir", str(weights), "--run-name", "same")
                     for _ in range(2))  # fmt: skip
    deadline = time.time() + 240
    while not (folder / STATE_FILE).exists() and time.time() < deadline:
        time.sleep(0.2)
    resumed = run_main("--mode", "train", "--resume", str(folder))
    results = [(p, *p.communicate(timeout=400)) for p in (first, second, resumed)]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2, 2], [(p.returncode, err[-300:]) for p, _, err in results]
    (winner, out, _), *refused = sorted(results, key=lambda r: r[0].returncode)
    for _, _, err in refused:
        assert f"in use by another training process (pid {winner.pid})" in err, err
        assert "Traceback" not in err
    records = read_metrics(folder)
    assert [r["epoch"] for r in records] == list(range(1, 6))
    assert load_training_state(folder).run.step == 3000
    assert [p.name for p in folder.glob("replay*.npz")] == [replay_file(3000)]
    assert not (folder / ".lock").exists()  # released, and its pid file gone
    # The printed command is shell-quoted: it names the path with its space.
    (line,) = [x for x in out.splitlines() if x.startswith("evaluate it:")]
    assert Path(shlex.split(line)[-1]) == folder / "epoch_5.safetensors"


@pytest.mark.slow
def test_a_state_write_that_fails_after_the_replay_leaves_a_paired_state_and_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cut(tmp_path)  # state and replay of agent step 220
    real_save = mx.save_safetensors

    def cut_short(path: str, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
        if Path(path).name.startswith(".partial-train_state"):
            Path(path).write_bytes(b"\0" * 1000)  # half a file, then the process "dies"
            raise OSError(28, "No space left on device")
        real_save(path, arrays, metadata=metadata)

    monkeypatch.setattr(run_resume.mx, "save_safetensors", cut_short)
    with pytest.raises(UserError, match="could not write"):
        _resume(tmp_path, [], save_replay_memory=True, should_stop=_stop_after(37))
    monkeypatch.setattr(run_resume.mx, "save_safetensors", real_save)
    loaded = load_training_state(tmp_path)
    assert loaded.run.step == 220 and (tmp_path / replay_file(220)).exists()
    logs: list[str] = []
    _resume(tmp_path, logs)
    assert "replay memory restored: 220 transitions" in logs, logs
    assert not any("refilling" in line for line in logs)
    assert any(re.search(r"removed 1 leftover file .*MB freed", line) for line in logs), logs


@pytest.mark.slow
def test_a_start_or_resume_removes_the_leftovers_of_interrupted_writes(tmp_path: Path) -> None:
    _cut(tmp_path)
    leftovers = [
        ".partial-train_state.k2j3h4x1.safetensors", ".partial-replay-300.ab12cd34.npz",
        ".partial-epoch_3.zz99yy88.safetensors", ".train_state.abcdefgh.safetensors",
        replay_file(150),
    ]  # fmt: skip
    for name in leftovers:
        (tmp_path / name).write_bytes(b"x" * 2_000_000)
    (tmp_path / ".DS_Store").write_bytes(b"kept")  # not ours
    logs: list[str] = []
    _resume(tmp_path, logs)
    assert not [name for name in leftovers if (tmp_path / name).exists()]
    assert (tmp_path / ".DS_Store").exists()
    assert f"removed 5 leftover files of interrupted writes from {tmp_path} (10.0 MB freed)" in logs


@pytest.mark.slow
def test_a_half_written_last_metrics_line_is_dropped_with_a_warning_and_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cut(tmp_path)
    with open(tmp_path / METRICS_FILE, "a") as handle:
        handle.write('{"epoch": 2, "agent_steps": 30')
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert "its last line is incomplete" in capsys.readouterr().err
    _resume(tmp_path, [])
    capsys.readouterr()
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert "incomplete" not in capsys.readouterr().err  # rewritten whole at the next epoch


def test_a_damaged_line_before_the_last_is_one_line(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')
    with pytest.raises(UserError, match="line 2 is not an epoch's record"):
        read_metrics(tmp_path)


@pytest.mark.slow
def test_a_run_cut_before_its_first_state_says_what_to_do_and_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dies(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("dqn_mlx.run.epoch.save_training_state", dies)
    with pytest.raises(UserError, match="could not write"):
        train(CONFIG, "Catch", CatchEnv, tmp_path, log=lambda _: None, compute=COMPUTE)
    monkeypatch.undo()
    assert (tmp_path / "epoch_1.safetensors").exists() and not (tmp_path / STATE_FILE).exists()
    with pytest.raises(UserError, match=r"play epoch_1\.safetensors with --mode eval, or start"):
        find_state(tmp_path)
    with pytest.raises(UserError, match="--restart"):
        check_no_other_run(tmp_path)
    train(CONFIG, "Catch", CatchEnv, tmp_path, log=lambda _: None, compute=COMPUTE, restart=True)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    with pytest.raises(UserError, match="holds a resumable run"):  # never deletes one
        train(CONFIG, "Catch", CatchEnv, tmp_path, log=lambda _: None, compute=COMPUTE,
              restart=True)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "random bytes", "a corrupted block"])
def test_a_damaged_replay_is_refilled_and_says_why(tmp_path: Path, damage: str) -> None:
    _cut(tmp_path)
    path = tmp_path / replay_file(220)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "random bytes":
        data = bytearray(np.random.default_rng(0).integers(0, 256, len(data), np.uint8).tobytes())
    else:
        middle = len(data) // 2
        data[middle : middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    logs: list[str] = []
    _resume(tmp_path, logs)
    assert any(f"{path.name} is damaged" in line and "refilling" in line for line in logs), logs
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", ".", "..", "a/b", " "])
def test_a_run_name_is_one_folder_name(name: str) -> None:
    with pytest.raises(UserError, match="one folder name"):
        check_run_name(name)


def test_a_checkout_is_recognised_from_the_checkpoints_path_not_from_the_install(
    tmp_path: Path,
) -> None:
    """A shipped run is under the ``weights/`` of a folder whose pyproject names dqn-mlx,
    wherever the package runs from (a wheel install, another checkout's environment)."""
    checkout, other = tmp_path / "a-checkout", tmp_path / "not-ours"
    for root, name in ((checkout, "dqn-mlx"), (other, "another-project")):
        (root / "weights" / "PongNoFrameskip-v4" / "laptop-seed0-1500k").mkdir(parents=True)
        (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    checkpoint = "weights/PongNoFrameskip-v4/laptop-seed0-1500k/epoch_15.safetensors"
    assert is_shipped(checkout / checkpoint) and is_shipped(SHIPPED)
    assert not is_shipped(other / checkpoint)
    assert not is_shipped(checkout / "runs" / "PongNoFrameskip-v4" / "r" / "epoch_1.safetensors")
    for not_ours in (b"[project\n", b'project = "dqn-mlx"\n', b"[[project]]\n", b"\xff\xfe"):
        (other / "pyproject.toml").write_bytes(not_ours)  # not TOML, no table, not UTF-8
        assert not is_shipped(other / checkpoint), not_ours
    assert results_folder(checkout / checkpoint, "PongNoFrameskip-v4") == (
        RUNS / "PongNoFrameskip-v4" / "laptop-seed0-1500k"
    )
    assert results_folder(other / checkpoint, "PongNoFrameskip-v4") == (other / checkpoint).parent


def test_non_finite_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    arrays, metadata = read_safetensors(SHIPPED)
    arrays["head.bias"] = mx.full(arrays["head.bias"].shape, float("nan"))
    path = tmp_path / "epoch_15.safetensors"
    mx.save_safetensors(str(path), arrays, metadata=metadata)
    with pytest.raises(UserError, match=r"head\.bias holds NaN or infinite numbers"):
        load_checkpoint(path)


def test_files_of_the_other_kind_say_what_they_are_and_which_command_takes_them() -> None:
    with pytest.raises(UserError, match=r"is an epoch checkpoint .*--mode eval --load-path"):
        find_state(SHIPPED)


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "eval", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def _refused(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_eval_refusals_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    copy = tmp_path / "epoch_15.safetensors"
    copy.write_bytes(SHIPPED.read_bytes())
    # Space Invaders has Pong's six actions, but it is another game.
    _refused(_eval("--load-path", str(copy), "--env", "SpaceInvadersNoFrameskip-v4"),
             "is another game (space_invaders)")  # fmt: skip
    _refused(_eval("--load-path", str(copy), "--seed", "-1"), "--seed must be in [0,")
    (tmp_path / "video.mp4").write_bytes(b"mine")
    _refused(_eval("--load-path", str(copy), "--video", str(tmp_path / "video.mp4")),
             "is an existing file")  # fmt: skip
    state = tmp_path / STATE_FILE
    run_resume.mx.save_safetensors(str(state), {"x": mx.zeros(1)},
                                   metadata={"format": "dqn-mlx-train-state/1"})  # fmt: skip
    _refused(_eval("--load-path", str(state)), "is a training state (what --resume continues)")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [copy.name, "video.mp4", STATE_FILE]
    )
    # A result that cannot be written (its name taken by a folder): one line, after the scores.
    taken = tmp_path / "epoch_15.eval_nips2013.PongNoFrameskip-v4.0games.seed1000.json"
    taken.mkdir()
    result = _eval("--load-path", str(copy), "--protocol", "nips2013", "--eval-steps", "30")
    _refused(result, "could not write the results to")
    assert "score 0" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seed", "-1"], "--seed must be in [0,"),
        (["--learning-rate", "nan"], "--learning-rate must be > 0 (and finite), got nan"),
        (["--set", "reward_clip=-1"], "--set reward_clip=... must be > 0"),
        (["--set", "preset=nature2015"], "the preset is chosen with --preset"),
        (["--run-name", "../../escaped"], "one folder name"),
        (["--restart"], "--restart starts the run named by --run-name"),
        (["--steps", "10000000000000"], "--steps must be in [1, 100,000,000,000], got"),
    ],
)
def test_bad_training_input_is_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], words: str
) -> None:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "train", "--weights-dir"]
    result = subprocess.run([*command, str(tmp_path / "w"), *args], capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    _refused(result, words)
    assert not (tmp_path / "w").exists() and not (tmp_path / "escaped").exists()


@pytest.mark.slow
def test_a_run_whose_loss_diverges_before_it_saved_anything_leaves_nothing(
    tmp_path: Path,
) -> None:
    """--learning-rate 1e308: the second update's loss is NaN, long before the first epoch
    end. One line that says nothing was kept (there is no checkpoint to point to) and what
    to change, and no folder left of the run."""
    command = [sys.executable, str(ROOT / "main.py"), *TINY[: TINY.index("--save-replay")]]
    command += ["--learning-rate", "1e308", "--weights-dir", str(tmp_path / "w")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    _refused(result, "the loss became nan at update 2 (by agent step 1,505), before the run had "
             "saved anything, so nothing of it is kept; train again with a --learning-rate "
             "below 1e+308")  # fmt: skip
    assert "checkpoint" not in result.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_replay_memory_deleted_by_hand_is_named_as_missing(tmp_path: Path) -> None:
    """The run was started with --save-replay: its state names the replay memory, and the
    refill says that file is missing, not that the run never saved one."""
    _cut(tmp_path)
    (tmp_path / replay_file(220)).unlink()
    logs: list[str] = []
    _resume(tmp_path, logs)
    refill = [line for line in logs if "refilling" in line]
    assert len(refill) == 1 and refill[0].startswith(
        "replay-220.npz, the replay memory saved with this training state, is missing: "
    ), logs
    assert "--save-replay" not in refill[0]


@pytest.mark.slow
def test_a_training_state_with_nan_says_the_run_cannot_go_on_from_it(tmp_path: Path) -> None:
    """A training state has no earlier versions to take: the advice names what is left."""
    _cut(tmp_path)
    arrays, metadata = read_safetensors(tmp_path / STATE_FILE)
    name = next(key for key in arrays if key.startswith("online."))
    arrays[name] = mx.full(arrays[name].shape, float("nan"))
    mx.save_safetensors(str(tmp_path / STATE_FILE), arrays, metadata=metadata)
    with pytest.raises(UserError) as refused:
        load_training_state(tmp_path)
    message = str(refused.value)
    assert f"{name} holds NaN or infinite numbers" in message
    assert "earlier checkpoint" not in message
    assert message.endswith(
        "the run cannot go on from it; evaluate one of its epoch_<N>.safetensors "
        "checkpoints, or train the run again"
    )
