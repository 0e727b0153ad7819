"""A terminal for tests that close one (SIGHUP: a closed window, a dropped SSH session): run a
command on a pty of its own, close it once the test is ready, and wait for the process."""

from __future__ import annotations

import os
import pty
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path


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


def close_terminal_when(
    command: list[str], ready: Callable[[bytes], bool], cwd: Path, timeout: float = 300
) -> int:
    """Run ``command`` on a terminal of its own (a pty, its controlling terminal, as a shell's
    window gives it), close the terminal once ``ready`` (given what the terminal showed so
    far) holds, and return the process's exit code, waiting up to 120 s after the close."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the command, on the pty's other end
        os.chdir(cwd)
        os.execv(command[0], command)
    screen: list[bytes] = []
    closing = threading.Event()
    shown = threading.Thread(target=show, args=(terminal, screen, closing), daemon=True)
    shown.start()
    try:
        deadline = time.time() + timeout
        while not ready(b"".join(screen)) and time.time() < deadline:
            time.sleep(0.05)
        assert ready(b"".join(screen)), b"".join(screen)[-2000:]
    finally:
        closing.set()
        shown.join()
        os.close(terminal)  # the terminal closes: the kernel hangs up its session
    return wait_for_exit(pid, 120)
