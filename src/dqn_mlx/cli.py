"""Command line: parse, check, dispatch. Heavy imports (MLX, ALE) happen inside the modes so
``--help`` stays instant. Every UserError is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dqn_mlx.config import DEFAULT_PRESET, PRESETS

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="DQN (Mnih et al. 2013/2015) in MLX: train or evaluate on Atari games.",
)

MODES = ("train", "eval", "bench", "report")


def _overrides(**values: object) -> dict[str, object]:
    """CLI flags that were given, as config field names."""
    return {name: value for name, value in values.items() if value is not None}


@app.command()
def main(
    mode: Annotated[str, typer.Option(help="train | eval | bench | report")] = "train",
    env: Annotated[
        str | None,
        typer.Option(
            help="Gymnasium Atari id: <Game>NoFrameskip-v4 (papers' setting) or ALE/<Game>-v5. "
            "Train default: BreakoutNoFrameskip-v4; eval default: the checkpoint's."
        ),
    ] = None,
    preset: Annotated[
        str,
        typer.Option(
            help=f"{' | '.join(PRESETS)}: laptop learns fastest at laptop budgets, the others "
            "are the papers' settings."
        ),
    ] = DEFAULT_PRESET,
    steps: Annotated[int | None, typer.Option(help="Total training agent steps.")] = None,
    epoch_updates: Annotated[int | None, typer.Option(help="Minibatch updates per epoch.")] = None,
    replay_size: Annotated[
        int | None, typer.Option(help="Replay capacity in transitions (agent steps).")
    ] = None,
    learning_starts: Annotated[
        int | None, typer.Option(help="Agent steps of random play before the first update.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for numpy, MLX and the emulators.")] = None,
    weights_dir: Annotated[
        Path, typer.Option(help="Output folder; runs go to <dir>/<env-id>/.")
    ] = Path("weights"),
    eval_steps: Annotated[
        int | None, typer.Option(help="Agent steps of epsilon=0.05 play per epoch evaluation.")
    ] = None,
    held_out_states: Annotated[
        int | None, typer.Option(help="Random-policy states on which average max-Q is tracked.")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size (transitions).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Optimizer step size.")] = None,
    update_period: Annotated[int | None, typer.Option(help="Agent steps per update.")] = None,
    target_update_agent_steps: Annotated[
        int | None,
        typer.Option(help="Agent steps between target syncs; 0 = no target network (2013)."),
    ] = None,
    epsilon_decay_steps: Annotated[
        int | None,
        typer.Option(help="Agent steps over which epsilon anneals from 1 to its end value."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Any other hyperparameter: --set name=value (repeatable; see README)."
        ),
    ] = None,
    load_path: Annotated[Path | None, typer.Option(help="eval: checkpoint to play.")] = None,
    episodes: Annotated[int, typer.Option(help="eval: games to play.")] = 10,
    epsilon: Annotated[float, typer.Option(help="eval: exploration rate.")] = 0.05,
    device: Annotated[str, typer.Option(help="cpu | gpu | auto (the best available).")] = "auto",
    protocol: Annotated[
        str | None,
        typer.Option(
            help="eval: nips2013 (epsilon 0.05 for --eval-steps agent steps, default "
            "10,000) or nature2015 (30 games of at most 5 minutes)"
        ),
    ] = None,
    video: Annotated[
        Path | None, typer.Option(help="eval: write one MP4 (or GIF) per game into this folder")
    ] = None,
    value_trace: Annotated[
        bool,
        typer.Option("--value-trace", help="eval: plot max-Q over the first game (PNG)"),
    ] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="train: continue the run in this folder (weights/<env-id>/) or state file."
        ),
    ] = None,
    save_replay: Annotated[
        bool,
        typer.Option(
            "--save-replay", help="train: also save the replay memory (compressed) for --resume."
        ),
    ] = False,
) -> None:
    from dqn_mlx.errors import UserError

    try:
        if mode not in MODES:
            raise UserError(f"unknown --mode {mode!r}; choose one of: {', '.join(MODES)}")
        _select_device(device)
        if mode == "train":
            from dqn_mlx.config import parse_assignments, with_overrides
            from dqn_mlx.config import preset as get_preset

            flags = _overrides(
                total_steps=steps,
                epoch_updates=epoch_updates,
                replay_size=replay_size,
                learning_starts=learning_starts,
                seed=seed,
                eval_steps=eval_steps,
                held_out_states=held_out_states,
                batch_size=batch_size,
                learning_rate=learning_rate,
                update_period=update_period,
                target_update_agent_steps=target_update_agent_steps,
                epsilon_decay_steps=epsilon_decay_steps,
            )
            if resume is not None:
                _resume(resume, flags, bool(set_) or env is not None, save_replay)
                return
            config = with_overrides(
                get_preset(preset), {**parse_assignments(set_ or []), **flags}
            ).validate()
            _train(config, env or "BreakoutNoFrameskip-v4", weights_dir, save_replay)
        elif mode == "eval":
            from dqn_mlx.evaluate import evaluate_checkpoint

            evaluate_checkpoint(
                load_path, env, episodes, epsilon, seed, protocol, eval_steps, video, value_trace
            )
        elif mode == "report":
            from dqn_mlx.report import write_report

            print(f"results table written to {write_report(weights_dir)}")
        else:
            from dqn_mlx.bench import run_benchmark

            if steps is not None and steps <= 0:
                raise UserError(f"--steps must be positive, got {steps}")
            run_benchmark(steps or 2_000)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _select_device(device: str) -> None:
    from dqn_mlx.errors import UserError

    if device not in ("cpu", "gpu", "auto"):
        raise UserError(f"unknown --device {device!r}; choose cpu, gpu or auto")
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


def _resume(path: Path, flags: dict[str, object], other: bool, save_replay: bool) -> None:
    """Continue a run: its config comes from the state file; only --steps may change."""
    import dataclasses

    from dqn_mlx.errors import UserError
    from dqn_mlx.resume import load_training_state

    changed = sorted(set(flags) - {"total_steps"})
    if changed or other:
        names = ", ".join("--" + n.replace("_", "-") for n in changed) or "--env/--set"
        raise UserError(
            f"--resume continues a run with its own settings; drop {names} (only --steps may "
            "change, to extend the run)"
        )
    loaded = load_training_state(path)
    steps = int(flags.get("total_steps", loaded.config.total_steps))  # type: ignore[call-overload]
    if steps <= loaded.run.step:
        raise UserError(
            f"--steps {steps:,}: the run already took {loaded.run.step:,} agent steps; give a "
            "larger --steps to train further"
        )
    config = dataclasses.replace(loaded.config, total_steps=steps).validate()
    _train(config, loaded.env_id, loaded.path.parent, save_replay, resume=loaded)


def _train(
    config: object,
    env_id: str,
    weights_dir: Path,
    save_replay: bool,
    resume: object = None,
) -> None:
    import signal

    import dqn_mlx
    from dqn_mlx.blas import measure_gflops
    from dqn_mlx.config import DQNConfig
    from dqn_mlx.env import AtariEnv, comparability_note, make_atari_env, resolve_game
    from dqn_mlx.resume import LoadedState
    from dqn_mlx.train import TrainingInterrupted, train

    assert isinstance(config, DQNConfig)
    assert resume is None or isinstance(resume, LoadedState)
    game = resolve_game(env_id)
    frame_skip = game.fixed_frame_skip or config.frame_skip_for(game.rom)
    note = comparability_note(game)
    if note:
        print(note)
    _report_backend(dqn_mlx.BLAS_STATUS, measure_gflops, dqn_mlx.KERNEL_STATUS)

    def make_env(seed: int) -> AtariEnv:
        return make_atari_env(env_id, frame_skip, config.noop_max, config.max_episode_frames, seed)

    requested: list[int] = []

    def request_stop(signum: int, frame: object) -> None:
        if requested:  # a second Ctrl-C: leave now (every file is written atomically)
            raise KeyboardInterrupt
        requested.append(signum)
        print(
            "stopping: finishing this step and writing a resumable checkpoint "
            "(press Ctrl-C again to quit at once)",
            file=sys.stderr,
        )

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        out = train(
            config,
            env_id,
            make_env,
            weights_dir,
            frame_skip=frame_skip,
            resume=resume,
            save_replay_memory=save_replay,
            should_stop=lambda: bool(requested),
        )
    except TrainingInterrupted as stop:
        print(
            f"{stop}; resume with: uv run main.py --mode train --resume {stop.out_dir}",
            file=sys.stderr,
        )
        raise typer.Exit(130) from None
    print(f"done: checkpoints, metrics.jsonl and plots in {out}")


def _report_backend(status: object, measure: object, kernels: object) -> None:
    """One line on the backend (MLX, device, BLAS and its speed, how fused kernels are
    compiled), and a warning when the slow reference BLAS is in use."""
    import mlx.core as mx

    from dqn_mlx.checkpoint import mlx_version

    gflops = measure()  # type: ignore[operator]
    name = getattr(status, "name", "?")
    jit = "vectorised" if getattr(kernels, "vectorized", False) else "plain"
    print(
        f"MLX {mlx_version()} on {mx.default_device()}; BLAS: {name}, {gflops:.0f} GFLOP/s; "
        f"fused CPU kernels: {jit} ({getattr(kernels, 'detail', '')})"
    )
    if not getattr(status, "fast", True):
        print(
            f"warning: slow reference BLAS in use: {getattr(status, 'detail', '')}", file=sys.stderr
        )


def run() -> None:
    """Entry point: the CLI parser's own errors (a bad type, an unknown flag) become one line
    too. They are recognised by shape (``format_message``, ``exit_code``): typer vendors click's
    exception classes in a private module, so naming them would be fragile."""
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
