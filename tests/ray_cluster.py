"""A real Ray cluster on this machine for the tests: a head and more nodes, each started with
``ray start`` (its own ``--num-cpus``, temp dir, ports and worker ports; the others join with
``--address``), as a user starts them on several machines.

Stopping is by the node's own processes: ``ray stop`` stops every Ray process on the machine
(another sweep's, another test's), so ``Node.stop`` ends exactly the processes started for
that node's temp dir, and what they started (workers, training processes), and checks that
none is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")
NODE_MEMORY = 4_000_000_000  # bytes of Ray's "memory" resource per node: two tiny runs' asks
OBJECT_STORE = 80_000_000  # bytes; the sweep passes no large objects


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def environment(token_file: Path) -> dict[str, str]:
    """The environment of every node and driver of one test cluster: its own token (Ray 2.5x
    turns token authentication on when ``~/.ray/auth_token`` exists; naming it keeps the test
    independent of that file), workers started with this interpreter, and a head that marks a
    node dead after 3 failed health checks 0.5 s apart. Ray's default, 5 checks 3 s apart, can
    outlast a tiny sweep: its retried run ends before the lost node is marked dead, and the
    sweep never sees the loss it is to report."""
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_health_check_period_ms="500",
        RAY_health_check_failure_threshold="3",
    )
    return env


class Node:
    """One ``ray start`` node; ``prefix`` runs it in another environment (``unshare ...``)."""

    def __init__(self, env: dict[str, str], head: str | None, prefix: list[str], workers: int):
        # A short root: Ray's socket paths under it must stay within 107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="dqnray-", dir="/tmp"))
        self.env, self.head = env, head
        command = [*prefix, str(RAY), "start", "--num-cpus", "1", "--temp-dir", str(self.temp_dir)]
        command += ["--memory", str(NODE_MEMORY), "--object-store-memory", str(OBJECT_STORE)]
        command += ["--min-worker-port", str(workers), "--max-worker-port", str(workers + 199)]
        for flag in ("--node-manager-port", "--object-manager-port", "--metrics-export-port"):
            command += [flag, str(free_port())]
        command += ["--runtime-env-agent-port", str(free_port())]
        command += ["--dashboard-agent-listen-port", str(free_port())]
        command += ["--dashboard-agent-grpc-port", str(free_port())]
        if head is None:
            self.port = free_port()
            command += ["--head", "--port", str(self.port), "--include-dashboard", "false"]
            command += ["--node-ip-address", "127.0.0.1"]
        else:
            command += ["--address", head, "--node-ip-address", "127.0.0.1"]
        self.command = command
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        self.node_id = self._node_id()  # Ray's id of the node (its raylet's --node_id)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def processes(self) -> list[psutil.Process]:
        """Every process of this node: those naming its temp dir, and their descendants."""
        found: dict[int, psutil.Process] = {}
        mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        for process in psutil.process_iter(["cmdline"]):
            with_dir = any(str(self.temp_dir) in part for part in process.info["cmdline"] or [])
            if with_dir and process.pid not in mine:
                found[process.pid] = process
                with contextlib.suppress(psutil.Error):
                    found.update((c.pid, c) for c in process.children(recursive=True))
        return list(found.values())

    def raylet(self) -> psutil.Process:
        (raylet,) = [p for p in self.processes() if _named(p, "raylet")]
        return raylet

    def _node_id(self) -> str:
        command = self.raylet().cmdline()
        (value,) = [part.split("=", 1)[1] for part in command if part.startswith("--node_id=")]
        return value

    def kill(self) -> None:
        """The node is lost: SIGKILL to its raylet, its workers and what they started."""
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM to every process of the node, SIGKILL after 5 s, and a check that none
        is left (raylet, gcs_server, workers, training processes)."""
        processes = self.processes()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(processes, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        left = [p for p in self.processes() if _status(p) not in (None, psutil.STATUS_ZOMBIE)]
        assert not left, f"Ray processes left for {self.temp_dir}: {[p.pid for p in left]}"

    def worker_logs(self) -> str:
        """What this node's Ray workers printed (Ray's files, on this node's disk)."""
        logs = sorted(self.temp_dir.glob("session_*/logs/worker-*.out"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def remove_files(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _status(process: psutil.Process) -> str | None:
    try:
        status: str = process.status()
        return status
    except psutil.Error:
        return None


def _named(process: psutil.Process, name: str) -> bool:
    try:
        return process.name() == name
    except psutil.Error:
        return False


class Cluster:
    """A head and as many joined nodes as ``add`` makes; ``close`` stops every one."""

    def __init__(self, root: Path):
        token = root / "ray-token"
        token.write_text(secrets.token_hex(32))
        self.env = environment(token)
        self.nodes: list[Node] = []
        self.workers = 21000 + 600 * (os.getpid() % 10)  # worker ports: 200 a node, 3 nodes
        self.head = self._start(None, [])

    def _start(self, head: str | None, prefix: list[str]) -> Node:
        node = Node(self.env, head, prefix, self.workers + 200 * len(self.nodes))
        self.nodes.append(node)
        return node

    def add(self, prefix: list[str] | None = None) -> Node:
        return self._start(self.head.address, prefix or [])

    def remove(self, node: Node) -> None:
        """Stop a joined node (whatever is left of it) and delete its files."""
        self.nodes.remove(node)
        try:
            node.stop()
        finally:
            node.remove_files()

    def close(self) -> None:
        errors = []
        for node in reversed(self.nodes):  # the joined nodes, then the head
            try:
                node.stop()
            except AssertionError as exc:
                errors.append(str(exc))
            finally:
                node.remove_files()
        assert not errors, errors
