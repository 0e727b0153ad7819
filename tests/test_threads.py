"""accel/threads.py: dqn-mlx processes on one machine split its cores between their BLAS
threads, and a process alone gets them all back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dqn_mlx.accel import blas
from dqn_mlx.accel.threads import ThreadShare, usable_cores

pytestmark = pytest.mark.skipif(blas.threads() is None, reason="MLX is not on our OpenBLAS here")


@pytest.fixture(autouse=True)
def _restore_threads() -> object:
    before = blas.threads()
    yield
    assert before is not None
    blas.set_threads(before)


def test_processes_running_split_the_cores_and_a_lone_one_gets_them_back(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(other.pid).create_time()
        (tmp_path / str(other.pid)).write_text(str(started))  # another dqn-mlx process, alive
        (tmp_path / "999999999").write_text("1.0")  # a stale entry: no such process
        (tmp_path / str(os.getppid())).write_text("1.0")  # a reused id: started at another time
        share = ThreadShare(folder=tmp_path).start()
        assert share.running() == 2 and not (tmp_path / "999999999").exists()
        assert not (tmp_path / str(os.getppid())).exists()
        assert blas.threads() == max(1, usable_cores() // 2)
    finally:
        other.kill()
        other.wait()
    share.rebalance()  # the other one ended
    assert blas.threads() == usable_cores()
    share.close()
    assert not (tmp_path / str(os.getpid())).exists()


def test_a_paused_process_leaves_its_share_until_it_is_continued(tmp_path: Path) -> None:
    """A run paused with ``kill -STOP`` uses no core: a benchmark beside it gets them all."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    share = ThreadShare(folder=tmp_path)
    try:
        (tmp_path / str(other.pid)).write_text(str(psutil.Process(other.pid).create_time()))
        share.start()
        assert share.running() == 2
        other.send_signal(signal.SIGSTOP)
        _wait_for_status(other.pid, psutil.STATUS_STOPPED)
        assert share.running() == 1
        share.rebalance()
        assert blas.threads() == usable_cores()
        other.send_signal(signal.SIGCONT)
        _wait_for_status(other.pid, psutil.STATUS_SLEEPING)
        assert share.running() == 2
    finally:
        share.close()
        other.kill()
        other.wait()


def _wait_for_status(pid: int, status: str) -> None:
    """Signals are delivered asynchronously: wait until the process shows them."""
    for _ in range(200):
        if psutil.Process(pid).status() == status:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never became {status}")


def test_a_fixed_thread_count_is_kept(tmp_path: Path) -> None:
    share = ThreadShare(fixed=1, folder=tmp_path).start()
    assert blas.threads() == 1 and share.rebalance() == 1
    share.close()


def test_a_cache_folder_that_cannot_be_written_leaves_the_process_alone(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the folder should be: mkdir and iterdir fail
    share = ThreadShare(folder=blocked / "running").start()
    assert share.running() == 1 and blas.threads() == usable_cores()
    share.close()
