"""``--mode sweep``: one training run per (game, seed), scheduled by Ray, each in its own folder.

Each run is a Ray task that starts ``main.py --mode train`` as a child process, in the run
folder ``<weights-dir>/<env-id>/<preset>-seed<seed>/``, asking Ray for what it uses: its CPU
threads (the run's BLAS threads are set to the same count), its memory (the replay memory
plus the process's own) and, where the cluster has GPUs, a share of one (``task_resources``).
Ray runs as many as fit and queues the rest; with ``--address`` it schedules them over a
cluster (docs/cluster.md), whose nodes must all see ``--weights-dir`` at the same path: every
node checks that first (``check_weights_dir``), and a node that cannot is a one-line error.

While it runs, the sweep shows a table of every run (``sweep_view``): its node, agent steps,
last epoch score, agent steps/s and state. Each attempt of a run tells a small actor on the
driver's node (``Board``) where it started; the driver reads it and Ray's list of live nodes.

Faults: a run whose process dies, or whose node is lost, is retried by Ray (on any node), and
a retry, like a sweep started again with the same command, continues each unfinished run from
its folder (``--resume``) and skips the finished ones. A run's training process stops, saving
its state, when its Ray worker dies (``stopped_with_this_process``). One sweep driver holds a
``--weights-dir`` at a time (``hold_weights_dir``). Ctrl-C cancels every run, and the runs
on this machine stop cleanly, each with a resumable state (on other nodes of a cluster, a
cancelled run resumes from its last epoch end).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dqn_mlx.config import DQNConfig
from dqn_mlx.core.replay import replay_bytes
from dqn_mlx.errors import UserError
from dqn_mlx.run.folder import hold_folder, hold_run_folder, is_held, run_folder
from dqn_mlx.run.hangup import print_to_log
from dqn_mlx.sweep_view import RunView, SweepView

MAIN = Path(__file__).resolve().parents[2] / "main.py"
PROCESS_BYTES = 1_500_000_000  # one training process besides its replay memory, with room to spare
RETRIES = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEFAULT_THREADS = 1
"""Layer threads (and Ray CPUs) per run: runs side by side on one thread each do more in total
than one after the other on every core (docs/performance.md)."""
GPU_STEP = 0.0001  # the finest fraction of a resource Ray schedules
CHECK_PREFIX = ".sweep-check-"
CHECK_TIMEOUT_S = 120.0  # a node's --weights-dir check: a worker start and a few small files
REFRESH_S = 2.0  # the live view
HELD_WAIT_S = 120.0  # a retry's wait for the training of the attempt before to save and exit
SWEEP_LOCK = ".sweep.lock"  # in --weights-dir, while a sweep holds it: who does


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


def run_training(run: SweepRun, train_args: list[str], threads: int, board: Any = None) -> int:
    """The body of one Ray task: train (or resume) as a child process; a failure raises, so
    that Ray retries the task, which then resumes. Ctrl-C (Ray's cancel) stops the child
    cleanly: it writes a resumable state. Each attempt tells ``board`` (a ``Board`` actor)
    where it runs, and prints it to its Ray worker's log on that node."""
    wait_while_held(run.folder)
    if run.folder.exists() and not (run.folder / "train_state.safetensors").exists():
        for leftover in run.folder.iterdir():  # died before its first state: start again
            leftover.unlink()
    _attempt_started(run, board)
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            train_command(run, train_args, threads),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=stopped_with_this_process(),
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
        _tell(board, "failed", str(run.folder), last[0])
        raise RuntimeError(f"{run.env_id} seed {run.seed}: {last[0]}")
    return child.returncode


def wait_while_held(folder: Path, timeout_s: float = HELD_WAIT_S) -> None:
    """Wait, up to ``timeout_s``, until no process holds the run folder: the training of an
    earlier attempt, whose worker died, writes its state before it exits
    (``stopped_with_this_process``), and the retry must resume from that state, not be
    refused or clear the folder meanwhile. After that the attempt goes on regardless, and
    its training names any holder left."""
    deadline = time.monotonic() + timeout_s
    while folder.is_dir() and is_held(folder) and time.monotonic() < deadline:
        time.sleep(0.5)


PR_SET_PDEATHSIG = 1  # prctl(2) on Linux: the signal a process gets when its parent dies


def stopped_with_this_process() -> Callable[[], None] | None:
    """For a training child (on Linux; elsewhere None): SIGTERM when this process, its Ray
    worker, dies (``PR_SET_PDEATHSIG``, kept across exec), so that a worker killed alone (a
    SIGKILL, the OOM killer) does not leave its training running, holding the run folder's
    lock and refusing the retry. SIGTERM, not SIGKILL: the training finishes its step and
    writes a resumable state, and the retry resumes from it. Ray runs a task on its worker's
    main thread, whose end is the worker's (the signal follows the thread that forked).

    The function runs in the child between fork and exec: it only makes the call, looked up
    beforehand, and checks that the parent did not die before it took effect."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent, stop = os.getpid(), int(signal.SIGTERM)

    def stop_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, stop)
        if os.getppid() != parent:  # the worker died before the call: no signal will come
            os._exit(1)

    return stop_with_parent


def _attempt_started(run: SweepRun, board: Any) -> None:
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        resumed_from = state_step(run.folder)
    except DamagedState:
        resumed_from = None  # the run says so, and fails
    print(f"dqn-mlx sweep: {run.env_id} seed {run.seed} ({run.folder}) on node {node}", flush=True)
    _tell(board, "started", str(run.folder), node, resumed_from)


def _tell(board: Any, method: str, *args: Any) -> None:
    """Call a ``Board`` method without waiting for it: a task blocked in ``ray.get`` gives its
    CPU back to Ray, which would start another run on this node meanwhile."""
    if board is not None:
        with suppress(Exception):  # the view is not worth failing a run for
            getattr(board, method).remote(*args)


class Board:
    """Where each attempt of each run started and how it failed, kept by a Ray actor on the
    driver's node for the live view (Ray has no public record of a running task's node
    without its dashboard)."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[dict[str, Any]]] = {}

    def started(self, folder: str, node: str, resumed_from: int | None) -> None:
        self.attempts.setdefault(folder, []).append(
            {"node": node, "resumed_from": resumed_from, "error": None}
        )

    def failed(self, folder: str, error: str) -> None:
        if self.attempts.get(folder):
            self.attempts[folder][-1]["error"] = error

    def read(self) -> dict[str, list[dict[str, Any]]]:
        return self.attempts


def check_weights_dir(weights_dir: str, token: str, name: str) -> str | None:
    """Run on every node before any run starts: whether this node sees the folder the driver
    sees (the marker ``<weights-dir>/.sweep-check-<token>`` the driver wrote), and can do
    there what a run does: make a folder, take its lock (``run/folder.py``) and write in it.
    None, or what it cannot do."""
    root = Path(weights_dir)
    marker = root / f"{CHECK_PREFIX}{token}"
    try:
        if marker.read_text() != token:
            return f"reads another {marker.name} in --weights-dir {weights_dir}"
    except OSError as exc:
        return (
            f"does not see the driver's --weights-dir {weights_dir} (no {marker.name} there: "
            f"{exc.strerror or exc})"
        )
    folder = root / f"{CHECK_PREFIX}{token}-{name}"
    try:
        folder.mkdir()
    except OSError as exc:
        return f"cannot write in --weights-dir {weights_dir} ({exc.strerror or exc})"
    try:
        with hold_run_folder(folder):
            (folder / "written").write_text(token)
    except (OSError, UserError) as exc:
        return f"cannot lock and write a run folder in --weights-dir {weights_dir} ({exc})"
    finally:
        for path in folder.iterdir():
            with suppress(OSError):
                path.unlink()
        with suppress(OSError):
            folder.rmdir()
    if not MAIN.exists():
        return f"has no {MAIN}: every node needs this checkout at the same path"
    return None


def _check_nodes(ray: Any, weights_dir: Path, here: str) -> list[dict[str, Any]]:
    """Every live node checks ``--weights-dir`` (``check_weights_dir``); a one-line UserError
    naming the first that cannot, or that did not answer within ``CHECK_TIMEOUT_S``. Returns
    the live nodes."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    created = not weights_dir.exists()
    marker = weights_dir / f"{CHECK_PREFIX}{token}"
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    except OSError as exc:
        raise UserError(f"--weights-dir {weights_dir}: {exc.strerror or exc}") from None
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    check = ray.remote(check_weights_dir)
    try:
        refs = {
            check.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            ).remote(str(weights_dir), token, node["NodeID"][:8]): node
            for node in nodes
        }
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=CHECK_TIMEOUT_S)
        problems = [(refs[ref], _answer(ray, ref)) for ref in ready]
    finally:
        with suppress(OSError):
            marker.unlink()
        if created:
            with suppress(OSError):
                weights_dir.rmdir()  # only when still empty
    problems += [(refs[ref], f"did not answer within {CHECK_TIMEOUT_S:.0f} s") for ref in late]
    problems = [(node, problem) for node, problem in problems if problem]
    if problems:
        node, problem = problems[0]
        others = f" (and {len(problems) - 1} more nodes)" if len(problems) > 1 else ""
        raise UserError(
            f"node {node_label(node, here)} {problem}{others}; every node needs --weights-dir on "
            "a shared volume mounted at the same path (docs/cluster.md)"
        )
    return nodes


def _last_line(exc: Exception) -> str:
    """An error's last line: a task's error is Ray's traceback, whose last line says why."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _answer(ray: Any, ref: Any) -> str | None:
    try:
        answer: str | None = ray.get(ref)
        return answer
    except Exception as exc:  # the check itself failed there
        return f"cannot run the sweep's code ({_last_line(exc)})"


def node_label(node: Mapping[str, Any], here: str) -> str:
    """A node as the view names it: the first 8 hex digits of Ray's node id, then its
    address, its CPUs and whether the sweep's driver runs there."""
    cpus = node.get("Resources", {}).get("CPU", 0)
    where = ", this machine" if node["NodeID"] == here else ""
    return f"{node['NodeID'][:8]} ({node.get('NodeManagerAddress', '?')}, {cpus:g} CPU{where})"


def sweep(
    runs: list[SweepRun],
    config: DQNConfig,
    train_args: list[str],
    threads: int,
    address: str | None,
) -> None:
    """Run every unfinished run on Ray, showing the live view (``sweep_view``): an event line
    as each run is queued, starts on a node, is retried, finishes or fails, and the table of
    every run, then the ``--mode report`` command; a UserError when some failed even after
    their retries. Which runs are left is read from their folders first: a sweep with none
    left (run again after it finished) shows its table without starting Ray."""
    weights_dir = runs[0].folder.parent.parent
    with hold_weights_dir(weights_dir):
        views = {r: RunView(r.env_id, r.seed, r.folder, config.total_steps) for r in runs}
        to_train, untrained = triage(runs, config.total_steps)
        failed = [run for run, state, _ in untrained if state == "failed"]
        if to_train:
            failed += _sweep_on_ray(to_train, untrained, views, config, train_args, threads,
                                    address)  # fmt: skip
        else:
            view = SweepView(list(views.values()), weights_dir)
            _show_untrained(view, views, untrained)
            view.close()
    if failed:
        raise UserError(
            f"{len(failed)} of {len(runs)} runs failed after {RETRIES} retries (above); start "
            "the same command again to resume them"
        )


@contextmanager
def hold_weights_dir(weights_dir: Path) -> Iterator[None]:
    """One sweep driver per ``--weights-dir`` for the whole sweep (``run/folder.py``'s lock on
    the folder itself, ``.sweep.lock`` naming the holder's pid and host): a second driver
    would start every run again, each refused by the first's run folder, and report them all
    failed after their retries, although the first finishes them. It is refused at once,
    naming the holder. A ``--weights-dir`` made for the sweep goes again if left empty."""
    created = not weights_dir.exists()
    try:
        weights_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--weights-dir {weights_dir}: {exc.strerror or exc}") from None

    def refused(holder: str) -> UserError:
        return UserError(
            f"--weights-dir {weights_dir} is in use by another sweep ({holder or 'pid unknown'})"
            "; wait for it to finish or stop it (Ctrl-C; the same command then resumes its "
            "runs), or sweep into another --weights-dir"
        )

    try:
        with hold_folder(weights_dir, SWEEP_LOCK, f"pid {os.getpid()} on {socket.gethostname()}",
                         refused):  # fmt: skip
            yield
    finally:
        if created:
            with suppress(OSError):
                weights_dir.rmdir()  # only when still empty


def triage(
    runs: list[SweepRun], total_steps: int
) -> tuple[list[SweepRun], list[tuple[SweepRun, str, str]]]:
    """The runs left to train, and for each other run its state and event line: ``done``
    (finished already) or ``failed`` (a damaged training state, which is not started)."""
    to_train, untrained = [], []
    for run in runs:
        label = f"{run.env_id} seed {run.seed}"
        try:
            done = finished(run, total_steps)
        except DamagedState as exc:
            why = f"not started, {exc}; move it away to start this run over"
            untrained.append((run, "failed", f"{label}: {why}"))
            continue
        if done:
            untrained.append((run, "done", f"{label}: finished already ({run.folder})"))
        else:
            to_train.append(run)
    return to_train, untrained


def _show_untrained(
    view: SweepView, views: dict[SweepRun, RunView], untrained: list[tuple[SweepRun, str, str]]
) -> None:
    for run, state, event in untrained:
        view.event(event)
        views[run].state = state


def _sweep_on_ray(
    to_train: list[SweepRun],
    untrained: list[tuple[SweepRun, str, str]],
    views: dict[SweepRun, RunView],
    config: DQNConfig,
    train_args: list[str],
    threads: int,
    address: str | None,
) -> list[SweepRun]:
    """Check the cluster (room for a run, every node sees ``--weights-dir``), queue the runs
    of ``to_train`` and wait for them; returns those that failed even after their retries."""
    import ray

    memory = replay_bytes(config.replay_size) + PROCESS_BYTES
    ray.init(
        address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
    )
    view: SweepView | None = None
    try:
        resources = task_resources(ray.cluster_resources(), memory, threads)
        _check_fits(ray, resources)
        here = ray.get_runtime_context().get_node_id()
        weights_dir = to_train[0].folder.parent.parent
        nodes = _check_nodes(ray, weights_dir, here)
        view = SweepView(list(views.values()), weights_dir)
        view.event("nodes: " + ", ".join(node_label(node, here) for node in nodes))
        _show_untrained(view, views, untrained)
        task = ray.remote(run_training).options(
            **resources, max_retries=RETRIES, retry_exceptions=True
        )
        board = _start_board(ray, here)
        pending = {}
        for run in to_train:
            pending[task.remote(run, train_args, threads, board)] = run
            view.event(f"{run.env_id} seed {run.seed}: queued ({run.folder})")
        return _wait(ray, pending, _Watch(ray, board, views, view, nodes, here))
    finally:
        if view is not None:
            view.close()
        ray.shutdown()


def _start_board(ray: Any, here: str) -> Any:
    """The ``Board`` actor, on the driver's node (``here``), taking no CPU."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(here, soft=False)
    return ray.remote(Board).options(num_cpus=0, scheduling_strategy=strategy).remote()


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


class _Watch:
    """Keeps the views up to date from the board (each run's attempts) and Ray's live nodes,
    printing an event for each attempt that starts and each that is lost."""

    def __init__(
        self,
        ray: Any,
        board: Any,
        views: dict[SweepRun, RunView],
        view: SweepView,
        nodes: list[dict[str, Any]],
        here: str,
    ):
        self.ray, self.board, self.views, self.view, self.here = ray, board, views, view, here
        self.seen: dict[SweepRun, int] = {}  # attempts shown
        self.lost_attempts: set[tuple[SweepRun, int]] = set()
        # the live nodes seen, as the events name them (a dead node offers no CPUs)
        self.labels = {node["NodeID"]: node_label(node, here) for node in nodes}
        self.lost_nodes: set[str] = set()
        self.last = 0.0

    def poll(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < REFRESH_S:
            return
        self.last = now
        try:
            attempts = self.ray.get(self.board.read.remote(), timeout=10)
            nodes = {node["NodeID"]: node for node in self.ray.nodes()}
        except self.ray.exceptions.RayError:
            return  # a slow answer (GetTimeoutError) or a lost connection: the next poll
        for node_id, node in nodes.items():
            if node.get("Alive") and node_id not in self.labels:
                self.labels[node_id] = node_label(node, self.here)
                self.view.event(f"node {self.labels[node_id]} joined")
            elif not node.get("Alive") and node_id in self.labels.keys() - self.lost_nodes:
                self.lost_nodes.add(node_id)
                self.view.event(f"node {self.labels[node_id]} lost")
        for run, run_view in self.views.items():
            self._update(run, run_view, attempts.get(str(run.folder), []), nodes)
        self.view.refresh()

    def _update(
        self,
        run: SweepRun,
        run_view: RunView,
        attempts: list[dict[str, Any]],
        nodes: dict[str, dict[str, Any]],
    ) -> None:
        run_view.nodes = [attempt["node"][:8] for attempt in attempts]
        over = run_view.state in ("done", "failed", "stopped")
        lost = None
        for number, attempt in enumerate(attempts):
            if number >= self.seen.get(run, 0):
                resumed = attempt["resumed_from"]
                self.view.event(
                    f"{run.env_id} seed {run.seed}: running on node {attempt['node'][:8]} "
                    f"(attempt {number + 1}"
                    + (f", resuming from agent step {resumed:,})" if resumed is not None else ")")
                )
            last = number == len(attempts) - 1
            alive = nodes.get(attempt["node"], {}).get("Alive", True)
            lost = attempt["error"] or (None if alive else "its node was lost")
            lost = lost or (None if last else "its worker was lost")  # a later attempt started
            if lost and (run, number) not in self.lost_attempts and not (last and over):
                self.lost_attempts.add((run, number))
                self.view.event(
                    f"{run.env_id} seed {run.seed}: retried (attempt {number + 1} on node "
                    f"{attempt['node'][:8]}: {lost}); it resumes from its last saved state"
                )
        self.seen[run] = len(attempts)
        if attempts and not over:
            run_view.state = "retried" if lost else "running"

    def ended(self, run: SweepRun, state: str) -> None:
        self.views[run].state = state
        self.poll(force=True)  # the attempts' events, before the end's


def _wait(ray: Any, pending: dict[Any, SweepRun], watch: _Watch) -> list[SweepRun]:
    """Wait for every task, showing each end; returns the runs that failed even after their
    retries. Ctrl-C, SIGTERM or SIGHUP (the terminal closed: the output goes to the weights
    dir's ``hangup.log`` from then on) cancels them, and each run writes a resumable state
    before it stops."""
    failed: list[SweepRun] = []
    stop: list[int] = []
    weights_dir = watch.view.weights_dir

    def request_stop(number: int, _frame: object) -> None:
        if number == signal.SIGHUP:
            print_to_log(weights_dir)
        stop.append(number)

    previous = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
    try:
        while pending and not stop:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                run = pending.pop(ref)
                try:
                    ray.get(ref)
                    watch.ended(run, "done")
                    watch.view.event(f"{run.env_id} seed {run.seed}: finished ({run.folder})")
                except Exception as exc:
                    watch.ended(run, "failed")
                    why = _last_line(exc).removeprefix(
                        f"RuntimeError: {run.env_id} seed {run.seed}: "
                    )
                    watch.view.event(f"{run.env_id} seed {run.seed}: failed after retries: {why}")
                    failed.append(run)
            watch.poll()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stop:
        _stop_runs(ray, pending, watch, hung_up=signal.SIGHUP in stop)
    watch.poll(force=True)
    return failed


def _stop_runs(ray: Any, pending: dict[Any, SweepRun], watch: _Watch, hung_up: bool) -> None:
    """Cancel the ``pending`` tasks (no retry) and stop their runs on this machine cleanly:
    each writes a resumable state, then exits. Ends in KeyboardInterrupt (exit code 130)."""
    if hung_up:
        watch.view.leave_terminal()
    for ref in pending:
        ray.cancel(ref)
    for process in _training_processes(list(pending.values())):
        with suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)  # it writes a resumable state, then exits
    for ref in pending:
        with suppress(Exception):
            ray.get(ref)
    for run in pending.values():
        watch.views[run].state = "stopped"
    print("sweep stopped; start the same command again to resume it", file=sys.stderr)
    raise KeyboardInterrupt


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
    """Training flags given to the sweep (config fields), passed on to every run."""
    from dqn_mlx.config import flag_name

    args: list[str] = []
    for field, value in flags.items():
        flag = flag_name(field)
        if isinstance(value, bool):
            args.append(flag if value else flag.replace("--", "--no-", 1))
        else:
            args += [flag, str(value)]
    return args
