"""Command line: one command per mode, each declaring the flags it reads (``flags.py`` makes
the commands; the training hyperparameters' flags come from ``DQNConfig``'s fields). ``--mode
M`` names the command, train by default. Every UserError and every parser error is one line on
stderr and exit code 2. Heavy imports (MLX, ALE) happen inside the modes, so ``--help`` stays
instant; so does the choice of device and layers (``run/device.py``)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from dqn_mlx.config import DEFAULT_PRESET, GENERAL, HYPERPARAMETERS, PRESETS, TRAIN, flag_fields
from dqn_mlx.errors import UserError, errors_as_exit_codes
from dqn_mlx.flags import app, check_flags_of_mode, check_values_given, mode, mode_of
from dqn_mlx.run.device import EVAL_THREADS, check_threads, select_device
from dqn_mlx.run.folder import RUNS

EVAL, SWEEP, OUTPUT, SPEED = "Eval", "Sweep", "Output", "Speed"
PresetName = Enum("PresetName", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]
"""The presets' names, taken from ``config.PRESETS``: a new preset is a new choice."""
WHY_NOT = {("--load-path", "train"): "training starts from fresh weights; to continue a run, "
           "give --resume RUN_FOLDER"}  # fmt: skip
"""A hint for refusals a user is likely to meet."""


def _flag(panel: str, help: str, *names: str, metavar: str | None = None) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar=metavar)


# The flags that set no config field, each declared once here; each mode lists those it reads.
# fmt: off
Env = Annotated[list[str] | None, _flag(GENERAL, "Gymnasium Atari id: <Game>NoFrameskip-v4 (the "
    "papers' setting) or ALE/<Game>-v5. Train default: BreakoutNoFrameskip-v4; eval default: "
    "the checkpoint's. Sweep: repeat it for several games.", metavar="<id>")]
Preset = Annotated[PresetName | None, _flag(TRAIN, "laptop learns fastest at laptop budgets; "
    f"nips2013 and nature2015 are the papers' settings. Default: {DEFAULT_PRESET}.")]
Set = Annotated[list[str] | None, _flag(HYPERPARAMETERS, "Any hyperparameter as name=value "
    "(repeatable), as its flag sets it.", "--set", metavar="<name=value>")]
Resume = Annotated[Path | None, _flag(TRAIN, "Continue the run in this folder (or state file).")]
Restart = Annotated[bool, _flag(TRAIN, "Start the --run-name run over in its folder: for a run "
    "that stopped before its first training state, which --resume cannot continue.")]
LoadPath = Annotated[Path | None, _flag(EVAL, "Checkpoint to play.")]
Episodes = Annotated[int, _flag(EVAL, "Games to play.")]
Epsilon = Annotated[float, _flag(EVAL, "Exploration rate.")]
Protocol = Annotated[Literal["nips2013", "nature2015"] | None, _flag(EVAL, "nips2013: epsilon "
    "0.05 for --eval-steps agent steps (default 10,000); nature2015: 30 games of at most 5 "
    "minutes.")]
RunName = Annotated[str | None, _flag(OUTPUT, "The run's folder name under <weights-dir>/<env-id>/"
    " (default: preset, seed and start time).")]
WeightsDir = Annotated[Path, _flag(OUTPUT, "Output folder; a run goes to "
    "<dir>/<env-id>/<run-name>/; report: the runs it reads (the shipped ones: weights/).")]
SaveReplay = Annotated[bool, _flag(OUTPUT, "Also save the replay memory (compressed) for "
    "--resume.")]
Video = Annotated[Path | None, _flag(OUTPUT, "Write one MP4 (or GIF) per game into this folder.")]
ValueTrace = Annotated[bool, _flag(OUTPUT, "Plot max-Q over the first game (PNG).")]
VideoView = Annotated[Literal["game", "agent"], _flag(OUTPUT, "--video films the game's screen "
    "(210x160 colour, 3x) or what the agent sees (84x84 grayscale frames, 3x).")]
Seeds = Annotated[str | None, _flag(SWEEP, "Seeds of the sweep, separated by commas: 0,1,2.")]
Address = Annotated[str | None, _flag(SWEEP, "A running Ray cluster to join (ray start --head); "
    "default: a local one.")]
Device = Annotated[Literal["auto", "cpu", "gpu"], _flag(SPEED, "Where MLX computes: the best "
    "available, or one.")]
Threads = Annotated[int | None, _flag(SPEED, "Threads of the oneDNN layers (Linux x86-64 CPU), "
    "per run in a sweep (default 1 there). Default: OMP_NUM_THREADS if set, else train and "
    "bench: the cores this process may use (taskset counts), eval: 1; give 1 to each of two "
    "trainings side by side.")]
Rounds = Annotated[int, _flag(SPEED, "Bench: alternating rounds of its share benchmark (a "
    "training alone, beside an evaluation, beside a second training).")]
Accel = Annotated[bool, _flag(SPEED, "The platform's layers and optimizer (Linux x86-64 CPU: "
    "oneDNN's, built at install); --no-accel computes with MLX's own, the definitions.")]
# fmt: on


@mode("train", flag_fields())
def train(
    env: Env = None,
    preset: Preset = None,
    set_: Set = None,
    resume: Resume = None,
    restart: Restart = False,
    run_name: RunName = None,
    weights_dir: WeightsDir = RUNS,
    save_replay: SaveReplay = False,
    device: Device = "auto",
    threads: Threads = None,
    accel: Accel = True,
    *,
    given: dict[str, Any],
) -> None:
    """DQN (Mnih et al. 2013/2015) in MLX. Train an agent on an Atari game (the default mode),
    or continue a run (--resume)."""
    from dqn_mlx.run.start import train_mode

    compute = select_device(device, accel, threads)
    output = (weights_dir, run_name, save_replay)
    train_mode(_one(env), preset and preset.value, given, set_ or [], output, resume, restart,
               compute)  # fmt: skip


@mode("eval", ["seed", "eval_steps"], defaults_shown=False, panel=EVAL)
def evaluate(
    env: Env = None,
    load_path: LoadPath = None,
    episodes: Episodes = 10,
    epsilon: Epsilon = 0.05,
    protocol: Protocol = None,
    video: Video = None,
    value_trace: ValueTrace = False,
    video_view: VideoView = "game",
    device: Device = "auto",
    threads: Threads = None,
    accel: Accel = True,
    *,
    given: dict[str, Any],
) -> None:
    """Play a checkpoint and save its scores beside it (a shipped one's: under runs/)."""
    from dqn_mlx.evaluate import evaluate_checkpoint

    compute = select_device(device, accel, threads, EVAL_THREADS)
    seed, steps = given.get("seed"), given.get("eval_steps")
    evaluate_checkpoint(load_path, _one(env), episodes, epsilon, seed, protocol, steps, video,
                        value_trace, compute, video_view)  # fmt: skip


@mode("report", [])
def report(weights_dir: WeightsDir = RUNS, *, given: dict[str, Any]) -> None:
    """Write the results table of every run under --weights-dir, beside the papers' scores."""
    from dqn_mlx.report.table import write_report

    table, *figure = write_report(weights_dir)
    curves = "".join(f"; learning curves in {f}" for f in figure)
    print(f"results table written to {table}{curves}")


@mode("bench", ["total_steps"], defaults_shown=False, panel=SPEED)
def bench(
    device: Device = "auto",
    threads: Threads = None,
    accel: Accel = True,
    rounds: Rounds = 1,
    *,
    given: dict[str, Any],
) -> None:
    """Measure the speed of every stage on this machine, one figure per line."""
    from dqn_mlx.bench import run_benchmark

    compute = select_device(device, accel, threads)
    steps = given.get("total_steps", 2_000)
    if steps <= 0:
        raise UserError(f"--steps must be positive, got {steps}")
    if rounds <= 0:
        raise UserError(f"--rounds must be positive, got {rounds}")
    run_benchmark(steps, compute, rounds)


@mode("sweep", [field for field in flag_fields() if field != "seed"])
def sweep(
    env: Env = None,
    seeds: Seeds = None,
    address: Address = None,
    preset: Preset = None,
    set_: Set = None,
    weights_dir: WeightsDir = RUNS,
    save_replay: SaveReplay = False,
    threads: Threads = None,
    *,
    given: dict[str, Any],
) -> None:
    """Train every --env x --seeds run on Ray, each in its own folder (a seed replaces
    --seed); the same command again resumes the unfinished ones."""
    from dqn_mlx.sweep import sweep_mode

    check_threads(threads)
    sweep_mode(env or [], seeds, preset and preset.value, given, set_ or [],
               (weights_dir, save_replay), address, threads)  # fmt: skip


def _one(env: list[str] | None) -> str | None:
    """The game of a mode that plays one (every mode but sweep)."""
    if env is not None and len(env) > 1:
        raise UserError("--env is given once; only --mode sweep takes several games")
    return env[0] if env else None


def run() -> None:
    """Entry point (``main.py``, the ``dqn-mlx`` command): ``--mode M`` runs the command M.
    The parser's own errors (a bad type, an unknown flag, a choice not in the list) become one
    line too. They are recognised by shape (``format_message``, ``exit_code``): typer vendors
    click's exception classes in a private module, so naming them would be fragile."""
    args = sys.argv[1:]
    with errors_as_exit_codes():
        check_values_given(args)
        check_flags_of_mode(mode_of(args), args, WHY_NOT)
        try:
            code = typer.main.get_command(app).main(
                [mode_of(args), *args], prog_name=f"{Path(sys.argv[0]).name} --mode",
                standalone_mode=False,
            )  # fmt: skip
        except Exception as exc:
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            raise UserError(f"{exc.format_message()} (see --help)") from None
    sys.exit(code if isinstance(code, int) else 0)
