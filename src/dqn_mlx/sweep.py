"""``--mode sweep``: one training run per (game, seed), scheduled by Ray, each in its own folder.

Each run is a Ray task that starts ``main.py --mode train`` as a child process, in the run
folder ``<weights-dir>/<env-id>/<preset>-seed<seed>/``, asking Ray for what it uses: its CPU
threads (the run's BLAS threads are set to the same count), its memory (the replay memory
plus the process's own) and, where the cluster has GPUs, a share of one (``task_resources``).
Ray runs as many as fit and queues the rest; with ``--address`` it schedules them over a
cluster.

Faults: a run whose process dies is retried by Ray, and a retry, like a sweep started again
with the same command, continues each unfinished run from its folder (``--resume``) and skips
the finished ones. Ctrl-C cancels every run, and the runs on this machine stop cleanly, each
with a resumable state (on other nodes of a cluster, a cancelled run resumes from its last
epoch end).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.replay import replay_bytes
from dqn_mlx.errors import UserError
from dqn_mlx.run.checkpoint import run_folder
from dqn_mlx.run.metrics import read_metrics

MAIN = Path(__file__).resolve().parents[2] / "main.py"
PROCESS_BYTES = 1_500_000_000  # one training process besides its replay memory (bench: ~0.9 GB)
RETRIES = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEFAULT_THREADS = 1
"""BLAS threads (and Ray CPUs) per run: on our 2-core machine two runs side by side, one thread
each, kept 66% of a lone two-thread run's speed each (docs/performance.md): more in total
than one after the other."""
GPU_STEP = 0.0001  # the finest fraction of a resource Ray schedules


@dataclass(frozen=True)
class SweepRun:
    env_id: str
    seed: int
    folder: Path


def plan(weights_dir: Path, env_ids: list[str], seeds: list[int], preset: str) -> list[SweepRun]:
    """Every (game, seed) and its fixed folder: the same command finds the same folders."""
    return [
        SweepRun(env_id, seed, run_folder(weights_dir, env_id, f"{preset}-seed{seed}"))
        for env_id in env_ids
        for seed in seeds
    ]


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(
            f"--seeds {text!r}: give integers separated by commas, e.g. 0,1,2"
        ) from None
    if not seeds:
        raise UserError("--seeds is empty: give at least one seed, e.g. --seeds 0,1,2")
    return seeds


def state_step(folder: Path) -> int | None:
    """The agent step recorded in the run folder's training state (read from the safetensors
    header alone); None where the folder holds no state."""
    path = folder / "train_state.safetensors"
    if not path.exists():
        return None
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > path.stat().st_size:
                raise ValueError("its header is longer than the file")
            metadata = json.loads(handle.read(length)).get("__metadata__", {})
        return int(json.loads(metadata.get("run", "{}")).get("step", 0))
    except (OSError, ValueError, TypeError, AttributeError, struct.error, OverflowError) as exc:
        raise DamagedState(f"{path} is damaged ({type(exc).__name__})") from None


class DamagedState(ValueError):
    """A run folder's training state that cannot be read."""


def finished(run: SweepRun, total_steps: int) -> bool:
    """Whether the run's folder holds a training state at ``total_steps`` agent steps or more."""
    return (state_step(run.folder) or 0) >= total_steps


def task_resources(cluster: Mapping[str, float], memory: int, threads: int) -> dict[str, Any]:
    """What one run asks Ray for, given the cluster's resources (``ray.cluster_resources()``):
    ``threads`` CPUs and ``memory`` bytes and, where the cluster has GPUs, the same share of
    its GPUs as of its CPUs (at most one GPU), so that runs spread over the GPUs and several
    share one. The share is of the whole cluster: on a cluster where only some nodes have GPUs
    every run asks for one, and the nodes without GPUs run none. Ray gives a run the GPU it
    assigned (``CUDA_VISIBLE_DEVICES``); without a request every run would see every GPU. No
    GPU request where the cluster has none: such a task would never start."""
    resources: dict[str, Any] = {"num_cpus": threads, "memory": memory}
    gpus, cpus = cluster.get("GPU", 0), cluster.get("CPU", 0)
    if gpus > 0:
        share = threads * gpus / cpus if cpus > 0 else 1.0
        steps = math.floor(share / GPU_STEP + 1e-6)  # Ray's granularity, rounded down
        resources["num_gpus"] = min(1.0, max(1, steps) * GPU_STEP)
    return resources


def train_command(run: SweepRun, train_args: list[str], threads: int) -> list[str]:
    """The training command of one run: a new run, or ``--resume`` where a state exists (a
    retry, or the sweep started again)."""
    command = [sys.executable, str(MAIN), "--mode", "train", "--env", run.env_id]
    command += ["--seed", str(run.seed), "--threads", str(threads), *train_args]
    command += ["--weights-dir", str(run.folder.parent.parent), "--run-name", run.folder.name]
    if (run.folder / "train_state.safetensors").exists():
        command += ["--resume", str(run.folder)]
    return command


def run_training(run: SweepRun, train_args: list[str], threads: int) -> int:
    """The body of one Ray task: train (or resume) as a child process; a failure raises, so
    that Ray retries the task, which then resumes. Ctrl-C (Ray's cancel) stops the child
    cleanly: it writes a resumable state."""
    if run.folder.exists() and not (run.folder / "train_state.safetensors").exists():
        for leftover in run.folder.iterdir():  # died before its first state: start again
            leftover.unlink()
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            train_command(run, train_args, threads), stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            while child.poll() is None:  # Python-level waits, so that Ray's cancel gets in
                with suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=1.0)
        except KeyboardInterrupt:
            child.send_signal(signal.SIGTERM)  # the run writes a resumable state and exits
            child.wait()
            raise
        errors.seek(0)
        last = errors.read().strip().splitlines()[-1:] or [f"exit {child.returncode}"]
    if child.returncode != 0:
        raise RuntimeError(f"{run.env_id} seed {run.seed}: {last[0]}")
    return child.returncode


def sweep(
    runs: list[SweepRun],
    config: DQNConfig,
    train_args: list[str],
    threads: int,
    address: str | None,
) -> None:
    """Run every unfinished run on Ray; prints a line as each starts, finishes or fails, then
    the table of every run; a UserError when some failed even after their retries."""
    import ray

    memory = replay_bytes(config.replay_size) + PROCESS_BYTES
    ray.init(
        address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    try:
        resources = task_resources(ray.cluster_resources(), memory, threads)
        _check_fits(ray, resources)
        task = ray.remote(run_training).options(
            **resources, max_retries=RETRIES, retry_exceptions=True
        )
        pending, damaged = {}, []
        for run in runs:
            try:
                done = finished(run, config.total_steps)
            except DamagedState as exc:
                print(
                    f"{run.env_id} seed {run.seed}: not started, {exc}; move it away to start "
                    "this run over",
                    flush=True,
                )
                damaged.append(run)
                continue
            if done:
                print(f"{run.env_id} seed {run.seed}: finished already ({run.folder})", flush=True)
                continue
            pending[task.remote(run, train_args, threads)] = run
            print(f"{run.env_id} seed {run.seed}: queued ({run.folder})", flush=True)
        failed = damaged + _wait(ray, pending)
    finally:
        ray.shutdown()
    print(render_table([table_row(run) for run in runs]))
    if failed:
        raise UserError(
            f"{len(failed)} of {len(runs)} runs failed after {RETRIES} retries (above); start "
            "the same command again to resume them"
        )


def _check_fits(ray: Any, resources: dict[str, Any]) -> None:
    """Refuse a sweep whose runs fit on no node: Ray would queue them for ever."""
    memory, threads, gpus = resources["memory"], resources["num_cpus"], resources.get("num_gpus", 0)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not any(
        r.get("memory", 0) >= memory and r.get("CPU", 0) >= threads and r.get("GPU", 0) >= gpus
        for r in nodes
    ):
        largest = max((r.get("memory", 0) for r in nodes), default=0)
        raise UserError(
            f"one run needs {memory / 1e9:.2f} GB (replay memory and process) and {threads} "
            f"CPU{f' and {gpus} GPU' if gpus else ''}, but the largest node offers "
            f"{largest / 1e9:.2f} GB; lower --replay-size"
        )


def _wait(ray: Any, pending: dict[Any, SweepRun]) -> list[SweepRun]:
    """Wait for every task, printing each end; returns the runs that failed even after their
    retries. Ctrl-C (or SIGTERM) cancels them, and each run writes a resumable state before
    it stops."""
    failed: list[SweepRun] = []
    stop: list[int] = []
    previous = {s: signal.signal(s, lambda n, _f: stop.append(n)) for s in STOP_SIGNALS}
    try:
        while pending and not stop:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                run = pending.pop(ref)
                try:
                    ray.get(ref)
                    print(f"{run.env_id} seed {run.seed}: finished ({run.folder})", flush=True)
                except Exception as exc:
                    print(f"{run.env_id} seed {run.seed}: failed after retries: {exc}", flush=True)
                    failed.append(run)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop:
        for ref in pending:
            ray.cancel(ref)  # no retry; and stop the runs on this machine cleanly:
        for process in _training_processes(list(pending.values())):
            with suppress(psutil.Error):
                process.send_signal(signal.SIGTERM)  # it writes a resumable state, then exits
        for ref in pending:
            with suppress(Exception):
                ray.get(ref)
        print("sweep stopped; start the same command again to resume it", file=sys.stderr)
        raise KeyboardInterrupt
    return failed


def _training_processes(runs: list[SweepRun]) -> list[psutil.Process]:
    """The training processes of ``runs`` running on this machine."""
    folders = {(str(run.folder.parent.parent), run.folder.name) for run in runs}
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "--run-name" in command and "--weights-dir" in command:
            key = (
                command[command.index("--weights-dir") + 1],
                command[command.index("--run-name") + 1],
            )
            if key in folders:
                found.append(process)
    return found


def table_row(run: SweepRun) -> dict[str, Any]:
    records = read_metrics(run.folder)
    last = records[-1] if records else {}
    return {
        "game": run.env_id,
        "seed": run.seed,
        "agent_steps": last.get("agent_steps", 0),
        "eval_score": last.get("eval_score_mean"),
        "folder": str(run.folder),
    }


def render_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'game':28s} {'seed':>4s} {'agent steps':>12s} {'last eval':>10s}  folder"]
    for r in rows:
        score = "—" if r["eval_score"] is None else f"{r['eval_score']:.2f}"
        lines.append(
            f"{r['game']:28s} {r['seed']:>4d} {r['agent_steps']:>12,} {score:>10s}  {r['folder']}"
        )
    return "\n".join(lines)


def sweep_mode(
    env_ids: list[str],
    seeds_text: str | None,
    preset_name: str | None,
    flags: dict[str, object],
    assignments: list[str],
    output: tuple[Path, bool],
    address: str | None,
    threads: int | None,
) -> None:
    """``--mode sweep``: check everything before starting anything, then run the sweep and
    print its table."""
    from dqn_mlx.config import DEFAULT_PRESET, parse_assignments, preset, with_overrides
    from dqn_mlx.core.env import resolve_game

    weights_dir, save_replay = output
    if not env_ids:
        raise UserError("--mode sweep needs at least one --env, e.g. --env PongNoFrameskip-v4")
    for env_id in env_ids:
        resolve_game(env_id)  # an unknown game is refused here, before anything starts
    seeds = parse_seeds(seeds_text if seeds_text is not None else "0")
    if "seed" in flags:
        raise UserError("--mode sweep takes its seeds from --seeds, not --seed")
    name = preset_name or DEFAULT_PRESET
    config = with_overrides(preset(name), {**parse_assignments(assignments), **flags}).validate()
    # Ray would start its workers through `uv run` when the command came from `uv run`, with
    # the default groups only (no Ray): they run this interpreter, as the driver does, instead.
    # Read when Ray is first imported.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(
            "--mode sweep needs Ray: run it with uv run --group sweep main.py --mode sweep ..."
        ) from None
    train_args = ["--preset", name, *_flag_args(flags), *(f"--set={a}" for a in assignments)]
    train_args += ["--save-replay"] if save_replay else []
    runs = plan(weights_dir, env_ids, seeds, name)
    sweep(runs, config, train_args, threads or DEFAULT_THREADS, address)


def _flag_args(flags: dict[str, object]) -> list[str]:
    """Training flags given to the sweep, passed on to every run."""
    names = {"total_steps": "steps"}
    args: list[str] = []
    for field, value in flags.items():
        args += ["--" + names.get(field, field).replace("_", "-"), str(value)]
    return args
