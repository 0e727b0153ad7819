"""--mode sweep on a real Ray cluster: a head and a second node started on this machine with
``ray start`` (1 CPU each, their own temp dirs and ports; tests/ray_cluster.py), the sweep
pointed at it with ``--address``. Runs are placed on both nodes (as each node's own Ray worker
logs record), a node killed mid-sweep loses only the steps after its run's last saved state
(the run is retried on the other node and resumes), and a node that cannot write
``--weights-dir`` is a one-line error before anything starts.

Each node is stopped (its own processes, by its temp dir) when its test ends, whatever
happens, and the check that no Ray process of it is left is part of the teardown."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_cluster import Cluster, Node
from test_sweep import NEEDS_RAY

from dqn_mlx.sweep import state_step

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray"), NEEDS_RAY]

ROOT = Path(__file__).resolve().parents[1]
PONG, BREAKOUT = "PongNoFrameskip-v4", "BreakoutNoFrameskip-v4"
# Smaller than test_sweep's TINY: a first state at 700 agent steps, then two short epochs.
SMALL = ["--learning-starts", "500", "--replay-size", "2000", "--epoch-updates", "50"]
SMALL += ["--eval-steps", "200", "--held-out-states", "64", "--batch-size", "8"]
STARTED = re.compile(r"^dqn-mlx sweep: (\S+) seed (\d+) \(", re.MULTILINE)
ROW = re.compile(r"^(\S+) +(\d+) +(\S+) +([\d,]+) / ([\d,]+) +(\S+) +(\S+) +(\S+)$")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The head, shared by this module's tests; stopped at the end whatever happens."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def second_node(cluster: Cluster) -> Iterator[Node]:
    node = cluster.add()
    try:
        yield node
    finally:
        cluster.remove(node)


def sweep_command(cluster: Cluster, weights: Path, *args: str) -> list[str]:
    command = [sys.executable, str(ROOT / "main.py"), "--mode", "sweep"]
    return [*command, "--address", cluster.head.address, "--weights-dir", str(weights), *args]


def started_on(node: Node) -> set[tuple[str, int]]:
    """The runs whose task started on ``node``, from that node's Ray worker logs."""
    return {(game, int(seed)) for game, seed in STARTED.findall(node.worker_logs())}


def table(stdout: str) -> dict[tuple[str, int], list[str]]:
    """The final table's rows by (game, seed): node(s), agent steps, total, score, rate, state."""
    rows = {}
    for line in stdout.splitlines():
        match = ROW.match(line)
        if match and match[1] != "game":
            rows[(match[1], int(match[2]))] = [match[i] for i in range(3, 9)]
    return rows


def sweep_lines(stdout: str) -> list[str]:
    """The sweep's own lines: Ray's driver prints the cluster's error messages (a retried task,
    the object store's usage) on stdout too, as ``(raylet) ...`` lines at any time."""
    return [line for line in stdout.splitlines() if "(raylet)" not in line]


def _steps(folder: Path) -> list[int]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["agent_steps"] for line in lines]


def complete(folder: Path, total: int) -> None:
    """A finished run folder: its state at ``total`` agent steps, one record and checkpoint per
    epoch, agent steps only going up."""
    steps = _steps(folder)
    assert state_step(folder) == total, folder
    assert steps == sorted(set(steps)) and steps[-1] >= total - 3, (folder, steps)
    assert all((folder / f"epoch_{n}.safetensors").exists() for n in range(1, len(steps) + 1))


def _trainings(node: Node) -> list[Path]:
    """The run folders of the training processes running on ``node``."""
    folders = []
    for process in node.processes():
        try:
            command = process.cmdline()
        except Exception:
            continue
        if "--run-name" in command:
            weights = Path(command[command.index("--weights-dir") + 1])
            folder = weights / command[command.index("--env") + 1]
            folders.append(folder / command[command.index("--run-name") + 1])
    return folders


def test_a_sweep_on_two_nodes_runs_on_both_and_a_node_lost_mid_sweep_costs_only_unsaved_steps(
    cluster: Cluster, second_node: Node, tmp_path: Path
) -> None:
    """2 games x 2 seeds on two nodes of 1 CPU each; once every run has started, the second
    node is killed while its run trains past its first saved state."""
    weights, total = tmp_path / "weights", 1000
    runs = {(game, seed) for game in (BREAKOUT, PONG) for seed in (0, 1)}
    command = sweep_command(cluster, weights, "--env", BREAKOUT, "--env", PONG, "--seeds", "0,1")
    log = tmp_path / "sweep.out"
    start = time.monotonic()
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [*command, "--steps", str(total), *SMALL],
            stdout=out, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=cluster.env,
        )  # fmt: skip
        try:
            deadline, victim = time.monotonic() + 300, None
            while victim is None and time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.2)
                training = _trainings(second_node)
                # one run at a time on a node of 1 CPU
                assert len(training) <= 1 and len(_trainings(cluster.head)) <= 1, training
                with_state = [f for f in training if (f / "train_state.safetensors").exists()]
                if with_state and started_on(cluster.head) | started_on(second_node) == runs:
                    victim = with_state[0]  # its last run: none is queued any more
            assert victim is not None, ("no run with a state on the second node", log.read_text())
            saved = state_step(victim)
            assert saved is not None and saved < total
            second_node.kill()  # the node is lost: its raylet, workers and training process
            killed = time.time()
            trained_s = killed - (victim / "train_state.safetensors").stat().st_mtime
            driver.wait(timeout=400)
        finally:
            if driver.poll() is None:
                driver.kill()
    wall = time.monotonic() - start
    stdout = log.read_text()
    assert driver.returncode == 0, stdout
    for game, seed in runs:
        complete(weights / game / f"laptop-seed{seed}", total)
    head, lost = cluster.head.node_id, second_node.node_id
    run = (victim.parent.name, int(victim.name.removeprefix("laptop-seed")))
    # Ray's records: each node's own worker logs name the runs that started there
    placed = {head: started_on(cluster.head), lost: started_on(second_node)}
    assert placed[head] | placed[lost] == runs, placed
    assert run in placed[head] & placed[lost], placed  # started on the lost node, retried here
    assert re.search(rf"^node {lost[:8]} \([^)]*\) lost$", stdout, re.MULTILINE), stdout
    assert (
        f"{run[0]} seed {run[1]}: running on node {head[:8]} (attempt 2, resuming from agent "
        f"step {saved:,})"
    ) in stdout, stdout
    # the epochs up to the saved state are the lost node's files (not trained again), the
    # others were trained on the head after the loss
    steps = _steps(victim)
    epochs = range(1, len(steps) + 1)
    written = [(victim / f"epoch_{n}.safetensors").stat().st_mtime for n in epochs]
    assert saved in steps and [w < killed for w in written] == [s <= saved for s in steps], steps
    rows = table(stdout)
    assert set(rows) == runs, stdout
    for each, (node, _done, total_cell, _score, _rate, state) in rows.items():
        where = ",".join(node_id[:8] for node_id, started in placed.items() if each in started)
        where = f"{lost[:8]},{head[:8]}" if each == run else where  # in the order it ran
        assert (node, total_cell, state) == (where, f"{total:,}", "done"), (each, rows)
    assert sweep_lines(stdout)[-1].endswith(f"--mode report --weights-dir {weights}"), stdout
    report = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--mode", "report", "--weights-dir", str(weights)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    results = (weights / "RESULTS.md").read_text()
    for game, seed in runs:
        assert f"| {game} | laptop-seed{seed} | epoch |" in results, results
    print(
        f"\ntwo nodes: sweep {wall:.1f} s; runs by node: "
        f"{ {node_id[:8]: sorted(started) for node_id, started in placed.items()} }"
        f"\nnode loss: {run} on node {lost[:8]} killed {trained_s:.1f} s after its state at agent "
        f"step {saved:,}; resumed on {head[:8]} from {saved:,} to {state_step(victim):,} (epochs "
        f"at {steps})"
    )


def _private_mount() -> list[str] | None:
    """A command prefix that runs the rest in a mount namespace of its own (as root, or as a
    user namespace's root), or None where this machine allows neither."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "--mount"], ["unshare", "--map-root-user", "--mount"]):
        probe = subprocess.run([*prefix, "true"], capture_output=True)
        if probe.returncode == 0:
            return prefix
    return None


def test_a_node_that_cannot_write_the_weights_dir_is_a_one_line_error_at_the_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    prefix = _private_mount()
    if prefix is None:
        pytest.skip("needs unshare --mount (or a user namespace) for a node of its own view")
    weights = tmp_path / "weights"
    weights.mkdir()
    # The joined node sees --weights-dir read-only (a bind mount in its own namespace): only
    # the head can write there, as on a cluster whose volume a node mounts read-only.
    readonly = f"mount --bind {weights} {weights} && mount -o remount,bind,ro {weights}"
    node = cluster.add([*prefix, "sh", "-c", f'{readonly} && exec "$@"', "sh"])
    try:
        start = time.monotonic()
        result = subprocess.run(
            [*sweep_command(cluster, weights, "--env", PONG, "--seeds", "0"), *SMALL],
            capture_output=True, text=True, timeout=300, cwd=ROOT, env=cluster.env,
        )  # fmt: skip
        wall = time.monotonic() - start
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (result.stdout, result.stderr)
        assert lines[0].startswith(f"error: node {node.node_id[:8]} (")
        assert f"cannot write in --weights-dir {weights} (Read-only file system)" in lines[0]
        assert "shared volume mounted at the same path" in lines[0]
        assert wall < 100, wall  # an answer, not the check's 120 s timeout
        assert not any(weights.iterdir())  # nothing started, nothing left
    finally:
        cluster.remove(node)
