"""A terminal for tests that close one: drain a pty as a terminal shows it, and wait for the
process on its other end."""

from __future__ import annotations

import os
import select
import signal
import threading
import time


def show(fd: int, into: list[bytes], closing: threading.Event) -> None:
    """Drain a pty's master end, as a terminal shows what is written to it, until ``closing``
    is set (then the caller closes it: a read in progress would hold it open)."""
    while not closing.is_set():
        if select.select([fd], [], [], 0.1)[0]:
            try:
                into.append(os.read(fd, 65536))
            except OSError:  # the child closed its end
                return


def wait_for_exit(pid: int, timeout: float) -> int:
    """The exit code of the child ``pid`` (128 + N for a signal N), waiting up to ``timeout``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) % 256
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the process did not exit within {timeout} s of the hangup")
