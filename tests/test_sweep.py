"""--mode sweep on a local Ray: every (game, seed) trains in its own folder, a killed run is
retried and resumes, a finished sweep trains nothing again, Ctrl-C stops every run resumably,
and bad input starts nothing; what a run asks Ray for (fast, no Ray needed)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from terminal import close_terminal_when

from dqn_mlx.run.resume import load_training_state
from dqn_mlx.sweep import (
    SweepRun,
    check_weights_dir,
    finished,
    state_step,
    task_resources,
    train_command,
)

F = TypeVar("F", bound=Callable[..., object])
NEEDS_RAY = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="the sweep group: uv sync --group sweep"
)


def end_to_end(test: F) -> F:
    """Trains through main.py on a local Ray: slow, and needs the sweep group. Under
    ``pytest -n`` these run on one worker, one at a time (one local Ray at a time)."""
    return pytest.mark.xdist_group("ray")(pytest.mark.slow(NEEDS_RAY(test)))


@pytest.fixture(autouse=True)
def ray_temp_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test's local Ray keeps its session (logs, sockets) in a folder of its own,
    removed after the test, not in the shared /tmp/ray. Short and under /tmp: Ray's
    socket paths must fit in 107 bytes, which pytest's tmp_path would overrun."""
    folder = Path(tempfile.mkdtemp(prefix="dqnray-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))  # the sweeps started below inherit it
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]
TINY = ["--learning-starts", "1500", "--replay-size", "3000", "--epoch-updates", "75"]
TINY += ["--eval-steps", "300", "--held-out-states", "64"]
TINY += ["--batch-size", "8"]  # a small minibatch: these test the sweep, not learning


def sweep(weights: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", *args]
    command += ["--weights-dir", str(weights), *TINY]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _records(folder: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@end_to_end
def test_a_sweep_of_two_games_trains_each_in_its_folder_and_a_rerun_trains_nothing(
    tmp_path: Path, ray_temp_dir: Path
) -> None:
    games = ["--env", "BreakoutNoFrameskip-v4", "--env", "PongNoFrameskip-v4", "--seeds", "0"]
    first = sweep(tmp_path, *games, "--steps", "2000")
    assert first.returncode == 0, first.stderr
    assert list((ray_temp_dir / "ray").glob("session_*/logs")), "Ray's session is not the test's"
    folders = [
        tmp_path / g / "laptop-seed0" for g in ("BreakoutNoFrameskip-v4", "PongNoFrameskip-v4")
    ]
    for folder in folders:
        assert (folder / "metrics.jsonl").exists(), (first.stdout, first.stderr)
        assert [r["agent_steps"] for r in _records(folder)] == [1797, 2000], folder
        assert (folder / "epoch_2.safetensors").exists()
        assert f"seed 0: finished ({folder})" in first.stdout
    *table, command = first.stdout.strip().splitlines()[-4:]
    assert table[0].split()[:5] == ["game", "seed", "node", "agent", "steps"]
    assert all("2,000 / 2,000" in row and row.endswith("done") for row in table[1:])
    assert all(len(row.split()[2]) == 8 for row in table[1:]), table  # the node each ran on
    assert command.endswith(f": uv run main.py --mode report --weights-dir {tmp_path}"), command
    report = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode", "report", "--weights-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert report.returncode == 0
    results = (tmp_path / "RESULTS.md").read_text()
    assert "| BreakoutNoFrameskip-v4 | epoch | 2,000 | 1 |" in results  # game, budget, runs
    # a Pong game outlasts the tiny run's evaluation: no score, so no row, only its run's line
    assert _records(folders[1])[-1]["eval_games_completed"] == 0
    assert "| PongNoFrameskip-v4 | epoch | 2,000 |" not in results
    assert "| PongNoFrameskip-v4 | laptop-seed0 | epoch | no game ended |" in results
    before = _digest(tmp_path / "BreakoutNoFrameskip-v4")
    again = sweep(tmp_path, *games, "--steps", "2000")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("finished already") == 2 and "queued" not in again.stdout
    assert "nodes: " not in again.stdout  # nothing left to train: Ray was not started
    *again_table, _ = again.stdout.strip().splitlines()[-4:]
    # the same rows, but for the node: nothing ran this time
    assert [row.split()[:2] + row.split()[3:] for row in again_table[1:]] == [
        row.split()[:2] + row.split()[3:] for row in table[1:]
    ]
    assert [row.split()[2] for row in again_table[1:]] == ["—", "—"]
    assert _digest(tmp_path / "BreakoutNoFrameskip-v4") == before
    # A damaged training state: that run is reported, the others go on (one line, exit 2).
    state = folders[1] / "train_state.safetensors"
    state.write_bytes(b"\xff" * 8 + state.read_bytes()[8:])
    damaged = sweep(tmp_path, *games, "--steps", "2000")
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr, damaged.stderr
    assert "PongNoFrameskip-v4 seed 0: not started" in damaged.stdout
    assert "train_state.safetensors is damaged" in damaged.stdout
    assert "BreakoutNoFrameskip-v4 seed 0: finished already" in damaged.stdout


@end_to_end
def test_a_run_killed_with_sigkill_is_retried_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "PongNoFrameskip-v4" / "laptop-seed3"
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--env"]
    command += ["PongNoFrameskip-v4", "--seeds", "3", "--steps", "3000", "--weights-dir"]
    command += [str(tmp_path), *TINY]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (folder / "train_state.safetensors").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (folder / "train_state.safetensors").exists(), "no epoch end before the deadline"
    (child,) = [
        p for p in psutil.process_iter(["cmdline"])
        if "--run-name" in (p.info["cmdline"] or []) and str(tmp_path) in p.info["cmdline"]
    ]  # fmt: skip
    saved_step = _records(folder)[-1]["agent_steps"]
    os.kill(child.pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    records = _records(folder)
    steps = [r["agent_steps"] for r in records]
    assert steps == sorted(set(steps)), steps  # went on from the saved state, never restarted
    assert load_training_state(folder).run.step == 3000
    assert saved_step in steps and [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert (folder / f"epoch_{len(records)}.safetensors").exists()
    assert "seed 3: finished" in out


def _data_rows(path: Path) -> list[list[str]]:
    """A live CSV's complete rows (the header and a line being written left out)."""
    if not path.exists():
        return []
    lines = path.read_text().split("\n")[1:-1]  # the last piece: "" or a partial line
    return [line.rstrip("\r").split(",") for line in lines if line]


def _training_children(weights: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "--mode" in command and "train" in command and str(weights) in command:
            found.append(process)
    return found


def _interrupt_when(
    command: list[str], ready: Callable[[], bool], weights: Path
) -> subprocess.CompletedProcess[str]:
    """Start the sweep, send it SIGINT (Ctrl-C) once ``ready()``, and wait until it and every
    training process it started are gone."""
    driver = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        deadline = time.time() + 120
        while not ready() and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert ready(), ("not ready before the deadline", driver.poll())
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=60)
        deadline = time.time() + 30  # the runs write their states as Ray shuts down
        while _training_children(weights) and time.time() < deadline:
            time.sleep(0.2)
        assert not _training_children(weights), "training processes left after the sweep"
    finally:
        if driver.poll() is None:  # a failure above: stop the sweep, then whatever is left
            driver.send_signal(signal.SIGINT)
            try:
                driver.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
        for process in _training_children(weights):
            process.kill()
    return subprocess.CompletedProcess(command, driver.returncode, out, err)


@end_to_end
def test_ctrl_c_stops_every_run_with_a_resumable_state_and_the_same_command_resumes(
    tmp_path: Path,
) -> None:
    games = ("BreakoutNoFrameskip-v4", "PongNoFrameskip-v4")
    runs = [SweepRun(game, 0, tmp_path / game / "laptop-seed0") for game in games]
    total = 1_000_000  # never reached; one long epoch, so that only a stop writes a state
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--seeds", "0"]
    command += ["--env", games[0], "--env", games[1], "--weights-dir", str(tmp_path)]
    command += ["--steps", str(total), "--learning-starts", "100", "--replay-size", "3000"]
    command += ["--epoch-updates", "100000", "--eval-steps", "300", "--held-out-states", "64"]
    command += ["--batch-size", "8"]

    def learning() -> bool:  # an updates.csv row: 250 updates done
        return all(_data_rows(run.folder / "updates.csv") for run in runs)

    first = _interrupt_when(command, learning, tmp_path)
    assert first.returncode == 130, (first.stdout, first.stderr)
    assert "sweep stopped; start the same command again to resume it" in first.stderr
    steps = {}
    for run in runs:
        step = steps[run] = state_step(run.folder)
        assert step is not None, f"no resumable state in {run.folder}"
        learned_at = int(_data_rows(run.folder / "updates.csv")[0][0])
        assert learned_at <= step < total and not finished(run, total), (run, step)
        assert load_training_state(run.folder).run.step == step  # complete and loadable
        assert not list(run.folder.glob("epoch_*.safetensors"))  # written by the stop alone
        assert train_command(run, [], 1)[-2:] == ["--resume", str(run.folder)]

    def events(run: SweepRun) -> int:  # TensorBoard files: one more per (re)started run
        return len(list(run.folder.glob("events.out.tfevents.*")))

    started = {run: events(run) for run in runs}
    again = _interrupt_when(command, lambda: all(events(r) > started[r] for r in runs), tmp_path)
    assert again.returncode == 130, (again.stdout, again.stderr)
    assert again.stdout.count("queued") == 2 and "finished already" not in again.stdout
    for run in runs:  # each went on from its state: resumed (never refused), trained, stopped
        assert steps[run] < (state_step(run.folder) or 0) < total, run
        assert load_training_state(run.folder).run.step == state_step(run.folder)


@end_to_end
def test_closing_the_sweeps_terminal_stops_every_run_resumably_and_logs_it(tmp_path: Path) -> None:
    """The driver on a terminal of its own (a pty); closing it sends SIGHUP. The sweep stops
    as for Ctrl-C, its output in the weights dir's hangup.log: each run writes a resumable
    state past its last epoch end, and no lock, partial file or process is left behind.
    (Before, the driver died at once and took its run with it mid-write.)"""
    folder = tmp_path / "PongNoFrameskip-v4" / "laptop-seed3"
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--env"]
    command += ["PongNoFrameskip-v4", "--seeds", "3", "--steps", "30000", "--weights-dir"]
    command += [str(tmp_path), *TINY]
    state = folder / "train_state.safetensors"
    code = close_terminal_when(command, lambda _: state.exists(), ROOT)
    log = (tmp_path / "hangup.log").read_text()
    assert code == 130, log
    assert "sweep stopped; start the same command again to resume it" in log
    deadline = time.time() + 30
    while _training_children(tmp_path) and time.time() < deadline:
        time.sleep(0.2)
    assert not _training_children(tmp_path)
    leftovers = [p.name for p in tmp_path.rglob(".*") if p.is_file()]
    assert leftovers == [], leftovers  # no .sweep.lock, .lock or .partial-* file
    step = state_step(folder)
    assert step is not None and step >= _records(folder)[-1]["agent_steps"]
    assert load_training_state(folder).run.step == step


@end_to_end
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "Breakot-v5", "--seeds", "0"], "unknown environment id"),
        (["--env", "PongNoFrameskip-v4", "--seeds", ","], "--seeds is empty"),
        (
            ["--env", "PongNoFrameskip-v4", "--seeds", "0", "--replay-size", "200000000"],
            "lower --replay-size",
        ),
    ],
)
def test_bad_sweep_input_is_one_line_and_starts_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", *args]
    result = subprocess.run(
        [*command, "--weights-dir", str(tmp_path), "--steps", "2000", *TINY[:2], *TINY[4:6]],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not any(tmp_path.iterdir())


GB = 1_000_000_000


@pytest.mark.parametrize("cluster", [{"CPU": 2.0, "memory": 8e9}, {"CPU": 10.0, "GPU": 0.0}])
def test_a_run_asks_for_no_gpu_where_the_cluster_has_none(cluster: dict[str, float]) -> None:
    assert task_resources(cluster, 4 * GB, 1) == {"num_cpus": 1, "memory": 4 * GB}


@pytest.mark.parametrize(
    ("cluster", "threads", "share"),
    [
        ({"CPU": 16.0, "GPU": 1.0}, 1, 1 / 16),  # 16 one-thread runs share the GPU
        ({"CPU": 16.0, "GPU": 8.0}, 1, 0.5),  # two a GPU
        ({"CPU": 16.0, "GPU": 8.0}, 4, 1.0),  # never more than one GPU
        ({"CPU": 12.0, "GPU": 1.0}, 4, 0.3333),  # a third, rounded down: three still fit
        ({"CPU": 100_000.0, "GPU": 1.0}, 1, 0.0001),  # Ray's smallest share, never 0
        ({"GPU": 1.0}, 1, 1.0),  # no CPU count: a whole GPU
    ],
)
def test_a_run_asks_for_its_cpu_share_of_the_gpus(
    cluster: dict[str, float], threads: int, share: float
) -> None:
    resources = task_resources(cluster, 4 * GB, threads)
    assert resources == {"num_cpus": threads, "memory": 4 * GB, "num_gpus": pytest.approx(share)}
    assert 0 < resources["num_gpus"] <= 1
    # a GPU takes as many runs as its share of the CPUs does (down to Ray's 0.0001 steps)
    runs = min(max(1, int(cluster.get("CPU", 0) / cluster["GPU"] / threads)), 10_000)
    assert runs * resources["num_gpus"] <= 1 + 1e-9


def test_a_node_checks_it_sees_the_drivers_weights_dir_and_can_lock_a_run_folder_there(
    tmp_path: Path,
) -> None:
    (tmp_path / ".sweep-check-abc").write_text("abc")
    assert check_weights_dir(str(tmp_path), "abc", "node1") is None
    assert [p.name for p in tmp_path.iterdir()] == [".sweep-check-abc"]  # it left nothing
    other = tmp_path / "elsewhere"  # the same path, but another folder: a node without the volume
    other.mkdir()
    problem = check_weights_dir(str(other), "abc", "node1")
    assert problem is not None and problem.startswith(
        f"does not see the driver's --weights-dir {other} (no .sweep-check-abc there: "
    )
    assert not any(other.iterdir())


@end_to_end
def test_a_second_sweep_on_the_same_weights_dir_is_refused_naming_the_first(
    tmp_path: Path,
) -> None:
    """The second driver would start the first's runs again, each refused by the run folder
    the first's training holds, and report them failed after its retries although the first
    finishes them. It is refused at the start, in one line naming the first driver, and
    starts nothing; once the first has finished, the same command finds nothing to train."""
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--env"]
    command += ["PongNoFrameskip-v4", "--seeds", "0", "--steps", "2000"]
    command += ["--weights-dir", str(tmp_path), *TINY]
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        deadline = time.time() + 120
        while not _training_children(tmp_path) and time.time() < deadline:
            time.sleep(0.2)
        assert _training_children(tmp_path), "the first sweep started no training"
        second = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
            first.communicate(timeout=60)
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, (second.stdout, second.stderr)
    assert lines[0].startswith(
        f"error: --weights-dir {tmp_path} is in use by another sweep (pid {first.pid} on "
    ), lines
    assert "queued" not in second.stdout and "RuntimeError" not in second.stdout + second.stderr
    assert first.returncode == 0, err
    folder = tmp_path / "PongNoFrameskip-v4" / "laptop-seed0"
    assert load_training_state(folder).run.step == 2000
    assert not (tmp_path / ".sweep.lock").exists()  # released with the first sweep
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.returncode == 0 and "finished already" in again.stdout, again.stderr


@end_to_end
def test_a_ray_worker_killed_alone_takes_its_training_down_cleanly_and_the_retry_resumes(
    tmp_path: Path,
) -> None:
    """Only the Ray worker that runs the task is killed (SIGKILL): its training process gets
    SIGTERM as its parent dies, writes its state at the agent step it reached and exits,
    releasing the run folder; Ray's retry resumes from that state and finishes the run.

    Ray's own clean-up of a dead worker's process group (Ray 2.60's default) is turned off:
    it depends on Ray's version and settings, and without it a killed worker's training ran
    on to its end, holding its folder and refusing every retry meanwhile."""
    folder = tmp_path / "PongNoFrameskip-v4" / "laptop-seed4"
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep", "--env"]
    command += ["PongNoFrameskip-v4", "--seeds", "4", "--steps", "2400", "--weights-dir"]
    command += [str(tmp_path), *TINY]
    without_ray_cleanup = {**os.environ, "RAY_process_group_cleanup_enabled": "0"}
    driver = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=without_ray_cleanup,
    )  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (folder / "train_state.safetensors").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (folder / "train_state.safetensors").exists(), "no epoch end before the deadline"
        (child,) = _training_children(tmp_path)
        worker = child.parent()
        assert worker is not None and "ray::" in " ".join(worker.cmdline()), worker
        epoch_end = state_step(folder)
        worker.send_signal(signal.SIGKILL)
        _, alive = psutil.wait_procs([child], timeout=30)
        assert not alive, "the training process outlived its Ray worker"
        lock = folder / ".lock"  # it let the run folder go (Ray's retry may hold it by now)
        assert not lock.exists() or lock.read_text().split()[0] != str(child.pid), lock
        stopped_at = state_step(folder)  # stopped mid-run (it did not train on to the end)
        assert stopped_at is not None and epoch_end is not None
        assert epoch_end < stopped_at < 2400, (epoch_end, stopped_at)
        out, err = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)
            driver.communicate(timeout=60)
        for process in _training_children(tmp_path):
            process.kill()
    assert driver.returncode == 0, err
    assert f"(attempt 2, resuming from agent step {stopped_at:,})" in out, out
    assert load_training_state(folder).run.step == 2400
    steps = [r["agent_steps"] for r in _records(folder)]
    assert steps == sorted(set(steps)) and steps[-1] == 2400, steps
