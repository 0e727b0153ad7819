"""Command line: parse, check, dispatch. Heavy imports (MLX, ALE) happen inside the modes so
``--help`` stays instant. Every UserError is one line on stderr and exit code 2.

The platform's layers (``dqn_mlx.accel``) are chosen once the device is, unless ``--no-accel``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from typer.core import TyperCommand

from dqn_mlx.config import DEFAULT_PRESET, PRESETS
from dqn_mlx.config import preset as _preset

if TYPE_CHECKING:  # only for the annotations: importing the CLI loads neither MLX nor ALE
    from dqn_mlx.config import DQNConfig
    from dqn_mlx.core.learner import Compute
    from dqn_mlx.run.resume import LoadedState

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

GENERAL, TRAIN, EVAL, SWEEP, OUTPUT, SPEED = (
    "General", "Train", "Eval", "Sweep", "Output", "Speed"
)  # fmt: skip

Mode = Literal["train", "eval", "report", "bench", "sweep"]
Device = Literal["auto", "cpu", "gpu"]
ProtocolName = Literal["nips2013", "nature2015"]
VideoViewName = Literal["game", "agent"]
PresetName = Enum("PresetName", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]
"""The presets' names, taken from ``config.PRESETS``: a new preset is a new choice."""


def _option(panel: str, help: str, *names: str) -> Any:
    """An option listed under ``panel`` in ``--help``."""
    return typer.Option(*names, help=help, rich_help_panel=panel)


DEFAULTS = _preset(DEFAULT_PRESET)


def _count(help: str, field: str) -> Any:
    """A training count or rate: given, it replaces the preset's value; ``--help`` shows the
    default preset's."""
    value = getattr(DEFAULTS, field)
    shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
    if field == "replay_size":
        shown += f" transitions = {value * BYTES_PER_TRANSITION / 1e9:.2f} GB"
    return typer.Option(
        help=help, rich_help_panel=TRAIN, show_default=f"{shown}, {DEFAULT_PRESET} preset"
    )


BYTES_PER_TRANSITION = 7_063
"""``core.replay.BYTES_PER_TRANSITION``, for ``--help`` without importing numpy (a test
checks that the two agree)."""

MODE_ORDER = ("train", "eval", "report", "bench", "sweep")
ALL_MODES = frozenset(MODE_ORDER)
FLAG_MODES: dict[str, frozenset[str]] = {
    "mode": ALL_MODES,
    "env": frozenset(("train", "eval", "sweep")),
    "seed": frozenset(("train", "eval")),
    **dict.fromkeys(
        ("preset", "epoch_updates", "replay_size", "learning_starts", "held_out_states",
         "batch_size", "learning_rate", "update_period", "target_update_agent_steps",
         "epsilon_decay_steps", "num_envs", "set_", "save_replay"),
        frozenset(("train", "sweep")),
    ),
    "steps": frozenset(("train", "sweep", "bench")),
    "eval_steps": frozenset(("train", "sweep", "eval")),
    **dict.fromkeys(("resume", "restart", "run_name"), frozenset(("train",))),
    **dict.fromkeys(
        ("load_path", "episodes", "epsilon", "protocol", "video", "value_trace", "video_view"),
        frozenset(("eval",)),
    ),
    "weights_dir": frozenset(("train", "sweep", "report")),
    **dict.fromkeys(("seeds", "address"), frozenset(("sweep",))),
    **dict.fromkeys(("device", "accel"), frozenset(("train", "eval", "bench"))),
    "threads": frozenset(("train", "eval", "bench", "sweep")),
}  # fmt: skip
"""The modes each flag applies to: any other mode refuses it (``check_flags_of_mode``)."""

WHY_NOT: dict[tuple[str, str], str] = {
    ("load_path", "train"): "training starts from fresh weights; to continue a run, give "
    "--resume RUN_FOLDER",
}
"""A hint for refusals a user is likely to meet."""


def check_flags_of_mode(ctx: typer.Context, mode: str) -> None:
    """Refuse a flag given on the command line that ``mode`` does not read: accepted and
    ignored, it would let a user believe it did something."""
    from dqn_mlx.errors import UserError

    foreign = []
    for param in ctx.command.params:
        name = param.name or ""
        source = ctx.get_parameter_source(name)
        given = source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")
        if given and mode not in FLAG_MODES.get(name, ALL_MODES):
            foreign.append((param.opts[0], name))
    if not foreign:
        return
    where = {
        flag: ", ".join(m for m in MODE_ORDER if m in FLAG_MODES[name]) for flag, name in foreign
    }
    hints = "".join(f": {WHY_NOT[name, mode]}" for _, name in foreign if (name, mode) in WHY_NOT)
    if len(set(where.values())) == 1:
        flags = " and ".join(where)
        verb = "is a flag" if len(foreign) == 1 else "are flags"
        raise UserError(
            f"{flags} {verb} of --mode {next(iter(where.values()))}; --mode {mode} does not "
            f"read {'it' if len(foreign) == 1 else 'them'}{hints}"
        )
    listed = ", ".join(f"{flag} (--mode {modes})" for flag, modes in where.items())
    raise UserError(f"--mode {mode} does not read {listed}{hints}")


class ModeCommand(TyperCommand):
    """The command whose ``--help`` lists, after ``--mode M``, only the flags of mode M."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        ctx.meta["dqn_mlx.help"] = True
        super().format_help(ctx, formatter)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        mode = ctx.meta.get("dqn_mlx.mode")
        if not (ctx.meta.get("dqn_mlx.help") and mode):
            return params
        return [p for p in params if mode in FLAG_MODES.get(p.name or "", ALL_MODES)]


def _remember_mode(ctx: typer.Context, value: str) -> str:
    """``--mode`` is read before ``--help`` (both are eager), so that help can show its flags."""
    ctx.meta["dqn_mlx.mode"] = value
    return value


# One alias per option, so that ``main`` reads as the list of options.
ModeOpt = Annotated[
    Mode,
    typer.Option(
        help="train a new agent, eval(uate) a checkpoint, report the results table, "
        "bench(mark) speed, or sweep: train every --env x --seeds run on Ray",
        rich_help_panel=GENERAL,
        is_eager=True,
        callback=_remember_mode,
    ),
]
EnvOpt = Annotated[
    list[str] | None,
    _option(
        GENERAL,
        "Gymnasium Atari id: <Game>NoFrameskip-v4 (the papers' setting) or ALE/<Game>-v5. "
        "Train default: BreakoutNoFrameskip-v4; eval default: the checkpoint's. Sweep: "
        "repeat it for several games.",
    ),
]
SeedOpt = Annotated[int | None, _option(GENERAL, "Seed for numpy, MLX and the emulators.")]
PresetOpt = Annotated[
    PresetName | None,
    _option(
        TRAIN,
        f"laptop learns fastest at laptop budgets; nips2013 and nature2015 are the papers' "
        f"settings. Default: {DEFAULT_PRESET}.",
    ),
]
Steps = Annotated[
    int | None, _count("Total training agent steps (bench: loop agent steps).", "total_steps")
]
EpochUpdates = Annotated[int | None, _count("Minibatch updates per epoch.", "epoch_updates")]
ReplaySize = Annotated[int | None, _count("Replay capacity in transitions.", "replay_size")]
LearningStarts = Annotated[
    int | None, _count("Agent steps of random play before learning.", "learning_starts")
]
EvalSteps = Annotated[
    int | None, _count("Agent steps of epsilon=0.05 play per evaluation.", "eval_steps")
]
HeldOut = Annotated[
    int | None, _count("Random-policy states on which avg max-Q is tracked.", "held_out_states")
]
BatchSize = Annotated[int | None, _count("Minibatch size (transitions).", "batch_size")]
LearningRate = Annotated[float | None, _count("Optimizer step size.", "learning_rate")]
UpdatePeriod = Annotated[int | None, _count("Agent steps per update.", "update_period")]
TargetPeriod = Annotated[
    int | None,
    _count(
        "Agent steps between target syncs; 0 = no target network (2013).",
        "target_update_agent_steps",
    ),
]
EpsilonDecay = Annotated[
    int | None,
    _count(
        "Agent steps over which epsilon anneals from 1 to its end value.", "epsilon_decay_steps"
    ),
]
NumEnvs = Annotated[
    int | None,
    _count(
        "Games played at once, each agent step of each counting as one (1: the papers').",
        "num_envs",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    _option(TRAIN, "Any other hyperparameter: --set name=value (repeatable).", "--set"),
]
ResumeOpt = Annotated[
    Path | None, _option(TRAIN, "Continue the run in this folder (or state file).")
]
RestartOpt = Annotated[
    bool,
    _option(
        TRAIN,
        "Start the --run-name run over in its folder: for a run that stopped before its first "
        "training state, which --resume cannot continue.",
    ),
]
LoadPath = Annotated[Path | None, _option(EVAL, "Checkpoint to play.")]
Episodes = Annotated[int, _option(EVAL, "Games to play.")]
EvalEpsilon = Annotated[float, _option(EVAL, "Exploration rate.")]
ProtocolOpt = Annotated[
    ProtocolName | None,
    _option(
        EVAL,
        "nips2013: epsilon 0.05 for --eval-steps agent steps (default 10,000); nature2015: "
        "30 games of at most 5 minutes.",
    ),
]
RunName = Annotated[
    str | None,
    _option(
        OUTPUT,
        "Train: the run's folder name under <weights-dir>/<env-id>/ (default: preset, seed "
        "and start time).",
    ),
]
WeightsDir = Annotated[
    Path, _option(OUTPUT, "Output folder; a run goes to <dir>/<env-id>/<run-name>/.")
]
SaveReplay = Annotated[
    bool, _option(OUTPUT, "Also save the replay memory (compressed) for --resume.")
]
Video = Annotated[
    Path | None, _option(OUTPUT, "Eval: write one MP4 (or GIF) per game into this folder.")
]
ValueTrace = Annotated[bool, _option(OUTPUT, "Eval: plot max-Q over the first game (PNG).")]
VideoView = Annotated[
    VideoViewName,
    _option(
        OUTPUT,
        "Eval --video: film the game's screen (210x160 colour, 3x) or what the agent sees "
        "(84x84 grayscale frames, 3x).",
    ),
]
DeviceOpt = Annotated[Device, _option(SPEED, "Where MLX computes: the best available, or one.")]
SeedsOpt = Annotated[str | None, _option(SWEEP, "Seeds of the sweep, separated by commas: 0,1,2.")]
AddressOpt = Annotated[
    str | None,
    _option(SWEEP, "A running Ray cluster to join (ray start --head); default: a local one."),
]
ThreadsOpt = Annotated[
    int | None,
    _option(
        SPEED,
        "Threads of the oneDNN layers (Linux x86-64 CPU). Default: OMP_NUM_THREADS if set, "
        "else the cores this process may use (taskset counts); give 1 to each of two runs "
        "side by side.",
    ),
]
AccelOpt = Annotated[
    bool,
    _option(
        SPEED,
        "The platform's layers and optimizer (Linux x86-64 CPU: oneDNN's, built at install); "
        "--no-accel computes with MLX's own, the definitions.",
    ),
]


@app.command(
    cls=ModeCommand,
    help="DQN (Mnih et al. 2013/2015) in MLX: train or evaluate on Atari games. "
    "--mode MODE --help lists the flags of that mode.",
)
def main(
    ctx: typer.Context,
    mode: ModeOpt = "train",
    env: EnvOpt = None,
    seed: SeedOpt = None,
    preset: PresetOpt = None,
    steps: Steps = None,
    epoch_updates: EpochUpdates = None,
    replay_size: ReplaySize = None,
    learning_starts: LearningStarts = None,
    eval_steps: EvalSteps = None,
    held_out_states: HeldOut = None,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    update_period: UpdatePeriod = None,
    target_update_agent_steps: TargetPeriod = None,
    epsilon_decay_steps: EpsilonDecay = None,
    num_envs: NumEnvs = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    restart: RestartOpt = False,
    load_path: LoadPath = None,
    episodes: Episodes = 10,
    epsilon: EvalEpsilon = 0.05,
    protocol: ProtocolOpt = None,
    weights_dir: WeightsDir = Path("weights"),
    run_name: RunName = None,
    save_replay: SaveReplay = False,
    video: Video = None,
    value_trace: ValueTrace = False,
    video_view: VideoView = "game",
    seeds: SeedsOpt = None,
    address: AddressOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    accel: AccelOpt = True,
) -> None:
    """Check the flags against the mode, then run it."""
    options = Options(**{name: value for name, value in locals().items() if name != "ctx"})
    with _errors_as_exit_codes():
        check_flags_of_mode(ctx, mode)
        _run_mode(options)


@dataclass(frozen=True)
class Options:
    """What the command line gave: ``main``'s parameters, by the same names."""

    mode: Mode
    env: list[str] | None
    seed: int | None
    preset: Enum | None
    steps: int | None
    epoch_updates: int | None
    replay_size: int | None
    learning_starts: int | None
    eval_steps: int | None
    held_out_states: int | None
    batch_size: int | None
    learning_rate: float | None
    update_period: int | None
    target_update_agent_steps: int | None
    epsilon_decay_steps: int | None
    num_envs: int | None
    set_: list[str] | None
    resume: Path | None
    restart: bool
    load_path: Path | None
    episodes: int
    epsilon: float
    protocol: ProtocolName | None
    weights_dir: Path
    run_name: str | None
    save_replay: bool
    video: Path | None
    value_trace: bool
    video_view: VideoViewName
    seeds: str | None
    address: str | None
    device: Device
    threads: int | None
    accel: bool

    @property
    def preset_name(self) -> str | None:
        return None if self.preset is None else str(self.preset.value)

    @property
    def one_env(self) -> str | None:
        """The game of a mode that plays one (every mode but sweep)."""
        return self.env[0] if self.env else None

    def config_flags(self) -> dict[str, object]:
        """The training counts and rates given on the command line, as config field names."""
        values = {field: getattr(self, name) for name, field in CONFIG_FLAGS.items()}
        return {field: value for field, value in values.items() if value is not None}


CONFIG_FLAGS = {
    "steps": "total_steps", "epoch_updates": "epoch_updates", "replay_size": "replay_size",
    "learning_starts": "learning_starts", "seed": "seed", "eval_steps": "eval_steps",
    "held_out_states": "held_out_states", "batch_size": "batch_size",
    "learning_rate": "learning_rate", "update_period": "update_period",
    "target_update_agent_steps": "target_update_agent_steps",
    "epsilon_decay_steps": "epsilon_decay_steps", "num_envs": "num_envs",
}  # fmt: skip
"""``main``'s parameters that set a ``DQNConfig`` field, and the field each sets."""


@contextmanager
def _errors_as_exit_codes() -> Iterator[None]:
    """A UserError is one line on stderr and exit code 2; Ctrl-C, exit code 130."""
    from dqn_mlx.errors import UserError

    try:
        yield
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _run_mode(options: Options) -> None:
    """Choose the device, then run ``--mode``."""
    from dqn_mlx.errors import UserError

    compute = _select_device(options.device, options.accel, options.threads)
    if options.env is not None and len(options.env) > 1 and options.mode != "sweep":
        raise UserError("--env is given once; only --mode sweep takes several games")
    if options.mode == "train":
        _train_mode(options, compute)
    elif options.mode == "sweep":
        from dqn_mlx.sweep import sweep_mode

        sweep_mode(options.env or [], options.seeds, options.preset_name,
                   options.config_flags(), options.set_ or [],
                   (options.weights_dir, options.save_replay), options.address,
                   options.threads)  # fmt: skip
    elif options.mode == "eval":
        _eval_mode(options, compute)
    elif options.mode == "report":
        from dqn_mlx.report.table import write_report

        table, *figure = write_report(options.weights_dir)
        print(
            f"results table written to {table}"
            + "".join(f"; learning curves in {f}" for f in figure)
        )
    else:
        _bench_mode(options.steps, compute)


def _eval_mode(options: Options, compute: Compute) -> None:
    """``--mode eval``: play a checkpoint (``evaluate.evaluate_checkpoint``)."""
    from dqn_mlx.evaluate import evaluate_checkpoint

    evaluate_checkpoint(options.load_path, options.one_env, options.episodes, options.epsilon,
                        options.seed, options.protocol, options.eval_steps, options.video,
                        options.value_trace, compute.layers, options.video_view)  # fmt: skip


def _select_device(device: str, accel: bool, threads: int | None) -> Compute:
    """Pick MLX's device, then how to compute on it: the platform's layers, or with
    ``--no-accel`` MLX's own."""
    from dqn_mlx.errors import UserError

    if threads is not None and threads <= 0:
        raise UserError(f"--threads must be positive, got {threads}")
    try:
        import mlx.core as mx
    except ImportError as exc:  # e.g. the cuda group on a machine without an NVIDIA driver
        raise UserError(
            f"MLX could not load its backend ({exc}); the cuda group needs an NVIDIA GPU and "
            "driver: run without `--no-group cpu --group cuda` to use the CPU"
        ) from None

    if device == "gpu" and not mx.is_available(mx.gpu):
        raise UserError("--device gpu: MLX sees no GPU on this machine; use --device cpu")
    if device != "auto":
        mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    if not accel:
        import dataclasses

        from dqn_mlx.core.learner import PLAIN

        return dataclasses.replace(PLAIN, name=f"{PLAIN.name} (--no-accel)")
    from dqn_mlx.accel import platform_compute

    return platform_compute(threads)


def _train_mode(options: Options, compute: Compute) -> None:
    """``--mode train``: a new run from the preset and the flags, ``--resume`` a run, or
    ``--restart`` an unfinished one."""
    from dqn_mlx.config import parse_assignments
    from dqn_mlx.errors import UserError
    from dqn_mlx.run.folder import check_run_name

    run_name, resume = options.run_name, options.resume
    if run_name is not None:
        check_run_name(run_name)
    if options.restart and (resume is not None or run_name is None):
        raise UserError(
            "--restart starts the run named by --run-name over in its folder: give --run-name, "
            "and no --resume"
        )
    given = {**parse_assignments(options.set_ or []), **options.config_flags()}
    if resume is None:
        _new_run(options, given, compute)
        return
    if run_name is not None and run_name != _run_folder_of(resume).name:
        raise UserError(
            f"--run-name {run_name}: --resume continues the run in "
            f"{_run_folder_of(resume)}; drop --run-name or give that run's name"
        )
    _resume(resume, given, options.preset_name, options.one_env, options.save_replay, compute)


def _new_run(options: Options, given: dict[str, object], compute: Compute) -> None:
    """Train a new run (or ``--restart`` one) in its folder under ``--weights-dir``; a run
    refused before training leaves no folder behind."""
    from dqn_mlx.config import preset, with_overrides
    from dqn_mlx.core.env import resolve_game
    from dqn_mlx.core.replay import check_replay_fits
    from dqn_mlx.errors import UserError
    from dqn_mlx.run.checkpoint import default_run_name, run_folder
    from dqn_mlx.run.train import check_no_other_run

    config = with_overrides(preset(options.preset_name or DEFAULT_PRESET), given).validate()
    env_id = options.one_env or "BreakoutNoFrameskip-v4"
    resolve_game(env_id)  # every check that needs no folder comes before the folder
    check_replay_fits(config.replay_size)
    name = options.run_name or default_run_name(config)
    folder = run_folder(options.weights_dir, env_id, name)
    if folder.is_dir() and not options.restart:
        check_no_other_run(folder)  # again under the folder's lock, in case of a race
    parents = _missing_folders(folder.parent)
    try:
        if options.run_name is None:  # a default name is never refused: claim a free one, -2...
            folder = _claim(folder)
        _train(config, env_id, folder, options.save_replay, compute, restart=options.restart)
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
    from dqn_mlx.errors import UserError

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
    preset: str | None,
    env: str | None,
    save_replay: bool,
    compute: Compute,
) -> None:
    """Continue a run with its saved settings. The command that started it may be given again:
    every setting it names must equal the saved one; only --steps may change, to extend it."""
    import dataclasses

    from dqn_mlx.errors import UserError
    from dqn_mlx.run.resume import differing_settings, load_training_state

    loaded = load_training_state(path)
    differ = differing_settings(loaded, given, preset, env)
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
    and SIGTERM asking for a resumable stop; prints the commands to resume or evaluate."""
    from dqn_mlx.core.env import AtariEnv, comparability_note, make_atari_env, resolve_game
    from dqn_mlx.run.resume import quoted
    from dqn_mlx.run.train import TrainingInterrupted, train

    game = resolve_game(env_id)
    frame_skip = game.fixed_frame_skip or config.frame_skip_for(game.rom)
    note = comparability_note(game)
    if note:
        print(note)
    print(backend_line(compute))
    print(f"run folder: {folder}")

    def make_env(seed: int) -> AtariEnv:
        return make_atari_env(
            env_id,
            frame_skip,
            config.noop_max,
            config.max_episode_frames,
            seed,
            config.fire_after_life_loss,
        )

    requested = _stop_on_signals(folder)
    try:
        out = train(
            config,
            env_id,
            make_env,
            folder,
            frame_skip=frame_skip,
            resume=resume,
            save_replay_memory=save_replay,
            should_stop=lambda: bool(requested),
            compute=compute,
            progress_bar=sys.stdout.isatty(),
            restart=restart,
        )
    except TrainingInterrupted as stop:
        print(
            f"{stop}; resume with: uv run main.py --mode train --resume {quoted(stop.out_dir)}",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    print(f"done: checkpoints, metrics and plots in {out}")
    newest = max(out.glob("epoch_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    print(f"evaluate it: uv run main.py --mode eval --load-path {quoted(newest)}")


def _stop_on_signals(folder: Path) -> list[int]:
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal) ask the run to stop after the current
    step (the returned list becomes non-empty); a second Ctrl-C quits at once (every file is
    written atomically). A repeated SIGTERM does not: a sweep may send it twice while the
    state is being written. After SIGHUP the output goes to the run folder's log
    (``run.train.print_to_log``), the terminal being gone."""
    import signal

    from dqn_mlx.run.train import print_to_log

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


def backend_line(compute: Compute) -> str:
    """One line on the backend: MLX, the device, and the layers and optimizer it computes
    with (which path, and why where it is not the platform's own)."""
    import mlx.core as mx

    from dqn_mlx.run.checkpoint import mlx_version

    device = mx.default_device()
    try:
        info = mx.device_info()
        name = str(info.get("device_name") or info.get("architecture") or "")
    except (AttributeError, RuntimeError):
        name = ""
    head = f"MLX {mlx_version()} on {device}" + (f" ({name})" if name else "")
    return f"{head}; {compute.name}"


def _bench_mode(steps: int | None, compute: Compute) -> None:
    from dqn_mlx.bench import run_benchmark
    from dqn_mlx.errors import UserError

    if steps is not None and steps <= 0:
        raise UserError(f"--steps must be positive, got {steps}")
    run_benchmark(steps or 2_000, compute)


def run() -> None:
    """Entry point: the CLI parser's own errors (a bad type, an unknown flag, a choice not in
    the list) become one line too. They are recognised by shape (``format_message``,
    ``exit_code``): typer vendors click's exception classes in a private module, so naming them
    would be fragile."""
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        typer.echo(f"error: {exc.format_message()} (see --help)", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
