"""Training state on disk: everything needed to continue a run exactly where it stopped.

``<run dir>/train_state.safetensors`` (rewritten atomically at every epoch end and on an
interruption) holds, as arrays: the online and target weights, the optimizer state and the
held-out Q states; and as metadata (JSON): the config, the env id, the frame skip, the numpy
generator's state (exploration, minibatches and game seeds all draw from it; MLX's generator
only initialises the weights, which are restored) and ``RunState`` (agent step, epoch, scores,
the epoch's loss so far, and each training game's ``GameRecord``, from which
``TrainingGame.restore`` rebuilds the game in progress exactly: ``core/game.py`` states why).

``<run dir>/replay-<agent step>.npz`` (only with ``--save-replay``): the replay memory,
compressed, written at the same moments, just before the state, under a name of its own; the
state names it (metadata ``replay``). So a state and its replay stay paired whenever a write
is cut short: the previous replay is deleted only once the new state is on disk
(``run/folder.py``), and a replay no state names is a leftover. Without one a resumed run
first refills the replay by playing the current policy, and says so (``refill_replay``).
Older formats (a state without ``replay`` metadata, a replay of one stream) are read by
``run/formats.py``.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.env import PixelEnv, StackedFrames
from dqn_mlx.core.game import new_game_seed
from dqn_mlx.core.learner import Learner
from dqn_mlx.core.loop import RunState, store_transition
from dqn_mlx.core.policy import epsilon_greedy, exploration_rate, greedy_policy
from dqn_mlx.core.replay import ReplayStreams
from dqn_mlx.errors import UserError
from dqn_mlx.files import atomic_write
from dqn_mlx.run.checkpoint import check_finite, read_safetensors
from dqn_mlx.run.formats import replay_file_of_state, replay_layout, run_state_from_json
from dqn_mlx.run.loggers import duration

STATE_FILE = "train_state.safetensors"


def replay_file(agent_step: int) -> str:
    """The name of the replay memory saved at ``agent_step``."""
    return f"replay-{agent_step}.npz"


def _prefixed(prefix: str, tree: Any) -> dict[str, mx.array]:
    flat: list[tuple[str, mx.array]] = tree_flatten(tree)  # type: ignore[assignment]
    return {prefix + name: value for name, value in flat}


def save_training_state(
    run_dir: Path,
    learner: Learner,
    run: RunState,
    rng: np.random.Generator,
    held_out: np.ndarray,
    env_id: str,
    frame_skip: int,
    replay: str | None = None,
) -> Path:
    """Write the training state atomically; ``replay`` names the replay memory saved with it
    (None: none was)."""
    arrays: dict[str, mx.array] = {}
    arrays.update(_prefixed("online.", learner.online.parameters()))
    if learner.target is not None:
        arrays.update(_prefixed("target.", learner.target.parameters()))
    arrays.update(_prefixed("optimizer.", learner.optimizer.state))
    arrays["held_out"] = mx.array(held_out)
    metadata = {
        "format": "dqn-mlx-train-state/1",
        "env_id": env_id,
        "frame_skip": str(frame_skip),
        "config": json.dumps(dataclasses.asdict(learner.config)),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "run": json.dumps(dataclasses.asdict(run)),
        "updates": str(learner.updates),
        "replay": replay or "",
    }
    path = Path(run_dir) / STATE_FILE

    def write(tmp: Path) -> None:
        mx.save_safetensors(str(tmp), arrays, metadata=metadata)

    atomic_write(path, write)
    return path


@dataclass
class LoadedState:
    config: DQNConfig
    env_id: str
    frame_skip: int
    run: RunState
    updates: int
    rng_state: dict[str, Any]
    arrays: dict[str, mx.array]
    path: Path
    replay_file: str | None
    """The replay memory saved with this state (a file name in its folder), if any."""


def find_state(path: Path) -> Path:
    """``--resume`` accepts the run folder or the state file itself."""
    path = Path(path)
    if path.is_file() and path.name.startswith("epoch_") and path.suffix == ".safetensors":
        raise UserError(
            f"--resume {path} is an epoch checkpoint (the network's weights only): play it with "
            f"--mode eval --load-path {quoted(path)}, or continue its run with --resume "
            f"{quoted(path.parent)}"
        )
    candidate = path / STATE_FILE if path.is_dir() else path
    if candidate.exists():
        return candidate
    epochs = sorted(path.glob("epoch_*.safetensors")) if path.is_dir() else []
    if epochs:
        raise UserError(
            f"--resume {path}: the run stopped before its first {STATE_FILE} was written, so it "
            f"cannot go on; play {epochs[-1].name} with --mode eval, or start the run over in "
            "this folder with --mode train --restart and the same --run-name"
        )
    raise UserError(
        f"--resume {path}: no {STATE_FILE} there; give the folder of a run "
        "(weights/<env-id>/<run-name>/) that finished an epoch or was stopped with Ctrl-C"
    )


def quoted(path: Path | str) -> str:
    """``path`` as a shell reads it back (spaces, quotes)."""
    import shlex

    return shlex.quote(str(path))


def load_training_state(path: Path) -> LoadedState:
    from dqn_mlx.run.checkpoint import config_from_json

    state_path = find_state(path)
    try:
        arrays, metadata = read_safetensors(state_path)
        loaded = LoadedState(
            config=config_from_json(metadata["config"]),
            env_id=metadata["env_id"],
            frame_skip=int(metadata["frame_skip"]),
            run=run_state_from_json(json.loads(metadata["run"])),
            updates=int(metadata["updates"]),
            rng_state=json.loads(metadata["numpy_rng"]),
            arrays=arrays,
            path=state_path,
            replay_file=replay_file_of_state(metadata),
        )
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"--resume {state_path} is not a readable training state ({type(exc).__name__}); "
            "use the run folder written by --mode train"
        ) from None
    check_finite(
        loaded.arrays,
        f"--resume {state_path}",
        "the run cannot go on from it; evaluate one of its epoch_<N>.safetensors checkpoints, "
        "or train the run again",
    )
    return loaded


def differing_settings(
    loaded: LoadedState, given: dict[str, object], preset: str | None, env: str | None
) -> str:
    """The settings a resuming command gives that differ from the saved run's, as
    ``--replay-size: saved 200,000, given 100,000``; empty when all agree. ``given`` maps config
    field names to values (flags, ``--set``); ``--steps`` may differ (it extends the run)."""
    from dqn_mlx.config import flag_of, with_overrides

    saved, differ = loaded.config, []
    wanted = with_overrides(saved, given)
    for name in sorted(set(given) - {"total_steps"}):
        if getattr(wanted, name) != getattr(saved, name):
            differ.append((flag_of(name), getattr(saved, name), getattr(wanted, name)))
    if preset is not None and preset != saved.preset:
        differ.append(("--preset", saved.preset, preset))
    if env is not None and env != loaded.env_id:
        differ.append(("--env", loaded.env_id, env))
    return "; ".join(f"{flag}: saved {_shown(a)}, given {_shown(b)}" for flag, a, b in differ)


def _shown(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def restore_learner(learner: Learner, loaded: LoadedState) -> None:
    """Put the saved weights, target and optimizer state into a freshly built learner."""

    def subtree(prefix: str) -> Any:
        items = [(k[len(prefix) :], v) for k, v in loaded.arrays.items() if k.startswith(prefix)]
        return tree_unflatten(items)

    learner.online.update(subtree("online."))
    if learner.target is not None:
        learner.target.update(subtree("target."))
    learner.optimizer.state = subtree("optimizer.")
    learner.updates = loaded.updates
    learner.rebuild_step()
    mx.eval(learner.online.parameters(), learner.optimizer.state)


def save_replay(run_dir: Path, replay: ReplayStreams, agent_step: int) -> Path:
    """The replay memory as ``replay-<agent_step>.npz`` (compressed, what
    ``np.savez_compressed`` writes), also tagged inside with the agent step it belongs to, so
    that a training state from another step never loads it. The streams' filled slots are
    stored one after another, with each stream's size and cursor. The frames (nearly all the
    bytes) are compressed straight from the streams, a block at a time: joining them first
    would hold the replay twice in memory."""
    path = Path(run_dir) / replay_file(agent_step)
    streams = replay.streams

    def filled(name: str) -> np.ndarray:
        return np.concatenate([getattr(stream, name)[: stream.size] for stream in streams])

    def write(tmp: Path) -> None:
        small = {
            "actions": filled("actions"),
            "rewards": filled("rewards"),
            "terminals": filled("terminals"),
            "starts": filled("starts"),
            "sizes": np.array([stream.size for stream in streams]),
            "cursors": np.array([stream.cursor for stream in streams]),
            "capacity": np.array(replay.capacity),
            "agent_step": np.array(agent_step),
        }
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            frames = [stream.frames[: stream.size] for stream in streams]
            _write_rows(archive, "frames.npy", frames)
            for name, value in small.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                    np.lib.format.write_array(handle, value, allow_pickle=False)

    atomic_write(path, write)
    return path


def _write_rows(
    archive: zipfile.ZipFile, name: str, parts: list[np.ndarray], block_bytes: int = 8 << 20
) -> None:
    """One ``.npy`` entry holding ``parts`` joined along their first axis, written about
    ``block_bytes`` at a time (the compressor's output for a block is that large too)."""
    row_bytes = int(np.prod(parts[0].shape[1:])) * parts[0].dtype.itemsize
    rows = max(1, block_bytes // max(1, row_bytes))
    shape = (sum(len(part) for part in parts), *parts[0].shape[1:])
    header = {
        "descr": np.lib.format.dtype_to_descr(parts[0].dtype),
        "fortran_order": False,
        "shape": shape,
    }
    with archive.open(name, "w", force_zip64=True) as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for part in parts:
            for start in range(0, len(part), rows):
                handle.write(np.ascontiguousarray(part[start : start + rows]).data)


def load_replay(
    run_dir: Path, replay: ReplayStreams, agent_step: int, name: str | None
) -> str | None:
    """Fill ``replay`` from the file ``name`` in ``run_dir`` (the one its training state names);
    returns None when it did, else why not (no file, another capacity or number of games, saved
    at another agent step than the training state, or damaged: then ``replay`` is left empty).
    Older files are read as ``run/formats.py`` says."""
    path = Path(run_dir) / (name or "")
    if name is None:
        return "no saved replay memory (train with --save-replay to keep it)"
    if not path.is_file():
        return f"{name}, the replay memory saved with this training state, is missing"
    try:
        return _fill_replay(path, replay, agent_step)
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
    ) as exc:
        for stream in replay.streams:
            stream.cursor, stream.size = 0, 0
        return f"{path.name} is damaged ({type(exc).__name__}: {str(exc)[:80]})"


def _fill_replay(path: Path, replay: ReplayStreams, agent_step: int) -> str | None:
    with np.load(path) as data:
        if int(data["capacity"]) != replay.capacity:
            return f"{path.name} holds another capacity than --replay-size"
        saved_at, sizes, cursors = replay_layout(data, agent_step)
        if saved_at != agent_step:
            return (
                f"{path.name} is from agent step {saved_at:,}, the training state from "
                f"{agent_step:,}"
            )
        if len(sizes) != len(replay.streams):
            return f"{path.name} holds {len(sizes)} games' streams, this run {len(replay.streams)}"
        ends = np.cumsum(sizes)
        for stream, end, size, cursor in zip(replay.streams, ends, sizes, cursors, strict=True):
            rows = slice(int(end - size), int(end))
            stream.actions[:size] = data["actions"][rows]
            stream.rewards[:size] = data["rewards"][rows]
            stream.terminals[:size] = data["terminals"][rows]
            stream.starts[:size] = data["starts"][rows]
            stream.cursor, stream.size = int(cursor), int(size)
    _read_frames_into(path, [stream.frames[: stream.size] for stream in replay.streams])
    return None


def _read_frames_into(path: Path, destinations: list[np.ndarray], rows: int = 65_536) -> None:
    """Decompress the saved frames straight into the replay's arrays (one after another), a
    block of rows at a time: reading the whole array first would hold the replay twice in
    memory."""
    with zipfile.ZipFile(path) as archive, archive.open("frames.npy") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle)
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        for frames in destinations:
            for start in range(0, len(frames), rows):
                count = min(rows, len(frames) - start)
                block = handle.read(count * row_bytes)
                frames[start : start + count] = np.frombuffer(block, dtype).reshape(
                    count, *shape[1:]
                )


def refill_count(config: DQNConfig) -> int:
    """Transitions a resume without its replay memory plays before learning goes on: as many
    as the run played before its first update (``learning_starts``), at most the memory."""
    return min(
        max(config.learning_starts, config.batch_size + config.history_length), config.replay_size
    )


class RefillStopped(Exception):
    """A stop was asked for during the refill: the run's files are as they were before the
    resume, so the same resume command continues it (and refills again)."""

    def __init__(self, done: int, count: int, seconds_per_transition: float | None):
        super().__init__(done, count)
        self.done, self.count = done, count
        self.seconds_per_transition = seconds_per_transition


def refill_replay(
    config: DQNConfig,
    replay: ReplayStreams,
    env: PixelEnv,
    learner: Learner,
    rng: np.random.Generator,
    step: int,
    log: Callable[[str], None],
    why: str,
    should_stop: Callable[[], bool] = lambda: False,
    interval_s: float = 5.0,
) -> None:
    """Without a saved replay memory that fits the state (``why`` says why not), refill it by
    playing the current policy (on the evaluation env, so the training games stay as they
    were) before learning goes on: each game's stream gets its share, played in one piece.
    A line of progress every ``interval_s`` seconds; ``should_stop`` is asked after every
    transition, and a stop raises ``RefillStopped``."""
    count = refill_count(config)
    log(f"{why}: refilling {count:,} transitions with the current policy before learning resumes")
    act = epsilon_greedy(
        greedy_policy(learner.online), exploration_rate(config, step), env.num_actions, rng
    )
    stack = StackedFrames(config.history_length)
    share = -(-count // len(replay.streams))
    total = sum(min(share, stream.capacity) for stream in replay.streams)
    done, started = 0, time.perf_counter()
    shown = started
    for stream in replay.streams:
        state, start = stack.reset(env.reset(new_game_seed(rng))), True
        for _ in range(min(share, stream.capacity)):
            action = act(state)
            result = env.step(action)
            store_transition(config, stream, state, action, result, start)
            done += 1
            now = time.perf_counter()
            per_transition = (now - started) / done
            if should_stop():  # a rate from a few transitions is mostly the first pass's set-up
                raise RefillStopped(done, total, per_transition if done >= 100 else None)
            if now - shown >= interval_s:
                left = duration((total - done) * per_transition)
                log(f"refilling: {done:,}/{total:,} transitions, {1 / per_transition:,.0f}/s, "
                    f"{left} left")  # fmt: skip
                shown = now
            if result.game_over or result.truncated:
                state, start = stack.reset(env.reset(new_game_seed(rng))), True
            else:
                state, start = stack.push(result.frame), False
