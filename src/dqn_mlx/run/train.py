"""A training run: set up (or restore) Algorithm 1's state, run the loop, leave files behind.

``train`` checks the run folder, builds the environments, learner and replay memory, restores
a saved run if asked, and runs ``core.loop.run_loop`` with hooks that end epochs
(``run/epoch.py``), print progress and stop cleanly on request. A failed write (disk full,
folder removed) or a non-finite loss ends the run with one line, and the last complete files
stay: every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.env import PixelEnv
from dqn_mlx.core.game import FinishedGame, GameRecord, TrainingGame
from dqn_mlx.core.learner import PLAIN, Compute, Learner, UpdateStats
from dqn_mlx.core.loop import (
    NonFiniteLoss,
    RunState,
    StopRequested,
    Training,
    run_loop,
)
from dqn_mlx.core.network import parameter_shapes
from dqn_mlx.core.policy import exploration_rate
from dqn_mlx.core.replay import ReplayStreams, check_replay_fits, replay_bytes
from dqn_mlx.core.schedule import Schedule
from dqn_mlx.errors import UserError
from dqn_mlx.evaluate import collect_held_out_states
from dqn_mlx.report.plots import draw_plots
from dqn_mlx.run.clock import RunningClock
from dqn_mlx.run.epoch import EpochEnd, RunOutput
from dqn_mlx.run.folder import RUN_FILES, clear_unfinished_run, hold_run_folder, remove_leftovers
from dqn_mlx.run.live import LiveMetrics, live_files
from dqn_mlx.run.loggers import ConsoleProgress, StepCosts, TerminalProgress
from dqn_mlx.run.metrics import append_metrics
from dqn_mlx.run.resume import (
    STATE_FILE,
    LoadedState,
    RefillStopped,
    load_replay,
    quoted,
    refill_count,
    refill_replay,
    restore_learner,
)

EnvFactory = Callable[[int], PixelEnv]  # seed -> environment


@dataclass(frozen=True)
class RefillCost:
    """What the resume of a run stopped without its replay memory plays before it learns
    again (``why`` the memory is missing): ``transitions`` with the current policy, taking
    about ``seconds`` (None: not yet timed)."""

    why: str
    transitions: int
    seconds: float | None

    def advice(self, save_replay: bool) -> str:
        about = ""
        if self.seconds:
            minutes = round(self.seconds / 60)
            about = f", about {minutes} min" if minutes > 1 else f", about {self.seconds:.0f} s"
        keep = "" if save_replay else "; add --save-replay to keep it at the next stop"
        return (
            f"{self.why}: the resume first refills {self.transitions:,} transitions with the "
            f"current policy{about}{keep}"
        )


class TrainingInterrupted(Exception):
    """Raised on request (Ctrl-C, SIGTERM, SIGHUP) once the run's files can continue it: a
    resumable training state written, or, during a resume's refill, nothing changed.
    ``refill``: what the resume will refill, when the replay memory is not on disk."""

    def __init__(self, out_dir: Path, step: int, refill: RefillCost | None = None,
                 what: str = "interrupted"):  # fmt: skip
        super().__init__(f"{what} at agent step {step:,}")
        self.out_dir, self.step, self.refill = out_dir, step, refill


class LossDiverged(Exception):
    """The TD loss became inf or NaN: the run stopped without saving anything after it."""

    def __init__(self, loss: float, update: int, step: int):
        super().__init__(loss, update, step)
        self.loss, self.update, self.step = loss, update, step


class RunHooks:
    """The run around the loop (``core.loop.LoopHooks``), the one object the loop calls. It
    ends epochs (``run/epoch.py``) and hands what the loop reports to the run's outputs: the
    progress display, ``metrics.jsonl`` with its plots, and the live metrics."""

    def __init__(
        self,
        epoch_end: EpochEnd,
        progress: ConsoleProgress,
        live: LiveMetrics,
        should_stop: Callable[[], bool],
        epoch_bytes: int,
        clock: RunningClock,
    ):
        self.epoch_end, self.progress, self.live = epoch_end, progress, live
        self.clock = clock
        self.should_stop, self.epoch_bytes = should_stop, epoch_bytes
        self.run, self.output = epoch_end.training.run, epoch_end.output

    def end_epoch(self) -> None:
        """Evaluate and save the weights, hand the record to every output, then save the
        training state (the record is on disk first: ``run/epoch.py``). The progress display
        hears of the epoch end last: its evaluation, plots and saves are none of them training,
        so the next rate it shows starts after them.

        An epoch whose last update is the run's last ends with the run instead
        (``_run_to_the_end``), so that its record and checkpoint count every agent step the
        run was asked for: with an update every 4 agent steps, ``--steps 3000`` makes its last
        update at agent step 2,997, and the 3 steps after it would otherwise be trained but
        never reported."""
        schedule = Schedule.of(self.epoch_end.training.config)
        if self.run.step < schedule.total_steps and not schedule.updates_after(self.run.step):
            return
        with _stop_cleanly_on_write_errors(self.output.out_dir, self.epoch_bytes):
            ended = self.epoch_end.close_epoch(self.progress.evaluating)
            out_dir = self.output.out_dir
            draw_plots(out_dir, append_metrics(out_dir, ended.record), self.output.env_id)
            self.live.end_epoch(ended.record)
            self.epoch_end.open_next(ended)
            self.progress.end_epoch(ended.record)

    def after_step(
        self, epsilon: float, finished: Sequence[FinishedGame], updates: Sequence[UpdateStats]
    ) -> None:
        self.clock.tick()
        with _stop_cleanly_on_write_errors(self.output.out_dir):
            self.progress.after_step(self.run, epsilon)
            self.live.after_step(self.run, epsilon, finished, updates)

    def stop_requested(self) -> bool:
        return self.should_stop()

    def save_state(self) -> None:
        """The resumable training state, mid-epoch (a stop request, the run's end)."""
        with _stop_cleanly_on_write_errors(self.output.out_dir, self.epoch_bytes):
            self.epoch_end.save_state()

    def close(self) -> None:
        for output in (self.progress, self.live):
            with suppress(OSError, RuntimeError):  # a full disk: the run's own error says so
                output.close()


def train(
    config: DQNConfig,
    env_id: str,
    make_env: EnvFactory,
    out_dir: Path,
    log: Callable[[str], None] = print,
    frame_skip: int = 1,
    *,
    resume: LoadedState | None = None,
    save_replay_memory: bool = False,
    should_stop: Callable[[], bool] | None = None,
    progress_bar: bool = False,
    compute: Compute = PLAIN,
    restart: bool = False,
) -> Path:
    """Train from scratch in the run folder ``out_dir``, which must not hold another run, or
    continue ``resume`` in its own folder; returns the run folder. The process holds the
    folder for the whole run (run/folder.py): a second one gets a UserError naming it.
    ``restart``: start over in ``out_dir``, deleting a run that never wrote a training state.

    ``should_stop`` is polled after every pass of the loop (an agent step of each game): when
    it returns True the run writes a resumable training state and raises
    ``TrainingInterrupted`` (the CLI wires Ctrl-C and SIGTERM to it). A non-finite loss stops
    the run with a UserError before anything is saved.
    ``progress_bar``: a live bar (for a terminal) instead of a progress line every 5 seconds.
    ``compute``: the layers and optimizer classes (the platform's, or MLX's own).
    """
    config.validate()
    memory_warning = check_replay_fits(config.replay_size)
    out_dir = Path(out_dir) if resume is None else resume.path.parent
    check_writable(out_dir)
    with hold_run_folder(out_dir):
        if restart:
            clear_unfinished_run(out_dir, log)
        elif resume is None:
            check_no_other_run(out_dir)
        remove_leftovers(out_dir, resume.replay_file if resume else None, log)
        try:
            return _train_in_folder(
                config, env_id, make_env, out_dir, log, frame_skip, resume, save_replay_memory,
                should_stop, progress_bar, compute, memory_warning,
            )  # fmt: skip
        except LossDiverged as diverged:
            raise UserError(_diverged_message(diverged, out_dir, config)) from None


def _diverged_message(diverged: LossDiverged, out_dir: Path, config: DQNConfig) -> str:
    """What a run whose loss diverged leaves, and what to do: the newest checkpoint it wrote,
    or, when it saved nothing at all (no checkpoint, no training state), nothing: the files
    it wrote while playing go, so that the command line removes the emptied folder."""
    where = f"at update {diverged.update:,} (by agent step {diverged.step:,})"
    head = f"the loss became {diverged.loss} {where}"
    retry = f"train again with a --learning-rate below {config.learning_rate:g}"
    checkpoints = sorted(out_dir.glob("epoch_*.safetensors"), key=_epoch_number)
    if checkpoints:
        return (
            f"{head}; the run stopped without saving it, and its last good checkpoint is "
            f"{checkpoints[-1]} (evaluate it with --mode eval --load-path "
            f"{quoted(checkpoints[-1])}); {retry}"
        )
    if (out_dir / STATE_FILE).exists():
        return (
            f"{head}; the run stopped without saving it, and its last good training state "
            f"stays in {out_dir}; {retry}"
        )
    for path in live_files(out_dir):
        path.unlink(missing_ok=True)
    return f"{head}, before the run had saved anything, so nothing of it is kept; {retry}"


def _epoch_number(path: Path) -> int:
    """N of ``epoch_<N>.safetensors``; -1 for a name of another shape."""
    number = path.stem.removeprefix("epoch_")
    return int(number) if number.isdigit() else -1


def _train_in_folder(
    config: DQNConfig,
    env_id: str,
    make_env: EnvFactory,
    out_dir: Path,
    log: Callable[[str], None],
    frame_skip: int,
    resume: LoadedState | None,
    save_replay_memory: bool,
    should_stop: Callable[[], bool] | None,
    progress_bar: bool,
    compute: Compute,
    memory_warning: str | None,
) -> Path:
    """``train`` once the run holds its folder."""
    mx.random.seed(config.seed)  # MLX's generator initialises the weights
    # Game k > 0 of --num-envs gets seed + 1 + k: seed + 1 is the evaluation env's, which
    # never touches the training games.
    envs = [make_env(config.seed + (1 + k if k else 0)) for k in range(config.num_envs)]
    env, eval_env = envs[0], make_env(config.seed + 1)
    new_records = [GameRecord() for _ in envs]
    run = resume.run if resume is not None else RunState(games=new_records)
    training = _new_training(config, envs, run, compute)
    epoch_bytes = check_disk_space(out_dir, config, training.learner, save_replay_memory)
    log(_run_line(config, env_id, env, frame_skip))
    if memory_warning:
        log(memory_warning)
    stop = should_stop or (lambda: False)
    if resume is None:
        held_out = _start(training, eval_env)
    else:
        held_out = _restore(training, eval_env, out_dir, resume, log, stop)
    output = RunOutput(out_dir, env_id, frame_skip, env.action_meanings, save_replay_memory, log)
    hooks = _run_hooks(training, eval_env, held_out, output, progress_bar, compute, stop,
                       epoch_bytes)  # fmt: skip
    try:
        _run_to_the_end(training, hooks)
    finally:
        hooks.close()
    return out_dir


def _run_line(config: DQNConfig, env_id: str, env: PixelEnv, frame_skip: int) -> str:
    """The run's first line: the game, its actions, the preset and the run's length."""
    return (
        f"{env_id}: {env.num_actions} actions {env.action_meanings}; preset {config.preset}; "
        f"{config.total_steps:,} agent steps ({config.total_steps * frame_skip:,} emulator "
        f"frames); replay {config.replay_size:,} transitions"
        + (f"; {config.num_envs} games at once" if config.num_envs > 1 else "")
    )


def _run_hooks(
    training: Training,
    eval_env: PixelEnv,
    held_out: np.ndarray,
    output: RunOutput,
    progress_bar: bool,
    compute: Compute,
    should_stop: Callable[[], bool],
    epoch_bytes: int,
) -> RunHooks:
    """The one object the loop calls, with the run's outputs opened at its first agent step
    (a resumed run's live files drop what came after it)."""
    config, step, clock = training.config, training.run.step, RunningClock()
    with _stop_cleanly_on_write_errors(output.out_dir):
        live = LiveMetrics(output.out_dir, step, clock)
    costs = _step_costs_if_useful(config, step, training.num_actions, compute)
    progress = _progress(config, output.frame_skip, step, output.log, progress_bar, costs)
    epoch_end = EpochEnd(training, eval_env, held_out, output, clock)
    return RunHooks(epoch_end, progress, live, should_stop, epoch_bytes, clock)


def _new_training(
    config: DQNConfig, envs: list[PixelEnv], run: RunState, compute: Compute
) -> Training:
    """Algorithm 1's state at its start: theta (and theta^-), an empty replay memory (a stream
    per game), the games (``run.games`` are their records) and the run's generator."""
    return Training(
        config,
        Learner(config, envs[0].num_actions, compute),
        ReplayStreams(config.replay_size, config.history_length, config.batch_size, len(envs)),
        [
            TrainingGame(env, config.history_length, record)
            for env, record in zip(envs, run.games, strict=True)
        ],
        np.random.default_rng(config.seed),
        run,
    )


def _progress(
    config: DQNConfig,
    frame_skip: int,
    start: int,
    log: Callable[[str], None],
    bar: bool,
    costs: StepCosts | None,
) -> ConsoleProgress:
    """A live display on a terminal, else a line every 5 seconds."""
    if bar:
        return TerminalProgress(Schedule.of(config), frame_skip, start, costs=costs)
    return ConsoleProgress(Schedule.of(config), frame_skip, log, start_step=start, costs=costs)


ESTIMATE_FROM_RANDOM_STEPS = 10_000
"""Random play at least this long (agent steps) is worth a second of timing updates, so that
its ETA can count the learning to come."""


def _step_costs_if_useful(
    config: DQNConfig, step: int, actions: int, compute: Compute
) -> StepCosts | None:
    if config.learning_starts - step < ESTIMATE_FROM_RANDOM_STEPS:
        return None
    return measure_step_costs(config, actions, compute)


def measure_step_costs(
    config: DQNConfig, actions: int, compute: Compute, repeats: int = 3
) -> StepCosts:
    """Time updates and greedy passes on a throwaway learner of the run's network and
    optimizer, fed zero frames (after one untimed call of each, which compiles). It draws its
    weights from MLX's generator after the run's own were drawn, and nothing in the run draws
    from it later, so a seeded run is unchanged (tests/test_loggers.py checks)."""
    import time

    from dqn_mlx.core.policy import greedy_actions

    learner = Learner(config, actions, compute)
    frames = np.zeros((config.batch_size, config.history_length, 84, 84), np.uint8)
    batch = (frames, np.zeros(config.batch_size, np.int32), np.zeros(config.batch_size, np.float32),
             frames, np.zeros(config.batch_size, np.float32))  # fmt: skip
    act = greedy_actions(learner.online)

    def seconds_per_call(call: Callable[[], object]) -> float:
        call()
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        return (time.perf_counter() - start) / repeats

    return StepCosts(
        update_s=seconds_per_call(lambda: learner.update(*batch)),
        act_s=seconds_per_call(lambda: act(frames[:1])),
    )


def _run_to_the_end(training: Training, hooks: RunHooks) -> None:
    """The loop, then a last, shorter epoch so that no update is left unsaved. A run resumed
    with more --steps from a state saved after its last update first ends the epoch that
    update completed, which was waiting for the run's end (``RunHooks.end_epoch``)."""
    run = training.run
    if training.learner.updates // training.config.epoch_updates > run.epoch:
        hooks.end_epoch()
    try:
        run_loop(training, hooks)
    except StopRequested:
        hooks.save_state()
        refill = None
        if not hooks.output.save_replay_memory:
            count, per_step = refill_count(training.config), hooks.progress.phases.acting_step_s()
            why = "the replay memory was not saved (no --save-replay)"
            refill = RefillCost(why, count, per_step and count * per_step)
        raise TrainingInterrupted(hooks.output.out_dir, run.step, refill) from None
    except NonFiniteLoss as exc:
        # the pass's agent steps are played: the update followed one of them
        played = run.step + len(training.games)
        raise LossDiverged(exc.args[0], training.learner.updates, played) from None
    # The last line's rate is the last epoch's, as its metrics.jsonl record gives it: the span
    # since the line before can be a few agent steps long.
    epsilon = exploration_rate(training.config, run.step)
    hooks.progress.finish(run, epsilon, hooks.epoch_end.agent_steps_per_s())
    if run.epoch_loss_count > 0:
        hooks.end_epoch()
    else:  # the last epoch ended before the last steps: the state still records the end
        hooks.save_state()


def _start(training: Training, eval_env: PixelEnv) -> np.ndarray:
    """Collect the held-out states (on the evaluation env) and start the first games; returns
    the held-out states."""
    config = training.config
    held_out = collect_held_out_states(
        eval_env, config.held_out_states, config.history_length, training.rng
    )
    for game in training.games:
        game.start(training.rng)
    return held_out


def _restore(
    training: Training,
    eval_env: PixelEnv,
    out_dir: Path,
    resume: LoadedState,
    log: Callable[[str], None],
    should_stop: Callable[[], bool],
) -> np.ndarray:
    """Put back a saved run: the learner, the generator, the games in progress (rebuilt
    exactly: ``core/game.py`` states how) and the replay memory; returns the held-out
    states. A stop asked for while the replay memory is refilled leaves the run's files as
    they were (``TrainingInterrupted``)."""
    restore_learner(training.learner, resume)
    training.rng.bit_generator.state = resume.rng_state
    for game in training.games:
        game.restore()
    log(_resumed_line(training, resume))
    why = load_replay(out_dir, training.replay, training.run.step, resume.replay_file)
    if why is None:
        log(f"replay memory restored: {training.replay.size:,} transitions")
    else:
        try:
            refill_replay(training.config, training.replay, eval_env, training.learner,
                          training.rng, training.run.step, log, why, should_stop)  # fmt: skip
        except RefillStopped as stopped:
            per_step = stopped.seconds_per_transition
            cost = RefillCost(why, stopped.count, per_step and stopped.count * per_step)
            what = f"stopped refilling the replay memory ({stopped.done:,} of {stopped.count:,})"
            raise TrainingInterrupted(out_dir, training.run.step, cost, what) from None
        # The refill's frames come from other games: the next stored frame starts a new stack
        # (zero-padded before it), so no stored stack reaches back into the refill, and the
        # refill's last transition is never sampled (replay invariant 4).
        for game in training.games:
            game.record.episode_start = True
    return np.array(resume.arrays["held_out"])


def _resumed_line(training: Training, resume: LoadedState) -> str:
    run, games = training.run, len(training.games)
    replayed = sum(len(record.episode_actions) for record in run.games)
    in_progress = "game in progress" if games == 1 else f"{games} games in progress"
    return (
        f"resumed from {resume.path}: epoch {run.epoch}, agent step {run.step:,}, "
        f"{training.learner.updates:,} updates; {in_progress} restored "
        f"({replayed:,} agent steps replayed since the last seeded starts)"
    )


def check_no_other_run(out_dir: Path) -> None:
    """A new run never writes into a folder that holds another run's files."""
    if (out_dir / STATE_FILE).exists():
        raise UserError(
            f"{out_dir} already holds a run; continue it with --resume {quoted(out_dir)}, or "
            "start a new one under another --run-name"
        )
    if any((out_dir / name).exists() for name in RUN_FILES):
        raise UserError(
            f"{out_dir} holds a run that stopped before its first {STATE_FILE}; start it over "
            "with --restart, or train under another --run-name"
        )


def check_writable(out_dir: Path) -> None:
    """Fail before training if the run folder cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"cannot write to {out_dir} ({exc.strerror or exc}); choose a writable --weights-dir"
        ) from None


def check_disk_space(out_dir: Path, config: DQNConfig, learner: Learner, replay: bool) -> int:
    """Refuse to start when the planned checkpoints clearly cannot fit on the disk; returns
    what one epoch end writes at most, in bytes (checkpoint, training state, replay)."""
    weights = 4 * sum(int(np.prod(shape)) for shape in parameter_shapes(learner.online).values())
    epochs = Schedule.of(config).epoch_ends() + 1
    state = 4 * weights + config.held_out_states * config.history_length * 84 * 84
    needed = epochs * weights + 2 * state + (replay_bytes(config.replay_size) if replay else 0)
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise UserError(
            f"--weights-dir {out_dir}: the planned checkpoints need about {needed / 1e9:.2f} GB "
            f"but only {free / 1e9:.2f} GB is free; free some space or choose another folder"
        )
    return weights + state + (replay_bytes(config.replay_size) if replay else 0)


@contextmanager
def _stop_cleanly_on_write_errors(out_dir: Path, needed_bytes: int = 0) -> Iterator[None]:
    """A failed write (disk full, folder removed, a file size limit) ends the run with one line;
    the previous complete files stay, since every file is written to a temporary name and
    renamed. Python and numpy raise OSError; MLX's ``save_safetensors`` raises RuntimeError
    ("[write] Unable to write ...")."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "write" not in str(exc).lower():
            raise
        reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc).strip()
        free = shutil.disk_usage(out_dir).free if out_dir.exists() else 0
        need = f", an epoch end writes about {needed_bytes / 1e6:,.0f} MB" if needed_bytes else ""
        raise UserError(
            f"could not write to {out_dir} ({reason}; {free / 1e6:,.0f} MB free{need}); the run "
            "stopped and the last complete checkpoint there is kept"
        ) from None
