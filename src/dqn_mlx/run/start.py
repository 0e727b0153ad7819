"""``--mode train`` once its flags are parsed: a new run in its own folder, ``--resume`` a run
with its saved settings, or ``--restart`` one that stopped before its first training state.

A run refused before training leaves no folder behind. Ctrl-C and SIGTERM ask the run for a
resumable stop (``run.train``); the process then exits with code 130 and prints the command
that resumes it. Every refusal is a UserError (one line, exit code 2, from ``cli``).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from contextlib import suppress
from pathlib import Path

from dqn_mlx.config import DEFAULT_PRESET, DQNConfig, parse_assignments, preset, with_overrides
from dqn_mlx.core.env import AtariEnv, comparability_note, make_atari_env, resolve_game
from dqn_mlx.core.learner import Compute
from dqn_mlx.core.replay import check_replay_fits
from dqn_mlx.errors import UserError
from dqn_mlx.run.checkpoint import default_run_name
from dqn_mlx.run.device import backend_line
from dqn_mlx.run.folder import check_run_name, run_folder
from dqn_mlx.run.hangup import log_when_reader_gone
from dqn_mlx.run.resume import LoadedState, differing_settings, load_training_state, quoted
from dqn_mlx.run.train import TrainingInterrupted, check_no_other_run, train

DEFAULT_ENV = "BreakoutNoFrameskip-v4"


def train_mode(
    env_id: str | None,
    preset_name: str | None,
    flags: dict[str, object],
    assignments: list[str],
    output: tuple[Path, str | None, bool],
    resume: Path | None,
    restart: bool,
    compute: Compute,
) -> None:
    """A new run from the preset, the config ``flags`` (by field name) and the ``--set``
    ``assignments``; ``--resume`` a run; or ``--restart`` an unfinished one. ``output``: the
    weights folder, the run's name and whether to save the replay memory."""
    _, run_name, save_replay = output
    if run_name is not None:
        check_run_name(run_name)
    if restart and (resume is not None or run_name is None):
        raise UserError(
            "--restart starts the run named by --run-name over in its folder: give --run-name, "
            "and no --resume"
        )
    given = {**parse_assignments(assignments), **flags}
    if resume is None:
        config = with_overrides(preset(preset_name or DEFAULT_PRESET), given).validate()
        _new_run(config, env_id or DEFAULT_ENV, output, restart, compute)
        return
    if run_name is not None and run_name != _run_folder_of(resume).name:
        raise UserError(
            f"--run-name {run_name}: --resume continues the run in "
            f"{_run_folder_of(resume)}; drop --run-name or give that run's name"
        )
    _resume(resume, given, preset_name, env_id, save_replay, compute)


def _new_run(
    config: DQNConfig,
    env_id: str,
    output: tuple[Path, str | None, bool],
    restart: bool,
    compute: Compute,
) -> None:
    """Train a new run (or ``--restart`` one) in its folder under ``--weights-dir``; a run
    refused before training leaves no folder behind."""
    weights_dir, run_name, save_replay = output
    resolve_game(env_id)  # every check that needs no folder comes before the folder
    check_replay_fits(config.replay_size)
    folder = run_folder(weights_dir, env_id, run_name or default_run_name(config))
    if folder.is_dir() and not restart:
        check_no_other_run(folder)  # again under the folder's lock, in case of a race
    parents = _missing_folders(folder.parent)
    try:
        if run_name is None:  # a default name is never refused: claim a free one, -2...
            folder = _claim(folder)
        _train(config, env_id, folder, save_replay, compute, restart=restart)
    except UserError:
        _remove_if_empty([*parents, folder])  # refused before training: leave nothing behind
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    return missing[::-1]


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a refused run created, innermost first, where they hold nothing."""
    for folder in reversed(folders):
        with suppress(OSError):
            folder.rmdir()  # only an empty folder goes


def _run_folder_of(resume: Path) -> Path:
    """``--resume`` names the run folder or its state file."""
    return resume.parent if resume.suffix == ".safetensors" else resume


def _claim(folder: Path) -> Path:
    """Create ``folder``, or the first free ``folder-2``, ``folder-3``...: ``mkdir`` fails when
    another process took the name first, even one started in the same second."""
    base, n = folder, 2
    while True:
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            folder, n = base.with_name(f"{base.name}-{n}"), n + 1
        except OSError as exc:
            raise UserError(
                f"cannot write to {folder} ({exc.strerror or exc}); choose a writable --weights-dir"
            ) from None


def _resume(
    path: Path,
    given: dict[str, object],
    preset_name: str | None,
    env_id: str | None,
    save_replay: bool,
    compute: Compute,
) -> None:
    """Continue a run with its saved settings. The command that started it may be given again:
    every setting it names must equal the saved one; only --steps may change, to extend it."""
    loaded = load_training_state(path)
    differ = differing_settings(loaded, given, preset_name, env_id)
    if differ:
        raise UserError(
            f"--resume continues a run with its saved settings, and these differ: {differ}; "
            "drop them or give the saved values (only --steps may change, to extend the run)"
        )
    steps = int(given.get("total_steps", loaded.config.total_steps))  # type: ignore[call-overload]
    if steps <= loaded.run.step:
        raise UserError(
            f"--steps {steps:,}: the run already took {loaded.run.step:,} agent steps; give a "
            "larger --steps to train further"
        )
    config = dataclasses.replace(loaded.config, total_steps=steps).validate()
    _train(config, loaded.env_id, loaded.path.parent, save_replay, compute, resume=loaded)


def _train(
    config: DQNConfig,
    env_id: str,
    folder: Path,
    save_replay: bool,
    compute: Compute,
    resume: LoadedState | None = None,
    restart: bool = False,
) -> None:
    """Train in ``folder`` (``run.train.train``) on the emulator of ``env_id``, with Ctrl-C
    and SIGTERM asking for a resumable stop; prints the commands to resume or evaluate. Its
    output moves to the folder's log if the terminal or pipe it goes to loses its reader."""
    log_when_reader_gone(folder)
    game = resolve_game(env_id)
    frame_skip = game.fixed_frame_skip or config.frame_skip_for(game.rom)
    note = comparability_note(game)
    if note:
        print(note)
    print(backend_line(compute))
    print(f"run folder: {folder}")

    def make_env(seed: int) -> AtariEnv:
        return make_atari_env(env_id, frame_skip, config.noop_max, config.max_episode_frames,
                              seed, config.fire_after_life_loss)  # fmt: skip

    requested = _stop_on_signals(folder)
    try:
        out = train(config, env_id, make_env, folder, frame_skip=frame_skip, resume=resume,
                    save_replay_memory=save_replay, should_stop=lambda: bool(requested),
                    compute=compute, progress_bar=sys.stdout.isatty(), restart=restart)  # fmt: skip
    except TrainingInterrupted as stop:
        keep = " --save-replay" if save_replay else ""
        resume_command = f"uv run main.py --mode train --resume {quoted(stop.out_dir)}{keep}"
        print(f"{stop}; resume with: {resume_command}", file=sys.stderr)
        if stop.refill is not None:
            print(stop.refill.advice(save_replay), file=sys.stderr)
        raise SystemExit(130) from None
    print(f"done: checkpoints, metrics and plots in {out}")
    newest = max(out.glob("epoch_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    print(f"evaluate it: uv run main.py --mode eval --load-path {quoted(newest)}")


def _stop_on_signals(folder: Path) -> list[int]:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) ask the run to stop after the current
    step (the returned list becomes non-empty); a second Ctrl-C quits at once (every file is
    written atomically). A repeated SIGTERM does not: a sweep may send it twice while the
    state is being written. After SIGHUP the output goes to the run folder's log
    (``run.hangup.print_to_log``), the terminal being gone."""
    from dqn_mlx.run.hangup import print_to_log

    requested: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            print_to_log(folder)
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if requested:
            return
        requested.append(signum)
        print(
            "stopping: finishing this step and writing a resumable checkpoint "
            "(press Ctrl-C again to quit at once)",
            file=sys.stderr,
        )

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    return requested
